"""Fixtures of the fault-injection suite: a dedicated local node of each engine under test (OpenSearch on port 9280,
Elasticsearch on 9282, never the shared test nodes) that the tests SIGKILL, SIGSTOP and restart, and a runner for the
CLI as a subprocess."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TEST_ENGINES
from tests.faults.helpers import Cli

PORTS = {"opensearch": 9280, "elasticsearch": 9282}
HEAP = "512m"
START_TIMEOUT = 120.0


def group_members(pgid: int) -> list[int]:
    """The live processes of process group ``pgid`` (a node's session: it is started in one of its own)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text(encoding="ascii").rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


class FaultNode:
    """The local node the tests break on purpose; its data survives kills and restarts."""

    def __init__(self, cache_dir: Path, engine: str) -> None:
        from milco_os.localnode import LocalNode
        from milco_os.opensearch.client import make_client
        from milco_os.settings import Settings

        self.engine, self.port = engine, PORTS[engine]
        self.node = LocalNode(cache_dir, self.port, engine=engine)
        self.url = self.node.url
        self.client = make_client(Settings(opensearch_url=self.url, cache_dir=cache_dir, opensearch_timeout=20,
                                           engine=engine))
        self._stopped: int | None = None

    def pid(self) -> int:
        pid = self.node.running_pid()
        assert pid is not None, f"the {self.engine} node on port {self.port} is not running"
        return pid

    def up(self, fresh: bool = False) -> None:
        self.node.up(heap=HEAP, fresh=fresh, timeout=START_TIMEOUT)

    def kill(self) -> None:
        """SIGKILL every process of the node (its session: OpenSearch's JVM; Elasticsearch's launcher and the server
        JVM it starts) and wait (bounded) until all are gone."""
        from milco_os.localnode import _pid_alive

        pid = self.pid()
        os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while _pid_alive(pid) or group_members(pid):
            assert time.monotonic() < deadline, f"{self.engine} pid {pid} still alive 30s after SIGKILL"
            time.sleep(0.05)

    def restart(self) -> None:
        """Start the killed node again (same port, same data) and wait for every index to be usable."""
        assert self.node.running_pid() is None, "restart() is for a node that was killed"
        self.up()
        self.wait_yellow()

    def wait_yellow(self) -> None:
        """Wait (up to 60 s) until every index is usable; the request outlives the client's own timeout."""
        health = {"wait_for_status": "yellow", "timeout": "60s"}
        if self.engine == "elasticsearch":  # Elastic's client takes transport options through options()
            self.client.options(request_timeout=70).cluster.health(**health)
        else:
            self.client.cluster.health(**health, request_timeout=70)

    @contextmanager
    def paused(self) -> Iterator[int]:
        """SIGSTOP the node for the block; SIGCONT always follows, whatever happens inside."""
        pid = self.pid()
        os.killpg(pid, signal.SIGSTOP)  # every process of the node: Elasticsearch's server JVM is the launcher's child
        self._stopped = pid
        try:
            yield pid
        finally:
            self.resume()

    def resume(self) -> None:
        if self._stopped is not None:
            try:
                os.killpg(self._stopped, signal.SIGCONT)
            except ProcessLookupError:
                pass
            self._stopped = None

    def delete_index(self, *names: str) -> None:
        if self.node.running_pid() is not None:
            self.client.indices.delete(index=",".join(names), ignore_unavailable=True)


@pytest.fixture(scope="module", params=[e for e in TEST_ENGINES if e in PORTS])
def fault_node(request: pytest.FixtureRequest, cache_dir: Path) -> Iterator[FaultNode]:
    """A fresh node of each engine under test for this module, stopped at the end (SIGCONTed first, should a test
    have left it paused)."""
    node = FaultNode(cache_dir, request.param)
    node.node.down(timeout=30)  # a node an aborted earlier run left behind
    node.up(fresh=True)
    try:
        yield node
    finally:
        node.resume()
        node.node.down(timeout=30)


@pytest.fixture
def node(fault_node: FaultNode) -> Iterator[FaultNode]:
    """The fault node, running and not paused at the start and at the end of each test."""
    if fault_node.node.running_pid() is None:
        fault_node.up()
    try:
        yield fault_node
    finally:
        fault_node.resume()
        if fault_node.node.running_pid() is None:
            fault_node.up()


@pytest.fixture
def cli(node: FaultNode, cache_dir: Path, tmp_path: Path) -> Iterator[Cli]:
    """The CLI against the fault node; any run a failing test left going is killed."""
    runner = Cli(node.url, cache_dir, tmp_path)
    try:
        yield runner
    finally:
        runner.kill_all()


@pytest.fixture(scope="session")
def splade_info(cache_dir: Path) -> Any:
    """splade-tiny's ModelInfo (what `milco-os index create --model splade-tiny` builds the index for)."""
    from milco_os.loading import load_encoder

    return load_encoder("splade-tiny", cache_dir).info
