"""The file job's own bookkeeping (checkpoint lines, memory), offline: a pool that takes every batch at once stands
in for encoding and writing, and the client only answers the index's mapping."""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opensearchpy import OpenSearch

from milco_os.errors import OpenSearchUnavailable
from milco_os.opensearch.bulk import BulkConfig, BulkOutcome
from milco_os.opensearch.ingest import BatchResult, Ingester, _ingest_file, checkpoint_path
from milco_os.opensearch.mapping import index_body
from milco_os.specs import IndexSpec
from tests.fakes import FakeEncoder


class InstantPool:
    """Writes nothing and reports every document written; ``stop_at``: the batch (1-based) that finds OpenSearch
    gone."""

    def __init__(self, info: Any, stop_at: int | None = None) -> None:
        self.info = info
        self.stop_at = stop_at

    def results(self, tagged_batches: Iterable[tuple[list[Any], Any]]) -> Iterator[tuple[Any, BatchResult]]:
        for n, (docs, tag) in enumerate(tagged_batches, 1):
            if n == self.stop_at:
                outcome = BulkOutcome(unavailable=[(str(d["id"]), "HTTP 503") for d in docs])
            else:
                outcome = BulkOutcome(written=[str(d["id"]) for d in docs])
            yield tag, BatchResult(len(docs), outcome, [], {})


def ingester(pool: InstantPool, batch: int) -> Ingester:
    client = OpenSearch(hosts=["http://127.0.0.1:1"], max_retries=0)
    mapping = {"docs": {"mappings": index_body(pool.info, IndexSpec())["mappings"]}}
    client.transport.perform_request = lambda method, url, **_: mapping  # type: ignore[method-assign]
    return Ingester(client, "docs", None, pool=pool, config=BulkConfig(encode_batch=batch),
                    stop_when_unavailable=True)


def write_lines(path: Path, n: int) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            f.write(json.dumps({"id": i, "text": "x"}) + "\n")
    return path


def peak_bytes(path: Path, n: int, info: Any) -> int:
    job = ingester(InstantPool(info), batch=100)
    tracemalloc.start()
    try:
        result = _ingest_file(job, path, False, path.with_suffix(".failed"), None)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.report.indexed == n
    return peak


def test_memory_does_not_grow_with_the_number_of_lines(tmp_path: Path) -> None:
    info = FakeEncoder().info
    small = peak_bytes(write_lines(tmp_path / "small.jsonl", 5_000), 5_000, info)
    large = peak_bytes(write_lines(tmp_path / "large.jsonl", 50_000), 50_000, info)
    # Every line number kept would be 45,000 more ints (over 1.5 MB); batches in flight are the same size in both.
    assert large - small < 256 * 1024, (small, large)


def test_the_checkpoint_records_the_last_line_of_the_last_acknowledged_batch(tmp_path: Path) -> None:
    path = tmp_path / "docs.jsonl"
    lines = [json.dumps({"id": i, "text": "x"}) for i in range(10)]
    lines[2:2] = ["", "  "]  # blank lines are no documents, but count as lines
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(OpenSearchUnavailable):
        _ingest_file(ingester(InstantPool(FakeEncoder().info, stop_at=3), batch=3), path, False,
                     tmp_path / "dead.jsonl", None)
    saved = json.loads(checkpoint_path(path).read_text(encoding="utf-8"))["progress"]
    # Batches: ids 0-2 (lines 1, 2, 5), ids 3-5 (lines 6-8), ids 6-8 refused: the checkpoint stays at line 8.
    assert saved == {"line": 8, "done": 6, "failed": 0}
