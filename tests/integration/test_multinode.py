"""`milco-os cluster up --nodes 3` as a user runs it: a local three-node cluster (ports 9270-9272) forms, an
ingest given every node's URL survives the SIGKILL of one node (the client fails over to the others and the
index's replica is promoted), `cluster up` again brings the node back, and `cluster down` stops all three."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.faults.helpers import Cli, assert_converged, read_checkpoint, wait_until, write_docs
from tests.integration.test_cluster_cli import milco_os, opensearch_processes

PORTS = (9270, 9271, 9272)
FIRST = PORTS[0]
HEAP = "512m"
UP_TIMEOUT = "300"  # three JVMs starting at once on two busy cores
DOCS = 3000  # splade-tiny ingests them in about a minute here: long enough to kill a node mid-run
INGEST_TIMEOUT_S = 240


def cluster_up(cache_dir: Path, *extra: str) -> Any:
    return milco_os("cluster", "up", "--port", str(FIRST), "--nodes", str(len(PORTS)), "--heap", HEAP,
                    "--timeout", UP_TIMEOUT, *extra, cache_dir=cache_dir)


def node_pid(cache_dir: Path, port: int) -> int | None:
    from milco_os.localnode import LocalNode

    return LocalNode(cache_dir, port).running_pid()


@pytest.fixture(scope="module")
def cluster(cache_dir: Path) -> Iterator[list[str]]:
    """A fresh three-node cluster for this module (what an aborted earlier run left is stopped and wiped);
    stopped at the end, whatever happened, and its data removed (logs and node.json stay), so a single node
    can start on these ports afterwards (scripts/csplade-eval.sh uses 9270)."""
    import shutil

    from milco_os.localnode import LocalNode

    milco_os("cluster", "down", "--port", str(FIRST), cache_dir=cache_dir)
    try:
        up = cluster_up(cache_dir, "--fresh")
        assert up.returncode == 0, up.stdout + up.stderr
        urls = up.stdout.strip().splitlines()[-1].split(",")
        yield urls
    finally:
        milco_os("cluster", "down", "--port", str(FIRST), cache_dir=cache_dir)
        for port in PORTS:
            if not opensearch_processes(port):
                shutil.rmtree(LocalNode(cache_dir, port).node_dir / "data", ignore_errors=True)


@pytest.fixture(scope="module")
def client(cluster: list[str], cache_dir: Path) -> Any:
    """A client given every node's URL, as MILCO_OS_OPENSEARCH_URL would give them."""
    from milco_os.opensearch.client import make_client
    from milco_os.settings import Settings

    return make_client(Settings(opensearch_url=",".join(cluster), cache_dir=cache_dir, opensearch_timeout=30))


def test_three_nodes_form_one_cluster(cluster: list[str], client: Any, cache_dir: Path) -> None:
    assert cluster == [f"http://127.0.0.1:{port}" for port in PORTS]
    health = client.cluster.health()
    assert health["cluster_name"] == f"milco-os-local-{FIRST}"
    assert health["number_of_nodes"] == 3 and health["number_of_data_nodes"] == 3
    nodes = client.cat.nodes(format="json", h="name,node.role")
    assert sorted(n["name"] for n in nodes) == [f"milco-os-{port}" for port in PORTS]
    assert all("m" in n["node.role"] and "d" in n["node.role"] for n in nodes)  # cluster-manager-eligible data
    for port in PORTS:
        assert len(opensearch_processes(port)) == 1

    status = milco_os("cluster", "status", "--port", str(FIRST), "--json", cache_dir=cache_dir)
    assert status.returncode == 0, status.stdout + status.stderr
    reported = json.loads(status.stdout)
    assert reported["healthy"] and reported["number_of_nodes"] == 3
    assert [n["port"] for n in reported["nodes"]] == list(PORTS) and all(n["running"] for n in reported["nodes"])
    transport = [n["transport_port"] for n in reported["nodes"]]
    assert len(set(transport)) == 3 and all(transport)

    # Idempotent: nothing to start, the same URLs. A single node or another size on these ports is refused.
    again = cluster_up(cache_dir)
    assert again.returncode == 0 and again.stdout.strip().splitlines()[-1] == ",".join(cluster), again.stderr
    assert all(len(opensearch_processes(port)) == 1 for port in PORTS)
    single = milco_os("cluster", "up", "--port", str(FIRST), cache_dir=cache_dir)
    assert single.returncode == 1 and "running as one of the 3-node cluster" in single.stderr, single.stderr
    other = milco_os("cluster", "up", "--port", str(FIRST), "--nodes", "2", cache_dir=cache_dir)
    assert other.returncode == 1 and "not as one of the 2-node cluster" in other.stderr, other.stderr


def test_ingest_survives_a_node_loss(cluster: list[str], client: Any, cache_dir: Path, tmp_path: Path) -> None:
    """SIGKILL a node holding a copy of the index's shard (never the first node) while `milco-os ingest`,
    given all three URLs, runs: the job finishes with exit code 0 by itself (opensearch-py fails over to the
    other hosts, OpenSearch promotes the replica, the bulk writer retries what was in flight, by id). Then
    `cluster up` brings the node back and, once green, the index holds every document exactly once, in both
    copies."""
    index = f"multinode-{uuid.uuid4().hex[:10]}"
    cli = Cli(",".join(cluster), cache_dir, tmp_path)
    created = cli.run("index", "create", index, "--replicas", "1", timeout=180)
    assert created.returncode == 0, created.describe()
    client.cluster.health(index=index, wait_for_status="green", timeout="60s", request_timeout=70)

    shards = client.cat.shards(index=index, format="json", h="prirep,node")
    primary = next(s["node"] for s in shards if s["prirep"] == "p")
    replica = next(s["node"] for s in shards if s["prirep"] == "r")
    # The primary's node when that is not the first node (the replica is promoted), else the replica's.
    victim_name = primary if primary != f"milco-os-{FIRST}" else replica
    victim = int(victim_name.rsplit("-", 1)[1])
    assert victim != FIRST
    victim_pid = node_pid(cache_dir, victim)
    assert victim_pid is not None

    docs = tmp_path / "docs.jsonl"
    ids = write_docs(docs, DOCS)
    checkpoint = tmp_path / "docs.jsonl.milco-os-checkpoint.json"
    run = cli.start("ingest", str(docs), "--index", index)
    try:
        # The first batches are acknowledged (the model is loaded, writes go through), then the node dies.
        wait_until(lambda: (s := read_checkpoint(checkpoint)) and int(s["done"]) >= 200 and s, 180,
                   "the ingest's first acknowledged batches", watch=run, interval=0.2)
        assert run.running(), "the ingest finished before the node could be killed; give it more documents"
        done_at_kill = int(read_checkpoint(checkpoint)["done"])  # type: ignore[index]
        os.kill(victim_pid, signal.SIGKILL)
        killed_at = time.monotonic()
        result = run.wait(INGEST_TIMEOUT_S, "the ingest after the node loss")
    finally:
        cli.kill_all()
    assert done_at_kill < DOCS, "the node was killed after the ingest had written everything"
    assert result.returncode == 0, result.describe()
    assert "Traceback" not in result.stderr, result.describe()
    assert f"indexed {DOCS}, failed 0" in result.stdout, result.describe()
    assert not checkpoint.exists(), result.describe()
    assert node_pid(cache_dir, victim) is None
    after = client.cat.shards(index=index, format="json", h="prirep,node,state")
    assert all(c["node"] != victim_name for c in after), after  # the dead node holds no copy now ...
    assert any(c["prirep"] == "p" and c["state"] == "STARTED" for c in after), after  # ... and a primary serves
    print(f"killed {victim_name} (primary on {primary}) at {done_at_kill}/{DOCS} documents; the ingest ended "
          f"{time.monotonic() - killed_at:.1f}s later: {result.stdout.strip().splitlines()[-1]}")

    # The node returns: `cluster up` starts only the missing one, with its transport port and data.
    pids = {port: node_pid(cache_dir, port) for port in PORTS if port != victim}
    back = cluster_up(cache_dir)
    assert back.returncode == 0, back.stdout + back.stderr
    assert back.stdout.strip().splitlines()[-1] == ",".join(cluster)
    assert node_pid(cache_dir, victim) not in (None, victim_pid)
    assert {port: node_pid(cache_dir, port) for port in pids} == pids  # the others were left running
    health = client.cluster.health(index=index, wait_for_status="green", wait_for_nodes="3", timeout="120s",
                                   request_timeout=130)
    assert health["status"] == "green" and health["number_of_nodes"] == 3, health

    assert_converged(client, index, ids)  # every id once; _count and the primaries' docs count agree
    found = client.search(index=index, body={"query": {"ids": {"values": ids}}, "size": 0,
                                             "track_total_hits": True})["hits"]["total"]["value"]
    assert found == DOCS
    copies = client.cat.shards(index=index, format="json", h="prirep,node,docs")
    assert len(copies) == 2 and all(int(c["docs"]) == DOCS for c in copies), copies  # the replica caught up too
    client.indices.delete(index=index)


def test_down_stops_every_node(cluster: list[str], cache_dir: Path) -> None:
    assert all(node_pid(cache_dir, port) is not None for port in PORTS)
    down = milco_os("cluster", "down", "--port", str(FIRST), cache_dir=cache_dir)
    assert down.returncode == 0, down.stdout + down.stderr
    assert "stopped 3 OpenSearch nodes" in down.stdout, down.stdout
    for port in PORTS:
        assert opensearch_processes(port) == [], f"an OpenSearch process of the node on port {port} is left"
    status = milco_os("cluster", "status", "--port", str(FIRST), cache_dir=cache_dir)
    assert status.returncode == 1 and "no milco-os OpenSearch node of the cluster" in status.stdout
