"""The benchmark helpers that talk to OpenSearch, against the real node: concurrent timed searches
return every query's own hits, and the steady-state size of an index whose vectors are kept out of
``_source`` is read only after OpenSearch dropped its recovery copy of them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import common  # noqa: E402

from milco_os.opensearch.indices import create_index  # noqa: E402
from milco_os.types import Encoded, SparseVector  # noqa: E402


def test_concurrent_queries_keep_each_querys_hits(client, index_name: str) -> None:
    docs = [common.Doc(f"d{i}", f"word{i} shared text", "en-us") for i in range(20)]
    client.indices.create(index=index_name, body={"mappings": {"properties": {"text": {"type": "text"}}}})
    common.bulk_load(client, index_name, docs, None)
    bodies = [json.dumps({"query": {"match": {"text": f"word{i}"}}, "size": 3}) for i in range(20)]
    result = common.run_queries(client, index_name, bodies, concurrency=4)
    assert [r[0] for r in result.ranked] == [f"d{i}" for i in range(20)]
    assert all(ms > 0 for ms in result.client_ms) and result.qps > 0
    assert len(result.took_ms) == 20


def test_steady_state_size_excludes_the_recovery_copy_of_vectors(client, splade_tiny, index_name: str) -> None:
    rng = np.random.default_rng(0)
    vocab = splade_tiny.info.pivot_vocab
    docs = [common.Doc(f"d{i}", f"document {i}", "en-us") for i in range(400)]
    encoded = []
    for _ in docs:
        ids = rng.choice(np.arange(2000, 30000), size=120, replace=False).astype(np.int64)
        encoded.append(Encoded(SparseVector(ids, rng.random(120).astype(np.float32) + 0.01, vocab),
                               SparseVector.empty(vocab)))
    sizes = {}
    for in_source in (True, False):
        name = f"{index_name}-{'with' if in_source else 'without'}"
        create_index(client, name, splade_tiny.info, text_fields=["text"], replicas=0, vectors_in_source=in_source)
        try:
            for part in (slice(0, 200), slice(200, 400)):  # two segments, so the merge rewrites
                common.bulk_load(client, name, docs[part], encoded[part])
            common.force_merge(client, name, source_filtered=not in_source)
            sizes[in_source] = common.store_bytes(client, name)
            hit = client.get(index=name, id="d0")["_source"]
            assert ("milco_pivot" in hit) is in_source
        finally:
            client.indices.delete(index=name, ignore_unavailable=True)
    # 120 terms/doc of JSON in _source are most of the "with" index; without them the postings remain.
    assert sizes[False] < 0.7 * sizes[True], sizes
