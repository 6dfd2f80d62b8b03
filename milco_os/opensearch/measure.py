"""Measuring OpenSearch (IO) for the benchmarks: a client tuned for them, cluster facts, force-merge and
store size, plain text indices and queries, bulk writes through an ingest pipeline, and timed searches.

The benchmark scripts (``bench/``) are a front end like the CLI: they build no request and call no client
method themselves; what they need of OpenSearch beyond the product's own operations lives here.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from milco_os.opensearch.engine import engine_of
from milco_os.opensearch.indices import refresh, server_version

if TYPE_CHECKING:
    from milco_os.opensearch.engine import Client

log = logging.getLogger(__name__)

#: Seconds a benchmark request may take (bulk writes of large chunks, force-merges use their own).
BENCH_TIMEOUT = 300
#: Force-merging a large index to one segment can take many minutes.
MERGE_TIMEOUT = 1800


# ------------------------------------------------------------------------------------------ client
def bench_client(url: str, timeout: int = BENCH_TIMEOUT) -> Client:
    """The product's client settings for ``url`` with a long timeout and no compression (on one machine
    compression only adds client CPU to every request)."""
    from milco_os.opensearch.client import detect_engine
    from milco_os.settings import Settings

    settings = Settings(opensearch_url=url, opensearch_timeout=timeout)
    engine = detect_engine(settings)
    kwargs = engine.client_kwargs(settings)
    kwargs["http_compress"] = False
    return engine.client_class()(**kwargs)


def opensearch_facts(client: Client) -> dict[str, Any]:
    """Engine, version, number of nodes and each node's maximum heap (MiB)."""
    nodes = client.nodes.info(metric="jvm")["nodes"]
    heap = [n["jvm"]["mem"]["heap_max_in_bytes"] for n in nodes.values()]
    return {"engine": engine_of(client).name, "version": server_version(client), "nodes": len(nodes),
            "heap_max_mb": [h // 2**20 for h in heap]}


# ------------------------------------------------------------------------------------------ indices
def text_index_body(fields: Sequence[str] = ("text",), *, shards: int = 1, replicas: int = 0) -> dict[str, Any]:
    """A plain full-text index (standard analyzer): the BM25-only baseline, or a reindex source."""
    return {
        "settings": {"index": {"number_of_shards": shards, "number_of_replicas": replicas}},
        "mappings": {"properties": {field: {"type": "text"} for field in fields}},
    }


def force_merge(client: Client, index: str, *, source_filtered: bool = False, wait_s: float = 180) -> bool:
    """Merge to one segment. With a filtered ``_source`` OpenSearch also keeps the whole original source
    (``_recovery_source``) until its peer-recovery retention lease passes those operations (synced every
    ~30 s) and a merge runs after a flush; ``source_filtered`` waits for that, so the size read afterwards
    is the steady state rather than the transient one. Returns False when that wait timed out (the size
    then still includes ``_recovery_source``)."""
    steady = True
    if source_filtered:
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            shard = client.indices.stats(index=index, level="shards")["indices"][index]["shards"]["0"][0]
            leases = shard.get("retention_leases", {}).get("leases", [])
            if leases and min(lease["retaining_seq_no"] for lease in leases) > shard["seq_no"]["max_seq_no"]:
                break
            time.sleep(1)
        else:
            steady = False
            log.warning("%s: retention lease did not advance in %.0fs; size includes _recovery_source", index, wait_s)
        client.indices.flush(index=index)
    patient, timeout = engine_of(client).timed(client, MERGE_TIMEOUT)
    patient.indices.forcemerge(index=index, max_num_segments=1, **timeout)
    refresh(client, index)
    return steady


def store_bytes(client: Client, index: str) -> int:
    """The primary store size of ``index`` in bytes."""
    stats = client.indices.stats(index=index, metric="store")
    return int(stats["indices"][index]["primaries"]["store"]["size_in_bytes"])


def bulk_through_pipeline(
    client: Client, index: str, pipeline: str, docs: Sequence[tuple[str, dict[str, Any]]], chunk: int
) -> float:
    """Index raw ``(id, source)`` documents through an ingest ``pipeline`` in bulk requests of ``chunk``
    documents, then refresh; returns the seconds it took. Any item error fails the run."""
    start = time.perf_counter()
    for i in range(0, len(docs), chunk):
        lines = []
        for doc_id, source in docs[i : i + chunk]:
            lines += [json.dumps({"index": {"_id": doc_id}}), json.dumps(source, ensure_ascii=False)]
        resp = client.bulk(index=index, body="\n".join(lines) + "\n", pipeline=pipeline)
        if resp["errors"]:
            errors = [item["index"]["error"] for item in resp["items"] if item["index"].get("error")]
            msg = f"bulk through pipeline {pipeline!r}: {len(errors)} failed, first: {errors[0]}"
            raise RuntimeError(msg)
    refresh(client, index)
    return time.perf_counter() - start


# ------------------------------------------------------------------------------------------ searching
def hit_ids(client: Client, index: str, body: dict[str, Any], params: dict[str, Any] | None = None) -> list[str]:
    """The ids of one search's hits, in order."""
    return [h["_id"] for h in client.search(index=index, body=body, **(params or {}))["hits"]["hits"]]


def match_body(text: str, size: int, field: str = "text") -> dict[str, Any]:
    """A BM25 ``match`` query on one text field."""
    return {"query": {"match": {field: text}}, "size": size}


def timed_request(body: dict[str, Any]) -> str:
    """A search body serialised once, asking for ids only and no hit count (which would stop Lucene
    from skipping), so a timed request costs the client as little as possible."""
    return json.dumps({**body, "_source": False, "track_total_hits": False}, ensure_ascii=False)


@dataclass
class LoadResult:
    client_ms: list[float]  # request sent -> response parsed, per query
    took_ms: list[float]  # OpenSearch's own "took", per query
    ranked: list[list[str]]  # top hits' ids, per query (in query order)
    wall_s: float

    @property
    def qps(self) -> float:
        return len(self.client_ms) / self.wall_s if self.wall_s > 0 else 0.0


def run_queries(client: Client, index: str, bodies: Sequence[str], concurrency: int) -> LoadResult:
    """Send every (pre-serialised, see :func:`timed_request`) body once, ``concurrency`` at a time, and time
    each request: client time runs from sending the request to the parsed response."""
    start = time.perf_counter()
    answers = _send_all(client, index, list(bodies), concurrency)
    wall = time.perf_counter() - start
    return LoadResult([a[0] for a in answers], [a[1] for a in answers], [a[2] for a in answers], wall)


def run_interleaved(
    client: Client, index: str | Mapping[str, str], variants: Mapping[str, Sequence[str]], concurrency: int,
    repeat: int = 1,
) -> dict[str, LoadResult]:
    """Every variant's bodies (one per query, same queries), interleaved query by query with the variants'
    order rotating, ``repeat`` rounds, ``concurrency`` at a time: a change in the machine's speed during the
    run (a shared VM) hits every variant alike. ``ranked`` is the first round's; each variant's ``wall_s`` is
    its summed client time over ``concurrency``, so ``qps`` is Little's law (the variants share the clock).
    ``index``: one for every variant, or each variant's own (by name)."""
    names = list(variants)
    n = len(variants[names[0]])
    order = [(names[(i + k) % len(names)], i) for _ in range(repeat) for i in range(n) for k in range(len(names))]
    targets = [index if isinstance(index, str) else index[name] for name, _ in order]
    answers = _send_all(client, targets, [variants[name][i] for name, i in order], concurrency)
    results = {name: LoadResult([], [], [[] for _ in range(n)], 0.0) for name in names}
    for j, ((name, i), (ms, took, ids)) in enumerate(zip(order, answers, strict=True)):
        res = results[name]
        res.client_ms.append(ms)
        res.took_ms.append(took)
        if j < n * len(names):
            res.ranked[i] = ids
    for res in results.values():
        res.wall_s = sum(res.client_ms) / 1000 / concurrency
    return results


Answer = tuple[float, float, list[str]]


def _send_all(client: Client, index: str | list[str], bodies: list[str], concurrency: int) -> list[Answer]:
    """(client ms, OpenSearch took ms, hit ids) for each body (to ``index``, or the body's own index), sent in order
    by ``concurrency`` threads."""
    n = len(bodies)
    indices = [index] * n if isinstance(index, str) else index
    answers: list[Answer] = [(0.0, 0.0, [])] * n
    errors: list[BaseException] = []
    lock = threading.Lock()
    next_item = iter(range(n))

    def worker() -> None:
        while True:
            with lock:
                i = next(next_item, None)
            if i is None or errors:
                return
            try:
                t0 = time.perf_counter()
                resp = client.search(index=indices[i], body=bodies[i], filter_path="took,hits.hits._id")
                ms = (time.perf_counter() - t0) * 1000
            except BaseException as e:  # surfaced below
                errors.append(e)
                return
            answers[i] = (ms, float(resp["took"]), [h["_id"] for h in resp.get("hits", {}).get("hits", [])])

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for _ in range(concurrency):
            pool.submit(worker)
    if errors:
        raise errors[0]
    return answers
