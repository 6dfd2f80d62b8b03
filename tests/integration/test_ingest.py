"""Ingest, on each engine: invalid documents are reported and kept; retries are bounded; an outage of the node
mid-ingest loses nothing that was acknowledged; a model mismatch is refused."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from milco_os.errors import ModelMismatch
from milco_os.opensearch.bulk import BulkConfig, BulkWriter
from milco_os.opensearch.indices import create_index
from milco_os.opensearch.ingest import Ingester, IngestReport, ingest_file, unwrap_dead_letter
from milco_os.specs import IndexSpec
from tests.conftest import TEST_ENGINES
from tests.fakes import FakeEncoder


def docs(n: int, prefix: str = "d") -> list[dict]:
    return [{"id": f"{prefix}{i}", "text": f"der Hund und Tee {i}", "n": i} for i in range(n)]


def test_invalid_documents_go_to_the_dead_letter_file(engine_client, engine_index: str, tmp_path: Path) -> None:
    encoder = FakeEncoder()
    create_index(engine_client, engine_index, encoder.info, IndexSpec(replicas=0))
    batch = docs(10) + [
        {"text": "no id"},
        {"id": "bad-type", "text": 42},
        {"id": "empty", "text": ""},
        ["not", "an", "object"],
        {"id": "ok-extra", "text": "Vulkan", "lang": "de"},
    ]
    dead = tmp_path / "dead.jsonl"
    report = Ingester(engine_client, engine_index, encoder, dead_letter=dead).run(batch, refresh=True)
    assert report.indexed == 11 and report.failed == 4
    assert engine_client.count(index=engine_index)["count"] == 11
    reasons = dict(report.failures)
    assert "field 'id': missing" in reasons["None"]
    assert "field 'text': must be a string, got int" in reasons["bad-type"]
    assert "no text" in reasons["empty"]
    records = [json.loads(line) for line in dead.read_text().splitlines()]
    assert len(records) == 4 and {"text": 42, "id": "bad-type"} in [r["document"] for r in records]
    assert engine_client.get(index=engine_index, id="ok-extra")["_source"]["lang"] == "de"


def test_a_file_ingest_is_searchable_when_it_returns_only_with_refresh(engine_client, engine_index: str,
                                                                        tmp_path: Path) -> None:
    encoder = FakeEncoder()
    create_index(engine_client, engine_index, encoder.info, IndexSpec(replicas=0))
    engine_client.indices.put_settings(index=engine_index, body={"index": {"refresh_interval": "-1"}})
    source = tmp_path / "docs.jsonl"
    source.write_text("".join(json.dumps(d) + "\n" for d in docs(5)))
    ingest_file(engine_client, engine_index, encoder, source)
    assert engine_client.count(index=engine_index)["count"] == 0  # written, not yet visible: no refresh
    ingest_file(engine_client, engine_index, encoder, source, refresh=True)
    assert engine_client.count(index=engine_index)["count"] == 5


def test_writes_are_idempotent_by_id(engine_client, engine_index: str) -> None:
    encoder = FakeEncoder()
    create_index(engine_client, engine_index, encoder.info, IndexSpec(replicas=0))
    ingester = Ingester(engine_client, engine_index, encoder, config=BulkConfig(encode_batch=7, max_docs=5))
    ingester.run(docs(40), refresh=True)
    ingester.run(docs(40), refresh=True)
    assert engine_client.count(index=engine_index)["count"] == 40


def test_with_versions_by_position_a_later_line_stays_whichever_write_comes_last(engine_client,
                                                                               engine_index: str) -> None:
    """What the Ray path relies on: batches written out of input order, and one written twice, still leave each
    id's last line stored; the older line is superseded (not failed, not dead-lettered)."""
    encoder = FakeEncoder()
    create_index(engine_client, engine_index, encoder.info, IndexSpec(replicas=0))
    ingester = Ingester(engine_client, engine_index, encoder)
    later = [{"id": "a", "text": "Tee later"}, {"id": "b", "text": "Hund"}]
    first = ingester.write_batch(later, first_version=1_000)
    earlier = ingester.write_batch([{"id": "c", "text": "Vulkan"}, {"id": "a", "text": "Tee earlier"}],
                                   first_version=998)  # lines before `later`, written after it
    again = ingester.write_batch(later, first_version=1_000)  # the same batch again (its actor died after writing)
    assert sorted(first.outcome.written) == ["a", "b"]
    assert earlier.outcome.written == ["c"] and earlier.outcome.superseded == ["a"] and not earlier.outcome.failed
    assert sorted(again.outcome.written) == ["a", "b"] and not again.outcome.superseded
    assert engine_client.get(index=engine_index, id="a")["_source"]["text"] == "Tee later"
    report = IngestReport()
    for result in (first, earlier, again):
        ingester.acknowledge(report, result)
    assert (report.indexed, report.superseded, report.failed) == (5, 1, 0)


def test_model_mismatch_is_refused(engine_client, engine_index: str) -> None:
    create_index(engine_client, engine_index, FakeEncoder(fingerprint="sha256:one").info, IndexSpec(replicas=0))
    with pytest.raises(ModelMismatch, match=r"was built with model 'fake' \(sha256:one\).*sha256:two"):
        Ingester(engine_client, engine_index, FakeEncoder(fingerprint="sha256:two"))


@pytest.mark.parametrize("engine_name", [e for e in TEST_ENGINES if e in ("opensearch", "elasticsearch")])
def test_the_node_stopped_mid_ingest_loses_nothing_acknowledged(cache_dir: Path, tmp_path: Path,
                                                               engine_name: str) -> None:
    """A node of its own is stopped after the first acknowledged batch: the job retries (bounded), then
    reports the rest as failed and keeps them; after a restart every acknowledged document is there."""
    from milco_os.localnode import LocalNode
    from milco_os.opensearch.client import make_client
    from milco_os.settings import Settings

    node = LocalNode(cache_dir, {"opensearch": 9264, "elasticsearch": 9266}[engine_name], engine=engine_name)
    node.up(heap="512m", fresh=True)
    try:
        client = make_client(Settings(opensearch_url=node.url, opensearch_timeout=5, engine=engine_name))
        encoder = FakeEncoder(delay=0.2)
        create_index(client, "outage", encoder.info, IndexSpec(replicas=0))
        sleeps: list[float] = []
        config = BulkConfig(encode_batch=10, max_retries=3, initial_backoff=0.1, max_backoff=0.4)
        ingester = Ingester(client, "outage", encoder, config=config, dead_letter=tmp_path / "dead.jsonl",
                            sleep=lambda s: (sleeps.append(s), time.sleep(s)))
        stopper: list[threading.Thread] = []

        def on_batch(n: int, report) -> None:  # noqa: ANN001
            if not stopper:
                stopper.append(threading.Thread(target=node.down))
                stopper[0].start()
                stopper[0].join()  # the node is gone before the next bulk request is sent

        all_docs = docs(60)
        report = ingester.run(all_docs, on_batch=on_batch)
        assert report.indexed >= 10 and report.failed > 0
        assert report.indexed + report.failed == 60
        assert report.retried > 0 and max(sleeps) <= 0.4  # bounded, capped backoff
        failed_ids = {doc_id for doc_id, _ in report.failures}
        assert all("gave up after 3 retries" in reason for _, reason in report.failures)
        dead = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text().splitlines()]
        assert {r["id"] for r in dead} == failed_ids
        assert all(r["document"]["text"].startswith("der Hund") for r in dead)

        node.up(heap="512m")
        client.indices.refresh(index="outage")
        stored = {h["_id"] for h in client.search(index="outage", body={"size": 100, "_source": False})["hits"]["hits"]}
        assert stored == {d["id"] for d in all_docs} - failed_ids  # every acknowledged document is there

        # Once OpenSearch is back, the kept documents go in from the dead-letter file as they are.
        kept = [unwrap_dead_letter(json.loads(x)) for x in (tmp_path / "dead.jsonl").read_text().splitlines()]
        again = Ingester(client, "outage", FakeEncoder()).run(kept, refresh=True)
        assert again.failed == 0 and again.indexed == len(failed_ids)
        assert client.count(index="outage")["count"] == 60
    finally:
        node.down()


def test_one_bad_document_does_not_sink_its_bulk_request(engine_client, engine_index: str) -> None:
    """OpenSearch refuses a whole bulk request for one _id over 512 bytes; the writer halves the request
    until the bad document is alone, so the others are written and the bad one's reason is OpenSearch's."""
    engine_client.indices.create(index=engine_index, body={"settings": {"number_of_replicas": 0}})
    long_id = "x" * 600
    actions = [{"_index": engine_index, "_id": i, "_source": {"text": "t"}} for i in ("a", "b", long_id, "c", "d")]
    outcome = BulkWriter(engine_client, BulkConfig()).write(actions)
    assert sorted(outcome.written) == ["a", "b", "c", "d"] and not outcome.unavailable
    ((bad_id, reason),) = outcome.failed
    assert bad_id == long_id and "HTTP 400" in reason and "512" in reason


def test_ingest_refuses_overlong_ids_and_texts_and_keeps_the_rest(engine_client, engine_index: str,
                                                                 tmp_path: Path) -> None:
    encoder = FakeEncoder()
    create_index(engine_client, engine_index, encoder.info, IndexSpec(replicas=0))
    batch = [*docs(3), {"id": "y" * 600, "text": "ok"}, {"id": "huge", "text": "z " * 60}]
    ingester = Ingester(engine_client, engine_index, encoder, dead_letter=tmp_path / "dead.jsonl", max_chars=100)
    report = ingester.run(batch, refresh=True)
    assert report.indexed == 3
    reasons = dict(report.failures)
    assert "512 bytes" in reasons["y" * 600] and "over the limit of 100" in reasons["huge"]
    assert engine_client.count(index=engine_index)["count"] == 3
