"""`milco-os reindex` under faults: the node SIGKILLed mid-run, the reindex itself SIGKILLed.

Every scenario ends converged (DEST holds exactly SOURCE's ids, once each) after `--resume`, and the
alias, which points at SOURCE to begin with, is moved to DEST only once the counts verify, never before.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.faults.conftest import FaultNode
from tests.faults.helpers import (
    Cli,
    Run,
    all_ids,
    assert_converged,
    check_clean_stop,
    check_success,
    dead_letter_ids,
    read_checkpoint,
    slice_ids,
    wait_until,
)

pytestmark = pytest.mark.integration

N_DOCS = 1500
SLICES = 2
TIMEOUT_S = 2
FIRST_CHECKPOINT_S = 120
GIVE_UP_S = 120


def alias_targets(client: Any, alias: str) -> list[str]:
    if not client.indices.exists_alias(name=alias):
        return []
    return sorted(client.indices.get_alias(name=alias))


class Reindex:
    """SOURCE filled with plain bulk requests, an alias on it, and the CLI arguments that reindex it."""

    def __init__(self, cli: Cli, client: Any, tmp_path: Path, name: str) -> None:
        self.cli, self.client = cli, client
        self.source, self.dest, self.alias = name, f"{name}-dest", f"{name}-live"
        self.checkpoint = tmp_path / "reindex-checkpoint.json"
        self.dead = tmp_path / "reindex-dead.jsonl"
        self.ids = [f"doc-{i:05d}" for i in range(N_DOCS)]
        client.indices.create(index=self.source, body={"settings": {"number_of_shards": 2, "number_of_replicas": 0}})
        for start in range(0, N_DOCS, 500):
            body: list[dict[str, Any]] = []
            for i in range(start, min(start + 500, N_DOCS)):
                body.append({"index": {"_index": self.source, "_id": self.ids[i]}})
                # a source field named "id" that differs from _id must not become the id in DEST
                body.append({"text": f"green tea and a quiet river, page {i}", "id": f"field-{i}", "n": i})
            assert not client.bulk(body=body)["errors"]
        client.indices.refresh(index=self.source)
        client.indices.put_alias(index=self.source, name=self.alias)
        self.slices = [slice_ids(client, self.source, s, SLICES) for s in range(SLICES)]
        assert sorted(doc for doc, _ in self.slices[0] + self.slices[1]) == self.ids
        self.args = ["reindex", "--source", self.source, "--dest", self.dest, "--text-field", "text",
                     "--checkpoint", str(self.checkpoint), "--alias", self.alias, "--slices", str(SLICES),
                     "--page-size", "16", "--replicas", "0", "--dead-letter", str(self.dead),
                     "--timeout", str(TIMEOUT_S), "--max-retries", "1"]

    def start(self, resume: bool = False) -> Run:
        return self.cli.start(*self.args, *(["--resume"] if resume else []))

    def progress(self, at_least: int) -> dict[str, Any] | None:
        state = read_checkpoint(self.checkpoint)
        return state if state and int(state.get("written", 0)) >= at_least else None

    def check_interrupted(self, state: dict[str, Any]) -> None:
        """After a stop: the alias has not moved, and no slice's progress runs ahead of DEST."""
        assert alias_targets(self.client, self.alias) == [self.source], "the alias moved before the reindex finished"
        assert not all(state["done"]), f"an interrupted run marked every slice done: {state}"
        self.client.indices.refresh(index=self.dest)
        kept = set(all_ids(self.client, self.dest)) | set(dead_letter_ids(self.dead))
        for s, read in enumerate(self.slices):
            after = state["after"][s]
            claimed = [doc for doc, at in read if state["done"][s] or (after is not None and at <= after)]
            lost = [i for i in claimed if i not in kept]
            assert not lost, f"slice {s}: checkpoint {state} is past {len(lost)} unwritten documents, e.g. {lost[:5]}"

    def resume_to_the_end(self) -> None:
        """--resume converges; while it runs, the alias never points at an incomplete DEST."""
        run = self.start(resume=True)
        deadline = time.monotonic() + 240
        while run.running():
            if self.dest in alias_targets(self.client, self.alias):
                count = int(self.client.count(index=self.dest)["count"])
                assert count == N_DOCS, f"the alias points at {self.dest} holding {count} of {N_DOCS} documents"
            assert time.monotonic() < deadline, "the resumed reindex did not finish within 240s"
            time.sleep(0.2)
        result = run.wait(10)
        check_success(result, self.checkpoint)
        # whitespace-normalised: rich wraps stdout at 80 columns when it is not a terminal
        assert f"{N_DOCS} of {N_DOCS} documents" in " ".join(result.stdout.split()), result.describe()
        assert alias_targets(self.client, self.alias) == [self.dest]
        assert_converged(self.client, self.dest, self.ids)
        assert_converged(self.client, self.alias, self.ids)
        doc = self.client.get(index=self.dest, id="doc-00007")["_source"]
        assert doc["id"] == "field-7" and doc["n"] == 7


@pytest.fixture
def job(node: FaultNode, cli: Cli, tmp_path: Path) -> Iterator[Reindex]:
    job = Reindex(cli, node.client, tmp_path, f"faults-{uuid.uuid4().hex[:10]}")
    yield job
    node.delete_index(job.source, job.dest)


def test_node_sigkill_mid_reindex_then_resume(node: FaultNode, job: Reindex) -> None:
    run = job.start()
    wait_until(lambda: job.progress(96), FIRST_CHECKPOINT_S, "reindex progress", watch=run)
    node.kill()
    assert run.running(), "the reindex finished before the node could be killed"

    stopped = run.wait(GIVE_UP_S, "the reindex with the node down")
    state = check_clean_stop(stopped, job.checkpoint)

    node.restart()
    job.check_interrupted(state)
    job.resume_to_the_end()


def test_reindex_sigkill_right_after_a_checkpoint_then_resume(node: FaultNode, job: Reindex) -> None:
    run = job.start()
    state = wait_until(lambda: job.progress(1), FIRST_CHECKPOINT_S, "the first acknowledged batch", watch=run)
    run.kill()  # SIGKILL, right after the checkpoint write
    state = read_checkpoint(job.checkpoint) or state
    assert int(state["written"]) < N_DOCS
    job.check_interrupted(state)
    job.resume_to_the_end()
