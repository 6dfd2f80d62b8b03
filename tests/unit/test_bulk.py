"""The bulk path offline: a real opensearch-py client whose transport answers from a script, so 429s, 5xxs,
refused requests and lost connections can be played exactly. Only failed items are sent again, retries are
bounded, and what still fails is dead-lettered."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from opensearchpy import OpenSearch
from opensearchpy.exceptions import ConnectionError as TransportConnectionError
from opensearchpy.exceptions import RequestError

from milco_os.opensearch.bulk import BulkConfig, BulkWriter, write_documents
from milco_os.opensearch.ingest import Ingester
from milco_os.opensearch.mapping import index_body
from milco_os.specs import IndexSpec
from tests.fakes import FakeEncoder

FAST = BulkConfig(max_retries=2, initial_backoff=0.0, max_backoff=0.0)
Answer = Callable[[list[str]], Any]  # ids of one bulk request -> its response (or raises)


class ScriptedTransport:
    """Answers each bulk request with the next answer of the script; records the ids each request carried."""

    def __init__(self, client: OpenSearch, answers: list[Answer], mapping: dict[str, Any] | None = None) -> None:
        self.answers = list(answers)
        self.requests: list[list[str]] = []
        self.mapping = mapping
        client.transport.perform_request = self.perform_request  # type: ignore[method-assign]

    def perform_request(self, method: str, url: str, params: Any = None, body: Any = None, **_: Any) -> Any:
        if url.endswith("/_mapping"):
            return self.mapping
        assert url.endswith("/_bulk"), url
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        ids = [line["index"]["_id"] for line in lines if "index" in line]
        self.requests.append(ids)
        return self.answers.pop(0)(ids)


def items(*statuses: int) -> Answer:
    """A bulk response with these per-item statuses, in request order."""

    def answer(ids: list[str]) -> dict[str, Any]:
        assert len(ids) == len(statuses), (ids, statuses)
        out = []
        for doc_id, status in zip(ids, statuses, strict=True):
            item: dict[str, Any] = {"_index": "docs", "_id": doc_id, "status": status}
            if status >= 300:
                item["error"] = {"type": "es_rejected_execution_exception" if status == 429 else "failure",
                                 "reason": f"status {status}"}
            out.append({"index": item})
        return {"took": 1, "errors": any(s >= 300 for s in statuses), "items": out}

    return answer


def all_ok(ids: list[str]) -> dict[str, Any]:
    return items(*[201] * len(ids))(ids)


def connection_lost(ids: list[str]) -> Any:
    raise TransportConnectionError("N/A", "connection reset by peer", OSError("reset"))


@pytest.fixture
def client() -> OpenSearch:
    return OpenSearch(hosts=["http://127.0.0.1:1"], max_retries=0)


def actions(*ids: str) -> list[dict[str, Any]]:
    return [{"_op_type": "index", "_index": "docs", "_id": i, "_source": {"text": i}} for i in ids]


def test_429_items_are_retried_alone_until_written(client: OpenSearch) -> None:
    script = ScriptedTransport(client, [items(201, 429, 201), items(201)])
    outcome = BulkWriter(client, FAST).write(actions("a", "b", "c"))
    assert sorted(outcome.written) == ["a", "b", "c"] and not outcome.failed and not outcome.unavailable
    assert script.requests == [["a", "b", "c"], ["b"]]


def test_5xx_items_are_retried_alone_and_counted(client: OpenSearch) -> None:
    script = ScriptedTransport(client, [items(503, 201), items(201)])
    writer = BulkWriter(client, FAST)
    outcome = writer.write(actions("a", "b"))
    assert sorted(outcome.written) == ["a", "b"]
    assert script.requests == [["a", "b"], ["a"]] and writer.retried == 1


def test_retries_are_bounded_then_unavailable(client: OpenSearch) -> None:
    script = ScriptedTransport(client, [items(201, 503), items(503), items(503)])
    outcome = BulkWriter(client, FAST).write(actions("a", "b"))
    assert outcome.written == ["a"] and not outcome.failed
    assert [doc_id for doc_id, _ in outcome.unavailable] == ["b"]
    assert "gave up after 2 retries" in outcome.unavailable[0][1]
    assert len(script.requests) == 1 + FAST.max_retries


def test_connection_lost_mid_request_resends_the_whole_request(client: OpenSearch) -> None:
    script = ScriptedTransport(client, [connection_lost, all_ok])
    outcome = BulkWriter(client, FAST).write(actions("a", "b", "c"))
    assert sorted(outcome.written) == ["a", "b", "c"]
    assert script.requests == [["a", "b", "c"], ["a", "b", "c"]]


def test_connection_never_back_is_unavailable_not_failed(client: OpenSearch) -> None:
    ScriptedTransport(client, [connection_lost] * 3)
    outcome = BulkWriter(client, FAST).write(actions("a", "b"))
    assert not outcome.written and not outcome.failed
    assert {doc_id for doc_id, _ in outcome.unavailable} == {"a", "b"}
    assert "OpenSearch unreachable" in outcome.unavailable[0][1]


def test_document_errors_are_failed_at_once(client: OpenSearch) -> None:
    script = ScriptedTransport(client, [items(201, 400)])
    outcome = BulkWriter(client, FAST).write(actions("a", "b"))
    assert outcome.written == ["a"] and outcome.failed[0][0] == "b" and "HTTP 400" in outcome.failed[0][1]
    assert len(script.requests) == 1


def test_a_request_refused_whole_is_halved_until_the_bad_document_is_alone(client: OpenSearch) -> None:
    def refuse_if_bad(ids: list[str]) -> Any:
        if "bad" in ids:
            raise RequestError(400, "illegal_argument_exception", {"error": {
                "root_cause": [{"type": "illegal_argument_exception", "reason": "id is too long"}]}})
        return all_ok(ids)

    script = ScriptedTransport(client, [refuse_if_bad] * 8)
    outcome = BulkWriter(client, FAST).write(actions("a", "b", "bad", "d"))
    assert sorted(outcome.written) == ["a", "b", "d"]
    assert outcome.failed == [("bad", "bulk request failed with HTTP 400: illegal_argument_exception: id is too long")]
    assert script.requests[0] == ["a", "b", "bad", "d"] and ["bad"] in script.requests


def test_requests_are_cut_by_count(client: OpenSearch) -> None:
    script = ScriptedTransport(client, [all_ok] * 3)
    outcome = write_documents(client, "docs", [(str(i), {"text": "x"}) for i in range(5)], BulkConfig(max_docs=2))
    assert len(outcome.written) == 5 and [len(r) for r in script.requests] == [2, 2, 1]


def test_ingest_dead_letters_what_still_fails(client: OpenSearch, tmp_path: Path) -> None:
    encoder = FakeEncoder()
    mapping = {"docs": {"mappings": index_body(encoder.info, IndexSpec())["mappings"]}}
    ScriptedTransport(client, [items(201, 503, 400), items(503), items(503)], mapping=mapping)
    dead = tmp_path / "failed.jsonl"
    ingester = Ingester(client, "docs", encoder, config=FAST, dead_letter=dead)
    report = ingester.run([{"id": i, "text": f"text {i}"} for i in ("a", "b", "c")])
    assert report.indexed == 1 and report.failed == 2 and report.unavailable == ["b"]
    lines = [json.loads(line) for line in dead.read_text().splitlines()]
    assert {line["id"] for line in lines} == {"b", "c"}
    assert all(line["document"]["text"].startswith("text ") for line in lines)


def conflict(stored: dict[str, int]) -> Answer:
    """Every item refused as OpenSearch refuses an external version at or below the stored one."""

    def answer(ids: list[str]) -> dict[str, Any]:
        out = [{"index": {"_index": "docs", "_id": doc_id, "status": 409, "error": {
            "type": "version_conflict_engine_exception",
            "reason": f"[{doc_id}]: version conflict, current version [{stored[doc_id]}] is higher or equal to the "
                      "one provided [5]"}}} for doc_id in ids]
        return {"took": 1, "errors": True, "items": out}

    return answer


def test_an_older_external_version_is_superseded_not_failed(client: OpenSearch) -> None:
    script = ScriptedTransport(client, [conflict({"a": 9, "b": 5})])
    versioned = [{**action, "version": 5, "version_type": "external"} for action in actions("a", "b")]
    outcome = BulkWriter(client, FAST).write(versioned)
    # a: a later line is stored (version 9); b: this very write got through on an earlier attempt (version 5)
    assert outcome.superseded == ["a"] and outcome.written == ["b"]
    assert not outcome.failed and not outcome.unavailable and len(script.requests) == 1


def test_a_conflict_without_external_versions_is_a_failure(client: OpenSearch) -> None:
    ScriptedTransport(client, [conflict({"a": 9})])
    outcome = BulkWriter(client, FAST).write(actions("a"))
    assert outcome.failed[0][0] == "a" and not outcome.superseded
