"""What a model directory holds, read from its files alone: the model family and the fingerprint.

No torch and no weights are loaded here, so the loading factory can name a model's cached ONNX export
without building the model. Each family's loader takes its ``info.fingerprint`` from the same functions,
which keeps the two values identical by construction.

A directory is read once into a :class:`ModelDir` (its path, parsed ``config.json`` and family); the factory
hands that object to :func:`fingerprint`, the layout functions and the family's loader, so one load reads each
``config.json`` once. Every function here also takes a plain path, which it reads itself.

Families, recognised by their files:

- ``onnx``: ``model.onnx`` or ``milco_os_model.json`` (a milco-os export);
- ``milco``: ``config.json`` with ``model_type: milco`` (the official MILCO layout);
- ``splade``: a ``*ForMaskedLM`` directory;
- ``csplade``: a ``*ForCausalLM`` directory (also a single ``*.gguf`` or a LoRA adapter directory, loaded
  with :func:`milco_os.models.csplade.load_csplade_dir`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from milco_os.errors import ModelError
from milco_os.models.files import WEIGHT_FILES, fingerprint_dir, read_config, read_json, weight_file
from milco_os.types import DEFAULT_MAX_DOCUMENT_LENGTH, DEFAULT_MAX_QUERY_LENGTH

FAMILIES = ("onnx", "milco", "splade", "csplade")
ONNX_MARKERS = ("model.onnx", "milco_os_model.json")


def is_onnx_dir(path: Path) -> bool:
    return any((Path(path) / name).is_file() for name in ONNX_MARKERS)


@dataclass(frozen=True)
class ModelDir:
    """A model directory, read once: its path, its parsed ``config.json`` (None where it has none: an ONNX
    export, a LoRA adapter directory, a single ``*.gguf``) and its family (see the module docstring)."""

    path: Path
    family: str
    config: dict[str, Any] | None = field(default=None, compare=False, repr=False)

    def require_config(self) -> dict[str, Any]:
        """``config.json``, which this family needs; ModelError where the directory has none."""
        if self.config is None:
            msg = f"{self.path}: no config.json; expected a Hugging Face model directory (config.json + weights)"
            raise ModelError(msg)
        return self.config


def read_model_dir(path: Path) -> ModelDir:
    """Read ``path`` once: its family, from its files, and its ``config.json``; ModelError for anything that is
    not a model directory of a known family."""
    path = Path(path)
    if not path.is_dir():
        msg = f"{path}: not a directory"
        raise ModelError(msg)
    if is_onnx_dir(path):
        return ModelDir(path, "onnx")
    if not (path / "config.json").is_file() and ((path / ADAPTER_CONFIG).is_file() or any(path.glob("*.gguf"))):
        return ModelDir(path, "csplade")  # a LoRA adapter directory, or one *.gguf causal LM (the packaged SmolLM2)
    config = read_config(path)
    if config.get("model_type") == "milco":
        return ModelDir(path, "milco", config)
    architectures = config.get("architectures") or []
    if any(str(a).endswith("ForMaskedLM") for a in architectures):
        return ModelDir(path, "splade", config)
    if any(str(a).endswith("ForCausalLM") for a in architectures):
        return ModelDir(path, "csplade", config)
    msg = (
        f"{path}/config.json: model_type {config.get('model_type')!r} with architectures {architectures} is not "
        "supported; expected a MILCO checkpoint (model_type milco), a masked LM (SPLADE) or a causal LM (CSPLADE)"
    )
    raise ModelError(msg)


def as_model_dir(source: Path | ModelDir) -> ModelDir:
    """``source`` itself when it is already read, else :func:`read_model_dir` of it."""
    return source if isinstance(source, ModelDir) else read_model_dir(source)


def family_of(path: Path | ModelDir) -> str:
    """The family of a model directory (see the module docstring); ModelError for anything else."""
    return as_model_dir(path).family


def fingerprint(source: Path | ModelDir, *, variant: str | None = None) -> str:
    """The ``info.fingerprint`` the model in ``source`` gets when it is loaded, computed without loading it.

    ``variant`` is the CSPLADE variant argument of the loader (None: the directory's own)."""
    model = as_model_dir(source)
    if model.family == "onnx":
        return onnx_fingerprint(model.path)
    if model.family == "milco":
        return milco_fingerprint(model)
    if model.family == "splade":
        return splade_fingerprint(model)
    return csplade_layout(model.path, variant).fingerprint


def onnx_fingerprint(path: Path) -> str:
    """The source model's fingerprint recorded in an export (``milco_os_model.json``)."""
    record = read_json(Path(path) / "milco_os_model.json")
    value = record.get("fingerprint")
    if not isinstance(value, str):
        msg = f"{path}/milco_os_model.json: missing key 'fingerprint'"
        raise ModelError(msg)
    return value


def _single_weights(path: Path) -> str:
    name = weight_file(path)
    if name is None:
        msg = f"{path}: no weights file; expected one of {', '.join(WEIGHT_FILES)}"
        raise ModelError(msg)
    return name


def splade_fingerprint(source: Path | ModelDir) -> str:
    """A masked-LM directory: config.json + its weights file."""
    model = as_model_dir(source)
    model.require_config()
    return fingerprint_dir(model.path, ["config.json", _single_weights(model.path)])


def milco_fingerprint(source: Path | ModelDir) -> str:
    """A MILCO checkpoint: config.json + its weights file (the backbone and head configs it names are not
    part of it: the weights file holds every parameter)."""
    model = as_model_dir(source)
    model.require_config()
    return fingerprint_dir(model.path, ["config.json", _single_weights(model.path)])


# ---------------------------------------------------------------------------------------------- MILCO
@dataclass(frozen=True)
class MilcoLayout:
    """The directories a MILCO checkpoint draws on: the backbone and English head checkpoints its config
    names, and where its (multilingual) tokenizer is."""

    model: ModelDir
    m_dir: Path
    en_dir: Path
    tokenizer_dir: Path

    @property
    def config(self) -> dict[str, Any]:
        return self.model.require_config()


def resolve_checkpoint(reference: str, model_dir: Path, key: str) -> Path:
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


def milco_layout(source: Path | ModelDir) -> MilcoLayout:
    model = as_model_dir(source)
    path, config = model.path, model.require_config()
    for key in ("multilingual_encoder_checkpoint", "lsr_encoder_checkpoint"):
        if not config.get(key):
            msg = f"{path}/config.json: missing {key!r} (a MILCO config names its backbone and English head)"
            raise ModelError(msg)
    m_dir = resolve_checkpoint(config["multilingual_encoder_checkpoint"], path, "multilingual_encoder_checkpoint")
    en_dir = resolve_checkpoint(config["lsr_encoder_checkpoint"], path, "lsr_encoder_checkpoint")
    own_tokenizer = (path / "tokenizer_config.json").is_file() or (path / "tokenizer.json").is_file()
    return MilcoLayout(model=model, m_dir=m_dir, en_dir=en_dir, tokenizer_dir=path if own_tokenizer else m_dir)


# ---------------------------------------------------------------------------------------------- CSPLADE
CSPLADE_VARIANTS = ("causal", "echo", "bi")
CSPLADE_DEFAULT_VARIANT = "causal"
#: Positions per LM-head chunk: [B, 32, 128k] fp32 logits for B = 32 is ~0.5 GB.
CSPLADE_DEFAULT_CHUNK_SIZE = 32
SIDECAR_FILE = "csplade_config.json"
#: Every key but ``variant`` is an optional positive integer; ``query_top_k`` / ``document_top_k`` (for a
#: model trained with top-k masking) make the encoder keep only that many pivot terms per text.
SIDECAR_KEYS = ("variant", "chunk_size", "max_query_length", "max_document_length", "query_top_k", "document_top_k")
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


@dataclass(frozen=True)
class CSpladeLayout:
    """Everything a CSPLADE directory says about the model, before any weight is read."""

    path: Path
    variant: str
    chunk_size: int
    max_query_length: int
    max_document_length: int
    #: None: every non-zero term is kept.
    query_top_k: int | None
    document_top_k: int | None
    #: The causal-LM directory: ``path`` itself, or the base a LoRA adapter directory names.
    model_dir: Path
    adapter: bool
    gguf_file: str | None
    fingerprint: str


def is_positive_int(value: Any) -> bool:
    """An int >= 1 (JSON ``true`` is not one)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def read_sidecar(path: Path) -> dict[str, Any]:
    sidecar = Path(path) / SIDECAR_FILE
    if not sidecar.is_file():
        return {}
    data = read_json(sidecar)
    unknown = sorted(set(data) - set(SIDECAR_KEYS))
    if unknown:
        msg = f"{sidecar}: unknown keys {unknown}; expected only {', '.join(SIDECAR_KEYS)}"
        raise ModelError(msg)
    for key in SIDECAR_KEYS[1:]:
        value = data.get(key)
        if value is not None and not is_positive_int(value):
            msg = f"{sidecar}: {key} is {value!r}; expected a positive integer"
            raise ModelError(msg)
    return data


def _weight_files(path: Path) -> list[str]:
    """Weight files of a HF directory, relative to it: one file, or an index and its shards."""
    for name in WEIGHT_FILES:
        if (path / name).is_file():
            return [name]
    for index in WEIGHT_INDEXES:
        if (path / index).is_file():
            shards = sorted(set(read_json(path / index).get("weight_map", {}).values()))
            missing = [s for s in shards if not (path / s).is_file()]
            if missing or not shards:
                msg = f"{path}/{index}: shard files missing: {missing[:3] or 'none listed'}"
                raise ModelError(msg)
            return [index, *shards]
    return []


def causal_lm_files(path: Path) -> tuple[list[str], str | None]:
    """(files to fingerprint, gguf file name or None) of a causal-LM directory; ModelError when it has none."""
    has_config = (path / "config.json").is_file()
    ggufs = sorted(p.name for p in path.glob("*.gguf"))
    weights = _weight_files(path) if has_config else []
    if has_config and weights:
        return ["config.json", *weights], None
    if len(ggufs) == 1:
        return (["config.json"] if has_config else []) + ggufs, ggufs[0]
    if len(ggufs) > 1:
        msg = f"{path}: several *.gguf files ({', '.join(ggufs)}); expected exactly one"
        raise ModelError(msg)
    if not has_config:
        msg = (
            f"{path}: no config.json; expected a Hugging Face causal-LM directory (config.json + "
            f"{' / '.join(WEIGHT_FILES)}) or a single *.gguf file"
        )
        raise ModelError(msg)
    msg = f"{path}: no weights file; expected one of {', '.join(WEIGHT_FILES + WEIGHT_INDEXES)} or a *.gguf file"
    raise ModelError(msg)


def adapter_base(path: Path) -> Path:
    """The base model directory a LoRA adapter names (local only: milco-os never downloads a base here)."""
    config = read_json(path / ADAPTER_CONFIG)
    reference = config.get("base_model_name_or_path")
    if not reference:
        msg = f"{path}/{ADAPTER_CONFIG}: missing base_model_name_or_path"
        raise ModelError(msg)
    # Relative to the adapter directory first: a name relative to wherever milco-os happens to run from is
    # only a fallback (peft writes whatever path the training used).
    for candidate in (path / Path(reference).expanduser(), Path(reference).expanduser()):
        if candidate.is_dir():
            return candidate
    msg = (
        f"{path}/{ADAPTER_CONFIG}: base_model_name_or_path {reference!r} is not a local directory; expected the "
        "path of the base causal LM (absolute or relative to the adapter directory)"
    )
    raise ModelError(msg)


def combine(*parts: str) -> str:
    h = hashlib.sha256("\0".join(parts).encode("utf-8"))
    return f"sha256:{h.hexdigest()[:32]}"


def csplade_layout(path: Path, variant: str | None = None) -> CSpladeLayout:
    """Read a CSPLADE directory (see :func:`milco_os.models.csplade.load_csplade_dir`); ``variant``
    overrides the sidecar's."""
    path = Path(path)
    if not path.is_dir():
        msg = f"{path}: not a directory"
        raise ModelError(msg)
    sidecar = read_sidecar(path)
    chosen = variant if variant is not None else sidecar.get("variant", CSPLADE_DEFAULT_VARIANT)
    if chosen not in CSPLADE_VARIANTS:
        source = "variant argument" if variant is not None else f"{path / SIDECAR_FILE}: variant"
        msg = f"{source} {chosen!r}: expected one of {', '.join(CSPLADE_VARIANTS)}"
        raise ModelError(msg)
    chunk_size = int(sidecar.get("chunk_size") or CSPLADE_DEFAULT_CHUNK_SIZE)
    max_query_length = int(sidecar.get("max_query_length") or DEFAULT_MAX_QUERY_LENGTH)
    max_document_length = int(sidecar.get("max_document_length") or DEFAULT_MAX_DOCUMENT_LENGTH)
    query_top_k, document_top_k = sidecar.get("query_top_k"), sidecar.get("document_top_k")

    adapter = (path / ADAPTER_CONFIG).is_file()
    model_dir = adapter_base(path) if adapter else path
    files, gguf_file = causal_lm_files(model_dir)
    fingerprints = [fingerprint_dir(model_dir, files)]
    if adapter:
        adapter_weights = [f for f in ADAPTER_WEIGHTS if (path / f).is_file()]
        if not adapter_weights:
            msg = f"{path}: {ADAPTER_CONFIG} but no adapter weights; expected one of {', '.join(ADAPTER_WEIGHTS)}"
            raise ModelError(msg)
        fingerprints.append(fingerprint_dir(path, [ADAPTER_CONFIG, adapter_weights[0]]))
    # The variant, lengths and top-k change the vectors, not the files: they are part of the identity. The
    # top-k part is added only when set, so directories without it keep the fingerprints they had.
    identity = [f"variant={chosen}", f"lengths={max_query_length}/{max_document_length}"]
    if query_top_k is not None or document_top_k is not None:
        identity.append(f"top_k={query_top_k}/{document_top_k}")
    return CSpladeLayout(
        path=path,
        variant=chosen,
        chunk_size=chunk_size,
        max_query_length=max_query_length,
        max_document_length=max_document_length,
        query_top_k=query_top_k,
        document_top_k=document_top_k,
        model_dir=model_dir,
        adapter=adapter,
        gguf_file=gguf_file,
        fingerprint=combine(*fingerprints, *identity),
    )
