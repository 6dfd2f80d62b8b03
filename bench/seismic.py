"""SEISMIC against the exact query and BM25: latency (p50/p99 at 1 and 4 clients), recall@10 against the exact full
query, index size and ingest time, on 100k and 1M paragraphs, on one OpenSearch 3.x node with neural-search.

    .venv/bin/milco-os cluster up --port 9430 --version 3.6.0 --plugins neural-search
    .venv/bin/python bench/seismic.py --url http://127.0.0.1:9430                   # 100k, then 1M
    .venv/bin/python bench/seismic.py --url http://127.0.0.1:9430 --sizes 20000 --real 20000   # quick

Corpus: growth.py's (the latency benchmark's paragraphs in seven languages, encoded once and cached; beyond
``--real`` documents, **synthetic perturbed copies** of them: at 1M, 900k of the documents are copies). Two indices
per size, both pruned ``--doc-prune`` per view and force-merged to one segment: the exact one (``rank_features``)
and the SEISMIC one (``index create --ann seismic`` with the build parameters given, milco-os's defaults unless
``--ann-param`` says otherwise). Variants, interleaved query by query: BM25 ``match`` and milco-os's exact default
(``selective:0.2``) and full query on the exact index, SEISMIC's default on the other. Recall@10 is against the
exact full query's top 10. Then, on the SEISMIC index at the first size, a recall/latency curve over the query-time
parameters (1 client). Each size's results are kept in ``reports/bench/seismic.json`` as they finish: a rerun
measures only the sizes missing there (``--fresh`` starts over), and the report, table and chart are regenerated
from that file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from common import (
    CORPUS_LANGUAGES,
    REPORTS,
    encode_cached,
    help_pages,
    load_bench_encoder,
    log,
    machine,
    model_arg,
    paragraph_corpus,
    prune_all,
    pyplot,
    save_chart,
    summary_ms,
    text_table,
    title_queries,
    write_json,
)
from growth import Column, Corpus
from report import seismic_targets

from milco_os.layout import Seismic, SeismicQuery
from milco_os.opensearch.indices import create_index, delete_index, index_record
from milco_os.opensearch.measure import (
    bench_client,
    force_merge,
    match_body,
    opensearch_facts,
    run_interleaved,
    run_queries,
    store_bytes,
    timed_request,
)
from milco_os.opensearch.query import search_body
from milco_os.opensearch.stats import IndexTermStats
from milco_os.pruning import Pruning
from milco_os.specs import DEFAULT_QUERY_PRUNE, ECHO_FIELD, PIVOT_FIELD, IndexSpec

REPORT = REPORTS / "seismic.json"
EXACT, SEISMIC = "bench-exact", "bench-seismic"
#: Query-time settings the curve visits (1 client, on the SEISMIC index of the first size).
CURVE = [{"top_n": 5}, {"top_n": 10}, {"top_n": 20}, {"heap_factor": 0.8}, {"heap_factor": 1.2},
         {"heap_factor": 1.5}, {"k": 20}, {"k": 50}, {"k": 200}]
#: Build-time settings the build curve visits (each a SEISMIC index of its own, on the first size).
BUILD_CURVE = [{"n_postings": 1000}, {"n_postings": 2000}, {"n_postings": 8000}, {"summary_prune_ratio": 0.2},
               {"cluster_ratio": 0.05}]


def recall(ranked: list[list[str]], truth: list[list[str]], k: int = 10) -> float:
    """Mean share of the exact top ``k`` that a variant's top ``k`` holds (queries with an empty truth skipped)."""
    shares = [len(set(r[:k]) & set(t[:k])) / len(t[:k]) for r, t in zip(ranked, truth, strict=True) if t]
    return round(sum(shares) / len(shares), 4) if shares else 0.0


def summed_body(query: Any, seismic: SeismicQuery, size: int, alpha: float = 0.5) -> dict[str, Any]:
    """What milco-os does not send, measured to show why: SEISMIC's top ``k`` of the pivot view summed with the
    exact echo terms over every document (a document outside that top ``k`` keeps its echo score alone)."""
    from milco_os.opensearch.query import feature_clauses, query_tokens

    pivot = seismic.clause(PIVOT_FIELD, query_tokens(query.pivot, keys="ids"), alpha, size)
    return {"query": {"bool": {"should": [pivot, *feature_clauses(query.echo, ECHO_FIELD, 1 - alpha)]}}, "size": size}


def bodies_for(client: Any, queries: list[Any], encoded: list[Any], size: int,
               seismic: SeismicQuery) -> dict[str, tuple[str, list[str]]]:
    """Every variant's (index, serialised bodies)."""
    stats = IndexTermStats(client, EXACT, index_record(client, EXACT))
    views = {"pivot_field": PIVOT_FIELD, "echo_field": ECHO_FIELD, "size": size}
    default = Pruning.parse(DEFAULT_QUERY_PRUNE)
    return {
        "bm25 match": (EXACT, [timed_request(match_body(q.text, size)) for q in queries]),
        "exact default": (EXACT, [timed_request(search_body(default.apply(e, stats), **views)) for e in encoded]),
        "exact full": (EXACT, [timed_request(search_body(e, **views)) for e in encoded]),
        "seismic": (SEISMIC, [timed_request(search_body(e, **views, seismic=seismic)) for e in encoded]),
        "seismic summed": (SEISMIC, [timed_request(summed_body(e, seismic, size)) for e in encoded]),
    }


def build(client: Any, index: str, info: Any, spec: IndexSpec, corpus: Corpus, pivot_keys: str) -> dict[str, Any]:
    from common import bulk_load

    delete_index(client, index)
    create_index(client, index, info, spec)
    load_s = bulk_load(client, index, Column(corpus, 0), Column(corpus, 1), label=f"{index} {len(corpus):,}",
                       pivot_keys=pivot_keys)
    start = time.perf_counter()
    force_merge(client, index, source_filtered=True)
    merge_s = time.perf_counter() - start
    return {"load_s": round(load_s, 1), "merge_s": round(merge_s, 1), "store_bytes": store_bytes(client, index),
            "docs_per_s": round(len(corpus) / load_s, 1)}


def measure_size(client: Any, n: int, docs: list[Any], encoded: list[Any], queries: list[Any], q_encoded: list[Any],
                 info: Any, args: argparse.Namespace, build_params: Seismic, curve: bool) -> dict[str, Any]:
    real = min(n, len(docs))
    corpus = Corpus(docs[:real], encoded[:real], n)
    base = {"replicas": 0, "vectors_in_source": False, "doc_pruning": Pruning.parse(args.doc_prune)}
    indices = {"exact": build(client, EXACT, info, IndexSpec(**base), corpus, "names"),
               "seismic": build(client, SEISMIC, info, IndexSpec(**base, seismic=build_params), corpus, "ids")}
    default_query = SeismicQuery()
    variants = bodies_for(client, queries, q_encoded, args.size, default_query)
    targets = {name: index for name, (index, _) in variants.items()}
    bodies = {name: b for name, (_, b) in variants.items()}
    for index, b in variants.values():  # warm-up: every index's caches, SEISMIC's clusters
        run_queries(client, index, b[: min(50, len(b))], 4)
    latency = []
    for c in args.concurrency:
        results = run_interleaved(client, targets, bodies, c, args.repeat)
        truth = results["exact full"].ranked
        for name, res in results.items():
            ms = summary_ms(res.client_ms)
            latency.append({"variant": name, "concurrency": c, "client_ms": ms, "took_ms": summary_ms(res.took_ms),
                            "qps": round(res.qps, 1), "recall_at_10": recall(res.ranked, truth)})
            log(f"{n:>9,} docs c={c} {name:<14} p50 {ms['p50']:7.2f} ms  p99 {ms['p99']:7.2f} ms  "
                f"recall@10 {latency[-1]['recall_at_10']:.3f}")
    points: list[dict[str, Any]] = []
    builds: list[dict[str, Any]] = []
    if curve:
        truth = run_queries(client, EXACT, bodies["exact full"], 1).ranked
        for change in CURVE:
            params = SeismicQuery(**{**asdict(default_query), **change})
            b = [timed_request(search_body(e, pivot_field=PIVOT_FIELD, echo_field=ECHO_FIELD, size=args.size,
                                           seismic=params)) for e in q_encoded]
            run_queries(client, SEISMIC, b[:50], 1)
            res = run_queries(client, SEISMIC, b * args.repeat, 1)
            ranked = res.ranked[: len(b)]
            points.append({"params": asdict(params), "client_ms": summary_ms(res.client_ms),
                           "recall_at_10": recall(ranked, truth)})
            log(f"  curve {change}: p50 {points[-1]['client_ms']['p50']:.2f} ms recall@10 "
                f"{points[-1]['recall_at_10']:.3f}")
        for change in BUILD_CURVE:  # each a SEISMIC index of its own, searched with the default query
            params = Seismic(**{**asdict(build_params), **change})
            built = build(client, SEISMIC, info, IndexSpec(**base, seismic=params), corpus, "ids")
            b = bodies["seismic"]
            run_queries(client, SEISMIC, b[:50], 1)
            res = run_queries(client, SEISMIC, b * args.repeat, 1)
            builds.append({"params": asdict(params), "index": built, "client_ms": summary_ms(res.client_ms),
                           "recall_at_10": recall(res.ranked[: len(b)], truth)})
            log(f"  build {change}: p50 {builds[-1]['client_ms']['p50']:.2f} ms recall@10 "
                f"{builds[-1]['recall_at_10']:.3f} {built['store_bytes'] / 2**20:.1f} MiB")
    for index in (EXACT, SEISMIC):
        delete_index(client, index)
    # The largest weights, for the quantisation ceilings (a weight above its ceiling is clipped to it).
    weights = {"document_pivot_max": max_weight(encoded[:real]), "query_pivot_max": max_weight(q_encoded)}
    return {"documents": n, "real_documents": real, "indices": indices, "latency": latency, "curve": points,
            "build_curve": builds,
            "seismic_build": asdict(build_params), "seismic_query": asdict(default_query), "weights": weights}


def max_weight(encoded: list[Any]) -> float:
    return round(max(float(e.pivot.weights.max()) for e in encoded if len(e.pivot)), 3)


def at(run: dict[str, Any], variant: str, c: int) -> dict[str, Any]:
    return next(r for r in run["latency"] if r["variant"] == variant and r["concurrency"] == c)


def report(record: dict[str, Any]) -> tuple[str, str]:
    """(the table, the targets) from the report file's record."""
    runs = sorted(record["runs"].values(), key=lambda r: r["documents"])
    rows = []
    for run in runs:
        for c in sorted({r["concurrency"] for r in run["latency"]}):
            bm25 = at(run, "bm25 match", c)["client_ms"]
            for r in (x for x in run["latency"] if x["concurrency"] == c):
                index = run["indices"]["seismic" if r["variant"].startswith("seismic") else "exact"]
                rows.append([run["documents"], c, r["variant"], r["client_ms"]["p50"], r["client_ms"]["p99"],
                             round(r["client_ms"]["p50"] / bm25["p50"], 2), r["recall_at_10"],
                             round(index["store_bytes"] / 2**20, 1)])
    table = text_table(["documents", "conc", "variant", "p50 ms", "p99 ms", "p50/BM25", "recall@10", "index MiB"],
                       rows)
    return table, text_table(["target", "measured", ""], seismic_targets(record))


def plot(record: dict[str, Any]) -> None:
    runs = sorted(record["runs"].values(), key=lambda r: r["documents"])
    curve_run = next((r for r in runs if r["curve"]), None)
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    colours = {"bm25 match": "tab:blue", "exact default": "tab:green", "exact full": "tab:red", "seismic": "tab:purple"}
    sizes = [r["documents"] for r in runs]
    for name, colour in colours.items():
        axes[0].plot(sizes, [at(r, name, 1)["client_ms"]["p50"] for r in runs], marker="o", color=colour, label=name)
    axes[0].set_xscale("log")
    axes[0].set_xlabel("documents (beyond 100k: synthetic copies)")
    axes[0].set_ylabel("p50 ms per query, 1 client")
    axes[0].set_title("Latency as the corpus grows")
    axes[0].legend(fontsize=7)
    if curve_run is not None:
        for p in curve_run["curve"]:
            axes[1].scatter(p["client_ms"]["p50"], p["recall_at_10"], color="tab:purple")
            label = ",".join(f"{k}={v}" for k, v in p["params"].items()
                             if v != curve_run["seismic_query"][k]) or "default"
            axes[1].annotate(label, (p["client_ms"]["p50"], p["recall_at_10"]), fontsize=6)
        axes[1].set_xlabel("p50 ms, 1 client")
        axes[1].set_ylabel("recall@10 vs the exact full query")
        axes[1].set_title(f"SEISMIC query parameters, {curve_run['documents']:,} documents")
    save_chart(fig, "seismic")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("MILCO_OS_OPENSEARCH_URL", "http://127.0.0.1:9430"))
    parser.add_argument("--sizes", default="100000,1000000", help="corpus sizes, ascending")
    parser.add_argument("--real", type=int, default=100_000, help="real (encoded) paragraphs; copies beyond")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--model", default="milco-mini", type=model_arg)
    parser.add_argument("--runtime", default="onnx", choices=["torch", "onnx", "onnx-int8"])
    parser.add_argument("--doc-prune", default="top_k:40", help="document pruning, PIVOT[,ECHO]")
    parser.add_argument("--ann-param", action="append", default=[], help="SEISMIC build parameter NAME=VALUE")
    parser.add_argument("--concurrency", default="1,4")
    parser.add_argument("--repeat", type=int, default=3, help="rounds over the queries (variants interleaved)")
    parser.add_argument("--size", type=int, default=10, help="hits per query")
    parser.add_argument("--fresh", action="store_true", help="forget the sizes already measured")
    parser.add_argument("--cache-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    args.concurrency = [int(c) for c in args.concurrency.split(",")]

    from milco_os.settings import get_settings

    cache_dir = args.cache_dir or get_settings().cache_dir
    sizes = sorted(int(s) for s in args.sizes.split(","))
    build_params = Seismic.parse(args.ann_param)
    record: dict[str, Any] = {"runs": {}}
    if REPORT.exists() and not args.fresh:
        record = json.loads(REPORT.read_text(encoding="utf-8"))
    todo = [n for n in sizes if str(n) not in record["runs"]]
    if todo:
        client = bench_client(args.url)
        record |= {"machine": machine(), "opensearch": opensearch_facts(client),
                   "settings": {k: v for k, v in vars(args).items() if k != "cache_dir"}}
        pages = help_pages(cache_dir, CORPUS_LANGUAGES)
        real = min(args.real, sizes[-1])
        docs = paragraph_corpus(pages, real)
        queries = title_queries(pages, args.queries)
        del pages
        encoder = load_bench_encoder(args.model, cache_dir, args.runtime)
        # With the dense view, as bench/dense_cost.py caches them (one encoding of the corpus serves both; the
        # dense view is not used here).
        encoded, _ = encode_cached(encoder, args.runtime, [d.text for d in docs], cache_dir, "paragraphs", dense=True)
        encoded = prune_all(encoded, args.doc_prune)
        q_encoded = encoder.encode_queries([q.text for q in queries])
        for n in todo:
            run = measure_size(client, n, docs, encoded, queries, q_encoded, encoder.info, args, build_params,
                               curve=n == sizes[0])
            record["runs"][str(n)] = run
            write_json("seismic", record)  # each size kept as it finishes: a rerun resumes after it
    table, targets = report(record)
    print(f"\nSEISMIC vs exact and BM25 (OpenSearch {record['opensearch']['version']}; documents beyond "
          f"{record['settings']['real']:,} are synthetic perturbed copies)")
    print(table)
    print("\nTargets (issue 33)")
    print(targets)
    record |= {"table": table, "targets": targets}
    write_json("seismic", record)
    plot(record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
