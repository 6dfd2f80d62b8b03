"""Query latency and throughput: BM25 ``match`` against milco-os expansions, on one node, in one run.

    .venv/bin/python bench/latency.py --url http://127.0.0.1:9260              # 100k paragraphs
    .venv/bin/python bench/latency.py --url http://127.0.0.1:9260 --docs 5000  # a quick run
    .venv/bin/python bench/latency.py --url http://127.0.0.1:9400 --concurrency 1,4   # on Elasticsearch

Corpus: distinct LibreOffice-help paragraphs in seven languages (en, de, fr, es, ja, zh-cn, ru), encoded
once (cached under ``<cache>/bench``) and indexed with both a BM25 text field and the milco-os sparse
fields (``rank_features``; on Elasticsearch ``sparse_vector``; document pruning ``--doc-prune``), force-merged to
one segment. The engine is the cluster's at ``--url``; BM25 is that engine's own. Queries:
page titles of the held-out split, in the same languages. Every variant runs every query ``--repeat`` times at
each concurrency, interleaved query by query with the other variants (so a slower spell of the machine hits
all of them); QPS is concurrency over mean client time. Query encoding is timed on its own (batch 1), so OpenSearch time
and encoding time are reported separately. Results: a table, ``reports/bench/<report>.json`` and ``<report>.png``
(``--report``; default ``latency``, on Elasticsearch ``latency-elasticsearch``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from common import (
    CORPUS_LANGUAGES,
    bulk_load,
    encode_cached,
    help_pages,
    load_bench_encoder,
    log,
    machine,
    mean_terms,
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

from milco_os.opensearch.engine import OPENSEARCH, Engine, engine_of
from milco_os.opensearch.indices import create_index, delete_index
from milco_os.opensearch.measure import (
    LoadResult,
    bench_client,
    force_merge,
    match_body,
    opensearch_facts,
    run_queries,
    store_bytes,
    timed_request,
)
from milco_os.opensearch.query import Hybrid, search_body
from milco_os.pruning import Pruning
from milco_os.specs import ECHO_FIELD, PIVOT_FIELD, PLUGIN_TWO_PHASE, IndexSpec, TwoPhase

#: Query pruning variants of the milco-os expansion (both views pruned alike); ``selective:R`` prunes by the
#: index's document frequencies.
QUERY_PRUNING = ["none", "top_k:8", "top_k:16", "top_k:32", "mass:0.5", "selective:0.1", "selective:0.2",
                 "selective:0.3", "selective:0.5"]
#: Two-phase settings against the full query: milco-os's ``--two-phase`` (by value, 0.2 x 10: the target), the
#: split its ml-commons pipelines give OpenSearch's processor (by weight, 0.2 x 5), that processor's own default
#: (by weight, 0.4 x 5), and a fast setting (by value, 0.4 x 5) that keeps nDCG@10 but not the exact top 10.
TWO_PHASE = {
    "milco two-phase": TwoPhase(),
    "milco two-phase plugin": PLUGIN_TWO_PHASE,
    "milco two-phase weight 0.4x5": TwoPhase(ratio=0.4, expansion=5, split="weight"),
    "milco two-phase value 0.4x5": TwoPhase(ratio=0.4, expansion=5, split="value"),
}


class ArrayStats:
    """Document frequencies counted from the indexed vectors themselves (what OpenSearch would count)."""

    def __init__(self, encoded: list[Any], pivot_size: int, echo_size: int) -> None:
        self.n_docs = len(encoded)
        self.df = dict(zip(("pivot", "echo"), document_frequencies(encoded, pivot_size, echo_size), strict=True))

    def doc_freq(self, view: str, vec: Any) -> Any:
        return self.df[view][vec.ids]


def pruned_queries(encoded: list[Any], stats: ArrayStats, rules: list[str] | None = None) -> dict[str, list[Any]]:
    """``{rule: queries}`` for each rule (default QUERY_PRUNING; ``none``: the full expansion)."""
    return {rule: [Pruning.parse(rule).apply(e, stats) for e in encoded] for rule in rules or QUERY_PRUNING}


def variant_name(rule: str) -> str:
    return "milco full" if rule == "none" else f"milco q-{rule}"


def milco_body(query: Any, size: int, engine: Engine = OPENSEARCH, **options: Any) -> dict[str, Any]:
    return search_body(query, pivot_field=PIVOT_FIELD, echo_field=ECHO_FIELD, size=size, engine=engine, **options)


def document_frequencies(encoded: list[Any], pivot_size: int, echo_size: int) -> tuple[Any, Any]:
    """How many indexed documents hold each term (the posting list lengths), per view."""
    import numpy as np

    def df(ids: list[Any], size: int) -> Any:
        return np.bincount(np.concatenate([*ids, np.zeros(0, np.int64)]).astype(np.int64), minlength=size)

    return df([e.pivot.ids for e in encoded], pivot_size), df([e.echo.ids for e in encoded], echo_size)


def mean_postings(queries: list[Any], pivot_df: Any, echo_df: Any) -> float:
    """Average number of postings a query's terms point at: the work before any skipping."""
    total = sum(int(pivot_df[q.pivot.ids].sum()) + int(echo_df[q.echo.ids].sum()) for q in queries)
    return total / max(len(queries), 1)


def variant_bodies(
    queries: list[Any], encoded: list[Any], stats: ArrayStats, *, size: int, engine: Engine = OPENSEARCH,
) -> tuple[dict[str, list[str]], dict[str, dict[str, float]]]:
    """Every variant's request bodies for ``engine`` (serialised once, so the client spends no time on them while
    timed) and the mean number of query terms per view."""
    bodies: dict[str, list[str]] = {"bm25 match": [timed_request(match_body(q.text, size)) for q in queries]}
    terms: dict[str, dict[str, float]] = {"bm25 match": {}}
    for rule, pruned in pruned_queries(encoded, stats).items():
        bodies[variant_name(rule)] = [timed_request(milco_body(e, size, engine)) for e in pruned]
        terms[variant_name(rule)] = mean_terms(pruned)
    for name, two_phase in TWO_PHASE.items():
        bodies[name] = [timed_request(milco_body(e, size, engine, two_phase=two_phase, stats=stats))
                        for e in encoded]
        terms[name] = terms["milco full"]
    bodies["milco hybrid"] = [
        timed_request(milco_body(e, size, engine, hybrid=Hybrid(q.text, ("text",))))
        for q, e in zip(queries, encoded, strict=True)
    ]
    terms["milco hybrid"] = terms["milco full"]
    return bodies, terms


def time_query_encoding(encoder: Any, texts: list[str]) -> tuple[list[Any], list[float]]:
    """Encode each query alone (batch 1, as a search service does); returns encodings and ms per query."""
    encoder.encode_queries(texts[:8])  # warm-up
    out, ms = [], []
    for text in texts:
        t0 = time.perf_counter()
        out.append(encoder.encode_queries([text])[0])
        ms.append((time.perf_counter() - t0) * 1000)
    return out, ms


def overlap_at(a: list[str], b: list[str], k: int = 10) -> float:
    return len(set(a[:k]) & set(b[:k])) / max(min(k, len(b)), 1) if b else float(not a)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("MILCO_OS_OPENSEARCH_URL", "http://127.0.0.1:9260"))
    parser.add_argument("--docs", type=int, default=100_000, help="corpus size (paragraphs)")
    parser.add_argument("--queries", type=int, default=200, help="queries per variant and concurrency")
    parser.add_argument("--model", default="milco-mini", type=model_arg)
    parser.add_argument("--runtime", default="onnx", choices=["torch", "onnx", "onnx-int8"],
                        help="encoder runtime for documents and queries (onnx = fp32 onnxruntime, exact)")
    parser.add_argument("--doc-prune", default="top_k:40", help="document pruning, PIVOT[,ECHO]")
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--size", type=int, default=10, help="hits per query")
    parser.add_argument("--cache-dir", type=Path, default=None, help="milco-os cache (default: the usual one)")
    parser.add_argument("--keep-index", action="store_true", help="leave the benchmark index in place")
    parser.add_argument("--report", default=None,
                        help="report name (default: latency; on Elasticsearch latency-elasticsearch)")
    args = parser.parse_args(argv)

    from milco_os.settings import get_settings

    cache_dir = args.cache_dir or get_settings().cache_dir
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    client = bench_client(args.url)
    engine = engine_of(client)
    report = args.report or ("latency" if engine is OPENSEARCH else f"latency-{engine.name}")
    facts = {"machine": machine(), "opensearch": opensearch_facts(client)}

    pages = help_pages(cache_dir, CORPUS_LANGUAGES)
    docs = paragraph_corpus(pages, args.docs)
    queries = title_queries(pages, args.queries)
    del pages
    encoder = load_bench_encoder(args.model, cache_dir, args.runtime)
    encoded, encode_s = encode_cached(encoder, args.runtime, [d.text for d in docs], cache_dir, "paragraphs")
    full_terms = mean_terms(encoded)
    encoded = prune_all(encoded, args.doc_prune)
    indexed_terms = mean_terms(encoded)
    info = encoder.info
    stats = ArrayStats(encoded, len(info.pivot_vocab), len(info.echo_vocab or info.pivot_vocab))
    pivot_df, echo_df = stats.df["pivot"], stats.df["echo"]
    log(f"corpus: {len(docs)} paragraphs; terms/doc {full_terms} before and {indexed_terms} after {args.doc_prune}")

    index = "bench-latency"
    delete_index(client, index)
    spec = IndexSpec(replicas=0, vectors_in_source=False, doc_pruning=Pruning.parse(args.doc_prune))
    create_index(client, index, encoder.info, spec)
    index_s = bulk_load(client, index, docs, encoded, label="corpus")
    force_merge(client, index, source_filtered=True)
    del encoded

    q_encoded, q_encode_ms = time_query_encoding(encoder, [q.text for q in queries])
    bodies, q_terms = variant_bodies(queries, q_encoded, stats, size=args.size, engine=engine)
    postings = {variant_name(rule): mean_postings(qs, pivot_df, echo_df)
                for rule, qs in pruned_queries(q_encoded, stats).items()}
    for name in (*TWO_PHASE, "milco hybrid"):
        postings[name] = postings["milco full"]
    log("warm-up: every variant once")
    for variant in bodies.values():
        run_queries(client, index, variant, 4)

    results: dict[str, dict[int, LoadResult]] = {name: {} for name in bodies}
    for c in concurrencies:
        for name, variant in bodies.items():
            res = run_queries(client, index, variant, c)
            results[name][c] = res
            log(f"c={c:<2} {name:<18} p50 {summary_ms(res.client_ms)['p50']:7.1f} ms  {res.qps:7.1f} qps")

    c1 = min(concurrencies)
    full = results["milco full"][c1].ranked
    # Ratios compare variants at the same concurrency.
    bm25_p50 = {c: summary_ms(results["bm25 match"][c].client_ms)["p50"] for c in concurrencies}
    full_p99 = {c: summary_ms(results["milco full"][c].client_ms)["p99"] for c in concurrencies}
    rows, records = [], []
    for name in bodies:
        ranked = results[name][c1].ranked
        same_top10 = sum(r[:10] == f[:10] for r, f in zip(ranked, full, strict=True)) / len(full)
        top10 = sum(overlap_at(r, f) for r, f in zip(ranked, full, strict=True)) / len(full)
        for c in concurrencies:
            res = results[name][c]
            client_ms, took_ms = summary_ms(res.client_ms), summary_ms(res.took_ms)
            record = {
                "variant": name, "concurrency": c, "client_ms": client_ms, "opensearch_took_ms": took_ms,
                "qps": round(res.qps, 1), "query_terms": q_terms[name],
                "postings_per_query": round(postings[name]) if name in postings else None,
                "p50_vs_bm25": round(client_ms["p50"] / bm25_p50[c], 2) if bm25_p50[c] else None,
                "p99_vs_full": round(client_ms["p99"] / full_p99[c], 2) if full_p99[c] else None,
                "top10_overlap_with_full": round(top10, 3), "identical_top10_with_full": round(same_top10, 3),
            }
            records.append(record)
            rows.append([name, c, q_terms[name].get("total"), record["postings_per_query"], client_ms["p50"],
                         client_ms["p95"], client_ms["p99"],
                         took_ms["p50"], record["qps"], record["p50_vs_bm25"], record["p99_vs_full"],
                         record["top10_overlap_with_full"], record["identical_top10_with_full"]])
    headers = ["variant", "conc", "q terms", "postings", "p50 ms", "p95 ms", "p99 ms", "took p50", "QPS", "p50/BM25",
               "p99/full", "top10 ovl", "same top10"]
    table = text_table(headers, rows)
    encoding = summary_ms(q_encode_ms)
    print(f"\nQuery latency on {len(docs)} paragraphs ({args.doc_prune} per view), {len(queries)} queries, "
          f"{engine.label} {facts['opensearch']['version']}; client ms = request sent -> response parsed, "
          f"excluding query encoding")
    print(table)
    print(f"\nquery encoding ({args.model}, {args.runtime}, batch 1): p50 {encoding['p50']} ms, "
          f"p95 {encoding['p95']} ms, p99 {encoding['p99']} ms")

    size_bytes = store_bytes(client, index)
    if not args.keep_index:
        delete_index(client, index)
    record = {
        **facts,
        "settings": {**vars(args), "query_pruning": QUERY_PRUNING},
        "corpus": {"documents": len(docs), "languages": CORPUS_LANGUAGES, "terms_per_doc_unpruned": full_terms,
                   "terms_per_doc_indexed": indexed_terms,
                   "encode_s": encode_s, "index_s": round(index_s, 1), "store_bytes": size_bytes},
        "query_encoding_ms": encoding,
        "results": records,
        "table": table,
    }
    write_json(report, record)
    plot(records, concurrencies, len(docs), report)
    return 0


def plot(records: list[dict[str, Any]], concurrencies: list[int], n_docs: int, name: str = "latency") -> None:
    plt = pyplot()
    variants = list(dict.fromkeys(r["variant"] for r in records))
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
    c1 = min(concurrencies)
    at_c1 = [next(r for r in records if r["variant"] == v and r["concurrency"] == c1) for v in variants]
    x = range(len(variants))
    for offset, key, colour in ((-0.2, "p50", "tab:blue"), (0.2, "p99", "tab:red")):
        left.bar([i + offset for i in x], [r["client_ms"][key] for r in at_c1], width=0.4, label=key, color=colour)
    left.set_xticks(list(x), variants, rotation=30, ha="right")
    left.set_ylabel("ms per query (client side)")
    left.set_title(f"Latency at concurrency {c1}, {n_docs:,} docs")
    left.legend()
    for v in variants:
        rs = [r for r in records if r["variant"] == v]
        right.plot([r["concurrency"] for r in rs], [r["qps"] for r in rs], marker="o", label=v)
    right.set_xscale("log", base=2)
    right.set_xticks(concurrencies, [str(c) for c in concurrencies])
    right.set_xlabel("concurrent clients")
    right.set_yscale("log")  # BM25 and the full expansion differ ~100x
    right.set_ylabel("queries per second (log scale)")
    right.set_title("Throughput")
    right.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    save_chart(fig, name)


if __name__ == "__main__":
    sys.exit(main())
