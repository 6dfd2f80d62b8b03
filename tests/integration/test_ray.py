"""`ingest --ray` and `reindex --ray` on a local Ray cluster of two nodes (a head and a worker, each a `ray start`
of its own, as on two machines): a killed encoder actor (once, and one actor again and again), a killed driver,
ids repeated in the input, and the same index as the single-process path."""

from __future__ import annotations

import json
import os
import random
import re
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from milco_os.opensearch.indices import create_index, index_record
from milco_os.opensearch.ingest import checkpoint_path, default_dead_letter
from milco_os.specs import IndexSpec
from tests.faults.helpers import WORDS, Cli, read_checkpoint, wait_until

RAY_PORT = 6391
RAY = str(Path(sys.executable).with_name("ray"))


def ray_cli(*args: str, env: dict[str, str]) -> None:
    proc = subprocess.run([RAY, *args], env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"ray {' '.join(args)}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    """A head node and a worker node on this machine, one CPU each (so one encoder actor each). Token
    authentication is on, with a token of this cluster's own: `ray start` does not create one (a fresh
    machine has no ~/.ray/auth_token), so the nodes and the drivers read it from RAY_AUTH_TOKEN."""
    os.environ["RAY_AUTH_MODE"] = "token"  # the drivers (the CLI, started later) inherit both
    os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    common = ["--num-cpus", "1", "--object-store-memory", str(200 * 1024 * 1024), "--disable-usage-stats"]
    address = f"127.0.0.1:{RAY_PORT}"
    try:
        ray_cli("start", "--head", "--port", str(RAY_PORT), "--node-ip-address", "127.0.0.1",
                "--include-dashboard", "false", *common, env=env)
        ray_cli("start", "--address", address, "--node-ip-address", "127.0.0.1", *common, env=env)
        yield address
    finally:
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=120)
        del os.environ["RAY_AUTH_MODE"], os.environ["RAY_AUTH_TOKEN"]


@pytest.fixture
def cli(settings: Any, tmp_path: Path) -> Iterator[Cli]:
    runner = Cli(settings.opensearch_url, settings.cache_dir, tmp_path)
    yield runner
    runner.kill_all()


@pytest.fixture
def engine_cli(engine_settings: Any, tmp_path: Path) -> Iterator[Cli]:
    """:func:`cli` against the engine under test."""
    runner = Cli(engine_settings.opensearch_url, engine_settings.cache_dir, tmp_path)
    yield runner
    runner.kill_all()


def write_documents(path: Path, n: int) -> set[str]:
    rng = random.Random(7)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"doc-{i:05d}", "text": " ".join(rng.choices(WORDS, k=10))}) + "\n")
    return {f"doc-{i:05d}" for i in range(n)}


def new_index(client: Any, info: Any, name: str) -> str:
    create_index(client, name, info, IndexSpec(replicas=0))
    return name


def stored(client: Any, index: str) -> dict[str, dict[str, Any]]:
    """id -> _source of every document (vectors are kept in _source by default)."""
    client.indices.refresh(index=index)
    hits = client.search(index=index, body={"size": 10_000, "query": {"match_all": {}}})["hits"]["hits"]
    return {h["_id"]: h["_source"] for h in hits}


def actor_pids() -> list[int]:
    """Processes of milco-os encoder actors (Ray titles them ray::BatchWorker...)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().startswith(b"ray::BatchWorker"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def test_ray_ingest_and_reindex_store_what_the_single_process_path_stores(
    engine_client: Any, splade_tiny: Any, ray_address: str, engine_cli: Cli, tmp_path: Path, engine_index: str
) -> None:
    path = tmp_path / "docs.jsonl"
    ids = write_documents(path, 300)
    with open(path, "a", encoding="utf-8") as f:  # two documents that cannot be indexed, amid the others
        f.write('{"text": "no id"}\n{"id": "broken", "text": \n')
    here, on_ray, reindexed = engine_index, f"{engine_index}-ray", f"{engine_index}-reindexed"
    try:
        new_index(engine_client, splade_tiny.info, here)
        new_index(engine_client, splade_tiny.info, on_ray)
        local = engine_cli.run("ingest", str(path), "--index", here, "--batch-size", "16",
                               "--dead-letter", str(tmp_path / "here.failed.jsonl"))
        ray_run = engine_cli.run("ingest", str(path), "--index", on_ray, "--batch-size", "16", "--ray",
                                 "--ray-address", ray_address, "--actors", "2",
                                 "--dead-letter", str(tmp_path / "ray.failed.jsonl"), timeout=300)
        for run in (local, ray_run):  # the same exit code, report and dead-letter file
            assert run.returncode == 1, run.describe()
            assert "indexed 300, failed 2" in run.stdout
            assert "2 documents failed; they are in" in run.stderr
        dead_here = (tmp_path / "here.failed.jsonl").read_text(encoding="utf-8")
        assert (tmp_path / "ray.failed.jsonl").read_text(encoding="utf-8") == dead_here
        assert len(dead_here.splitlines()) == 2

        expected = stored(engine_client, here)
        assert set(expected) == ids
        assert stored(engine_client, on_ray) == expected  # same ids, same fields, same vectors

        again = engine_cli.run("reindex", "--source", here, "--dest", reindexed, "--replicas", "0",
                               "--batch-size", "16", "--checkpoint", str(tmp_path / "reindex.json"), "--ray",
                               "--ray-address", ray_address, timeout=300)
        assert again.returncode == 0, again.describe()
        assert "300 of 300 documents" in again.stdout
        assert stored(engine_client, reindexed) == expected
        assert index_record(engine_client, reindexed) == index_record(engine_client, here)  # the same _meta contract
    finally:
        engine_client.indices.delete(index=f"{on_ray},{reindexed}", ignore_unavailable=True)


def test_a_killed_encoder_actor_is_restarted_and_every_document_is_indexed_once(
    client: Any, splade_tiny: Any, ray_address: str, cli: Cli, tmp_path: Path, index_name: str
) -> None:
    path = tmp_path / "docs.jsonl"
    ids = write_documents(path, 3000)
    new_index(client, splade_tiny.info, index_name)
    run = cli.start("ingest", str(path), "--index", index_name, "--batch-size", "16", "--ray", "--ray-address",
                    ray_address, "--actors", "2")
    checkpoint = checkpoint_path(path)
    wait_until(lambda: (read_checkpoint(checkpoint) or {}).get("done", 0) >= 300, 240, "300 documents", run)
    victims = actor_pids()
    assert len(victims) == 2, victims
    os.kill(victims[0], signal.SIGKILL)
    result = run.wait(600, "the ingest with a killed actor")

    assert result.returncode == 0, result.describe()
    assert "indexed 3000, failed 0" in result.stdout
    assert victims[0] not in actor_pids()
    assert set(stored(client, index_name)) == ids
    assert client.count(index=index_name)["count"] == 3000
    assert not checkpoint.exists()
    assert not default_dead_letter(path, index_name).exists()


def test_one_actor_killed_four_times_does_not_stop_a_job_whose_other_actor_is_healthy(
    client: Any, splade_tiny: Any, ray_address: str, cli: Cli, tmp_path: Path, index_name: str
) -> None:
    """Ray's own restarts count over an actor's life: with 3 allowed, the fourth kill of one actor stopped the job.
    Retries are counted per batch now, and a batch whose actor died goes to the other actor."""
    path = tmp_path / "docs.jsonl"
    ids = write_documents(path, 4000)
    new_index(client, splade_tiny.info, index_name)
    run = cli.start("ingest", str(path), "--index", index_name, "--batch-size", "16", "--ray", "--ray-address",
                    ray_address, "--actors", "2")
    checkpoint = checkpoint_path(path)
    wait_until(lambda: (read_checkpoint(checkpoint) or {}).get("done", 0) >= 100, 240, "100 documents", run)
    killed: list[int] = []
    victim = actor_pids()[0]
    for _ in range(4):  # the first actor, then each time the process that took its place
        before = set(actor_pids())
        assert len(before) == 2 and victim in before, before
        os.kill(victim, signal.SIGKILL)
        killed.append(victim)

        def replaced(before: set[int] = before) -> set[int] | None:
            now = set(actor_pids())
            return now - before if len(now) == 2 else None  # one new process, one of the two gone

        victim = wait_until(replaced, 120, "the killed actor's replacement", run).pop()
    result = run.wait(900, "the ingest with one actor killed four times")

    assert result.returncode == 0, result.describe()
    assert "indexed 4000, failed 0" in result.stdout
    assert not set(killed) & set(actor_pids())
    assert set(stored(client, index_name)) == ids
    assert client.count(index=index_name)["count"] == 4000


def test_ids_repeated_in_the_input_end_with_their_last_line_whatever_the_actors_do(
    client: Any, splade_tiny: Any, ray_address: str, cli: Cli, tmp_path: Path, index_name: str
) -> None:
    """Each id's first line and last line are in neighbouring batches, which the two actors write at the same time;
    the first lines are long, so their batch is written after the last lines' batch: without versions, whichever
    write came last in time stayed."""
    path = tmp_path / "docs.jsonl"
    rng = random.Random(11)
    blocks, batch = 20, 16
    with open(path, "w", encoding="utf-8") as f:
        for block in range(blocks):
            block_ids = [f"doc-{block:02d}-{i:02d}" for i in range(batch)]
            for version, words in (("first", 150), ("last", 5)):
                for doc_id in block_ids:
                    text = f"{version} " + " ".join(rng.choices(WORDS, k=words))
                    f.write(json.dumps({"id": doc_id, "text": text, "version": version}) + "\n")
    new_index(client, splade_tiny.info, index_name)
    run = cli.run("ingest", str(path), "--index", index_name, "--batch-size", str(batch), "--ray", "--ray-address",
                  ray_address, "--actors", "2", timeout=600)

    assert run.returncode == 0, run.describe()
    found = re.search(r"indexed (\d+), failed 0(?:, superseded (\d+))?,", run.stdout)
    assert found, run.stdout
    indexed, superseded = int(found[1]), int(found[2] or 0)
    assert indexed + superseded == 2 * blocks * batch and indexed >= blocks * batch
    versions = {doc_id: source["version"] for doc_id, source in stored(client, index_name).items()}
    assert len(versions) == blocks * batch
    assert set(versions.values()) == {"last"}, sorted(i for i, v in versions.items() if v != "last")
    assert not default_dead_letter(path, index_name).exists()


def test_a_killed_driver_resumes_from_its_checkpoint(
    client: Any, splade_tiny: Any, ray_address: str, cli: Cli, tmp_path: Path, index_name: str
) -> None:
    path = tmp_path / "docs.jsonl"
    ids = write_documents(path, 2000)
    new_index(client, splade_tiny.info, index_name)
    args = ("ingest", str(path), "--index", index_name, "--batch-size", "16", "--ray", "--ray-address", ray_address,
            "--actors", "2")
    run = cli.start(*args)
    checkpoint = checkpoint_path(path)
    wait_until(lambda: (read_checkpoint(checkpoint) or {}).get("done", 0) >= 200, 240, "200 documents", run)
    run.kill()
    saved = read_checkpoint(checkpoint)
    assert saved is not None and 200 <= saved["done"] < 2000

    wait_until(lambda: not actor_pids(), 60, "Ray to end the dead driver's actors", interval=0.5)
    resumed = cli.run(*args, "--resume", timeout=600)
    assert resumed.returncode == 0, resumed.describe()
    assert f"indexed {2000 - saved['done']}, failed 0" in resumed.stdout
    assert set(stored(client, index_name)) == ids
    assert client.count(index=index_name)["count"] == 2000
    assert not checkpoint.exists()


def test_a_ray_reindex_into_a_dense_index_stores_the_dense_view_as_the_single_process_path(
    client: Any, cache_dir: Path, ray_address: str, cli: Cli, tmp_path: Path, index_name: str
) -> None:
    from milco_os.loading import load_encoder
    from milco_os.opensearch.documents import dense_values
    from milco_os.opensearch.hybrid import knn_body
    from milco_os.opensearch.ingest import ingest

    milco = load_encoder("milco-mini", cache_dir)
    rng = random.Random(3)
    docs = [{"id": f"d{i}", "text": " ".join(rng.choices(WORDS, k=12))} for i in range(40)]
    create_index(client, index_name, milco.info, IndexSpec(replicas=0))
    ingest(client, index_name, docs, milco, refresh=True)
    here, on_ray = f"{index_name}-dense", f"{index_name}-dense-ray"
    try:
        for dest, extra in ((here, ()), (on_ray, ("--ray", "--ray-address", ray_address))):
            run = cli.run("reindex", "--source", index_name, "--dest", dest, "--replicas", "0", "--dense",
                          "--checkpoint", str(tmp_path / f"{dest}.json"), *extra, model="milco-mini", timeout=600)
            assert run.returncode == 0, run.describe()
            assert index_record(client, dest)["layout"]["dense"]["dimensions"] == 384
        query = dense_values(milco.encode_queries(["tea and volcano"], dense=True)[0].dense)
        hits = [client.search(index=i, body=knn_body(query, "milco_dense", 40, None, None))["hits"]["hits"]
                for i in (here, on_ray)]
        assert len(hits[0]) == 40
        ranked = [[(h["_id"], round(h["_score"], 5)) for h in part] for part in hits]
        assert ranked[1] == ranked[0]
    finally:
        client.indices.delete(index=f"{here},{on_ray}", ignore_unavailable=True)



def test_a_ray_reindex_into_passages_stores_what_the_single_process_path_stores(
    client: Any, cache_dir: Path, ray_address: str, cli: Cli, tmp_path: Path, index_name: str
) -> None:
    from milco_os.loading import load_encoder
    from milco_os.opensearch.ingest import ingest

    milco = load_encoder("milco-mini", cache_dir)
    rng = random.Random(5)
    docs = [{"id": f"d{i}", "text": " ".join(rng.choices(WORDS, k=rng.choice((20, 400))))} for i in range(12)]
    create_index(client, index_name, milco.info, IndexSpec(replicas=0))
    ingest(client, index_name, docs, milco, refresh=True)
    here, on_ray = f"{index_name}-passages", f"{index_name}-passages-ray"
    try:
        for dest, extra in ((here, ()), (on_ray, ("--ray", "--ray-address", ray_address))):
            run = cli.run("reindex", "--source", index_name, "--dest", dest, "--replicas", "0", "--passages",
                          "--checkpoint", str(tmp_path / f"{dest}.json"), *extra, model="milco-mini", timeout=600)
            assert run.returncode == 0, run.describe()
            assert index_record(client, dest)["layout"]["units"] == "passages"
        stored = [{d["_id"]: d["_source"]["milco_passages"] for d in client.search(
            index=i, body={"size": 20, "query": {"match_all": {}}})["hits"]["hits"]} for i in (here, on_ray)]
        assert stored[1] == stored[0] and max(len(p) for p in stored[0].values()) > 1
    finally:
        client.indices.delete(index=f"{here},{on_ray}", ignore_unavailable=True)
