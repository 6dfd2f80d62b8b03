"""The benchmark helpers that talk to OpenSearch (``milco_os.opensearch.measure`` and bench's ``bulk_load``),
against the real node: concurrent timed searches return every query's own hits, a refused document stops
a load, and the steady-state size of an index whose vectors are kept out of ``_source`` is read only after
OpenSearch dropped its recovery copy of them."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import common  # noqa: E402

from milco_os.opensearch import measure  # noqa: E402
from milco_os.opensearch.indices import create_index, create_plain_index, delete_index  # noqa: E402
from milco_os.specs import PIVOT_FIELD, IndexSpec  # noqa: E402
from milco_os.types import Encoded, SparseVector  # noqa: E402


def test_opensearch_facts(client) -> None:  # noqa: ANN001
    facts = measure.opensearch_facts(client)
    assert facts["version"] == client.info()["version"]["number"]
    assert facts["nodes"] == len(facts["heap_max_mb"]) >= 1 and all(mb > 0 for mb in facts["heap_max_mb"])


def test_bench_client_talks_to_the_node(settings) -> None:  # noqa: ANN001
    bench = measure.bench_client(settings.opensearch_url)
    assert measure.opensearch_facts(bench)["version"]


def test_concurrent_queries_keep_each_querys_hits(client, index_name: str) -> None:
    docs = [common.Doc(f"d{i}", f"word{i} shared text", "en-us") for i in range(20)]
    create_plain_index(client, index_name, measure.text_index_body())
    seconds = common.bulk_load(client, index_name, docs, None, chunk=7)  # three bulk requests
    assert seconds > 0
    bodies = [measure.timed_request(measure.match_body(f"word{i}", 3)) for i in range(20)]
    result = measure.run_queries(client, index_name, bodies, concurrency=4)
    assert [r[0] for r in result.ranked] == [f"d{i}" for i in range(20)]  # refreshed: every document found
    assert all(ms > 0 for ms in result.client_ms) and result.qps > 0
    assert len(result.took_ms) == 20


def test_bulk_load_stops_on_a_refused_document(client, index_name: str) -> None:  # noqa: ANN001
    create_plain_index(client, index_name, measure.text_index_body())
    docs = [common.Doc("ok", "fine", "en-us"), common.Doc("x" * 600, "an id over 512 bytes", "en-us")]
    with pytest.raises(SystemExit, match="bulk indexing into .* failed for 1 documents"):
        common.bulk_load(client, index_name, docs, None)


def test_run_queries_surfaces_a_failed_search(client, index_name: str) -> None:  # noqa: ANN001
    create_plain_index(client, index_name, measure.text_index_body())
    from opensearchpy.exceptions import RequestError

    with pytest.raises(RequestError):
        measure.run_queries(client, index_name, ['{"query": {"no_such_query": {}}}'], concurrency=2)


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
        create_index(client, name, splade_tiny.info, IndexSpec(replicas=0, vectors_in_source=in_source))
        try:
            for part in (slice(0, 200), slice(200, 400)):  # two segments, so the merge rewrites
                common.bulk_load(client, name, docs[part], encoded[part])
            assert measure.force_merge(client, name, source_filtered=not in_source)
            sizes[in_source] = measure.store_bytes(client, name)
            segments = client.indices.segments(index=name)["indices"][name]["shards"]["0"][0]["num_search_segments"]
            assert segments == 1
            hit = client.get(index=name, id="d0")["_source"]
            assert (PIVOT_FIELD in hit) is in_source
        finally:
            delete_index(client, name)
    # 120 terms/doc of JSON in _source are most of the "with" index; without them the postings remain.
    assert sizes[False] < 0.7 * sizes[True], sizes


def test_bulk_through_pipeline_fails_on_an_item_error_and_hit_ids_keep_order(client, index_name: str) -> None:  # noqa: ANN001
    create_plain_index(client, index_name, measure.text_index_body())
    with pytest.raises(RuntimeError, match="1 failed"):  # the node has no such pipeline: every item fails
        measure.bulk_through_pipeline(client, index_name, "no-such-pipeline", [("a", {"text": "x"})], chunk=10)
    client.index(index=index_name, id="b", body={"text": "green tea tea"}, refresh=True)
    client.index(index=index_name, id="c", body={"text": "green tea"}, refresh=True)
    assert measure.hit_ids(client, index_name, measure.match_body("tea", 10)) == ["b", "c"]
