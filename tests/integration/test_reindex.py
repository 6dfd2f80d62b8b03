"""Reindex: PIT + search_after slices into a new index, counts verified, alias swapped; a SIGKILLed job
resumes with no loss and no duplicates."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from milco_os.errors import ConfigError, IndexExists, OpenSearchUnavailable
from milco_os.opensearch.bulk import BulkConfig
from milco_os.opensearch.reindex import reindex
from milco_os.pruning import Pruning
from milco_os.specs import IndexSpec


def fill_source(client, name: str, n: int) -> None:  # noqa: ANN001
    client.indices.create(index=name, body={"settings": {"number_of_shards": 2, "number_of_replicas": 0}})
    body = []
    for i in range(n):
        body.append({"index": {"_index": name, "_id": f"doc-{i:04d}"}})
        body.append({"text": f"heart attack number {i} and green tea", "id": f"field-{i}", "n": i})
    client.bulk(body=body, refresh=True)


@pytest.fixture
def dest_name(client, index_name: str):  # noqa: ANN001, ANN201
    name = index_name + "-dest"
    yield name
    client.indices.delete(index=name, ignore_unavailable=True)


@pytest.mark.parametrize("slices", [1, 3])
def test_reindex_into_a_new_index_with_alias(client, splade_tiny, index_name: str, dest_name: str, tmp_path: Path,
                                              slices: int) -> None:
    fill_source(client, index_name, 57)
    alias = index_name + "-live"
    report = reindex(
        client, index_name, dest_name, splade_tiny, spec=IndexSpec(replicas=0), checkpoint_path=tmp_path / "cp.json",
        slices=slices, alias=alias, page_size=10,
    )
    assert report.verified and report.dest_count == 57 and report.ingest.failed == 0
    assert not (tmp_path / "cp.json").exists()  # removed once the job is complete
    assert list(client.indices.get_alias(name=alias)) == [dest_name]
    doc = client.get(index=dest_name, id="doc-0007")["_source"]
    assert doc["id"] == "field-7" and doc["n"] == 7  # a source field named "id" survives
    assert "heart" in doc["milco_pivot"]
    with pytest.raises(IndexExists, match="already exists"):
        reindex(client, index_name, dest_name, splade_tiny, spec=IndexSpec(), checkpoint_path=tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_sigkill_mid_run_then_resume(client, index_name: str, dest_name: str, settings, tmp_path: Path) -> None:
    fill_source(client, index_name, 400)
    checkpoint = tmp_path / "reindex.json"
    cmd = [
        sys.executable, "-m", "milco_os.cli", "reindex", "--source", index_name, "--dest", dest_name,
        "--text-field", "text", "--slices", "2", "--page-size", "8", "--replicas", "0",
        "--checkpoint", str(checkpoint), "--url", settings.opensearch_url,
        "--dead-letter", str(tmp_path / "dead.jsonl"),
    ]
    env = dict(os.environ, MILCO_OS_CACHE_DIR=str(settings.cache_dir))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if checkpoint.exists():
            try:
                written = json.loads(checkpoint.read_text())["progress"]["written"]
            except (ValueError, KeyError):
                written = 0
            if written >= 60:
                break
        time.sleep(0.05)
    assert proc.poll() is None, f"reindex ended before it could be killed: {proc.communicate()}"
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    state = json.loads(checkpoint.read_text())["progress"]
    assert 0 < state["written"] < 400 and not all(state["done"])

    resumed = subprocess.run([*cmd, "--resume"], env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "400 of 400 documents" in resumed.stdout
    client.indices.refresh(index=dest_name)
    ids = [h["_id"] for h in client.search(index=dest_name, body={"size": 1000, "_source": False})["hits"]["hits"]]
    assert len(ids) == 400 and set(ids) == {f"doc-{i:04d}" for i in range(400)}
    assert client.count(index=dest_name)["count"] == 400
    assert not checkpoint.exists()


def test_writes_refused_mid_run_stop_the_job_and_resume_converges(client, index_name: str, dest_name: str,
                                                                 tmp_path: Path) -> None:
    """DEST refuses writes (429: a read-only-allow-delete block, as on a full disk) after the first batch:
    the job stops without moving its checkpoint past the refused batch; --resume then brings every id."""
    from tests.fakes import FakeEncoder

    fill_source(client, index_name, 120)
    checkpoint = tmp_path / "cp.json"
    alias = index_name + "-live"
    blocked: list[int] = []

    class BlockAfterFirstBatch:
        def start(self, total: int | None, completed: int) -> None:
            assert (total, completed) == (120, 0)

        def advance(self, n: int) -> None:
            if not blocked:
                blocked.append(n)
                client.indices.put_settings(index=dest_name, body={"index.blocks.read_only_allow_delete": True})

    config = BulkConfig(encode_batch=10, max_retries=1, initial_backoff=0.05)
    with pytest.raises(OpenSearchUnavailable, match="gave up after 1 retries"):
        reindex(client, index_name, dest_name, FakeEncoder(), spec=IndexSpec(replicas=0), checkpoint_path=checkpoint,
                alias=alias, page_size=10, config=config, dead_letter=tmp_path / "dead.jsonl",
                progress=BlockAfterFirstBatch())
    state = json.loads(checkpoint.read_text())["progress"]
    assert state["written"] == 10 and state["after"] == ["doc-0009"]  # not a document further
    assert not (tmp_path / "dead.jsonl").exists()  # --resume reads the refused documents again
    assert not client.indices.exists_alias(name=alias)

    client.indices.put_settings(index=dest_name, body={"index.blocks.read_only_allow_delete": None})
    report = reindex(client, index_name, dest_name, FakeEncoder(), spec=IndexSpec(replicas=0),
                     checkpoint_path=checkpoint, alias=alias, page_size=10, config=config, resume=True)
    assert report.verified and report.dest_count == 120
    ids = {h["_id"] for h in client.search(index=dest_name, body={"size": 200, "_source": False})["hits"]["hits"]}
    assert ids == {f"doc-{i:04d}" for i in range(120)}
    assert list(client.indices.get_alias(name=alias)) == [dest_name] and not checkpoint.exists()


class SearchFailsAfter:
    """The real client, except that every search after the first ``pages`` finds OpenSearch unreachable."""

    def __init__(self, real: object, pages: int) -> None:
        self.real = real
        self.pages = pages

    def __getattr__(self, name: str) -> object:
        return getattr(self.real, name)

    def search(self, *args: object, **kwargs: object) -> object:
        from opensearchpy.exceptions import ConnectionError as TransportConnectionError

        if self.pages == 0:
            raise TransportConnectionError("N/A", "connection refused (test)", None)
        self.pages -= 1
        return self.real.search(*args, **kwargs)


def test_reading_the_source_failing_mid_run_stops_the_job_and_resume_converges(client, index_name: str,
                                                                              dest_name: str, tmp_path: Path) -> None:
    """The read side's stop: SRC's third page cannot be read. The two pages read before are acknowledged, the
    job stops with OpenSearchUnavailable naming its checkpoint (no further), and --resume brings every id."""
    from tests.fakes import FakeEncoder

    fill_source(client, index_name, 120)
    checkpoint, dead = tmp_path / "cp.json", tmp_path / "dead.jsonl"
    alias = index_name + "-live"
    kwargs = {"spec": IndexSpec(replicas=0), "checkpoint_path": checkpoint, "alias": alias, "page_size": 10,
              "config": BulkConfig(encode_batch=10), "dead_letter": dead}
    with pytest.raises(OpenSearchUnavailable, match=f"reading '{index_name}' failed") as stopped:
        reindex(SearchFailsAfter(client, pages=2), index_name, dest_name, FakeEncoder(), **kwargs)
    assert stopped.value.checkpoint == checkpoint
    state = json.loads(checkpoint.read_text())["progress"]
    assert state["written"] == 20 and state["after"] == ["doc-0019"] and state["done"] == [False]
    assert not dead.exists() and not client.indices.exists_alias(name=alias)

    report = reindex(client, index_name, dest_name, FakeEncoder(), resume=True, **kwargs)
    assert report.verified and report.dest_count == 120 and report.ingest.indexed == 100
    ids = {h["_id"] for h in client.search(index=dest_name, body={"size": 200, "_source": False})["hits"]["hits"]}
    assert ids == {f"doc-{i:04d}" for i in range(120)}
    assert list(client.indices.get_alias(name=alias)) == [dest_name] and not checkpoint.exists()


def test_failed_documents_come_back_through_ingest_and_resume_verifies(client, index_name: str, dest_name: str,
                                                                      tmp_path: Path) -> None:
    """Dead-letter lines of a reindex carry the source _id as ``id`` (what `milco-os ingest` reads); the
    job stays incomplete (checkpoint kept, alias not moved) until they are in; then --resume verifies."""
    from milco_os.opensearch.ingest import Ingester
    from tests.fakes import FakeEncoder

    fill_source(client, index_name, 30)
    client.index(index=index_name, id="bad-one", body={"text": 42, "id": "its-own-field"}, refresh=True)
    checkpoint, dead = tmp_path / "cp.json", tmp_path / "dead.jsonl"
    alias = index_name + "-live"
    kwargs = {"spec": IndexSpec(replicas=0), "checkpoint_path": checkpoint, "alias": alias, "page_size": 8}
    report = reindex(client, index_name, dest_name, FakeEncoder(), dead_letter=dead, **kwargs)
    assert not report.verified and report.failed_total == 1 and report.dest_count == 30
    assert checkpoint.exists() and not client.indices.exists_alias(name=alias)
    (line,) = [json.loads(x) for x in dead.read_text().splitlines()]
    assert line["id"] == "bad-one" and line["document"]["id"] == "bad-one"
    assert "_milco_os_source_id" not in line["document"]

    fixed = {**unwrap(line), "text": "forty-two"}
    assert Ingester(client, dest_name, FakeEncoder()).run([fixed], refresh=True).indexed == 1
    other_layout = {**kwargs, "spec": IndexSpec(replicas=0, doc_pruning=Pruning.parse("top_k:5"))}
    with pytest.raises(ConfigError, match="was created with document_pruning"):
        reindex(client, index_name, dest_name, FakeEncoder(), resume=True, **other_layout)
    again = reindex(client, index_name, dest_name, FakeEncoder(), resume=True, **kwargs)
    assert again.verified and again.dest_count == 31
    assert list(client.indices.get_alias(name=alias)) == [dest_name] and not checkpoint.exists()


def unwrap(line: dict) -> dict:
    from milco_os.opensearch.ingest import unwrap_dead_letter

    return unwrap_dead_letter(line)
