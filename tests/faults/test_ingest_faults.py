"""`milco-os ingest` under faults: the node SIGKILLed or paused mid-run, the ingest itself SIGKILLed.

Every scenario ends converged: the index holds exactly the file's ids, once each. A run that cannot
finish stops with exit code 1 and one line on stderr (no traceback), keeping its checkpoint, and
`--resume` (plus, if it has lines, an ingest of the dead-letter file as it is) finishes the job.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.faults.conftest import FaultNode
from tests.faults.helpers import (
    Cli,
    all_ids,
    assert_converged,
    check_clean_stop,
    check_success,
    dead_letter_ids,
    read_checkpoint,
    wait_until,
    write_docs,
)

pytestmark = pytest.mark.integration

TIMEOUT_S = 2  # --timeout: short, so a dead or paused node is noticed quickly
FIRST_CHECKPOINT_S = 120  # CLI start-up (torch import, model load) on 2 busy cores, then one batch
GIVE_UP_S = 120  # bounded retries must end the run well within this


@pytest.fixture
def index(node: FaultNode, splade_info: Any) -> Any:
    from milco_os.opensearch.indices import create_index
    from milco_os.specs import IndexSpec

    name = f"faults-{uuid.uuid4().hex[:10]}"
    create_index(node.client, name, splade_info, IndexSpec(replicas=0))
    yield name
    node.delete_index(name)


class Ingest:
    """One file, its checkpoint and dead-letter file, and the CLI arguments that ingest it."""

    def __init__(self, cli: Cli, tmp_path: Path, index: str, n: int) -> None:
        self.cli = cli
        self.index = index
        self.file = tmp_path / "docs.jsonl"
        self.ids = write_docs(self.file, n)
        self.checkpoint = tmp_path / "docs.jsonl.milco-os-checkpoint.json"
        self.dead = tmp_path / "dead.jsonl"
        self.args = ["ingest", str(self.file), "--index", index, "--dead-letter", str(self.dead),
                     "--max-retries", "1", "--timeout", str(TIMEOUT_S)]

    def start(self, resume: bool = False) -> Any:
        return self.cli.start(*self.args, *(["--resume"] if resume else []))

    def progress(self, after: int = 0) -> dict[str, Any] | None:
        """The checkpoint once it records more than ``after`` documents done."""
        state = read_checkpoint(self.checkpoint)
        return state if state and int(state["done"]) > after else None

    def check_acknowledged(self, client: Any, state: dict[str, Any]) -> None:
        """Progress never runs ahead of OpenSearch: every document up to the checkpoint's line is stored
        (or, having failed for good, in the dead-letter file)."""
        client.indices.refresh(index=self.index)
        kept = set(all_ids(client, self.index)) | set(dead_letter_ids(self.dead))
        lost = [i for i in self.ids[: int(state["line"])] if i not in kept]
        assert not lost, f"checkpoint {state} is past {len(lost)} unacknowledged documents, e.g. {lost[:5]}"

    def finish(self, client: Any) -> None:
        """--resume, then the dead-letter file as it is (if it has lines): the index converges."""
        check_success(self.cli.run(*self.args, "--resume"), self.checkpoint)
        if dead_letter_ids(self.dead):
            again = self.cli.run("ingest", str(self.dead), "--index", self.index,
                                 "--dead-letter", str(self.dead.with_name("dead-again.jsonl")))
            check_success(again, self.dead.with_name(self.dead.name + ".milco-os-checkpoint.json"))
        assert_converged(client, self.index, self.ids)


def test_node_sigkill_mid_ingest_then_resume(node: FaultNode, cli: Cli, index: str, tmp_path: Path) -> None:
    job = Ingest(cli, tmp_path, index, 2000)
    run = job.start()
    at_kill = wait_until(job.progress, FIRST_CHECKPOINT_S, "the first checkpoint", watch=run)
    node.kill()
    assert run.running(), "the ingest finished before the node could be killed"

    stopped = run.wait(GIVE_UP_S, "the ingest with the node down")  # it gives up while the node is down
    state = check_clean_stop(stopped, job.checkpoint)
    assert int(state["done"]) >= int(at_kill["done"])
    assert int(state["done"]) < len(job.ids), f"checkpoint claims everything is done with the node dead: {state}"

    node.restart()
    job.check_acknowledged(node.client, state)
    job.finish(node.client)


def test_ingest_sigkill_three_times_right_after_checkpoints(node: FaultNode, cli: Cli, index: str,
                                                             tmp_path: Path) -> None:
    job = Ingest(cli, tmp_path, index, 2000)
    done = 0
    for kill in range(3):
        run = job.start(resume=kill > 0)
        state = wait_until(lambda after=done: job.progress(after), FIRST_CHECKPOINT_S, f"checkpoint {kill + 1}",
                           watch=run)
        run.kill()  # SIGKILL, right after the checkpoint write
        assert int(state["done"]) > done
        done = int(state["done"])
        assert done < len(job.ids), f"the ingest was done before kill {kill + 1}: {state}"
        assert read_checkpoint(job.checkpoint) is not None, "a killed run must leave its checkpoint"
        job.check_acknowledged(node.client, state)
    assert not dead_letter_ids(job.dead), "nothing failed: the kills were of the ingest, not of OpenSearch"
    job.finish(node.client)


#: The longest an ingest with --max-retries 1 may keep trying a silent node: opensearch-py tries each request
#: 3 times (max_retries=2, retry_on_timeout) for --timeout each, then one backoff (1s), then all that again.
GIVE_UP_WHILE_PAUSED_S = 2 * 3 * TIMEOUT_S + 1 + 20  # + slack for 2 busy cores


@pytest.mark.parametrize("pause", ["short", "long"])
def test_node_paused_with_a_bulk_request_in_flight(node: FaultNode, cli: Cli, index: str, tmp_path: Path,
                                                   pause: str) -> None:
    """SIGSTOP the node right after a checkpoint (the next bulk request is on its way).

    short: a few seconds past --timeout, then SIGCONT: the ingest finishes by itself (retries) or stops
    cleanly and --resume finishes. long: the node stays stopped until the bounded retries give up, so the
    run must stop cleanly while the node is still paused; the requests that timed out are applied once
    the node continues, and the resumed run writes them again by id (no duplicates)."""
    job = Ingest(cli, tmp_path, index, 2000)
    run = job.start()
    wait_until(job.progress, FIRST_CHECKPOINT_S, "the first checkpoint", watch=run)
    with node.paused():
        if pause == "short":
            time.sleep(TIMEOUT_S + 4)  # past the request timeout: the bulk request in flight times out
            assert run.running() or run.result().returncode != 0, "the ingest finished while the node was paused"
        else:
            stopped = run.wait(GIVE_UP_WHILE_PAUSED_S, "the ingest with the node paused (bounded retries)")
            state = check_clean_stop(stopped, job.checkpoint)
    if pause == "long":
        node.wait_yellow()
        job.check_acknowledged(node.client, state)
        job.finish(node.client)
        return

    result = run.wait(GIVE_UP_S, "the ingest after the node was paused")
    if result.returncode == 0:  # it retried through the pause by itself
        check_success(result, job.checkpoint)
        assert not dead_letter_ids(job.dead), f"exit code 0 but documents were dead-lettered\n{result.describe()}"
        assert_converged(node.client, index, job.ids)
        return
    state = check_clean_stop(result, job.checkpoint)
    job.check_acknowledged(node.client, state)
    job.finish(node.client)
