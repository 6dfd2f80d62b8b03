"""Ingest on Ray encoder actors against the single-process path, on the same documents, and what that projects to.

    .venv/bin/python bench/scale.py --url http://127.0.0.1:9260
    .venv/bin/python bench/scale.py --url http://127.0.0.1:9260 --docs 100 --actors 1,2   # a quick run

Documents: LibreOffice-help pages (up to 600 characters, ~150 tokens) in seven languages, written to a JSONL
file and ingested with ``ingest_file`` as ``milco-os ingest`` does: once in this process (the encoder uses every
core), then with ``--ray`` and 1, 2, 4 ... actors of one CPU each (one encoder thread each) on a local Ray
started once. Where actors outnumber the cores they share them (CPUs per actor = cores / actors). Each run
first ingests a small warm-up file (the model loaded, onnxruntime's first batches), then the timed file.

Reported per run: documents per second (the job, without Ray start and model loading), the start-up seconds,
per-core efficiency (docs/s per core used / the single-process docs/s per core), and the driver's overhead:
CPU seconds this process spent per 1,000 documents while the actors worked (reading, serialising, results,
checkpoint). The projection multiplies the measured per-actor rate out to N machines; it is a projection,
stated as one, capped by nothing but the per-actor rate (OpenSearch's own write rate is measured separately
in throughput.py). Results: a table, ``reports/bench/scale.json`` and ``scale.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import log, machine, model_arg, pyplot, save_chart, text_table, write_json
from throughput import page_documents

from milco_os.opensearch.bulk import BulkConfig
from milco_os.opensearch.indices import create_index, delete_index, document_count
from milco_os.opensearch.measure import bench_client, opensearch_facts
from milco_os.pruning import Pruning
from milco_os.specs import IndexSpec

INDEX = "bench-scale"
WARM_UP_DOCS = 64
#: Machines of the projection, each with this many cores (one actor per core).
PROJECTED_MACHINES = (1, 4, 16, 64)
PROJECTED_CORES = 16


def write_jsonl(path: Path, docs: list[Any]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps({"id": d.id, "text": d.text}, ensure_ascii=False) + "\n")


def timed_ingest(client: Any, spec: IndexSpec, info: Any, files: tuple[Path, Path], config: BulkConfig,
                 encoder: Any = None, ray: Any = None) -> dict[str, float]:
    """Warm-up file then timed file into a fresh index; seconds of start-up (the pool and the warm-up), the job,
    and this process's CPU seconds during the job."""
    from milco_os.opensearch.ingest import Ingester, batch_pool, read_jsonl

    warm, timed = files
    delete_index(client, INDEX)
    create_index(client, INDEX, info, spec)
    started = time.perf_counter()
    with batch_pool(ray, INDEX, config=config) as pool:
        def run(path: Path, refresh: bool = False) -> Any:  # as ingest_file runs it, without the checkpoint file
            ingester = Ingester(client, INDEX, encoder, config=config, pool=pool, stop_when_unavailable=True)
            return ingester.run((doc for _, doc in read_jsonl(path)), refresh=refresh)

        run(warm)
        startup = time.perf_counter() - started
        cpu = time.process_time()
        result = run(timed, refresh=True)  # (a refresh of a few hundred documents: milliseconds)
        cpu = time.process_time() - cpu
    assert result.failed == 0, result.failures[:3]
    assert document_count(client, INDEX) == WARM_UP_DOCS + result.indexed
    return {"startup_s": startup, "job_s": result.elapsed_s, "driver_cpu_s": cpu, "docs": result.indexed}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("MILCO_OS_OPENSEARCH_URL", "http://127.0.0.1:9260"))
    parser.add_argument("--docs", type=int, default=600, help="help pages (~150 tokens each) per timed run")
    parser.add_argument("--actors", default="1,2,4", help="comma-separated actor counts")
    parser.add_argument("--model", default="milco-mini", type=model_arg)
    parser.add_argument("--runtime", default="onnx", choices=["torch", "onnx"])
    parser.add_argument("--doc-prune", default="top_k:40", help="document pruning, PIVOT[,ECHO]")
    parser.add_argument("--cache-dir", type=Path, default=None, help="milco-os cache (default: the usual one)")
    args = parser.parse_args(argv)

    import ray

    from milco_os.loading import load_encoder
    from milco_os.opensearch.ray_pool import RayJob, RayOptions
    from milco_os.settings import Settings

    settings = Settings(opensearch_url=args.url, model=args.model,
                        **({"cache_dir": args.cache_dir} if args.cache_dir else {}))
    client = bench_client(args.url)
    cores = os.cpu_count() or 1
    facts = {"machine": machine(), "opensearch": opensearch_facts(client)}
    docs = page_documents(settings.cache_dir, WARM_UP_DOCS + args.docs)
    config = BulkConfig()  # the library's and the CLI's defaults
    spec = IndexSpec(replicas=0, doc_pruning=Pruning.parse(args.doc_prune))
    runs: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        files = (Path(tmp) / "warm.jsonl", Path(tmp) / "docs.jsonl")
        write_jsonl(files[0], docs[:WARM_UP_DOCS])
        write_jsonl(files[1], docs[WARM_UP_DOCS:])

        log(f"single process: {args.docs} pages, {cores} encoder threads")
        started = time.perf_counter()
        encoder = load_encoder(args.model, settings.cache_dir, runtime=args.runtime)
        load_s = time.perf_counter() - started
        info = encoder.info
        runs["single process"] = timed_ingest(client, spec, info, files, config, encoder=encoder)
        runs["single process"]["startup_s"] += load_s
        runs["single process"]["cores"] = cores
        del encoder

        ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False, configure_logging=False)
        try:
            for n in (int(a) for a in args.actors.split(",")):
                per_actor = min(1.0, cores / n)
                log(f"Ray: {n} actors, {per_actor:g} CPU each")
                job = RayJob(RayOptions(actors=n, num_cpus=per_actor), settings, runtime=args.runtime)
                runs[f"ray, {n} actors"] = {**timed_ingest(client, spec, info, files, config, ray=job),
                                           "cores": min(cores, n * per_actor), "actors": n}
        finally:
            ray.shutdown()
        delete_index(client, INDEX)

    single = runs["single process"]
    single_rate = single["docs"] / single["job_s"]
    rows = []
    for name, r in runs.items():
        rate = r["docs"] / r["job_s"]
        r["docs_per_s"] = rate
        r["per_core_efficiency"] = (rate / r["cores"]) / (single_rate / single["cores"])
        # In the single process the driver is the encoder: its CPU time is the whole job, not an overhead.
        overhead = 1000 * r["driver_cpu_s"] / r["docs"] if "actors" in r else None
        r["driver_cpu_s_per_1000_docs"] = overhead
        rows.append([name, r["cores"], round(r["startup_s"], 1), round(r["job_s"], 1), round(rate, 1),
                     round(rate / single_rate, 2), round(r["per_core_efficiency"], 2),
                     "-" if overhead is None else round(overhead, 2)])
    table = text_table(["run", "cores", "start-up s", "job s", "docs/s", "x single", "per-core eff.",
                        "driver CPU s / 1k docs"], rows)

    one_actor = runs.get("ray, 1 actors")
    per_actor_rate = one_actor["docs_per_s"] if one_actor else single_rate / cores
    projection = []
    for machines in PROJECTED_MACHINES:
        rate = per_actor_rate * PROJECTED_CORES * machines
        projection.append([machines, machines * PROJECTED_CORES, round(rate), round(1e7 / rate / 3600, 1)])
    projection_table = text_table(["machines", "actors (1 per core)", "docs/s (projected)",
                                   "hours for 10M docs (projected)"], projection)

    print(f"\nIngest of {args.docs} help pages, {args.model} ({args.runtime}), encode batch {config.encode_batch}, "
          f"{cores} cores, document pruning {args.doc_prune}")
    print(table)
    print(f"\nProjection (not a measurement): {per_actor_rate:.1f} docs/s per one-CPU actor, measured above, times "
          f"{PROJECTED_CORES} actors per machine; assumes OpenSearch keeps up and cores as fast as these.")
    print(projection_table)
    record = {**facts, "settings": {**vars(args), "cache_dir": str(settings.cache_dir),
                                    "encode_batch": config.encode_batch, "cores": cores},
              "runs": runs, "single_docs_per_s": single_rate, "per_actor_docs_per_s": per_actor_rate,
              "projection": {"cores_per_machine": PROJECTED_CORES, "rows": projection},
              "table": table, "projection_table": projection_table}
    write_json("scale", record)

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.barh(list(runs), [r["docs_per_s"] for r in runs.values()],
            color=["tab:grey", *["tab:blue"] * (len(runs) - 1)])
    ax.set_xlabel("documents per second (job only)")
    ax.set_title(f"Ingest: single process vs Ray actors ({cores} cores, {args.runtime})")
    ax.invert_yaxis()
    save_chart(fig, "scale")
    return 0


if __name__ == "__main__":
    sys.exit(main())
