"""The HTTP service against the real node, through FastAPI's test client (lifespan included)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from milco_os.opensearch.indices import create_index
from milco_os.opensearch.ingest import ingest
from milco_os.service.app import create_app


def test_health_encode_and_search(settings, client, splade_tiny, index_name: str) -> None:
    create_index(client, index_name, splade_tiny.info, text_fields=["text"], replicas=0)
    docs = [
        {"id": "a", "text": "A heart attack is caused by a blocked coronary artery."},
        {"id": "b", "text": "Green tea should be brewed with water below boiling."},
    ]
    assert ingest(client, index_name, docs, splade_tiny, refresh=True).indexed == 2

    with TestClient(create_app(settings)) as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        ready = http.get("/readyz")
        assert ready.status_code == 200 and ready.json()["opensearch_reachable"] is True

        encoded = http.post("/v1/encode", json={"texts": ["what causes heart attacks"], "kind": "query"})
        assert encoded.status_code == 200
        pivot = encoded.json()["results"][0]["pivot"]
        assert "heart" in list(pivot)[:5]

        found = http.post(f"/v1/indices/{index_name}/search", json={"query": "heart attack", "explain": True})
        assert found.status_code == 200
        hits = found.json()["hits"]
        assert hits[0]["id"] == "a"
        assert any(t["term"] == "heart" for t in hits[0]["terms"])

        bad = http.post("/v1/encode", json={"texts": ["ok", None]})
        assert bad.status_code == 422
        assert "texts" in str(bad.json()["detail"])

        missing = http.post("/v1/indices/no-such-index/search", json={"query": "x"})
        assert missing.status_code == 404
        assert "does not exist" in missing.json()["detail"]


def test_documents_endpoint_validation_and_auth(settings, client, splade_tiny, index_name: str) -> None:
    create_index(client, index_name, splade_tiny.info, text_fields=["text"], replicas=0)
    with TestClient(create_app(settings, service_api_key="s3cret")) as http:
        auth = {"Authorization": "Bearer s3cret"}
        assert http.post(f"/v1/indices/{index_name}/documents", json=[]).status_code == 401
        assert http.get("/healthz").status_code == 200  # health needs no key

        ndjson = '{"id": "1", "text": "heart attack"}\n{"id": "2", "text": "green tea"}\n'
        ok = http.post(f"/v1/indices/{index_name}/documents", content=ndjson,
                       headers={**auth, "content-type": "application/x-ndjson"})
        assert ok.status_code == 200 and ok.json() == {"indexed": 2, "failed": [], "retried": 0}

        bad = http.post(f"/v1/indices/{index_name}/documents", json=[{"id": "3", "text": "x"}, {"text": 5}],
                        headers=auth)
        assert bad.status_code == 422
        assert bad.json()["detail"][0]["loc"] == ["body", 1] and "'id'" in bad.json()["detail"][0]["msg"]

        broken = http.post(f"/v1/indices/{index_name}/documents", content="{not json",
                           headers={**auth, "content-type": "application/json"})
        assert broken.status_code == 422 and "invalid JSON" in broken.json()["detail"]

        client.indices.refresh(index=index_name)
        found = http.post(f"/v1/indices/{index_name}/search", json={"query": "heart", "explain": True, "size": 1},
                          headers=auth)
        assert found.json()["hits"][0]["id"] == "1"
        pruned = http.post(f"/v1/indices/{index_name}/search", json={"query": "heart", "query_prune": "top_k:0"},
                           headers=auth)
        assert pruned.status_code == 422 and "top_k" in str(pruned.json())


def test_opensearch_unavailable_is_503_with_retry_after(settings, splade_tiny) -> None:
    from milco_os.settings import Settings

    down = Settings(opensearch_url="http://127.0.0.1:9", cache_dir=settings.cache_dir, opensearch_timeout=2)
    with TestClient(create_app(down)) as http:
        ready = http.get("/readyz")
        assert ready.status_code == 503 and ready.headers["retry-after"] == "5"
        docs = http.post("/v1/indices/any/documents", json=[{"id": "1", "text": "x"}])
        assert docs.status_code == 503 and docs.headers["retry-after"] == "5"
        found = http.post("/v1/indices/any/search", json={"query": "x"})
        assert found.status_code == 503
