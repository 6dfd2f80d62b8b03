"""Low-level helpers for model directories, shared by every family loader and the loading factory.

Nothing here imports torch or transformers at import time, nor anything from :mod:`milco_os.loading`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from milco_os.errors import ModelError
from milco_os.paths import write_text_atomic

log = logging.getLogger(__name__)

#: Single-file weights of a Hugging Face directory, in order of preference.
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
#: Where :func:`fingerprint_dir` remembers fingerprints next to the files (best effort; see there).
FINGERPRINT_CACHE_FILE = ".milco_os_fingerprints.json"

_memo: dict[tuple[str, tuple[Any, ...]], str] = {}
_memo_lock = threading.Lock()


def file_signature(path: Path, files: list[str]) -> tuple[Any, ...]:
    """What identifies the files' contents without reading them: size, mtime, ctime, inode per file.

    ctime cannot be set by tools that copy or restore mtimes (``cp -p``, ``rsync -t``), so a file whose
    content changed always gets a new signature."""
    out = []
    for name in files:
        st = os.stat(path / name)
        out.append((name, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev))
    return tuple(out)


def _hash_files(path: Path, files: list[str]) -> str:
    h = hashlib.sha256()
    for name in files:
        h.update(name.encode("utf-8") + b"\0")
        with open(path / name, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return f"sha256:{h.hexdigest()[:32]}"


def fingerprint_dir(path: Path, files: list[str]) -> str:
    """SHA-256 over the named files (name + content), in order: identifies weights + config exactly.

    Hashing half a gigabyte of weights costs about a second, so the value is remembered, keyed by each
    file's size, mtime, ctime and inode: in this process, and in ``.milco_os_fingerprints.json`` inside
    ``path`` where that directory is writable (a read-only directory is simply hashed every time).
    """
    path = Path(path)
    try:
        signature = file_signature(path, files)
    except OSError as e:
        msg = f"{path}: cannot read {e.filename or 'a model file'}: {e.strerror}"
        raise ModelError(msg) from e
    key = (str(path.resolve()), signature)
    with _memo_lock:
        if key in _memo:
            return _memo[key]
    record_key = json.dumps([list(s) for s in signature])
    cache_file = path / FINGERPRINT_CACHE_FILE
    records = _read_fingerprint_cache(cache_file)
    value = records.get(record_key)
    if not isinstance(value, str) or not value.startswith("sha256:"):
        try:
            value = _hash_files(path, files)
        except OSError as e:
            msg = f"{path}: cannot read {e.filename or 'a model file'}: {e.strerror}"
            raise ModelError(msg) from e
        # Entries for files that changed since are dropped: only the current signatures are kept.
        current = {k: v for k, v in records.items() if _still_current(path, k)}
        current[record_key] = value
        _write_fingerprint_cache(cache_file, current)
    with _memo_lock:
        _memo[key] = value
    return value


def _read_fingerprint_cache(cache_file: Path) -> dict[str, Any]:
    try:
        data = json.loads(cache_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _still_current(path: Path, record_key: str) -> bool:
    try:
        entries = json.loads(record_key)
        return [list(s) for s in file_signature(path, [e[0] for e in entries])] == entries
    except (OSError, ValueError, TypeError, IndexError):
        return False


def _write_fingerprint_cache(cache_file: Path, records: dict[str, str]) -> None:
    """Atomic and best effort: a directory milco-os may not write to is not an error."""
    try:
        write_text_atomic(cache_file, json.dumps(records, indent=0) + "\n")
    except OSError as e:
        log.debug("%s: not written (%s); the fingerprint is recomputed on the next load", cache_file, e)


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; errors name the file."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        msg = f"{path}: cannot read it ({e.strerror})"
        raise ModelError(msg) from e
    except ValueError as e:
        msg = f"{path}: not valid JSON ({e})"
        raise ModelError(msg) from e
    if not isinstance(data, dict):
        msg = f"{path}: expected a JSON object"
        raise ModelError(msg)
    return data


def read_config(path: Path) -> dict[str, Any]:
    """``config.json`` of a Hugging Face model directory."""
    config_file = Path(path) / "config.json"
    if not config_file.is_file():
        msg = f"{path}: no config.json; expected a Hugging Face model directory (config.json + weights)"
        raise ModelError(msg)
    return read_json(config_file)


def weight_file(path: Path) -> str | None:
    """The single weights file of a Hugging Face directory (``model.safetensors`` first), or None."""
    return next((f for f in WEIGHT_FILES if (Path(path) / f).is_file()), None)


def quiet_transformers() -> None:
    """Silence transformers' warnings and progress bars (milco-os reports problems itself), and the known
    third-party notices importing it would print (:mod:`milco_os.quiet`). Call it before importing a model
    class from transformers: importing one is what prints them."""
    from milco_os.quiet import quiet_third_party

    quiet_third_party()
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def load_state_dict(path: Path) -> tuple[dict[str, Any], str]:
    """(tensors, file name) of a directory's weights: ``model.safetensors`` (memory-mapped) or
    ``pytorch_model.bin`` (``weights_only``)."""
    name = weight_file(path)
    if name == "model.safetensors":
        from safetensors.torch import load_file

        return load_file(str(Path(path) / name)), name
    if name == "pytorch_model.bin":
        import torch

        return torch.load(Path(path) / name, map_location="cpu", weights_only=True), name
    msg = f"{path}: no weights file; expected model.safetensors or pytorch_model.bin"
    raise ModelError(msg)
