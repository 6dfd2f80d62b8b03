"""Cache locations under the configured cache directory."""

from __future__ import annotations

from pathlib import Path


def models_dir(cache_dir: Path) -> Path:
    return Path(cache_dir) / "models"


def wheels_dir(cache_dir: Path) -> Path:
    return Path(cache_dir) / "wheels"


def data_dir(cache_dir: Path) -> Path:
    return Path(cache_dir) / "data"
