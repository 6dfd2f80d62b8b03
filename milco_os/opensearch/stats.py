"""Term statistics of an index (IO), for selectivity-aware query pruning (``selective:R``).

A ``rank_features`` key is a term of its field, and its document frequency is the length of its posting list:
what a query clause on it costs. On an index with passages a query scores passages, so there the counts are of
passages (nested documents), and so is the total they are read against.

:class:`IndexTermStats` counts the keys a query brings the first time it sees
them (one ``_msearch`` of counts for all of them) and keeps the counts, together with the document count they
belong to; :meth:`IndexTermStats.refresh` starts over (the service does so every few minutes).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

from milco_os.keys import encode_key
from milco_os.opensearch.engine import OPENSEARCH, Engine
from milco_os.opensearch.indices import document_count, passage_count

if TYPE_CHECKING:
    from milco_os.opensearch.engine import Client
    from milco_os.types import SparseVector

#: Counts per ``_msearch`` request.
COUNTS_PER_REQUEST = 256


def count_body(field: str, key: str, passages: str | None = None, engine: Engine = OPENSEARCH) -> dict[str, Any]:
    """Count the documents that hold feature ``key`` of ``field`` (no scoring, no hits); with ``passages`` (the
    nested field's path), the passages that hold it."""
    holding = engine.holding(field, key)
    if passages is not None:
        return {"size": 0, "aggs": {"passages": {"nested": {"path": passages}, "aggs": {
            "holding": {"filter": holding}}}}}
    return {"size": 0, "track_total_hits": True, "query": {"constant_score": {"filter": holding}}}


class IndexTermStats:
    """Document frequencies of one index's keys, read as queries need them (see the module docstring)."""

    def __init__(self, client: Client, index: str, record: dict[str, Any]) -> None:
        from milco_os.layout import read_layout
        from milco_os.opensearch.engine import engine_of_record

        self.client, self.index = client, index
        self.engine = engine_of_record(record, index)
        self.fields = {"pivot": record["fields"]["pivot"], "echo": record["fields"]["echo"]}
        passages = read_layout(record, index).passages
        self.passages = passages.path if passages is not None else None
        self.refresh()

    def refresh(self) -> None:
        if self.passages is not None:
            self.n_docs = passage_count(self.client, self.index, self.passages)
        else:
            self.n_docs = document_count(self.client, self.index)
        self.read_at = time.monotonic()
        self._df: dict[str, dict[str, int]] = {"pivot": {}, "echo": {}}

    @property
    def age_s(self) -> float:
        return time.monotonic() - self.read_at

    def doc_freq(self, view: str, vec: SparseVector) -> np.ndarray:
        keys = [encode_key(vec.vocab.tokens[int(i)]) for i in vec.ids]
        known = self._df[view]
        unknown = [k for k in dict.fromkeys(keys) if k not in known]
        for start in range(0, len(unknown), COUNTS_PER_REQUEST):
            known |= self._count(self.fields[view], unknown[start : start + COUNTS_PER_REQUEST])
        return np.fromiter((known[k] for k in keys), dtype=np.int64, count=len(keys))

    def _count(self, field: str, keys: list[str]) -> dict[str, int]:
        from milco_os.errors import SearchIndexError

        lines: list[dict[str, Any]] = []
        for key in keys:
            lines += [{"index": self.index}, count_body(field, key, self.passages, self.engine)]
        responses = self.client.msearch(body=lines)["responses"]
        counts = {}
        for key, item in zip(keys, responses, strict=True):
            if "error" in item:
                msg = f"counting documents with {field}.{key} in {self.index!r} failed: {item['error']}"
                raise SearchIndexError(msg)
            if self.passages is not None:
                counts[key] = int(item["aggregations"]["passages"]["holding"]["doc_count"])
            else:
                counts[key] = int(item["hits"]["total"]["value"])
        return counts
