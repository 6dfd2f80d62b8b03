"""The HTTP service against the real node, through FastAPI's test client (lifespan included)."""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Iterable

import anyio
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from milco_os.opensearch.indices import create_index
from milco_os.opensearch.ingest import ingest
from milco_os.service.app import MAX_BODY_BYTES, MAX_JSON_BYTES, create_app
from milco_os.service.routes import get_client
from milco_os.specs import IndexSpec
from tests.fakes import BulkDown


def test_health_encode_and_search(engine_settings, engine_client, splade_tiny, engine_index: str) -> None:
    create_index(engine_client, engine_index, splade_tiny.info, IndexSpec(replicas=0))
    docs = [
        {"id": "a", "text": "A heart attack is caused by a blocked coronary artery."},
        {"id": "b", "text": "Green tea should be brewed with water below boiling."},
    ]
    assert ingest(engine_client, engine_index, docs, splade_tiny, refresh=True).indexed == 2

    with TestClient(create_app(engine_settings)) as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        ready = http.get("/readyz")
        assert ready.status_code == 200 and ready.json()["opensearch_reachable"] is True

        encoded = http.post("/v1/encode", json={"texts": ["what causes heart attacks"], "kind": "query"})
        assert encoded.status_code == 200
        pivot = encoded.json()["results"][0]["pivot"]
        assert "heart" in list(pivot)[:5]

        found = http.post(f"/v1/indices/{engine_index}/search", json={"query": "heart attack", "explain": True})
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


def test_documents_endpoint_validation_and_auth(engine_settings, engine_client, splade_tiny,
                                                engine_index: str) -> None:
    create_index(engine_client, engine_index, splade_tiny.info, IndexSpec(replicas=0))
    with TestClient(create_app(engine_settings, service_api_key="s3cret")) as http:
        auth = {"Authorization": "Bearer s3cret"}
        assert http.post(f"/v1/indices/{engine_index}/documents", json=[]).status_code == 401
        assert http.get("/healthz").status_code == 200  # health needs no key

        ndjson = '{"id": "1", "text": "heart attack"}\n{"id": "2", "text": "green tea"}\n'
        ok = http.post(f"/v1/indices/{engine_index}/documents", content=ndjson,
                       headers={**auth, "content-type": "application/x-ndjson"})
        assert ok.status_code == 200 and ok.json() == {"indexed": ["1", "2"], "failed": [], "retried": 0}

        bad = http.post(f"/v1/indices/{engine_index}/documents", json=[{"id": "3", "text": "x"}, {"text": 5}],
                        headers=auth)
        assert bad.status_code == 422
        assert bad.json()["detail"][0]["loc"] == ["body", 1] and "'id'" in bad.json()["detail"][0]["msg"]

        broken = http.post(f"/v1/indices/{engine_index}/documents", content="{not json",
                           headers={**auth, "content-type": "application/json"})
        assert broken.status_code == 422 and "invalid JSON" in broken.json()["detail"][0]["msg"]

        engine_client.indices.refresh(index=engine_index)
        found = http.post(f"/v1/indices/{engine_index}/search", json={"query": "heart", "explain": True, "size": 1},
                          headers=auth)
        assert found.json()["hits"][0]["id"] == "1"
        pruned = http.post(f"/v1/indices/{engine_index}/search", json={"query": "heart", "query_prune": "top_k:0"},
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


def _problems(response) -> str:  # noqa: ANN001 (httpx.Response)
    """The messages of a 422, which lists its problems."""
    assert response.status_code == 422, response.text
    return " | ".join(p["msg"] for p in response.json()["detail"])


def test_client_mistakes_are_4xx_never_500(engine: str, engine_settings, engine_client, splade_tiny,
                                           engine_index: str) -> None:
    create_index(engine_client, engine_index, splade_tiny.info, IndexSpec(replicas=0))
    ingest(engine_client, engine_index, [{"id": "a", "text": "heart attack"}], splade_tiny, refresh=True)
    with TestClient(create_app(engine_settings), raise_server_exceptions=False) as http:
        def search(**body: object):  # noqa: ANN202
            return http.post(f"/v1/indices/{engine_index}/search", json={"query": "heart", **body})

        bogus = search(filters=[{"bogus": 1}])
        assert "filters[0]: unknown query clause 'bogus'" in _problems(bogus)
        assert bogus.json()["detail"][0]["loc"] == ["body", "filters"]
        script = search(filters=[{"term": {"text": "heart"}}, {"bool": {"must": [{"script": {"script": "true"}}]}}])
        assert "filters[1].bool.must[0]: script clauses are disabled" in _problems(script)

        window = search(**{"from": 20000})
        assert window.status_code == 400
        label = "Elasticsearch" if engine == "elasticsearch" else "OpenSearch"
        assert window.json()["detail"].startswith(f"{label} refused the request:")
        assert "Result window is too large" in window.json()["detail"] and "\n" not in window.json()["detail"]
        malformed = search(filters=[{"range": {"text": {"gte": {"x": 1}}}}])  # allowed clause, bad body
        assert malformed.status_code == 400 and "[range] query does not support [x]" in malformed.json()["detail"]

        assert "top_k needs a finite number" in _problems(search(query_prune="top_k:inf"))
        assert "finite" in _problems(search(query_prune="mass:nan"))
        assert "hybrid" in str(search(hybrid=1e308).json()["detail"][0]["loc"])
        assert search(hybrid=1000).status_code == 200

        for path in ("/v1/indices/_search/search", "/v1/indices/_search/documents"):
            reserved = http.post(path, json={"query": "x"} if path.endswith("search") else [{"id": 1, "text": "x"}])
            assert "index name '_search': must not start with '_'" in _problems(reserved)
            assert reserved.json()["detail"][0]["loc"] == ["path", "name"]
        assert "must be lowercase" in _problems(http.post("/v1/indices/Docs/search", json={"query": "x"}))


def test_script_filters_pass_when_allowed(settings, client, splade_tiny, index_name: str) -> None:
    create_index(client, index_name, splade_tiny.info, IndexSpec(replicas=0))
    ingest(client, index_name, [{"id": "a", "text": "heart attack"}], splade_tiny, refresh=True)
    allowed = settings.model_copy(update={"allow_script_filters": True})
    with TestClient(create_app(allowed)) as http:
        found = http.post(f"/v1/indices/{index_name}/search",
                          json={"query": "heart", "filters": [{"script": {"script": {"source": "return true;"}}}]})
        # Not refused by us: OpenSearch runs it, or (the test node has no painless module) refuses it itself.
        if found.status_code == 400:
            assert "OpenSearch refused the request" in found.json()["detail"]
        else:
            assert found.status_code == 200 and found.json()["hits"][0]["id"] == "a"


def test_documents_report_written_ids_and_refuse_duplicates(engine_settings, engine_client, splade_tiny,
                                                            engine_index: str) -> None:
    create_index(engine_client, engine_index, splade_tiny.info, IndexSpec(replicas=0))
    with TestClient(create_app(engine_settings)) as http:
        url = f"/v1/indices/{engine_index}/documents"
        ok = http.post(url, json=[{"id": "x", "text": "green tea"}, {"id": 7, "text": "black tea"}])
        assert ok.status_code == 200 and ok.json()["indexed"] == ["x", "7"]

        twice = http.post(url, json=[{"id": "1", "text": "a"}, {"id": "2", "text": "b"}, {"id": 1, "text": "c"}])
        assert "duplicate id '1': documents 0 and 2 both use it" in _problems(twice)
        assert twice.json()["detail"][0]["loc"] == ["body", 2, "id"]
        engine_client.indices.refresh(index=engine_index)
        assert engine_client.count(index=engine_index)["count"] == 2  # nothing of the refused request was written


def test_startup_warns_when_the_service_is_open(settings, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="milco_os.service.app"), TestClient(create_app(settings)):
        pass
    assert "no MILCO_OS_SERVICE_API_KEY: /v1 routes are open to anyone who can reach this port" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="milco_os.service.app"), \
            TestClient(create_app(settings, service_api_key="k")):
        pass
    assert "MILCO_OS_SERVICE_API_KEY" not in caplog.text


def _post_raw(app: FastAPI, path: str, headers: dict[str, str], chunks: Iterable[bytes]) -> tuple[int, dict, int]:
    """POST straight into the ASGI app, the body as a stream of chunks; returns (status, JSON body, bytes
    the app pulled from the stream). No lifespan: these requests must be answered before any route runs."""
    pulled = 0
    sent: list[dict] = []
    stream = iter(chunks)

    async def receive() -> dict:
        nonlocal pulled
        chunk = next(stream, None)
        if chunk is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        pulled += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 5000), "server": ("testserver", 80),
    }
    anyio.run(app, scope, receive, send)
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], json.loads(body), pulled


def test_auth_and_size_are_checked_before_the_body_is_read(settings) -> None:
    app = create_app(settings, service_api_key="s3cret")
    # Twice the largest limit: should these checks ever regress, the test fails rather than hangs.
    def endless() -> Iterable[bytes]:
        return itertools.repeat(b"x" * 65536, 2 * MAX_BODY_BYTES // 65536)

    auth = {"Authorization": "Bearer s3cret", "Content-Type": "application/json"}

    # Without the key: 401, whatever the body, and not one byte of it read.
    for path in ("/v1/encode", "/v1/indices/docs/documents"):
        status, body, pulled = _post_raw(app, path, {"Content-Length": str(300 * 2**20)}, endless())
        assert (status, pulled) == (401, 0) and "API key" in body["detail"]
    status, _, _ = _post_raw(app, "/v1/encode", {"Authorization": "Bearer wrong"}, [b"{}"])
    assert status == 401
    status, body, _ = _post_raw(app, "/v1/encode", {**auth, "Content-Length": "lots"}, [b"{}"])
    assert status == 400 and body["detail"] == "Content-Length: not a number"

    # With it, a declared length over the route's limit: 413, nothing read.
    for path, limit in (("/v1/encode", MAX_JSON_BYTES), ("/v1/indices/docs/search", MAX_JSON_BYTES),
                        ("/v1/indices/docs/documents", MAX_BODY_BYTES)):
        status, body, pulled = _post_raw(app, path, {**auth, "Content-Length": str(limit + 1)}, endless())
        assert (status, pulled) == (413, 0) and f"over {limit} bytes" in body["detail"]

    # A streamed body without a length: read only until it passes the limit.
    for path, limit in (("/v1/encode", MAX_JSON_BYTES), ("/v1/indices/docs/documents", MAX_BODY_BYTES)):
        status, body, pulled = _post_raw(app, path, auth, endless())
        assert status == 413 and f"over {limit} bytes" in body["detail"]
        assert limit < pulled <= limit + 65536


def test_auth_comes_before_parsing_through_the_test_client(settings) -> None:
    with TestClient(create_app(settings, service_api_key="s3cret")) as http:
        broken = http.post("/v1/encode", content="{not json", headers={"content-type": "application/json"})
        assert broken.status_code == 401 and broken.headers["www-authenticate"] == "Bearer"

        def chunks():  # noqa: ANN202 (a generator body goes out chunked, without Content-Length)
            for _ in range(MAX_JSON_BYTES // 65536 + 2):
                yield b" " * 65536

        streamed = http.post("/v1/encode", content=chunks(), headers={"Authorization": "Bearer s3cret"})
        assert streamed.status_code == 413 and "over 1048576 bytes" in streamed.json()["detail"]


def test_openapi_documents_bodies_and_errors(settings) -> None:
    spec = create_app(settings).openapi()
    documents = spec["paths"]["/v1/indices/{name}/documents"]["post"]
    assert set(documents["requestBody"]["content"]) == {"application/json", "application/x-ndjson"}
    assert documents["requestBody"]["content"]["application/json"]["schema"]["type"] == "array"
    routes = [(path, method, spec) for path, methods in spec["paths"].items() for method, spec in methods.items()
              if path.startswith("/v1")]
    assert ("/v1/indices/{name}/documents/{doc_id}", "delete") in [(path, method) for path, method, _ in routes]
    for path, method, route in routes:
        responses = route["responses"]
        assert {"400", "401", "413", "422"} <= set(responses), (path, method)
        if "{name}" in path:
            assert {"404", "409", "503"} <= set(responses), (path, method)
        assert responses["422"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorResponse"
        }
    indexed = spec["components"]["schemas"]["IngestResponse"]["properties"]["indexed"]
    assert indexed["type"] == "array" and indexed["items"] == {"type": "string"}


def test_opensearch_failures_that_are_not_the_clients_are_503(settings) -> None:
    """Our own credentials refused (401/403), an overloaded (429) or failing (5xx) cluster: 503, never 400."""
    from opensearchpy.exceptions import AuthenticationException, TransportError

    class Refusing:  # stands in for the OpenSearch client
        def __init__(self, exc: Exception) -> None:
            self.exc, self.indices = exc, self

        def get_mapping(self, **_: object) -> None:
            raise self.exc

    with TestClient(create_app(settings)) as http:
        for exc in (
            AuthenticationException(401, "security_exception", {"error": {"reason": "bad credentials"}}),
            TransportError(429, "rejected_execution_exception", {"error": {"reason": "queue full"}}),
            TransportError(500, "exception", "boom"),
        ):
            http.app.state.client = Refusing(exc)
            found = http.post("/v1/indices/docs/search", json={"query": "x"})
            assert found.status_code == 503 and found.headers["retry-after"] == "5", found.text
            assert f"HTTP {exc.status_code}" in found.json()["detail"]


def test_index_errors_are_mapped_by_type(engine_settings, engine_client, splade_tiny, engine_index: str) -> None:
    """IndexNotFound -> 404; ModelMismatch (another model's index, or not a milco-os index) -> 409, on both
    index routes, each with the library's one-line message."""
    from dataclasses import replace

    other_model = replace(splade_tiny.info, name="other-model", fingerprint="0" * 16)
    create_index(engine_client, engine_index, other_model, IndexSpec(replicas=0))
    plain = f"{engine_index}-plain"
    engine_client.indices.create(index=plain, body={"settings": {"number_of_replicas": 0}})
    try:
        with TestClient(create_app(engine_settings)) as http:
            for route, body in (("search", {"query": "x"}), ("documents", [{"id": "1", "text": "x"}])):
                missing = http.post(f"/v1/indices/{engine_index}-missing/{route}", json=body)
                assert missing.status_code == 404, missing.text
                assert missing.json()["detail"] == f"index '{engine_index}-missing' does not exist"

                mismatch = http.post(f"/v1/indices/{engine_index}/{route}", json=body)
                assert mismatch.status_code == 409, mismatch.text
                assert "was built with model 'other-model'" in mismatch.json()["detail"]

                foreign = http.post(f"/v1/indices/{plain}/{route}", json=body)
                assert foreign.status_code == 409, foreign.text
                assert "was not created by milco-os" in foreign.json()["detail"]
    finally:
        engine_client.indices.delete(index=plain, ignore_unavailable=True)
    assert engine_client.count(index=engine_index)["count"] == 0  # nothing written into another model's index


def test_documents_when_opensearch_is_unavailable_are_503(settings, client, splade_tiny, index_name: str) -> None:
    """Every failed document failed only because OpenSearch was unavailable (IngestReport.unavailable): 503
    with Retry-After, and the body says nothing was written."""
    create_index(client, index_name, splade_tiny.info, IndexSpec(replicas=0))
    url = f"/v1/indices/{index_name}/documents"
    with TestClient(create_app(settings)) as http:
        http.app.dependency_overrides[get_client] = lambda: BulkDown(client)
        down = http.post(url, json=[{"id": "1", "text": "heart attack"}, {"id": 2, "text": "green tea"}])
        assert down.status_code == 503 and down.headers["retry-after"] == "5", down.text
        body = down.json()
        assert body["indexed"] == [] and [f["id"] for f in body["failed"]] == ["1", "2"]
        assert all("OpenSearch unreachable" in f["reason"] for f in body["failed"]) and body["retried"] > 0
    client.indices.refresh(index=index_name)
    assert client.count(index=index_name)["count"] == 0


def test_documents_refused_by_the_engine_are_207(engine_settings, engine_client, splade_tiny,
                                                 engine_index: str) -> None:
    """A document OpenSearch refuses (its field does not fit the mapping) is the document's fault: 207 with
    its reason, the others written, and no Retry-After."""
    create_index(engine_client, engine_index, splade_tiny.info, IndexSpec(replicas=0))
    url = f"/v1/indices/{engine_index}/documents"
    with TestClient(create_app(engine_settings)) as http:
        assert http.post(url, json=[{"id": "1", "text": "heart", "year": 2020}]).status_code == 200
        mixed = http.post(url, json=[{"id": "2", "text": "tea", "year": 2021}, {"id": "3", "text": "x", "year": "y"}])
        assert mixed.status_code == 207 and "retry-after" not in mixed.headers, mixed.text
        assert mixed.json()["indexed"] == ["2"] and [f["id"] for f in mixed.json()["failed"]] == ["3"]
        assert "year" in mixed.json()["failed"][0]["reason"]


def test_query_prune_takes_pivot_and_echo_rules(engine_settings, engine_client, splade_tiny, engine_index: str) -> None:
    """``query_prune`` is PIVOT[,ECHO], as ``milco-os search --query-prune``: one rule prunes both views."""
    import re

    from milco_os.service.schemas import PRUNE_PATTERN

    create_index(engine_client, engine_index, splade_tiny.info, IndexSpec(replicas=0))
    ingest(engine_client, engine_index, [{"id": "a", "text": "heart attack symptoms and causes"}], splade_tiny,
           refresh=True)
    query = "what are the symptoms of a heart attack"
    with TestClient(create_app(engine_settings)) as http:
        def search(prune: str):  # noqa: ANN202
            return http.post(f"/v1/indices/{engine_index}/search", json={"query": query, "query_prune": prune})

        full = search("none").json()["query"]
        both = search("top_k:2").json()["query"]
        pivot_only = search("top_k:2,none").json()["query"]
        assert len(full["pivot"]) > 2 and len(both["pivot"]) == 2 and len(pivot_only["pivot"]) == 2
        if len(full["echo"]) > 2:  # splade-tiny's echo view may be empty
            assert len(both["echo"]) == 2
        assert pivot_only["echo"] == full["echo"]

        for bad, why in (("top_k:2,none,none", "expected PIVOT[,ECHO]"), ("none,top_k:0", "top_k")):
            refused = search(bad)
            assert why in _problems(refused), refused.text
            assert refused.json()["detail"][0]["loc"] == ["body", "query_prune"]

    pattern = create_app(engine_settings).openapi()["components"]["schemas"]["SearchRequest"]["properties"]
    assert pattern["query_prune"]["pattern"] == PRUNE_PATTERN
    for ok in ("none", "top_k:16", "top_k:16,none", "mass:0.9,max_ratio:0.1"):
        assert re.match(PRUNE_PATTERN, ok), ok
    for bad in ("top_k:16,", ",none", "top_k:1,none,none", "bogus:1"):
        assert not re.match(PRUNE_PATTERN, bad), bad
