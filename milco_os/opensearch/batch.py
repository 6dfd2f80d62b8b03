"""What :mod:`~milco_os.opensearch.ingest` and :mod:`~milco_os.opensearch.ray_pool` share: one batch's result,
the pool that encodes and writes batches elsewhere, and the per-document text limit.

It sits below both so that neither imports the other for these names (ray_pool's workers run ingest's
``Ingester``; ingest only needs the shape of a pool, never Ray).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from milco_os.opensearch.bulk import BulkConfig, BulkOutcome
    from milco_os.types import ModelInfo

#: Text per document (all text fields together). Longer texts are refused with a clear reason: encoding
#: cost grows with length (one 5 MB document ran for 29 minutes at 3 GB), and a retrieval unit that long
#: should be split into passages before indexing.
MAX_DOCUMENT_CHARS = 200_000


@dataclass
class BatchResult:
    """What became of one batch, encoded and written (where :meth:`Ingester.write_batch` ran)."""

    n_docs: int
    outcome: BulkOutcome
    invalid: list[tuple[Any, str]]  # (document, reason): refused before encoding
    originals: dict[str, Any]  # id -> document, for the ids the outcome did not write
    retried: int = 0  # items sent again (5xx, 429, unreachable) while writing it


class BatchPool(Protocol):
    """Encodes and writes batches elsewhere (e.g. on Ray actors), each with :meth:`Ingester.write_batch`."""

    @property
    def info(self) -> ModelInfo: ...

    def results(self, tagged_batches: Iterable[tuple[list[Any], Any]]) -> Iterator[tuple[Any, BatchResult]]:
        """``(tag, result)`` for every batch, in input order."""
        ...


class PoolRequest(Protocol):
    """A job's request to encode elsewhere (:class:`~milco_os.opensearch.ray_pool.RayJob`): it starts a
    :class:`BatchPool` writing ``index``, stopped when the context ends."""

    def pool(self, index: str, *, config: BulkConfig, id_field: str = "id",
             max_chars: int = MAX_DOCUMENT_CHARS) -> contextlib.AbstractContextManager[BatchPool]: ...
