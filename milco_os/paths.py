"""Cache locations under the configured cache directory."""

from __future__ import annotations

from pathlib import Path


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


def write_text_atomic(path: Path, text: str) -> None:
    """Write through a temporary file and a rename, so a kill never leaves a half-written file
    (checkpoints are read back after exactly such kills). The temporary file gets a fresh random name,
    created exclusively, so a symlink planted at a predictable name is never followed."""
    import os
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
