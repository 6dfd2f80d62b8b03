"""milco-os: multilingual learned sparse retrieval on OpenSearch.

The public API is small and import-light (no torch at import time)::

    from milco_os import load_encoder, SparseVector, Encoded, Vocab, Prune
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from milco_os.pruning import Prune, PruningConfig
from milco_os.types import Encoded, SparseVector, Vocab

__version__ = "0.1.0"
__all__ = ["Encoded", "Prune", "PruningConfig", "SparseVector", "Vocab", "__version__", "load_encoder"]

logging.getLogger(__name__).addHandler(logging.NullHandler())

if TYPE_CHECKING:
    from milco_os.runtime.encoder import SparseEncoder


def load_encoder(model: str | None = None, **kwargs: Any) -> SparseEncoder:
    """Load a model by built-in name, local directory or hub id (default: the configured model)."""
    from milco_os.models.loading import load_encoder as _load
    from milco_os.settings import get_settings

    settings = get_settings()
    return _load(model or settings.model, settings.cache_dir, **kwargs)
