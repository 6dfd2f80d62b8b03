"""Cache locations under the configured cache directory."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def models_dir(cache_dir: Path) -> Path:
    return Path(cache_dir) / "models"


def wheels_dir(cache_dir: Path) -> Path:
    return Path(cache_dir) / "wheels"


def data_dir(cache_dir: Path) -> Path:
    return Path(cache_dir) / "data"


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def atomic_file(path: Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """A file to write ``path`` through: it becomes ``path`` (by a rename) only when the block ends without an
    error, so a kill never leaves a half-written file (checkpoints and caches are read back after exactly such
    kills). The temporary file, in the same directory, gets a fresh random name and is created exclusively
    (mode 0600), so a symlink planted at a predictable name is never followed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """``text`` into ``path`` through :func:`atomic_file`."""
    with atomic_file(path, "w") as f:
        f.write(text)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """``data`` into ``path`` through :func:`atomic_file`."""
    with atomic_file(path) as f:
        f.write(data)
