"""What it costs to let OpenSearch call milco-os (ml-commons remote models) instead of milco-os calling
OpenSearch, on the same documents and queries, one run, side by side.

    .venv/bin/python bench/ml_commons.py                 # starts a node with plugins on port 9291 and a service
    .venv/bin/python bench/ml_commons.py --docs 64 --queries 20    # a quick run

Ingest: ``Ingester`` (encode in this process, bulk-write vectors) against ``_bulk?pipeline=`` with raw text
(OpenSearch's ``sparse_encoding`` processors call ``milco-os serve``, 32 documents a call, one call per view).
Search: ``milco-os search`` (encode here, send ``rank_feature`` clauses) against a ``neural_sparse`` query with
the registered query models (OpenSearch calls the service, then searches). Both sides run the torch encoder of
the same model on the same machine, one after the other; each is run once untimed first, on other pages and
queries (the service would answer repeated texts from its cache of recent encodings). Also reported: the
share of queries whose top 10 (ids, in order) is the same on both paths. Results: a table and
``reports/bench/ml_commons.json``.
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from common import log, machine, model_arg, text_table, write_json
from throughput import page_documents

from milco_os.opensearch.indices import create_index, delete_index, index_record
from milco_os.opensearch.measure import bulk_through_pipeline, hit_ids, opensearch_facts
from milco_os.pruning import Pruning
from milco_os.specs import IndexSpec, SearchOptions


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_service(url: str, model: str, cache_dir: Path, log_path: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MILCO_OS_")}
    env |= {"MILCO_OS_OPENSEARCH_URL": url, "MILCO_OS_CACHE_DIR": str(cache_dir)}
    proc = subprocess.Popen([sys.executable, "-m", "milco_os.cli", "serve", "--port", str(port), "--model", model],
                            env=env, stdout=log_path.open("w"), stderr=subprocess.STDOUT)
    service_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(service_url + "/readyz", timeout=5):
                return proc, service_url
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(1)
    proc.kill()
    raise SystemExit(f"milco-os serve did not become ready; see {log_path}")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=9291, help="port of the node with plugins this script starts")
    parser.add_argument("--docs", type=int, default=256, help="help pages (~150 tokens each)")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--model", default="milco-mini", type=model_arg)
    parser.add_argument("--doc-prune", default="top_k:40", help="document pruning, PIVOT[,ECHO]")
    parser.add_argument("--cache-dir", type=Path, default=None, help="milco-os cache (default: the usual one)")
    args = parser.parse_args(argv)

    from milco_os.loading import load_encoder
    from milco_os.localnode import LocalNode
    from milco_os.opensearch.bulk import BulkConfig
    from milco_os.opensearch.ingest import Ingester
    from milco_os.opensearch.measure import bench_client
    from milco_os.opensearch.mlcommons import record_query, register, unregister
    from milco_os.opensearch.search import search
    from milco_os.settings import get_settings

    cache_dir = args.cache_dir or get_settings().cache_dir
    node = LocalNode(cache_dir, args.port)
    log(f"starting OpenSearch with neural-search on port {args.port}")
    info = node.up(fresh=True, timeout=300, plugins=("neural-search",))
    service = None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            service, service_url = start_service(info.url, args.model, cache_dir, Path(tmp) / "serve.log")
            client = bench_client(info.url)
            facts = {"machine": machine(), "opensearch": opensearch_facts(client)}
            # The warm-up runs on other pages and queries than the timed run: the service keeps recent
            # encodings (one text, two views), and a repeated text would be answered from there.
            pages = page_documents(cache_dir, 2 * args.docs)
            rng = random.Random(11)
            runs = {}
            for attempt, part in (("warm-up", pages[: args.docs]), ("timed", pages[args.docs :])):
                queries = [" ".join(d.text.split()[:6]) for d in rng.sample(pages, min(args.queries, len(pages)))]
                runs[attempt] = (part, [f"{q} ({attempt})" if attempt == "warm-up" else q for q in queries])
            docs, queries = runs["timed"]
            encoder = load_encoder(args.model, cache_dir)
            config = BulkConfig()
            spec = IndexSpec(replicas=0, doc_pruning=Pruning.parse(args.doc_prune))
            seconds: dict[str, float] = {}
            for attempt, (part, _) in runs.items():
                for name in ("bench-ours", "bench-theirs"):
                    delete_index(client, name)
                    create_index(client, name, encoder.info, spec)
                log(f"{attempt}: milco-os ingest of {len(part)} pages")
                report = Ingester(client, "bench-ours", encoder, config=config).run(
                    ({"id": d.id, "text": d.text} for d in part), refresh=True)
                assert report.failed == 0, report.failures[:3]
                seconds["milco-os ingest"] = report.elapsed_s
                reg = register(client, "bench-theirs", service_url=service_url, configure_cluster=True,
                               batch_size=config.encode_batch)
                log(f"{attempt}: _bulk?pipeline= of {len(part)} pages")
                seconds["_bulk?pipeline (ml-commons)"] = bulk_through_pipeline(
                    client, "bench-theirs", reg["ingest_pipeline"], [(d.id, {"text": d.text}) for d in part],
                    config.max_docs)
                if attempt == "warm-up":
                    unregister(client, "bench-theirs")
            record = index_record(client, "bench-theirs")
            latency: dict[str, list[float]] = {"milco-os search": [], "neural_sparse + model_id": []}
            same_top10 = 0
            for attempt, (_, texts) in runs.items():
                log(f"{attempt}: {len(texts)} queries each way")
                for text in texts:
                    start = time.perf_counter()
                    ours = search(client, "bench-ours", text, encoder, SearchOptions(size=10))
                    ours_ms = 1000 * (time.perf_counter() - start)
                    start = time.perf_counter()
                    theirs = hit_ids(client, "bench-theirs", {"query": record_query(text, record), "size": 10})
                    theirs_ms = 1000 * (time.perf_counter() - start)
                    if attempt == "timed":
                        latency["milco-os search"].append(ours_ms)
                        latency["neural_sparse + model_id"].append(theirs_ms)
                        same_top10 += [h.id for h in ours.hits] == theirs
            unregister(client, "bench-theirs")
            for name in ("bench-ours", "bench-theirs"):
                delete_index(client, name)
    finally:
        if service is not None:
            service.terminate()
            service.wait(30)
        node.down()

    n = len(docs)
    ingest_rate = {k: n / v for k, v in seconds.items()}
    base_rate = ingest_rate["milco-os ingest"]
    rows = [[k, round(v, 1), round(ingest_rate[k], 1), round(ingest_rate[k] / base_rate, 2)]
            for k, v in seconds.items()]
    base_p50 = percentile(latency["milco-os search"], 50)
    qrows = [[k, round(percentile(v, 50), 1), round(percentile(v, 95), 1), round(percentile(v, 50) / base_p50, 2)]
             for k, v in latency.items()]
    ingest_table = text_table(["ingest path", "seconds", "docs/s", "x milco-os ingest"], rows)
    query_table = text_table(["query path", "p50 ms", "p95 ms", "p50 x milco-os search"], qrows)
    print(f"\n{n} help pages, {len(queries)} queries, {args.model} (torch on both sides), document pruning "
          f"{args.doc_prune}; identical top 10 on both paths: {same_top10}/{len(queries)}")
    print(ingest_table)
    print(query_table)
    write_json("ml_commons", {
        **facts, "settings": vars(args) | {"cache_dir": str(cache_dir)}, "documents": n, "queries": len(queries),
        "ingest_seconds": seconds, "ingest_docs_per_s": ingest_rate,
        "latency_ms": {k: {"p50": percentile(v, 50), "p95": percentile(v, 95)} for k, v in latency.items()},
        "identical_top10": same_top10, "tables": [ingest_table, query_table],
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
