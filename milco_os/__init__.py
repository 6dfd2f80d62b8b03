"""milco-os: multilingual learned sparse retrieval on OpenSearch.

The public API is small and import-light: ``import milco_os`` imports neither numpy nor torch; the names
below are resolved on first use::

    from milco_os import load_encoder, SparseVector, Encoded, Vocab, Prune, Pruning
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Encoded", "Prune", "Pruning", "SparseVector", "Vocab", "__version__", "load_encoder"]

logging.getLogger(__name__).addHandler(logging.NullHandler())

#: Public name -> the module that defines it (imported on first access, PEP 562).
_LAZY = {
    "Encoded": "milco_os.types",
    "SparseVector": "milco_os.types",
    "Vocab": "milco_os.types",
    "Prune": "milco_os.pruning",
    "Pruning": "milco_os.pruning",
}

if TYPE_CHECKING:
    from milco_os.pruning import Prune, Pruning
    from milco_os.runtime.encoder import SparseEncoder
    from milco_os.types import Encoded, SparseVector, Vocab


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        msg = f"module {__name__!r} has no attribute {name!r}"
        raise AttributeError(msg)
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def load_encoder(model: str | None = None, **kwargs: Any) -> SparseEncoder:
    """Load a model by built-in name, local directory or hub id (default: the configured model).

    ``kwargs`` go to :func:`milco_os.loading.load_encoder` (``runtime``, ``quantize``, ``batch_size`` ...)."""
    from milco_os.loading import load_encoder as _load
    from milco_os.settings import get_settings

    settings = get_settings()
    return _load(model or settings.model, settings.cache_dir, **kwargs)
