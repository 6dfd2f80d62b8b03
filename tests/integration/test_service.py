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
