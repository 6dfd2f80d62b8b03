"""The dense view on a real node with the k-NN plugin: stored beside the sparse views, searched by HNSW, fused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from milco_os.errors import ConfigError, ModelMismatch
from milco_os.layout import read_layout
from milco_os.opensearch.documents import dense_values
from milco_os.opensearch.engine import engine_of
from milco_os.opensearch.hybrid import fuse, knn_body
from milco_os.opensearch.indices import create_index, index_record
from milco_os.opensearch.ingest import ingest
from milco_os.opensearch.search import query_request, search
from milco_os.specs import DEFAULT_DENSE_WEIGHT, DEFAULT_FUSION, IndexSpec, SearchOptions

DOCS = [
    {"id": "1", "text": "Paris is the capital of France.", "lang": "en"},
    {"id": "2", "text": "Der Hund bellt laut im Garten.", "lang": "de"},
    {"id": "3", "text": "Green tea contains caffeine and antioxidants.", "lang": "en"},
    {"id": "4", "text": "La tour Eiffel se trouve à Paris.", "lang": "fr"},
    {"id": "5", "text": "Volcanoes erupt lava and ash.", "lang": "en"},
    {"id": "6", "text": "Le chat dort sur le canapé.", "lang": "fr"},
    {"id": "7", "text": "Die Hauptstadt von Deutschland ist Berlin.", "lang": "de"},
    {"id": "8", "text": "", "lang": "en"},
]


@pytest.fixture(scope="module")
def milco_mini(cache_dir: Path):  # noqa: ANN201
    from milco_os.loading import load_encoder

    return load_encoder("milco-mini", cache_dir)


def with_dense_view(client, encoder, name: str) -> str:  # noqa: ANN001
    """``name`` created with a dense view and holding :data:`DOCS` (those with text)."""
    create_index(client, name, encoder.info, IndexSpec(replicas=0, dense=True))
    report = ingest(client, name, [d for d in DOCS if d["text"]], encoder, refresh=True)
    assert report.indexed == 7
    return name


@pytest.fixture
def dense_index(client, milco_mini, index_name: str) -> str:  # noqa: ANN001
    return with_dense_view(client, milco_mini, index_name)


@pytest.fixture
def engine_dense_index(engine_client, milco_mini, engine_index: str) -> str:  # noqa: ANN001
    """:func:`dense_index` on the engine under test."""
    return with_dense_view(engine_client, milco_mini, engine_index)


def test_the_layout_record_says_what_the_index_holds(engine_client, milco_mini,  # noqa: ANN001
                                                     engine_dense_index: str) -> None:
    client, dense_index = engine_client, engine_dense_index
    record = index_record(client, dense_index)
    layout = read_layout(record, dense_index)
    assert layout.dense is not None and layout.dense.dimensions == 384
    assert layout.dense.model["fingerprint"] == milco_mini.info.dense.fingerprint
    mapping = client.indices.get_mapping(index=dense_index)[dense_index]["mappings"]
    assert mapping["properties"]["milco_dense"]["type"] == {"opensearch": "knn_vector",
                                                            "elasticsearch": "dense_vector"}[layout.engine]
    assert "milco_dense" in mapping["_source"]["excludes"]  # explain reads the k-NN hits, not the vector


def test_dense_hits_equal_exact_cosine(engine_client, milco_mini, engine_dense_index: str) -> None:  # noqa: ANN001
    client, dense_index = engine_client, engine_dense_index
    texts = [d["text"] for d in DOCS if d["text"]]
    docs = milco_mini.encode_documents(texts, dense=True)
    for query in ("capitale de la France", "Haustiere schlafen", "hot tea"):
        q = milco_mini.encode_queries([query], dense=True)[0].dense
        exact = sorted(((float(q @ d.dense), doc["id"]) for doc, d in zip(DOCS, docs, strict=False)), reverse=True)
        body = knn_body([float(x) for x in q], "milco_dense", 7, None, None, engine=engine_of(client))
        hits = client.search(index=dense_index, body=body)["hits"]["hits"]
        assert [h["_id"] for h in hits] == [doc_id for _, doc_id in exact], query
        # Lucene's cosine score, on either engine, is (1 + cos) / 2.
        np.testing.assert_allclose([2 * h["_score"] - 1 for h in hits], [c for c, _ in exact], atol=1e-4)


def test_search_fuses_the_dense_and_sparse_lists_as_computed_by_hand(engine_client, milco_mini,  # noqa: ANN001
                                                                     engine_dense_index: str) -> None:
    client, dense_index = engine_client, engine_dense_index
    text = "capitale de la France"
    sparse = search(client, dense_index, text, milco_mini, SearchOptions(size=100, dense_weight=0))
    assert sparse.lists == () and len(sparse.hits) >= 2
    q = milco_mini.encode_queries([text], dense=True)[0].dense
    dense = client.search(index=dense_index, body=knn_body(dense_values(q), "milco_dense", 100, None, None,
                                                           engine=engine_of(client)))
    dense_list = [(h["_id"], h["_score"]) for h in dense["hits"]["hits"]]
    for norm, weight in ((DEFAULT_FUSION, None), ("minmax", 0.5), ("rrf", 2.0)):
        fused = search(client, dense_index, text, milco_mini,
                       SearchOptions(size=5, dense_weight=weight, hybrid_norm=norm, explain=True))
        expected = fuse([[(h.id, h.score) for h in sparse.hits], dense_list],
                        [1.0, DEFAULT_DENSE_WEIGHT if weight is None else weight], norm=norm)[:5]
        assert [h.id for h in fused.hits] == [d for d, _ in expected], norm
        assert [h.score for h in fused.hits] == pytest.approx([s for _, s in expected], abs=1e-5), norm
        top = fused.hits[0]
        assert top.id == "1" and top.terms, "explain keeps the matching sparse terms"
        assert top.lists["dense"].rank >= 1 and top.dense_similarity == pytest.approx(
            2 * top.lists["dense"].score - 1)
        assert "milco_dense" not in top.source and "milco_pivot" not in top.source
    # By default an index with a dense view is searched fused; filters apply to both lists.
    default = search(client, dense_index, text, milco_mini, SearchOptions(filters=({"term": {"lang": "de"}},)))
    assert default.lists == ("sparse", "dense") and {h.id for h in default.hits} <= {"2", "7"}


def test_dense_needs_a_dense_index_and_a_matching_model(client, milco_mini, splade_tiny, index_name: str) -> None:  # noqa: ANN001, E501
    with pytest.raises(ConfigError, match="has no dense view"):
        create_index(client, index_name, splade_tiny.info, IndexSpec(replicas=0, dense=True))
    create_index(client, index_name, milco_mini.info, IndexSpec(replicas=0))
    with pytest.raises(ConfigError, match="has no dense view"):
        search(client, index_name, "tea", milco_mini, SearchOptions(dense_weight=1.0))
    assert search(client, index_name, "tea", milco_mini).lists == ()  # the default: sparse only here


def test_an_index_from_a_newer_milco_os_is_refused_with_one_line(client, milco_mini, dense_index: str) -> None:  # noqa: ANN001, E501
    record = index_record(client, dense_index)
    record["layout"]["units"] = "sentences"
    client.indices.put_mapping(index=dense_index, body={"_meta": {"milco_os": record}})
    with pytest.raises(ModelMismatch, match=r"layout\.units is 'sentences', which this milco-os cannot serve"):
        search(client, dense_index, "tea", milco_mini)


def test_cli_explains_a_fused_search_and_prints_it_as_a_hybrid_query(settings, dense_index: str) -> None:  # noqa: ANN001
    env = {**os.environ, "MILCO_OS_OPENSEARCH_URL": settings.opensearch_url,
           "MILCO_OS_CACHE_DIR": str(settings.cache_dir), "MILCO_OS_MODEL": "milco-mini"}
    cmd = [sys.executable, "-m", "milco_os.cli", "search", "--index", dense_index, "--json", "--explain",
           "capitale de la France"]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    hit = json.loads(result.stdout)["hits"][0]
    assert hit["id"] == "1" and hit["terms"] and set(hit["lists"]) == {"sparse", "dense"}
    assert 0 < hit["dense_similarity"] <= 1
    printed = subprocess.run([*cmd[:-3], "--print-query", "rank_feature", "capitale de la France"],
                             capture_output=True, text=True, env=env, timeout=300)
    assert printed.returncode == 0, printed.stderr
    body = json.loads(printed.stdout)
    queries = body["query"]["hybrid"]["queries"]
    assert "knn" in queries[1] and len(queries[1]["knn"]["milco_dense"]["vector"]) == 384
    assert body["search_pipeline"]["phase_results_processors"]
    sparse_only = subprocess.run([*cmd[:-1], "--dense", "0", "capitale de la France"], capture_output=True,
                                 text=True, env=env, timeout=300)
    assert sparse_only.returncode == 0 and "lists" not in json.loads(sparse_only.stdout)["hits"][0]


def test_print_query_model_form_asks_for_the_registered_dense_model(client, milco_mini, dense_index: str) -> None:  # noqa: ANN001, E501
    with pytest.raises(ConfigError, match="no ml-commons models"):
        query_request(client, dense_index, "tea", None, SearchOptions(), form="model")


def test_the_service_fuses_and_says_where_each_hit_stood(settings, client, milco_mini, dense_index: str) -> None:  # noqa: ANN001
    from fastapi.testclient import TestClient

    from milco_os.service.app import create_app
    from milco_os.service.routes import get_client, get_encoder

    app = create_app(settings)
    app.dependency_overrides[get_client] = lambda: client
    app.dependency_overrides[get_encoder] = lambda: milco_mini
    api = TestClient(app)
    resp = api.post(f"/v1/indices/{dense_index}/search", json={"query": "capitale de la France", "explain": True})
    assert resp.status_code == 200, resp.text
    hit = resp.json()["hits"][0]
    assert hit["id"] == "1" and set(hit["lists"]) == {"sparse", "dense"} and hit["terms"]
    assert hit["dense_similarity"] == pytest.approx(2 * hit["lists"]["dense"]["score"] - 1)
    sparse_only = api.post(f"/v1/indices/{dense_index}/search", json={"query": "capitale de la France", "dense": 0})
    assert sparse_only.status_code == 200 and sparse_only.json()["hits"][0]["lists"] is None
    bad = api.post(f"/v1/indices/{dense_index}/search", json={"query": "tea", "dense": -1})
    assert bad.status_code == 422 and "dense" in json.dumps(bad.json()["detail"])


def test_the_neural_sparse_route_serves_the_dense_view_from_the_same_pass(settings, milco_mini, splade_tiny) -> None:  # noqa: ANN001
    from fastapi.testclient import TestClient

    from milco_os.service.app import create_app
    from milco_os.service.routes import get_encoder

    app = create_app(settings)
    app.dependency_overrides[get_encoder] = lambda: milco_mini
    api = TestClient(app)
    texts = ["Paris is the capital of France.", "Der Hund bellt."]
    resp = api.post("/v1/neural-sparse", json={"texts": texts, "kind": "document", "view": "dense", "dense": True})
    assert resp.status_code == 200, resp.text
    expected = [dense_values(e.dense) for e in milco_mini.encode_documents(texts, dense=True)]
    np.testing.assert_allclose(resp.json()["response"], expected, atol=1e-6)
    # The pivot request of the same texts is answered from that pass (recent encodings), unchanged.
    pivot = api.post("/v1/neural-sparse", json={"texts": texts, "kind": "document", "view": "pivot", "dense": True})
    assert pivot.status_code == 200 and pivot.json()["response"][0]
    app.dependency_overrides[get_encoder] = lambda: splade_tiny
    refused = TestClient(app).post("/v1/neural-sparse", json={"texts": texts, "kind": "query", "view": "dense"})
    assert refused.status_code == 422 and "no dense view" in refused.text
