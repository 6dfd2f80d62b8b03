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
    (checkpoints are read back after exactly such kills)."""
    import os

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
