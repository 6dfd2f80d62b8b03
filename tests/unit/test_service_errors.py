"""The service maps the library's exceptions to HTTP statuses by type, never by message text.

No OpenSearch and no model: the client and encoder dependencies are overridden with stand-ins that raise,
and the app's lifespan never runs (the test client is not entered)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

from milco_os.errors import (
    ConfigError,
    EncodingError,
    IndexExists,
    IndexNotFound,
    IngestError,
    ModelMismatch,
    OpenSearchUnavailable,
    SearchIndexError,
)
from milco_os.service.app import create_app
from milco_os.service.routes import get_client, get_encoder
from milco_os.settings import Settings


class Raising:
    """Stands in for the OpenSearch client (and its ``indices``): reading an index's mapping raises."""

    def __init__(self, exc: Exception) -> None:
        self.exc, self.indices = exc, self

    def get_mapping(self, **_: object) -> None:
        raise self.exc


class FailingEncoder:
    info = SimpleNamespace(name="fake")  # the index routes read the mapping first, which raises

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def encode_queries(self, _: list[str]) -> None:
        raise self.exc

    encode_documents = encode_queries


@pytest.fixture
def http() -> TestClient:
    return TestClient(create_app(Settings(opensearch_url="http://127.0.0.1:9")), raise_server_exceptions=False)


def _raise_from_client(http: TestClient, exc: Exception) -> None:
    http.app.dependency_overrides[get_client] = lambda: Raising(exc)
    http.app.dependency_overrides[get_encoder] = lambda: FailingEncoder(AssertionError("not reached"))


# Messages chosen to mislead a mapping by text: "does not exist" in a 409's message, none in the 404's.
CASES = [
    (IndexNotFound("docs"), 404),
    (ModelMismatch("index 'docs' does not exist for this model (built by another)", "docs", "other"), 409),
    (IndexExists("docs"), 409),
    (SearchIndexError("'docs' names 2 indices, which does not exist as one; give exactly one"), 409),
    (OpenSearchUnavailable("writing 'docs': OpenSearch unreachable: ConnectionError"), 503),
]


@pytest.mark.parametrize(("exc", "status"), CASES, ids=[f"{type(e).__name__}-{s}" for e, s in CASES])
@pytest.mark.parametrize("route", ["search", "documents"])
def test_index_route_errors_map_by_type(http: TestClient, exc: Exception, status: int, route: str) -> None:
    _raise_from_client(http, exc)
    body = {"query": "x"} if route == "search" else [{"id": "1", "text": "x"}]
    answer = http.post(f"/v1/indices/docs/{route}", json=body)
    assert answer.status_code == status, answer.text
    assert answer.json() == {"detail": str(exc)}
    assert (answer.headers.get("retry-after") == "5") is (status == 503)


@pytest.mark.parametrize("exc", [ConfigError("field 'x': bad\nsecond line"), EncodingError("text 0: not a string")])
def test_config_and_encoding_errors_are_422_in_list_form(http: TestClient, exc: Exception) -> None:
    http.app.dependency_overrides[get_encoder] = lambda: FailingEncoder(exc)
    answer = http.post("/v1/encode", json={"texts": ["x"]})
    assert answer.status_code == 422, answer.text
    (problem,) = answer.json()["detail"]
    assert problem["loc"] == ["body"] and problem["type"] == "value_error"
    assert problem["msg"] == " ".join(str(exc).split())  # one line


def test_an_ingest_error_that_is_not_an_outage_is_not_a_503(http: TestClient) -> None:
    """Only OpenSearchUnavailable says "try again later"; its base class IngestError has no mapping."""
    _raise_from_client(http, IngestError("documents could not be written"))
    answer = http.post("/v1/indices/docs/search", json={"query": "x"})
    assert answer.status_code == 500 and "retry-after" not in answer.headers


def test_messages_lose_credentials(http: TestClient) -> None:
    _raise_from_client(http, OpenSearchUnavailable("https://admin:hunter2@node:9200 unreachable"))
    answer = http.post("/v1/indices/docs/search", json={"query": "x"})
    assert answer.status_code == 503 and "hunter2" not in answer.text and "***@node" in answer.text


def test_term_statistics_are_kept_for_a_bounded_number_of_indices(monkeypatch) -> None:  # noqa: ANN001
    from types import SimpleNamespace

    from milco_os.opensearch import indices, search
    from milco_os.pruning import Pruning
    from milco_os.service import routes
    from milco_os.specs import SearchOptions

    read: list[str] = []

    def fake_stats(client, index, record, options):  # noqa: ANN001, ANN202
        read.append(index)
        return SimpleNamespace(age_s=0.0, index=index)

    monkeypatch.setattr(search, "term_stats", fake_stats)
    monkeypatch.setattr(indices, "index_record", lambda client, index: {})
    request = SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(term_stats={})))
    options = SearchOptions(query_pruning=Pruning.parse("selective:0.2"))
    for i in range(routes.STATS_INDICES + 2):  # two too many: the two least recently searched go
        routes.cached_stats(request, None, f"i{i}", options)
        if i == 3:
            routes.cached_stats(request, None, "i0", options)  # searched again: now the most recent
    kept = request.app.state.term_stats
    assert len(kept) == routes.STATS_INDICES and "i0" in kept and "i1" not in kept and "i2" not in kept
    assert read.count("i0") == 1, "a kept index is not read again"
    assert routes.cached_stats(request, None, "x", SearchOptions()) is None, "no statistics when none are needed"
