"""Quality against cost: nDCG@10 of every (document pruning, query pruning) pair against the average
number of terms per document and against p50 query latency, with BM25 as the reference; one Pareto
chart per evaluation set. The defaults it informs (query pruning ``selective:R``, the hybrid weight) are
chosen on the dev split, its default; ``--split test`` reports a choice once.

    .venv/bin/python bench/quality.py --url http://127.0.0.1:9260
    .venv/bin/python bench/quality.py --url http://127.0.0.1:9260 --max-queries 60   # a quick run

Evaluation sets: the LibreOffice-help sets of ``milco-os eval`` over the benchmark's seven languages:
libreoffice-clir (non-English titles -> English pages), libreoffice-mlir (titles in every language -> pages
in mixed languages) and their keyword counterparts (the help's own index entries as queries). Each
configuration gets its own force-merged index (vectors not in ``_source``); queries run one at a time, so p50
is a single-client latency. Hybrid search is compared with its two parts on one index holding both the
vectors and the text (BM25 on the text field, standard analyzer): the search default alone, BM25 alone,
their raw sum and the normalised fusions at several weights, through ``milco_os.opensearch.search.search``
(latency there includes query encoding). Results: a table, ``reports/bench/quality.json`` and
``quality-<dataset>.png``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from common import (
    CORPUS_LANGUAGES,
    Doc,
    bulk_load,
    encode_cached,
    load_bench_encoder,
    log,
    machine,
    mean_terms,
    model_arg,
    prune_all,
    pyplot,
    save_chart,
    summary_ms,
    text_table,
    write_json,
)
from index_size import DOC_PRUNING
from latency import QUERY_PRUNING, TWO_PHASE, ArrayStats, milco_body, pruned_queries

from milco_os.opensearch.bm25 import bm25_document, bm25_index_body, bm25_query_body, choose_analyzers
from milco_os.opensearch.indices import create_index, create_plain_index, delete_index
from milco_os.opensearch.measure import (
    bench_client,
    force_merge,
    opensearch_facts,
    run_queries,
    store_bytes,
    timed_request,
)
from milco_os.pruning import Pruning
from milco_os.specs import DEFAULT_QUERY_PRUNE, IndexSpec, SearchOptions

DATASETS = ["libreoffice-clir", "libreoffice-mlir", "libreoffice-keywords-clir", "libreoffice-keywords-mlir"]
#: Hybrid systems measured against their two parts: (fusion, BM25 weight W); ``sum`` adds W x BM25 in one query.
#: The weights are the candidates the recommended W is chosen from (on dev).
HYBRIDS = [("sum", 0.1), ("sum", 0.2), ("sum", 0.5), ("sum", 1.0), ("minmax", 0.5), ("minmax", 1.0), ("minmax", 2.0),
           ("rrf", 1.0)]


def mean_ndcg(ranked: list[list[str]], queries: list[dict[str, Any]], qrels: dict[str, dict[str, int]]) -> float:
    from milco_os.evaluation.metrics import ndcg_at_k

    scores = [ndcg_at_k(r, qrels[q["id"]], 10) for r, q in zip(ranked, queries, strict=True)]
    return sum(scores) / max(len(scores), 1)


def bm25_point(client: Any, evalset: Any, langs: list[str]) -> dict[str, Any]:
    doc_langs = sorted({d["lang"] for d in evalset.corpus})
    analyzers, _ = choose_analyzers(client, doc_langs)
    index = "bench-quality-bm25"
    delete_index(client, index)
    create_plain_index(client, index, bm25_index_body(analyzers))
    docs = [Doc(str(d["id"]), d["text"], d["lang"]) for d in evalset.corpus]
    bulk_load(client, index, docs, None, source_fields=lambda d: bm25_document(vars(d)), label="bm25")
    force_merge(client, index)
    bodies = [timed_request(bm25_query_body(q["text"], doc_langs, size=10)) for q in evalset.queries]
    run_queries(client, index, bodies, 1)  # warm-up
    res = run_queries(client, index, bodies, 1)
    size = store_bytes(client, index)
    delete_index(client, index)
    return {"system": "bm25", "doc_pruning": None, "query_pruning": None, "doc_terms": None,
            "ndcg@10": mean_ndcg(res.ranked, evalset.queries, evalset.qrels), "latency_ms": summary_ms(res.client_ms),
            "store_bytes": size}


def milco_points(
    client: Any, evalset: Any, encoder: Any, runtime: str, cache_dir: Path, doc_levels: list[str], label: str,
    two_phase_level: str = "top_k:40",
) -> list[dict[str, Any]]:
    docs = [Doc(str(d["id"]), d["text"], d["lang"]) for d in evalset.corpus]
    encoded, _ = encode_cached(encoder, runtime, [d.text for d in docs], cache_dir, label)
    queries = encoder.encode_queries([q["text"] for q in evalset.queries])
    index = "bench-quality-milco"
    points = []
    for level in doc_levels:
        pruned = prune_all(encoded, level)
        delete_index(client, index)
        spec = IndexSpec(bm25=False, replicas=0, vectors_in_source=False, doc_pruning=Pruning.parse(level))
        create_index(client, index, encoder.info, spec)
        bulk_load(client, index, docs, pruned, label=f"docs {level}")
        force_merge(client, index)
        info = encoder.info
        stats = ArrayStats(pruned, len(info.pivot_vocab), len(info.echo_vocab or info.pivot_vocab))
        runs = {rule: (qs, [timed_request(milco_body(q, 10)) for q in qs])
                for rule, qs in pruned_queries(queries, stats).items()}
        if level == two_phase_level:  # two-phase sends the full query
            runs |= {name.removeprefix("milco "): (queries, [timed_request(milco_body(q, 10, two_phase=tp, stats=stats))
                                                            for q in queries]) for name, tp in TWO_PHASE.items()}
        for rule, (qs, bodies) in runs.items():
            run_queries(client, index, bodies, 1)  # warm-up
            res = run_queries(client, index, bodies, 1)
            point = {"system": "milco", "doc_pruning": level, "query_pruning": rule, "doc_terms": mean_terms(pruned),
                     "query_terms": mean_terms(qs), "ndcg@10": mean_ndcg(res.ranked, evalset.queries, evalset.qrels),
                     "latency_ms": summary_ms(res.client_ms)}
            points.append(point)
            log(f"docs {level:<9} queries {rule:<9} nDCG@10 {point['ndcg@10']:.3f}  "
                f"p50 {point['latency_ms']['p50']:.1f} ms")
    delete_index(client, index)
    return points


def hybrid_points(
    client: Any, evalset: Any, encoder: Any, runtime: str, cache_dir: Path, level: str, label: str
) -> list[dict[str, Any]]:
    """Sparse (the search default), BM25 on the same index's text field, and their fusions (HYBRIDS), all through
    ``milco_os.opensearch.search.search`` as ``milco-os search --hybrid W [--hybrid-norm N]`` runs them."""
    import time

    from milco_os.opensearch.indices import index_record
    from milco_os.opensearch.measure import hit_ids, match_body
    from milco_os.opensearch.search import search
    from milco_os.opensearch.stats import IndexTermStats

    docs = [Doc(str(d["id"]), d["text"], d["lang"]) for d in evalset.corpus]
    encoded, _ = encode_cached(encoder, runtime, [d.text for d in docs], cache_dir, label)
    index = "bench-quality-hybrid"
    delete_index(client, index)
    create_index(client, index, encoder.info, IndexSpec(replicas=0, vectors_in_source=False,
                                                        doc_pruning=Pruning.parse(level)))
    pruned = prune_all(encoded, level)
    bulk_load(client, index, docs, pruned, label=f"hybrid docs {level}")
    force_merge(client, index)
    stats = IndexTermStats(client, index, index_record(client, index))
    texts = [q["text"] for q in evalset.queries]
    systems: list[tuple[str, Any]] = [("bm25 (text field)", None), ("sparse", SearchOptions(
        query_pruning=Pruning.parse(DEFAULT_QUERY_PRUNE)))]
    systems += [(f"{norm} W={w:g}", SearchOptions(query_pruning=Pruning.parse(DEFAULT_QUERY_PRUNE), hybrid_weight=w,
                                                  hybrid_norm=None if norm == "sum" else norm)) for norm, w in HYBRIDS]
    points = []
    for name, options in systems:
        ranked, ms = [], []
        for text in texts:
            t0 = time.perf_counter()
            if options is None:
                ranked.append(hit_ids(client, index, match_body(text, 10)))
            else:
                ranked.append([h.id for h in search(client, index, text, encoder, options, stats).hits])
            ms.append((time.perf_counter() - t0) * 1000)
        point = {"system": f"hybrid: {name}", "doc_pruning": level, "query_pruning": DEFAULT_QUERY_PRUNE,
                 "doc_terms": mean_terms(pruned), "ndcg@10": mean_ndcg(ranked, evalset.queries, evalset.qrels),
                 "latency_ms": summary_ms(ms)}
        points.append(point)
        log(f"hybrid {name:<18} nDCG@10 {point['ndcg@10']:.3f} (p50 {point['latency_ms']['p50']:.1f} ms with "
            "query encoding)")
    delete_index(client, index)
    return points


def pareto(points: list[dict[str, Any]], cost: str) -> list[dict[str, Any]]:
    """Points no other point beats on both cost (lower) and nDCG@10 (higher), cheapest first."""
    ordered = sorted(points, key=lambda p: (cost_of(p, cost), -p["ndcg@10"]))
    front, best = [], -1.0
    for p in ordered:
        if p["ndcg@10"] > best:
            front.append(p)
            best = p["ndcg@10"]
    return front


def cost_of(point: dict[str, Any], cost: str) -> float:
    return point["doc_terms"]["total"] if cost == "doc_terms" else point["latency_ms"]["p50"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("MILCO_OS_OPENSEARCH_URL", "http://127.0.0.1:9260"))
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--split", default="dev", choices=["dev", "test"],
                        help="dev (where defaults are chosen) or test (a choice reported once)")
    parser.add_argument("--max-queries", type=int, default=300, help="judged queries per set (all languages)")
    parser.add_argument("--model", default="milco-mini", type=model_arg)
    parser.add_argument("--runtime", default="onnx", choices=["torch", "onnx", "onnx-int8"])
    parser.add_argument("--doc-levels", default=",".join([*DOC_PRUNING, "top_k:40"]))
    parser.add_argument("--hybrid-level", default="top_k:40", help="document pruning of the hybrid comparison")
    parser.add_argument("--skip-hybrid", action="store_true")
    parser.add_argument("--cache-dir", type=Path, default=None, help="milco-os cache (default: the usual one)")
    args = parser.parse_args(argv)

    from milco_os.evaluation.runner import judged_queries, load_eval_set
    from milco_os.settings import get_settings

    cache_dir = args.cache_dir or get_settings().cache_dir
    client = bench_client(args.url)
    facts = {"machine": machine(), "opensearch": opensearch_facts(client)}
    encoder = load_bench_encoder(args.model, cache_dir, args.runtime, batch_size=4)
    doc_levels = args.doc_levels.split(",")
    record: dict[str, Any] = {**facts, "settings": {**vars(args), "query_pruning": QUERY_PRUNING}, "datasets": {}}
    for dataset in args.datasets.split(","):
        full, langs = load_eval_set(dataset, args.split, CORPUS_LANGUAGES, cache_dir)
        evalset, _ = judged_queries(full, args.max_queries)
        log(f"{dataset}: {len(evalset.corpus)} documents, {len(evalset.queries)} queries")
        points = [bm25_point(client, evalset, langs)]
        points += milco_points(client, evalset, encoder, args.runtime, cache_dir, doc_levels, f"{dataset}-{args.split}")
        hybrid = [] if args.skip_hybrid else hybrid_points(client, evalset, encoder, args.runtime, cache_dir,
                                                           args.hybrid_level, f"{dataset}-{args.split}")
        record["datasets"][dataset] = {"documents": len(evalset.corpus), "queries": len(evalset.queries),
                                       "points": points + hybrid}
        plot(dataset, points)

    tables = []
    for dataset, data in record["datasets"].items():
        points = data["points"]
        full_ndcg = {p["doc_pruning"]: p["ndcg@10"] for p in points if p["query_pruning"] == "none"}
        rows = []
        for p in points:
            ref = full_ndcg.get(p["doc_pruning"]) if p["system"] == "milco" else None
            p["vs_full_query"] = round(p["ndcg@10"] / ref - 1, 4) if ref else None
            change = f"{100 * p['vs_full_query']:+.1f}%" if p["vs_full_query"] is not None else None
            rows.append([p["system"], p["doc_pruning"] or "-", p["query_pruning"] or "-",
                         (p["doc_terms"] or {}).get("total"), (p.get("query_terms") or {}).get("total"),
                         round(p["ndcg@10"], 3), change, p["latency_ms"]["p50"], p["latency_ms"]["p99"]])
        table = text_table(["system", "doc pruning", "query pruning", "doc terms", "query terms", "nDCG@10",
                            "vs full query", "p50 ms", "p99 ms"], rows)
        print(f"\n{dataset} ({args.split}): {data['documents']} documents, {data['queries']} queries")
        print(table)
        tables.append(table)
    record["tables"] = tables
    write_json("quality", record)
    return 0


def plot(dataset: str, points: list[dict[str, Any]]) -> None:
    plt = pyplot()
    bm25 = points[0]
    milco = [p for p in points[1:] if p["query_pruning"] in QUERY_PRUNING]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    rules = list(dict.fromkeys(p["query_pruning"] for p in milco))
    markers = dict(zip(rules, "os^vDP*Xhd<>", strict=False))
    for ax, cost, xlabel in ((axes[0], "doc_terms", "average terms per document (pivot + echo)"),
                             (axes[1], "latency", "p50 query latency, ms (one client)")):
        for rule in rules:
            ps = [p for p in milco if p["query_pruning"] == rule]
            ax.scatter([cost_of(p, cost) for p in ps], [p["ndcg@10"] for p in ps], marker=markers[rule],
                       label=f"query {rule}", alpha=0.8)
        front = pareto(milco, cost)
        ax.plot([cost_of(p, cost) for p in front], [p["ndcg@10"] for p in front], color="black", linewidth=1,
                label="Pareto front (labels: d = document, q = query pruning)")
        xs, ys = [cost_of(p, cost) for p in milco], [p["ndcg@10"] for p in milco]
        labelled: list[tuple[float, float]] = []
        for p in reversed(front):  # best first; skip labels that would overlap one already drawn
            x, y = cost_of(p, cost), p["ndcg@10"]
            near = any(abs(y - ly) < 0.04 * (max(ys) - min(ys) or 1) and
                       abs(x - lx) < (0.25 * lx if cost == "doc_terms" else 0.08 * (max(xs) - min(xs) or 1))
                       for lx, ly in labelled)
            if not near:
                ax.annotate(f"d {p['doc_pruning']} / q {p['query_pruning']}", (x, y), fontsize=7, xytext=(4, -9),
                            textcoords="offset points")
                labelled.append((x, y))
        ax.axhline(bm25["ndcg@10"], color="grey", linestyle="--", label="BM25")
        if cost == "latency":
            ax.axvline(bm25["latency_ms"]["p50"], color="grey", linestyle=":", label="BM25 p50")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("nDCG@10")
        ax.legend(fontsize=7)
    axes[0].set_xscale("log")
    axes[0].xaxis.set_minor_formatter(plt.NullFormatter())
    axes[0].xaxis.set_major_formatter(plt.ScalarFormatter())
    fig.suptitle(f"{dataset}: quality against cost (milco-mini, each point a document x query pruning pair)")
    save_chart(fig, f"quality-{dataset}")


if __name__ == "__main__":
    sys.exit(main())
