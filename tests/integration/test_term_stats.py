"""Selectivity-aware query pruning against the real node: the document frequencies OpenSearch counts are the
posting-list lengths of the indexed vectors, and `selective:R` queries run through the library, the CLI and
the service, keeping exactly the terms the pure rule keeps with those counts."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
from fastapi.testclient import TestClient

from milco_os.opensearch.indices import create_index, index_record
from milco_os.opensearch.ingest import ingest
from milco_os.opensearch.search import search
from milco_os.opensearch.stats import IndexTermStats
from milco_os.pruning import Pruning, selective
from milco_os.specs import IndexSpec, SearchOptions

DOCS = [
    {"id": "1", "text": "the heart attack is caused by a blocked coronary artery"},
    {"id": "2", "text": "the green tea is brewed with water that is not boiling"},
    {"id": "3", "text": "the printer reports a paper jam in the rear tray"},
    {"id": "4", "text": "the volcano erupted and ash closed the airport"},
    {"id": "5", "text": "the heart rate rises when you climb the stairs"},
]


def test_counted_document_frequencies_are_the_posting_list_lengths(client, splade_tiny, index_name: str) -> None:  # noqa: ANN001
    create_index(client, index_name, splade_tiny.info, IndexSpec(replicas=0))
    ingest(client, index_name, DOCS, splade_tiny, refresh=True)
    stats = IndexTermStats(client, index_name, index_record(client, index_name))
    assert stats.n_docs == len(DOCS)
    encoded = splade_tiny.encode_documents([d["text"] for d in DOCS])
    expected = np.bincount(np.concatenate([e.pivot.ids for e in encoded]), minlength=len(splade_tiny.info.pivot_vocab))
    query = splade_tiny.encode_queries(["heart attack symptoms and the stairs"])[0].pivot
    got = stats.doc_freq("pivot", query)
    assert got.tolist() == expected[query.ids].tolist()
    assert got.max() >= 2 and (got == 0).any(), "the query has both shared and unindexed terms"

    rule = Pruning.parse("selective:0.3")
    full = search(client, index_name, "heart attack symptoms and the stairs", splade_tiny, SearchOptions())
    pruned = search(client, index_name, "heart attack symptoms and the stairs", splade_tiny,
                    SearchOptions(query_pruning=rule), stats=stats)
    expected_terms = selective(query, expected[query.ids], len(DOCS), 0.3)
    assert pruned.query.pivot.ids.tolist() == expected_terms.ids.tolist()
    assert 0 < len(pruned.query.pivot) < len(full.query.pivot)
    assert pruned.hits and pruned.hits[0].id in {"1", "5"}


def test_selective_pruning_from_the_cli_and_the_service(settings, client, splade_tiny, index_name: str) -> None:  # noqa: ANN001
    from milco_os.service.app import create_app
    from milco_os.service.routes import get_client, get_encoder

    create_index(client, index_name, splade_tiny.info, IndexSpec(replicas=0))
    ingest(client, index_name, DOCS, splade_tiny, refresh=True)
    env = {**os.environ, "MILCO_OS_OPENSEARCH_URL": settings.opensearch_url,
           "MILCO_OS_CACHE_DIR": str(settings.cache_dir)}
    cmd = [sys.executable, "-m", "milco_os.cli", "search", "--index", index_name, "--model", "splade-tiny",
           "--query-prune", "selective:0.3", "--json", "heart attack"]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["hits"][0]["id"] == "1"
    encode = subprocess.run([sys.executable, "-m", "milco_os.cli", "encode", "--model", "splade-tiny", "--kind",
                             "query", "--query-prune", "selective:0.3", "x"], capture_output=True, text=True, env=env,
                            timeout=300)
    assert encode.returncode == 1 and "needs an index's document frequencies" in encode.stderr

    app = create_app(settings)
    app.dependency_overrides[get_client] = lambda: client
    app.dependency_overrides[get_encoder] = lambda: splade_tiny
    http = TestClient(app)
    resp = http.post(f"/v1/indices/{index_name}/search", json={"query": "heart attack", "query_prune": "selective:0.3"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["hits"][0]["id"] == "1"
    assert app.state.term_stats[index_name].n_docs == len(DOCS), "kept for the next query"


def test_two_phase_by_value_from_the_library_the_cli_and_the_service(settings, client, splade_tiny,  # noqa: ANN001
                                                                    index_name: str) -> None:
    from milco_os.service.app import create_app
    from milco_os.service.routes import get_client, get_encoder
    from milco_os.specs import TwoPhase

    create_index(client, index_name, splade_tiny.info, IndexSpec(replicas=0))
    ingest(client, index_name, DOCS, splade_tiny, refresh=True)
    text = "heart attack symptoms and the stairs"
    full = search(client, index_name, text, splade_tiny, SearchOptions(query_pruning=Pruning.parse("none")))
    two = search(client, index_name, text, splade_tiny,
                 SearchOptions(query_pruning=Pruning.parse("none"), two_phase=TwoPhase(ratio=0.5, split="value")))
    first = two.body["query"]["bool"]["should"]
    assert "rescore" in two.body and 0 < len(first) < len(full.body["query"]["bool"]["should"])
    assert [(h.id, round(h.score, 4)) for h in two.hits] == [(h.id, round(h.score, 4)) for h in full.hits]

    env = {**os.environ, "MILCO_OS_OPENSEARCH_URL": settings.opensearch_url,
           "MILCO_OS_CACHE_DIR": str(settings.cache_dir)}
    cmd = [sys.executable, "-m", "milco_os.cli", "search", "--index", index_name, "--model", "splade-tiny",
           "--query-prune", "none", "--two-phase", "--json", text]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert [h["id"] for h in json.loads(result.stdout)["hits"]] == [h.id for h in full.hits]
    app = create_app(settings)
    app.dependency_overrides[get_client] = lambda: client
    app.dependency_overrides[get_encoder] = lambda: splade_tiny
    resp = TestClient(app).post(f"/v1/indices/{index_name}/search",
                                json={"query": text, "query_prune": "none", "two_phase": True})
    assert resp.status_code == 200, resp.text
    assert [h["id"] for h in resp.json()["hits"]] == [h.id for h in full.hits]


def test_normalised_hybrid_fuses_both_lists_from_one_msearch(client, splade_tiny, index_name: str) -> None:  # noqa: ANN001
    from milco_os.opensearch.hybrid import fuse

    create_index(client, index_name, splade_tiny.info, IndexSpec(replicas=0))
    ingest(client, index_name, DOCS, splade_tiny, refresh=True)
    text = "heart attack"
    sparse = search(client, index_name, text, splade_tiny, SearchOptions(size=5))
    bm25 = client.search(index=index_name, body={"query": {"multi_match": {"query": text, "fields": ["text"]}}})
    for norm in ("minmax", "rrf"):
        fused = search(client, index_name, text, splade_tiny,
                       SearchOptions(size=5, hybrid_weight=0.5, hybrid_norm=norm, explain=True))
        expected = fuse([[(h.id, h.score) for h in sparse.hits],
                         [(h["_id"], h["_score"]) for h in bm25["hits"]["hits"]]], [1.0, 0.5], norm=norm)[:5]
        assert [(h.id, round(h.score, 6)) for h in fused.hits] == [(d, round(s, 6)) for d, s in expected], norm
        assert fused.hits[0].terms, "explain still shows the matching sparse terms"
        assert "milco_pivot" not in fused.hits[0].source
    filtered = search(client, index_name, text, splade_tiny, SearchOptions(
        hybrid_weight=1.0, hybrid_norm="minmax", filters=({"ids": {"values": ["5"]}},)))
    assert [h.id for h in filtered.hits] == ["5"]
