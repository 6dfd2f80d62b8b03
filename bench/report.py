"""The one generator of published numbers: rewrites the generated sections of README.md, BENCHMARKS.md and
docs/*.md from the reports committed under ``reports/`` (benchmarks: ``reports/bench/<name>.json``, written by
the ``bench/`` scripts; evaluations: ``reports/eval/<run>.json``, written by ``bench/evaluate.py``; the demo:
``reports/demo.json``) and copies the benchmark charts to ``docs/bench/``.

    .venv/bin/python bench/report.py            # rewrite every generated section in place
    .venv/bin/python bench/report.py --check    # exit 1 naming each section that differs from its reports
    .venv/bin/python bench/report.py --print NAME   # print one section
    .venv/bin/python bench/report.py --targets  # print the benchmark targets, met and missed (the end of make bench)

A generated section sits between ``<!-- report:NAME -->`` and ``<!-- /report:NAME -->``; the prose around
it is written by people and left alone. ``tests/unit/test_docs_drift.py`` fails when a section differs from
what this script writes, so a doc cannot drift from its reports. The sections of :data:`NOT_KEPT` were written
from runs whose JSON was not kept (before ``reports/`` existed): they are left as they are, only in
BENCHMARKS.md, until the next ``make bench`` writes their reports.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
REPORTS = ROOT / "reports"
BENCH_REPORTS = Path(os.environ.get("MILCO_OS_BENCH_REPORTS") or REPORTS / "bench")
CHART_RESULTS = ROOT / "results" / "bench"
DOCS = ["README.md", "BENCHMARKS.md", "docs/evaluation.md", "docs/models.md", "docs/csplade.md",
        "docs/scaling-out.md", "docs/dense.md", "docs/passages.md", "docs/seismic.md"]
CHARTS = ROOT / "docs" / "bench"
CHART_FILES = ["encode.png", "latency.png", "index_size.png", "throughput.png", "quality-libreoffice-clir.png",
               "quality-libreoffice-mlir.png", "growth.png", "scale.png", "seismic.png"]
#: Evaluation charts (``results/eval/<run>/ndcg@10.png``, written by bench/evaluate.py) shown in docs/.
EVAL_CHARTS = {"titles-clir-test": "eval-clir-test.png", "titles-mlir-test": "eval-mlir-test.png"}
SECTION = re.compile(r"(<!-- report:([\w:.@,/-]+) -->\n)(.*?)(<!-- /report:\2 -->)", re.S)
#: Benchmark sections measured before ``reports/`` existed, whose JSON was not kept: left as written until a
#: run writes ``reports/bench/<name>.json`` (then the section is generated like the others).
NOT_KEPT = {"machine": "latency", "encode": "encode", "latency": "latency", "index_size": "index_size",
            "throughput": "throughput", "scale": "scale", "targets": "latency", "build-targets": "encode"}


def report_path(name: str) -> Path:
    """``reports/<name>.json``: ``eval/titles-clir-test``, ``demo``; ``bench/<name>`` is read from
    ``MILCO_OS_BENCH_REPORTS`` where a smoke run (``make bench-quick``) sets it."""
    if name.startswith("bench/"):
        return BENCH_REPORTS / f"{name.removeprefix('bench/')}.json"
    return REPORTS / f"{name}.json"


def load_report(name: str) -> dict[str, Any]:
    path = report_path(name)
    if not path.is_file():
        raise SystemExit(f"{path}: missing; run the script that writes it first")
    return json.loads(path.read_text(encoding="utf-8"))


def load(name: str) -> dict[str, Any]:
    """A benchmark's report, ``reports/bench/<name>.json``."""
    return load_report(f"bench/{name}")


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], decimals: int | None = None) -> str:
    """A Markdown table; floats get 3 significant digits, or ``decimals`` places when given."""
    def cell(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float) and decimals is not None:
            return f"{v:.{decimals}f}"
        if isinstance(v, float):
            return f"{v:#.3g}" if abs(v) < 100 else f"{v:,.0f}"
        if isinstance(v, int) and abs(v) >= 10_000:
            return f"{v:,}"
        return str(v)

    align = ["---:" if all(isinstance(r[i], (int, float)) or r[i] is None for r in rows) else "---"
             for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def pct(x: float) -> str:
    return f"{100 * x:+.1f}%"


# ------------------------------------------------------------------------------------------ sections
def machine_section(source: str = "latency") -> str:
    r = load(source)
    m, os_facts = r["machine"], r["opensearch"]
    return (f"{m['logical_cores']} logical CPUs ({m['cpu']}), {m['memory_gb']} GiB RAM, "
            f"{'GPU ' + m['gpu'] if m['gpu'] else 'no GPU'}; Python {m['python']}, torch {m['torch']}, "
            f"onnxruntime {m['onnxruntime']}; OpenSearch {os_facts['version']} (one node, heap "
            f"{os_facts['heap_max_mb'][0]} MB) on the same machine as the benchmark client.")


def encode_section(source: str = "encode") -> str:
    r = load(source)
    rows = [[x["kind"], x["batch_size"], x["runtime"], round(x["texts_per_s"], 1), x["speedup"], x["peak_rss_mb"],
             x["top10_overlap"]] for x in r["results"]]
    t = r["texts"]
    head = (f"{r['model']}: {t['queries']} queries of {t['mean_tokens']['queries']} tokens, {t['documents']} "
            f"documents of {t['mean_tokens']['documents']} tokens on average.\n\n")
    return head + md_table(["texts", "batch", "runtime", "texts/s", "× torch fp32", "peak RSS MB",
                            "top-10 overlap"], rows)


def latency_section(source: str = "latency") -> str:
    r = load(source)
    c = r["corpus"]
    rows = [[x["variant"], x["concurrency"], x["query_terms"].get("total"), x.get("postings_per_query"),
             x["client_ms"]["p50"],
             x["client_ms"]["p95"], x["client_ms"]["p99"], x["opensearch_took_ms"]["p50"], x["qps"],
             x["p50_vs_bm25"], x["p99_vs_full"], x["top10_overlap_with_full"], x["identical_top10_with_full"]]
            for x in sorted(r["results"], key=lambda x: x["concurrency"])]
    enc = r["query_encoding_ms"]
    s = r["settings"]
    engine = "Elasticsearch" if r["opensearch"].get("engine") == "elasticsearch" else "OpenSearch"
    head = (f"{engine} {r['opensearch']['version']}: " if engine != "OpenSearch" else "") + (
            f"{c['documents']:,} paragraphs in {len(c['languages'])} languages; document pruning "
            f"`{s['doc_prune']}` per view ({c['terms_per_doc_indexed']['total']} terms/doc indexed, "
            f"{c['terms_per_doc_unpruned']['total']} before pruning); {s['queries']} title queries; index "
            f"{c['store_bytes'] / 2**20:.0f} MiB after force-merge. Milliseconds are client-side (request sent "
            f"to response parsed) and exclude query encoding; \"took\" is {engine}'s own time; \"postings / query\" "
            f"is how many (document, term) entries the query's terms point at, the work before any skipping.\n\n")
    tail = (f"\n\nQuery encoding, measured separately ({s['model']}, {s['runtime']}, one query at a time): "
            f"p50 {enc['p50']} ms, p95 {enc['p95']} ms, p99 {enc['p99']} ms.")
    return head + md_table(["variant", "clients", "query terms", "postings / query", "p50 ms", "p95 ms", "p99 ms",
                            "took p50 ms", "QPS",
                            "p50 / BM25", "p99 / full", "top-10 overlap with full", "identical top-10"],
                           rows) + tail


def index_size_section(source: str = "index_size") -> str:
    r = load(source)
    rows = []
    for x in r["results"]:
        terms = x["terms_per_doc"] or {}
        in_source = x["vectors_in_source"]
        rows.append([x["level"], "-" if in_source is None else ("yes" if in_source else "no"), terms.get("total"),
                     terms.get("pivot"), terms.get("echo"), round(x["bytes"] / 2**20, 2),
                     round(x["bytes"] / r["documents"]), x["vs_bm25"]])
    head = f"{r['documents']:,} paragraphs (the first of the latency corpus), one shard, force-merged.\n\n"
    return head + md_table(["document pruning", "vectors in _source", "terms/doc", "pivot", "echo", "MiB",
                            "bytes/doc", "× BM25 only"], rows)


def throughput_section(source: str = "throughput") -> str:
    r = load(source)
    rows = [[k, round(v, 1), round(r["docs_per_s"][k], 1), round(r["docs_per_s"][k] / r["encode_only_docs_per_s"], 2)]
            for k, v in r["seconds"].items()]
    serial = r["serial_estimate_docs_per_s"]
    rows.append(["serial estimate (encode, then write)", None, round(serial, 1),
                 round(serial / r["encode_only_docs_per_s"], 2)])
    s = r["settings"]
    head = (f"{r['documents']} help pages (~150 tokens), {s['model']} ({s['runtime']}), encode batch "
            f"{s['encode_batch']}, bulk requests of up to {s['bulk_docs']} documents, document pruning "
            f"`{s['doc_prune']}`. \"× encoding only\" divides by the mean of the two encoding-only runs.\n\n")
    return head + md_table(["phase", "seconds", "docs/s", "× encoding only"], rows)


def scale_section(source: str = "scale") -> str:
    r = load(source)
    s = r["settings"]
    rows = [[name, run["cores"], round(run["startup_s"], 1), round(run["docs_per_s"], 1),
             round(run["docs_per_s"] / r["single_docs_per_s"], 2), round(run["per_core_efficiency"], 2),
             None if run["driver_cpu_s_per_1000_docs"] is None else round(run["driver_cpu_s_per_1000_docs"], 2)]
            for name, run in r["runs"].items()]
    head = (f"{s['docs']} help pages (~150 tokens), {s['model']} ({s['runtime']}), encode batch {s['encode_batch']}, "
            f"{s['cores']} cores; Ray actors of one CPU (one encoder thread) each, sharing the cores when they "
            "outnumber them. docs/s counts the job only (after Ray start, model loading and a 64-page warm-up; "
            "those are \"start-up s\"). Per-core efficiency: docs/s per core used ÷ the single process's. Driver "
            "CPU: seconds this process spent per 1,000 documents while the actors worked.\n\n")
    table = md_table(["run", "cores", "start-up s", "docs/s", "× single process", "per-core efficiency",
                      "driver CPU s / 1k docs"], rows)
    proj = r["projection"]
    projection = md_table(["machines", "actors (1 per core)", "docs/s (projected)", "hours for 10M docs (projected)"],
                          proj["rows"])
    return (head + table + f"\n\n**Projection, not a measurement**: {r['per_actor_docs_per_s']:.1f} docs/s per "
            f"one-CPU actor (measured above) × {proj['cores_per_machine']} actors per machine, assuming cores as "
            "fast as these and an OpenSearch cluster that keeps up (one node took 3,447 docs/s of bulk writes, §4).\n\n"
            + projection)


def quality_section(source: str = "quality") -> str:
    r = load(source)
    parts = []
    for dataset, data in r["datasets"].items():
        rows = [[p["system"], p["doc_pruning"] or "-", p["query_pruning"] or "-",
                 (p["doc_terms"] or {}).get("total"), (p.get("query_terms") or {}).get("total"),
                 round(p["ndcg@10"], 3), pct(p["vs_full_query"]) if p.get("vs_full_query") is not None else "-",
                 p["latency_ms"]["p50"], p["latency_ms"]["p99"]] for p in data["points"]]
        parts.append(f"**{dataset}** ({r['settings']['split']} split, {data['documents']:,} documents, "
                     f"{data['queries']} queries)\n\n"
                     + md_table(["system", "document pruning", "query pruning", "doc terms", "query terms",
                                 "nDCG@10", "vs full query", "p50 ms", "p99 ms"], rows))
    return "\n\n".join(parts)


def p50_growth(results: list[dict[str, Any]], small: int, large: int, variant: str, c: int) -> float:
    """How many times slower ``variant`` answers (p50, ``c`` clients) on ``large`` documents than on ``small``."""
    p50 = {x["documents"]: x["client_ms"]["p50"] for x in results if x["variant"] == variant and x["concurrency"] == c}
    return round(p50[large] / p50[small], 2)


def growth_section(source: str = "growth") -> str:
    r = load(source)
    results = r["results"]
    sizes = sorted({x["documents"] for x in results})
    variants = list(dict.fromkeys(x["variant"] for x in results))
    bm25 = {(x["documents"], x["concurrency"]): x["client_ms"] for x in results if x["variant"] == "bm25 match"}
    rows = [[x["documents"], x["real_documents"], x["concurrency"], x["variant"], x["client_ms"]["p50"],
             x["client_ms"]["p99"], x["qps"],
             round(x["client_ms"]["p50"] / bm25[x["documents"], x["concurrency"]]["p50"], 2),
             round(x["store_bytes"] / 2**20)] for x in results]
    growth_rows = []
    for small, large in zip(sizes, sizes[1:], strict=False):
        for c in sorted({x["concurrency"] for x in results}):
            ratios = [p50_growth(results, small, large, v, c) for v in variants]
            growth_rows.append([f"{small:,} → {large:,}", c, *ratios])
    s = r["settings"]
    head = (f"Document pruning `{s['doc_prune']}` per view, {s['queries']} title queries × {s['repeat']} rounds, "
            f"variants interleaved; index = BM25 text + vectors (not in `_source`), force-merged.\n\n")
    return (head + md_table(["documents", "real", "clients", "variant", "p50 ms", "p99 ms", "QPS", "p50 / BM25",
                             "index MiB"], rows)
            + "\n\nGrowth of p50 (×) from one size to the next:\n\n"
            + md_table(["documents", "clients", *variants], growth_rows))


def targets_section() -> str:
    """The search targets (latency, quality, growth, SEISMIC); missing results are missed targets, named by script."""
    return _targets((("latency", "quality"), search_targets), (("seismic",), seismic_targets))


#: The SEISMIC evaluation runs (bench/evaluate.py ``seismic-<set>-dev``): the exact index and a SEISMIC one.
SEISMIC_EVAL_RUNS = tuple(f"seismic-{base}-dev" for base in ("titles-clir", "titles-mlir", "keywords-clir",
                                                                 "keywords-mlir"))


def seismic_quality() -> list[tuple[str, float, float]]:
    """(run, exact nDCG@10, SEISMIC nDCG@10) for each SEISMIC evaluation run reported."""
    out = []
    for run in SEISMIC_EVAL_RUNS:
        if report_path(f"eval/{run}").is_file():
            ndcg = {x["kind"]: x["metrics"]["overall"]["ndcg@10"] for x in load_report(f"eval/{run}")["systems"]}
            out.append((run, ndcg["sparse"], ndcg["seismic"]))
    return out


def seismic_eval_section() -> str:
    """nDCG@10 of milco-mini on the exact index and on a SEISMIC one, on dev (BENCHMARKS.md §16, docs/seismic.md)."""
    rows = [[run, round(exact, 3), round(approx, 3), f"{(approx - exact) / exact:+.1%}"]
            for run, exact, approx in seismic_quality()]
    first = load_report(f"eval/{SEISMIC_EVAL_RUNS[0]}")
    version = first["opensearch"]["version"]
    sparse = next(s["config"] for s in first["systems"] if s["kind"] == "sparse")
    head = (f"{sparse['model']['name']} (α {sparse['alpha']:g}, the full query) on OpenSearch {version}: the exact "
            "`rank_features` index against a "
            "SEISMIC index with milco-os's default build and query parameters, the same dev queries, corpus and "
            "encodings (`bench/evaluate.py --runs seismic-...`); nDCG@10.\n\n")
    return head + md_table(["run", "exact", "SEISMIC", "difference"], rows)


#: SEISMIC's targets (issue 33): p50 against BM25 by size, recall@10 against the exact full query, growth, size.
SEISMIC_TARGETS = {"p50_1m": 0.7, "p50_100k": 1.0, "recall": 0.95, "growth": 1.5, "size": 1.5}


def seismic_targets(r: dict[str, Any]) -> list[list[str]]:
    """The SEISMIC targets from ``reports/bench/seismic.json`` (bench/seismic.py prints the same rows)."""
    t = SEISMIC_TARGETS
    runs = {run["documents"]: run for run in r["runs"].values()}

    def at(run: dict[str, Any], variant: str) -> dict[str, Any]:
        return next(x for x in run["latency"] if x["variant"] == variant and x["concurrency"] == 1)

    def row(target: str, measured: str, met: bool) -> list[str]:
        return [target, measured, "met" if met else "missed"]

    rows = []
    for n, run in sorted(runs.items()):
        ratio = at(run, "seismic")["client_ms"]["p50"] / at(run, "bm25 match")["client_ms"]["p50"]
        wanted = t["p50_1m"] if n >= 1_000_000 else t["p50_100k"]
        recall = at(run, "seismic")["recall_at_10"]
        size = run["indices"]["seismic"]["store_bytes"] / run["indices"]["exact"]["store_bytes"]
        rows += [row(f"SEISMIC default, {n:,} documents, 1 client: p50 ≤ {wanted}× BM25", f"{ratio:.2f}×",
                     ratio <= wanted),
                 row(f"SEISMIC default, {n:,} documents: recall@10 ≥ {t['recall']} against the exact query",
                     f"{recall:.3f}", recall >= t["recall"]),
                 row(f"SEISMIC index, {n:,} documents: size ≤ {t['size']}× the rank_features index", f"{size:.2f}×",
                     size <= t["size"])]
    for run, exact, approx in seismic_quality():
        change = (approx - exact) / exact
        rows.append(row(f"SEISMIC nDCG@10 within 1% of the exact query ({run})", f"{change:+.1%}", change >= -0.01))
    if 100_000 in runs and 1_000_000 in runs:
        growth = (at(runs[1_000_000], "seismic")["client_ms"]["p50"]
                  / at(runs[100_000], "seismic")["client_ms"]["p50"])
        rows.append(row(f"SEISMIC p50 growth 100,000 → 1,000,000 documents ≤ {t['growth']}×", f"{growth:.2f}×",
                        growth <= t["growth"]))
    else:
        rows.append(row("SEISMIC p50 growth 100,000 → 1,000,000 documents", "not measured (bench/seismic.py)",
                        False))
    return rows


def build_targets_section() -> str:
    """The encoding, ingest and index-size targets."""
    return _targets((("encode",), encode_targets), (("throughput",), throughput_targets),
                    (("index_size",), index_size_targets))


def _targets(*groups: tuple[tuple[str, ...], Callable[..., list[list[str]]]]) -> str:
    rows = []
    for names, build in groups:
        missing = [n for n in names if not report_path(f"bench/{n}").is_file()]
        if missing:
            rows.append([f"targets of {' and '.join(f'bench/{n}.py' for n in missing)}", "not measured", "missed"])
        else:
            rows += build(*(load(n) for n in names))
    return md_table(["target", "measured", ""], rows)


def search_targets(lat: dict[str, Any], qual: dict[str, Any]) -> list[list[str]]:
    rows = []
    c1 = min(x["concurrency"] for x in lat["results"])
    at = {x["variant"]: x for x in lat["results"] if x["concurrency"] == c1}
    doc_level = lat["settings"]["doc_prune"]
    for variant, x in at.items():
        if not variant.startswith("milco q-"):
            continue
        rule = variant.removeprefix("milco q-")
        changes = quality_changes(qual, doc_level, rule)
        ok = x["p50_vs_bm25"] <= 2 and all(ch >= -0.02 for _, ch in changes)
        rows.append([f"query-pruned `{rule}`: p50 ≤ 2× BM25 ({c1} client), nDCG@10 within 2% of full",
                     f"{x['p50_vs_bm25']}× BM25; nDCG on `{doc_level}` documents "
                     + ", ".join(f"{d} {pct(ch)}" for d, ch in changes),
                     "met" if ok else "missed"])
    return rows + default_search_targets(lat, qual) + two_phase_targets(lat) + growth_targets() + hybrid_targets(qual)


def quality_changes(qual: dict[str, Any], doc_level: str, rule: str) -> list[tuple[str, float]]:
    """(set, nDCG@10 change against the full query) of query pruning ``rule`` on ``doc_level`` documents."""
    changes = []
    for dataset, data in qual["datasets"].items():
        point = next((p for p in data["points"] if p["system"] == "milco" and p["doc_pruning"] == doc_level
                      and p["query_pruning"] == rule), None)
        if point is not None:
            changes.append((dataset.removeprefix("libreoffice-"), point["vs_full_query"]))
    return changes


def encode_targets(enc: dict[str, Any]) -> list[list[str]]:
    rows = []
    for x in enc["results"]:
        if x["runtime"] == "ort-int8":
            ok = (x["speedup"] or 0) >= 2
            rows.append([f"ORT int8 ≥ 2× torch fp32 ({x['kind']}, batch {x['batch_size']})",
                         f"{x['speedup']:.2f}×, top-10 overlap {x['top10_overlap']:.2f}", "met" if ok else "missed"])
    return rows


def throughput_targets(thr: dict[str, Any]) -> list[list[str]]:
    ratio = thr["ratios"]["reindex"]
    return [["reindex ≥ 85% of encoding-only throughput", f"{100 * ratio:.0f}%", "met" if ratio >= 0.85 else "missed"]]


def index_size_targets(size: dict[str, Any]) -> list[list[str]]:
    rows = []
    for x in size["results"]:
        terms = (x["terms_per_doc"] or {}).get("total")
        if x["level"].startswith("mass") and x["vectors_in_source"] is False and terms is not None and terms <= 40:
            rows.append([f"pruned index `{x['level']}` ({terms} terms/doc, vectors not in _source) ≤ 1.5× BM25 only",
                         f"{x['vs_bm25']}×", "met" if x["vs_bm25"] <= 1.5 else "missed"])
    return rows


def default_search_targets(lat: dict[str, Any], qual: dict[str, Any]) -> list[list[str]]:
    """The search default against BM25 (latency) and against the full query (quality), at every concurrency."""
    from milco_os.specs import DEFAULT_QUERY_PRUNE

    changes = quality_changes(qual, lat["settings"]["doc_prune"], DEFAULT_QUERY_PRUNE)
    quality_ok = len(changes) == len(qual["datasets"]) and all(ch >= -0.02 for _, ch in changes)
    bm25 = {x["concurrency"]: x["client_ms"] for x in lat["results"] if x["variant"] == "bm25 match"}
    rows = []
    for x in lat["results"]:
        if x["variant"] != f"milco q-{DEFAULT_QUERY_PRUNE}":
            continue
        c, ms = x["concurrency"], x["client_ms"]
        p99 = round(ms["p99"] / bm25[c]["p99"], 2)
        ok = x["p50_vs_bm25"] <= 1.5 and p99 <= 2 and quality_ok
        rows.append([f"default search (`{DEFAULT_QUERY_PRUNE}`), {lat['corpus']['documents']:,} documents, {c} "
                     "client(s): p50 ≤ 1.5× BM25, p99 ≤ 2× BM25, nDCG@10 within 2% of the full query",
                     f"p50 {x['p50_vs_bm25']}×, p99 {p99}× BM25; nDCG "
                     + ", ".join(f"{d} {pct(ch)}" for d, ch in changes), "met" if ok else "missed"])
    return rows


def two_phase_targets(lat: dict[str, Any]) -> list[list[str]]:
    rows = []
    for x in lat["results"]:
        if x["variant"] not in ("milco two-phase", "milco two-phase plugin"):
            continue
        ok = x["p99_vs_full"] <= 0.5 and x["identical_top10_with_full"] >= 0.99
        rows.append([f"{x['variant']} at {x['concurrency']} client(s): identical top-10 ≥ 99%, p99 ≤ ½ full",
                     f"identical top-10 for {100 * x['identical_top10_with_full']:.1f}% of queries; p99 "
                     f"{x['p99_vs_full']}× full", "met" if ok else "missed"])
    return rows


def growth_targets() -> list[list[str]]:
    if not report_path("bench/growth").is_file():
        return [["latency growth 100k → 1M no steeper than BM25's", "not measured (bench/growth.py)", "missed"]]
    r = load("growth")
    sizes = sorted({x["documents"] for x in r["results"]})
    small, large = sizes[-2], sizes[-1]
    rows = []
    for c in sorted({x["concurrency"] for x in r["results"]}):
        grow = {v: p50_growth(r["results"], small, large, v, c) for v in ("bm25 match", "milco default")}
        ok = grow["milco default"] <= grow["bm25 match"]
        rows.append([f"p50 growth {small:,} → {large:,} documents, {c} client(s): default search no steeper than BM25",
                     f"{grow['milco default']}× against BM25 {grow['bm25 match']}×", "met" if ok else "missed"])
    return rows


def hybrid_targets(qual: dict[str, Any]) -> list[list[str]]:
    rows = []
    for dataset, data in qual["datasets"].items():
        hybrid = {p["system"].removeprefix("hybrid: "): p["ndcg@10"] for p in data["points"]
                  if p["system"].startswith("hybrid: ")}
        if not hybrid:
            continue
        best_part = max(hybrid["sparse"], hybrid["bm25 (text field)"])
        for name in ("minmax W=1", "rrf W=1"):
            ok = hybrid[name] >= best_part
            rows.append([f"hybrid `{name}` ≥ the better of its parts ({dataset.removeprefix('libreoffice-')})",
                         f"{hybrid[name]:.3f} against {best_part:.3f}", "met" if ok else "missed"])
    return rows


# ------------------------------------------------------------------------------------------ evaluations
#: The sets the summary puts side by side: (run name without split, column label).
SUMMARY_SETS = {"keywords": [("keywords-clir", "CLIR"), ("keywords-mlir", "MLIR"),
                             ("keywords-clir-whole", "CLIR whole"), ("keywords-mlir-whole", "MLIR whole")]}
#: The dev runs α is chosen on (milco-mini's pivot weight; 1 = pivot only): cut pages, so that the test runs,
#: whole pages included, run with the chosen α.
ALPHA_RUNS = ["titles-clir-dev", "titles-mlir-dev", "keywords-clir-dev", "keywords-mlir-dev"]
CHOSEN_MODEL = "milco-mini"
#: The test runs the README sums the default model up with.
MODEL_SUMMARY_RUNS = {"titles-clir-test": "titles in 32 languages → English pages",
                      "titles-mlir-test": "titles in 34 languages → pages in mixed languages",
                      "keywords-clir-test": "the help's index keywords → English pages",
                      "keywords-mlir-test": "keywords → mixed languages"}


#: The dense-view evaluation runs (bench/evaluate.py ``dense-<set>-<split>``), cut pages.
DENSE_SETS = ("titles-clir", "titles-mlir", "keywords-clir", "keywords-mlir")


def eval_runs_read() -> set[str]:
    """The evaluation runs the sections other than ``eval:<run>`` read."""
    summary = {_run_name(base, split) for sets in SUMMARY_SETS.values() for base, _ in sets
               for split in ("dev", "test")}
    dense = {f"dense-{base}-{split}" for base in DENSE_SETS for split in ("dev", "test")} | set(DENSE_WHOLE_RUNS)
    passages = {run for runs in PASSAGE_RUNS.values() for run in runs}
    return (summary | set(ALPHA_RUNS) | set(MODEL_SUMMARY_RUNS) | dense | passages | set(SEISMIC_EVAL_RUNS)
            | {BALANCE_RUN, f"dense-{BALANCE_RUN}"}
            | {CSPLADE_EVAL_RUN} | {p.stem for _, p in csplade_earlier_eval_reports()})


def _run_name(base: str, split: str) -> str:
    """``keywords-clir`` -> ``keywords-clir-dev``; ``keywords-clir-whole`` -> ``keywords-clir-dev-whole``."""
    stem = base.removesuffix("-whole")
    return f"{stem}-{split}{base[len(stem):]}"


def model_label(config: dict[str, Any]) -> str:
    """The model as the run asked for it (``milco-mini``, the newest version), not as it loaded (``milco-mini@2``)."""
    return config["model"].get("reference") or config["model"]["name"]


def system_label(system: dict[str, Any]) -> str:
    """A reader's name for an evaluated system: BM25, dense e5-small, or model and α (models without an echo
    view score the same at every α, so α is left out); a model's dense view, and its fusion with the sparse
    views (normalisation and weight)."""
    if system["kind"] == "bm25":
        return "BM25 (language analyzers)"
    if system["kind"] == "dense":
        return "dense multilingual-e5-small"
    config = system["config"]
    if system["kind"] == "dense-view":
        return f"{model_label(config)} dense view"
    if system["kind"] == "fused":
        fusion = config["dense"]["fusion"]
        passages = " passages" if config.get("units") == "passages" else ""
        return f"{model_label(config)} fused {fusion['norm']}:{fusion['weight']:g}{passages}"
    name = model_label(config)
    terms = system["stats"].get("avg_document_terms") or {}
    label = f"{name} α={config['alpha']:g}" if terms.get("echo") else name
    return label + (" passages" if config.get("units") == "passages" else "")


def _overall(report: dict[str, Any], metric: str = "ndcg@10") -> dict[str, float]:
    return {system_label(s): s["metrics"]["overall"][metric] for s in report["systems"]}


def eval_summary_section(source: str = "keywords") -> str:
    """nDCG@10 of every system on the dev and test runs of a family of sets, cut and whole pages."""
    columns, values = [], {}
    for base, label in SUMMARY_SETS[source]:
        for split in ("dev", "test"):
            run = _run_name(base, split)
            columns.append(f"{label} {split}")
            values[columns[-1]] = _overall(load_report(f"eval/{run}"))
    test_columns = [c for c in columns if c.endswith("test")]
    systems = list(dict.fromkeys(name for c in test_columns for name in values[c]))
    rows = [[name, *(round(values[c][name], 3) if name in values[c] else None for c in columns)] for name in systems]
    first = load_report(f"eval/{_run_name(SUMMARY_SETS[source][0][0], 'test')}")
    return (f"nDCG@10, {first['counts']['judged_queries']} queries per run (spread evenly over the query languages; "
            f"fewer where a split has fewer), {first['counts']['documents']:,} pages; \"whole\" indexes whole pages, "
            "the others each page's first 600 characters. Document pruning `top_k:40`.\n\n"
            + md_table(["system", *columns], rows, decimals=3))


def alpha_by_run() -> dict[float, dict[str, float]]:
    """{α: {dev run: nDCG@10 of the chosen model at that α}}."""
    table: dict[float, dict[str, float]] = {}
    for run in ALPHA_RUNS:
        for system in load_report(f"eval/{run}")["systems"]:
            config = system.get("config", {})
            if system["kind"] == "sparse" and model_label(config) == CHOSEN_MODEL:
                table.setdefault(float(config["alpha"]), {})[run] = system["metrics"]["overall"]["ndcg@10"]
    return table


#: The dev run with the demo's six languages (bench/evaluate.py): how much a system prefers the query's language.
BALANCE_RUN = "titles-mlir6-dev"
#: A default must keep at least this share of its hits in another language than the query, relative to a ranking
#: blind to language, on :data:`BALANCE_RUN` (issue 30's target for the demo).
LANGUAGE_BALANCE = 0.75


def language_balance(run: str = BALANCE_RUN) -> dict[str, float]:
    """{system label: its other-language share of top-10 hits / a language-blind ranking's} on a dev run."""
    from milco_os.evaluation.report import OTHER_LANGUAGE

    report = load_report(f"eval/{run}")
    blind = report[f"{OTHER_LANGUAGE}_blind"]
    return {system_label(s): s["metrics"]["overall"][OTHER_LANGUAGE] / blind for s in report["systems"]}


def balanced_choice(table: dict[Any, dict[str, float]], balance: dict[Any, float]) -> Any:
    """The key of ``table`` ({choice: {dev set: nDCG@10}}) with the best mean among those whose ``balance`` reaches
    :data:`LANGUAGE_BALANCE` (without one: the best balanced, so that the default leans least to the query's
    language)."""
    kept = [key for key in table if balance.get(key, 0.0) >= LANGUAGE_BALANCE]
    if not kept:
        return max(table, key=lambda key: balance.get(key, 0.0))
    return max(kept, key=lambda key: sum(table[key].values()) / len(table[key]))


def alpha_balance() -> dict[float, float]:
    """{α: language balance of the chosen model's sparse system at that α} on :data:`BALANCE_RUN`."""
    labels = language_balance()
    return {a: labels[f"{CHOSEN_MODEL} α={a:g}"] for a in alpha_by_run() if f"{CHOSEN_MODEL} α={a:g}" in labels}


def dev_alpha_choice() -> float:
    """The α with the best mean nDCG@10 over :data:`ALPHA_RUNS` (dev) that keeps the language balance."""
    return balanced_choice(alpha_by_run(), alpha_balance())


def alpha_section() -> str:
    from milco_os.specs import DEFAULT_ALPHA

    table, balance = alpha_by_run(), alpha_balance()
    rows = [[f"{a:g}", *(round(table[a][run], 3) for run in ALPHA_RUNS),
             round(sum(table[a].values()) / len(table[a]), 3), round(balance[a], 2) if a in balance else None]
            for a in sorted(table)]
    best = dev_alpha_choice()
    return (md_table(["α", *ALPHA_RUNS, "mean", f"language balance ({BALANCE_RUN})"], rows, decimals=3)
            + f"\n\nLanguage balance: the share of top-10 hits in another language than the query, against a "
            f"ranking blind to language, on {BALANCE_RUN} (the demo's six languages). Best mean on dev with a "
            f"balance of at least {LANGUAGE_BALANCE:g}: α = {best:g}; the default of `milco-os search`, the "
            f"service and the library (`DEFAULT_ALPHA`): {DEFAULT_ALPHA:g} (on an index an earlier version built, "
            "that version's: docs/lifecycle.md).")


def model_summary_section() -> str:
    """The README's account of the default model against BM25 and dense e5-small, from the test reports."""
    from milco_os.specs import DEFAULT_ALPHA

    columns = [f"{CHOSEN_MODEL} α={DEFAULT_ALPHA:g}", f"{CHOSEN_MODEL} α=1", "BM25 (language analyzers)",
               "dense multilingual-e5-small", "splade-tiny"]
    rows = []
    for run, what in MODEL_SUMMARY_RUNS.items():
        ndcg = _overall(load_report(f"eval/{run}"))
        rows.append([f"{run.removesuffix('-test')} ({what})", *(round(ndcg[c], 3) for c in columns)])
    return md_table(["set (queries → corpus)", f"{CHOSEN_MODEL} (default α)", "its pivot view alone (α = 1)",
                     "BM25", "dense e5-small", "splade-tiny (English)"], rows, decimals=3)


def ml_commons_section(source: str = "ml_commons") -> str:
    r = load(source)
    ingest, latency = r["ingest_docs_per_s"], r["latency_ms"]
    own_ingest, own_search = "milco-os ingest", "milco-os search"
    ingest_rows = [[name, round(r["ingest_seconds"][name], 1), round(rate, 1), round(rate / ingest[own_ingest], 2)]
                   for name, rate in ingest.items()]
    query_rows = [[name, round(ms["p50"], 1), round(ms["p95"], 1), round(ms["p50"] / latency[own_search]["p50"], 2)]
                  for name, ms in latency.items()]
    return (md_table(["ingest path", "seconds", "docs/s", "× milco-os ingest"], ingest_rows) + "\n\n"
            + md_table(["query path", "p50 ms", "p95 ms", "p50 × milco-os search"], query_rows)
            + f"\n\nBoth paths return the same top 10 for {r['identical_top10']} of {r['queries']} queries.")


# ------------------------------------------------------------------------------------------ search defaults
#: A query pruning is acceptable when it keeps nDCG@10 within this share of the full query on every dev set.
PRUNING_TOLERANCE = 0.02


def _selective_ratio(rule: str) -> float | None:
    name, _, value = rule.partition(":")
    return float(value) if name == "selective" else None


def dev_query_prune_choice(qual: dict[str, Any] | None = None) -> str:
    """The largest ``selective:R`` (fewest postings) whose nDCG@10 stays within :data:`PRUNING_TOLERANCE` of the
    full query on every set of the dev quality report, on its hybrid (``top_k:40``) documents."""
    qual = qual or load("quality")
    assert qual["settings"]["split"] == "dev", "defaults are chosen on dev"
    level = qual["settings"]["hybrid_level"]
    ok: dict[str, bool] = {}
    for data in qual["datasets"].values():
        for p in data["points"]:
            if p["system"] == "milco" and p["doc_pruning"] == level and _selective_ratio(p["query_pruning"] or ""):
                ok[p["query_pruning"]] = ok.get(p["query_pruning"], True) and p["vs_full_query"] >= -PRUNING_TOLERANCE
    return max((rule for rule, good in ok.items() if good), key=lambda rule: _selective_ratio(rule) or 0.0)


def hybrid_by_dataset(qual: dict[str, Any]) -> dict[str, dict[str, float]]:
    """{hybrid system: {dataset: nDCG@10}} of the quality report's hybrid points."""
    table: dict[str, dict[str, float]] = {}
    for dataset, data in qual["datasets"].items():
        for p in data["points"]:
            if p["system"].startswith("hybrid: "):
                table.setdefault(p["system"].removeprefix("hybrid: "), {})[dataset] = p["ndcg@10"]
    return table


def dev_hybrid_choice(qual: dict[str, Any] | None = None) -> tuple[str, float]:
    """(fusion, W) of the hybrid setting with the best mean nDCG@10 over the dev sets."""
    table = hybrid_by_dataset(qual or load("quality"))
    fused = {name: v for name, v in table.items() if " W=" in name}
    best = max(fused, key=lambda name: sum(fused[name].values()) / len(fused[name]))
    norm, _, weight = best.partition(" W=")
    return norm, float(weight)


def search_choices_section() -> str:
    from milco_os.specs import DEFAULT_QUERY_PRUNE

    qual = load("quality")
    datasets = list(qual["datasets"])
    short = [d.removeprefix("libreoffice-") for d in datasets]
    level = qual["settings"]["hybrid_level"]
    prune_rows = []
    for data_points in zip(*(qual["datasets"][d]["points"] for d in datasets), strict=True):
        p = data_points[0]
        if p["system"] != "milco" or p["doc_pruning"] != level:
            continue
        full = p["query_pruning"] == "none"
        prune_rows.append([f"`{p['query_pruning']}`", *(f"{q['ndcg@10']:.3f}" if full else pct(q["vs_full_query"])
                                                       for q in data_points),
                           round(sum(q["query_terms"]["total"] for q in data_points) / len(data_points), 1)])
    hybrid = hybrid_by_dataset(qual)
    hybrid_rows = [[name, *(round(v[d], 3) for d in datasets), round(sum(v.values()) / len(v), 3)]
                   for name, v in hybrid.items()]
    norm, weight = dev_hybrid_choice(qual)
    lat = load("latency-20k-selective")
    at1 = {x["variant"]: x["p50_vs_bm25"] for x in lat["results"] if x["concurrency"] == 1}
    growth = load("growth")["results"]
    p50 = {(x["documents"], x["variant"]): x["client_ms"]["p50"] for x in growth if x["concurrency"] == 1}
    sizes = sorted({x["documents"] for x in growth})
    grown = ", ".join(f"{p50[n, 'milco default'] / p50[n, 'bm25 match']:.2f}× on {n:,}" for n in sizes[1:])
    n_queries = qual["settings"]["max_queries"]
    return (f"nDCG@10 against the full query (first row: its nDCG@10) on the dev split ({n_queries} queries per set, "
            f"`{level}` documents), and the query's average terms:\n\n"
            + md_table(["query pruning", *short, "query terms (mean)"], prune_rows)
            + f"\n\nThe largest `selective:R` within {100 * PRUNING_TOLERANCE:g}% of the full query on every dev set: "
            f"`{dev_query_prune_choice(qual)}`; the default: `{DEFAULT_QUERY_PRUNE}`. Its p50 latency: "
            f"{at1[f'milco q-{DEFAULT_QUERY_PRUNE}']}× BM25's on {lat['corpus']['documents']:,} paragraphs (the "
            f"full query {at1['milco full']}×; `reports/bench/latency-20k-selective.json`), {grown} documents "
            "(`reports/bench/growth.json`, BENCHMARKS.md §10: the model's pivot terms are common, so their posting "
            "lists grow with the corpus).\n\nHybrid search on the same dev sets (nDCG@10; BM25 on the index's text "
            "field):\n\n" + md_table(["system", *short, "mean"], hybrid_rows, decimals=3)
            + f"\n\nBest mean on dev: `{'--hybrid-norm ' + norm + ' ' if norm != 'sum' else ''}--hybrid {weight:g}`.")


# ------------------------------------------------------------------------------------------ models
MODELS = ROOT / "milco_os" / "models"


def newest_delta(model: str) -> Path:
    """The newest shipped version's delta directory of an assembled model (``milco_mini``, ``csplade_mini``)."""
    from milco_os.models.sources.versions import version_dir

    return version_dir(MODELS / model, model, None)[0]


#: docs/csplade.md's runs table: the logs of docs/csplade/runs/ in this order, with a note after the name (a
#: log not named here comes last under its own name; the run whose log is the shipped one is set in bold).
CSPLADE_RUNS = {"adapted-causal-T1-flops1": "", "adapted-echo-T1-flops1": "",
                "raw-echo-T1-flops1": " (no adaptation)", "adapted-echo-T1-flops0.1-0.3": "",
                "adapted-echo-T1-topk-flops0.1": "", "adapted-echo-T1-topk-noflops": "", "adapted-echo-T20-topk": "",
                "adapted-causal-T20-topk": "", "adapted-bi-T20-topk": "", "raw-causal-T20-topk": " (no adaptation)"}
#: docs/csplade.md's evaluation: the systems of the manifest's ``evaluation`` entry, in this order and wording.
CSPLADE_EVAL = "libreoffice-en-test (OpenSearch, scripts/csplade-eval.sh)"
#: ``reports/eval/<this>.json``: the report scripts/csplade-eval.sh keeps.
CSPLADE_EVAL_RUN = "csplade-libreoffice-en-test"
#: The runs that report evaluates: ``configs/train/csplade-<variant><suffix>.toml`` (scripts/csplade-eval.sh's
#: CSPLADE_RUNS), whose ``steps`` the labels below give.
CSPLADE_EVAL_RUNS = {"echo": "-terms-long-dfq", "bi": "-terms-long", "causal": "-terms-long"}
#: The variant comparison at one recipe: the runs ``configs/train/csplade-<variant><this>.toml``.
CSPLADE_VARIANTS_SUFFIX = "-terms-long"
CSPLADE_SYSTEMS = {"bm25": "BM25 (English analyzer)", "sparse:splade-tiny": "splade-tiny (English SPLADE, 2 layers)",
                   "sparse:milco-mini": "milco-mini, pivot view only (α = 1)",
                   "sparse:csplade-echo": "csplade-mini = CSPLADE-Echo ({echo} steps, DF penalty on queries)",
                   "sparse:csplade-bi": "CSPLADE-Bi ({bi} steps, no DF penalty)",
                   "sparse:csplade-causal": "CSPLADE (causal, {causal} steps, no DF penalty)"}
_BENCH_MODULES: dict[str, Any] = {}


def bench_module(name: str) -> Any:
    """A sibling script of ``bench/`` (``csplade_runs``, ``quantisation``), imported once from its path."""
    if name not in _BENCH_MODULES:
        import importlib.util

        spec = importlib.util.spec_from_file_location(f"bench_{name}", Path(__file__).with_name(f"{name}.py"))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        _BENCH_MODULES[name] = module
    return _BENCH_MODULES[name]


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def csplade_earlier_eval_reports() -> list[tuple[str, Path]]:
    """(version, report) of earlier versions' runs of scripts/csplade-eval.sh, newest first: each kept as
    ``reports/eval/csplade-mini-<version>-libreoffice-en-test.json`` when the next version's replaced it."""
    reports = (ROOT / "reports" / "eval").glob("csplade-mini-*-libreoffice-en-test.json")
    found = {p.name.split("-")[2]: p for p in reports}
    return sorted(found.items(), key=lambda item: int(item[0]), reverse=True)


def csplade_steps(suffixes: dict[str, str]) -> dict[str, int]:
    """Each variant's training steps in the runs ``csplade-<variant><suffix>`` (their configs)."""
    import tomllib

    return {v: tomllib.loads((ROOT / "configs" / "train" / f"csplade-{v}{suffix}.toml").read_text(
        encoding="utf-8"))["steps"] for v, suffix in suffixes.items()}


def csplade_eval_steps() -> dict[str, int]:
    """Each variant's training steps in the evaluated runs (``CSPLADE_EVAL_RUNS``)."""
    return csplade_steps(CSPLADE_EVAL_RUNS)


def csplade_runs_section() -> str:
    """docs/csplade.md: alive terms and ranking loss of the contrastive runs kept in ``docs/csplade/runs/``."""
    runs = bench_module("csplade_runs")
    logs = {p.name.removesuffix(".log.jsonl"): p for p in sorted((ROOT / "docs" / "csplade" / "runs").glob("*.jsonl"))}
    shipped = (newest_delta("csplade_mini") / "contrastive.log.jsonl").read_bytes()
    lines = ["| run | first steps: query / document terms, ranking loss | middle | last |", "|---|---|---|---|"]
    for stem in [s for s in CSPLADE_RUNS if s in logs] + [s for s in logs if s not in CSPLADE_RUNS]:
        rows = runs.read_log(logs[stem])
        if rows:
            label = (f"**{stem}** (csplade-mini)" if logs[stem].read_bytes() == shipped
                     else stem + CSPLADE_RUNS.get(stem, ""))
            lines.append(runs.summary(label, rows))
    return "\n".join(lines)


def csplade_dev_section() -> str:
    """docs/csplade.md: the dev measurements (known-item nDCG@10 in memory, function-free top 5) of the term
    teacher (``reports/csplade/splade-tiny-dev.json``), each shipped version
    (``reports/csplade/csplade-mini-<version>-dev.json``) and each run that logged them."""
    runs = bench_module("csplade_runs")
    lines = ["| model or run | step | nDCG@10 | queries without a function word in their top 5 | "
             "terms per query / page |", "|---|---:|---:|---:|---:|"]

    def row(label: str, step: Any, r: dict) -> str:
        return (f"| {label} | {step} | {r['ndcg10']:.3f} | {r['function_free']:.3f} | "
                f"{r['q_terms']:.1f} / {r['d_terms']:.1f} |")

    teacher = json.loads((ROOT / "reports" / "csplade" / "splade-tiny-dev.json").read_text(encoding="utf-8"))
    lines.append(row("splade-tiny (the term teacher, its own WordPiece terms)", "", teacher))
    for path in sorted((ROOT / "reports" / "csplade").glob("csplade-mini-*-dev.json")):
        r = json.loads(path.read_text(encoding="utf-8"))
        lines.append(row(f"{path.stem.removesuffix('-dev').replace('mini-', 'mini@')} (shipped)", "", r))
    for path in sorted((ROOT / "docs" / "csplade" / "runs").glob("*.jsonl")):
        for r in runs.read_dev(path):
            lines.append(row(path.name.removesuffix(".log.jsonl"), r["step"], r))
    return "\n".join(lines)


def csplade_variants_section() -> str:
    """docs/csplade.md: the three variants of one recipe (``CSPLADE_VARIANTS_SUFFIX``) at the same step, the last
    dev step of the shorter runs, from their logs in ``docs/csplade/runs/``: dev nDCG@10, function-free share and
    the seconds the run took to get there (echo reads every text twice)."""
    runs = bench_module("csplade_runs")
    steps = csplade_steps(dict.fromkeys(("echo", "bi", "causal"), CSPLADE_VARIANTS_SUFFIX))
    runs_dir = ROOT / "docs" / "csplade" / "runs"
    logs = {v: runs_dir / f"adapted-{v}-T5-topk{CSPLADE_VARIANTS_SUFFIX}.log.jsonl" for v in steps}
    at = min(steps.values())
    lines = [f"| variant (dev, step {at}) | nDCG@10 | queries without a function word in their top 5 | "
             f"seconds for {at} steps | steps in echo's time |", "|---|---:|---:|---:|---:|"]
    seconds = {}
    for variant in ("echo", "causal", "bi"):
        path = logs[variant]
        dev = next(r for r in runs.read_dev(path) if r["step"] == at)
        seconds[variant] = next(r["elapsed_s"] for r in _jsonl(path) if r.get("step") == at and "elapsed_s" in r)
        lines.append(f"| {variant} | {dev['ndcg10']:.3f} | {dev['function_free']:.3f} | {seconds[variant]:.0f} | "
                     f"{at * seconds['echo'] / seconds[variant]:.0f} |")
    return "\n".join(lines)


def csplade_summary_section() -> str:
    """README: csplade-mini's test nDCG@10 against BM25, splade-tiny and its other variants
    (``reports/eval/csplade-libreoffice-en-test.json``)."""
    report = load_report(f"eval/{CSPLADE_EVAL_RUN}")
    ndcg = {s["name"].split("[")[0]: s["metrics"]["overall"]["ndcg@10"] for s in report["systems"]}
    version = newest_delta("csplade_mini").name
    steps = csplade_eval_steps()
    assert steps["bi"] == steps["causal"], steps
    return (f"csplade-mini@{version} reaches nDCG@10 {ndcg['sparse:csplade-echo']:.2f} on English known-item search "
            f"over held-out help pages ({report['counts']['judged_queries']} queries), against "
            f"{ndcg['bm25']:.2f} for BM25 and {ndcg['sparse:splade-tiny']:.2f} for splade-tiny; the bi and causal "
            f"variants, trained for {steps['bi']} steps instead of {steps['echo']} and without its penalty on "
            "frequent query terms: "
            f"{ndcg['sparse:csplade-bi']:.2f} and {ndcg['sparse:csplade-causal']:.2f}.")


#: issue 34's targets, for the projection of the shipped run's dev curve.
CSPLADE_TARGETS = {"ndcg10": 0.55, "function_free": 0.90}


def csplade_projection_section(version: str = "") -> str:
    """docs/csplade.md: a shipped csplade-mini's dev curve (``csplade-projection@<version>``; the newest without
    one; its ``contrastive.log.jsonl``) fitted as ``value = a + b · log2(step)`` by least squares, and the steps
    (and CPU hours at the run's own pace) where the fit reaches each target of issue 34 (an extrapolation,
    stated as one), or the first dev step that reached it."""
    import math

    delta = MODELS / "csplade_mini" / version if version else newest_delta("csplade_mini")
    records = _jsonl(delta / "contrastive.log.jsonl")
    dev = bench_module("csplade_runs").read_dev(delta / "contrastive.log.jsonl")
    trained = [r for r in records if "elapsed_s" in r]
    seconds_per_step = trained[-1]["elapsed_s"] / trained[-1]["step"]
    lines = ["| dev measure | at steps | fit: gain per doubling of steps | target | steps where the fit reaches it "
             "| CPU hours at this run's pace |", "|---|---|---:|---:|---:|---:|"]
    xs = [math.log2(r["step"]) for r in dev]
    for key, target in CSPLADE_TARGETS.items():
        ys = [r[key] for r in dev]
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
        steps = 2 ** (mx + (target - my) / slope) if slope > 0 else math.inf
        reached = [r["step"] for r in dev if r[key] >= target]
        reach = (f"measured: {reached[0]:,} | {reached[0] * seconds_per_step / 3600:.1f}" if reached
                 else f"{steps:,.0f} | {steps * seconds_per_step / 3600:.1f}" if steps <= 100 * dev[-1]["step"]
                 else "never: the fit does not rise | -" if slope <= 0 else "beyond 100× this run | -")
        lines.append(f"| {key} | " + ", ".join(f"{r['step']}: {r[key]:.3f}" for r in dev)
                     + f" | {slope:+.3f} | {target:.2f} | {reach} |")
    return (f"From `{delta.relative_to(ROOT)}/contrastive.log.jsonl` ({seconds_per_step:.1f} s per step of "
            "4 queries and 8 passages on 2 CPU cores, dev measurements included).\n\n" + "\n".join(lines))


def csplade_eval_section() -> str:
    """docs/csplade.md: the test-split evaluation of ``scripts/csplade-eval.sh``
    (``reports/eval/csplade-libreoffice-en-test.json``; the shipped variant in bold) with each system's terms
    per document and per query (the postings it adds per page and the posting lists a query reads), and
    csplade-mini@1's recorded numbers (its manifest's ``evaluation``) for comparison."""
    report = load_report(f"eval/{CSPLADE_EVAL_RUN}")
    variant = json.loads((newest_delta("csplade_mini") / "manifest.json").read_text(encoding="utf-8"))["variant"]
    lines = ["| system | nDCG@10 | MRR@10 | R@100 | terms per document | terms per query |",
             "|---|---:|---:|---:|---:|---:|"]
    systems = {s["name"].split("[")[0]: s for s in report["systems"]}
    steps = csplade_eval_steps()

    def cells_of(label: str, system: dict[str, Any]) -> list[str]:
        overall, stats = system["metrics"]["overall"], system.get("stats", {})
        doc_terms = stats.get("avg_document_terms", {}).get("pivot")
        return [label, *(f"{overall[m]:.3f}" for m in ("ndcg@10", "mrr@10", "recall@100")),
                "-" if doc_terms is None else f"{doc_terms:.1f}",
                "-" if stats.get("avg_query_terms") is None else f"{stats['avg_query_terms']:.1f}"]

    for key in [k for k in CSPLADE_SYSTEMS if k in systems] + [k for k in systems if k not in CSPLADE_SYSTEMS]:
        cells = cells_of(CSPLADE_SYSTEMS.get(key, key).format(**steps), systems[key])
        if key == f"sparse:csplade-{variant}":
            cells = [f"**{c}**" for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    for version, path in csplade_earlier_eval_reports():
        earlier = load_report(f"eval/{path.stem}")
        echo = next(s for s in earlier["systems"] if s["name"].startswith("sparse:csplade-echo"))
        trained = json.loads((MODELS / "csplade_mini" / version / "manifest.json").read_text("utf-8"))
        recipe = trained["training"]["csplade"]
        lr = f"{recipe['lr']:.0e}".replace("e-0", "e-")
        label = f"csplade-mini@{version} (CSPLADE-Echo, {recipe['steps']} steps at lr {lr}; its run's report)"
        lines.append("| " + " | ".join(cells_of(label, echo)) + " |")
    first = json.loads((ROOT / "milco_os" / "models" / "csplade_mini" / "1" / "manifest.json").read_text("utf-8"))
    v1 = first["evaluation"][CSPLADE_EVAL]
    lines.append("| csplade-mini@1 (CSPLADE-Echo, the first recipe; its recorded run) | "
                 + " | ".join(f"{v1['sparse:csplade-echo'][m]:.3f}" for m in ("ndcg@10", "mrr@10", "recall@100"))
                 + " | - | - |")
    test = ROOT / "reports" / "csplade" / f"csplade-mini-{newest_delta('csplade_mini').name}-test.json"
    terms = json.loads(test.read_text(encoding="utf-8"))
    teacher = json.loads((ROOT / "reports" / "csplade" / "splade-tiny-test.json").read_text(encoding="utf-8"))
    return ("From `reports/eval/csplade-libreoffice-en-test.json` (`scripts/csplade-eval.sh`), "
            f"{report['counts']['judged_queries']} queries over {report['counts']['documents']} pages.\n\n"
            + "\n".join(lines)
            + f"\n\nTest queries none of whose top 5 terms is a function word: {terms['function_free']:.3f} of "
            f"{terms['queries']} (`{test.relative_to(ROOT)}`, `bench/csplade_dev.py --split test`; its in-memory "
            f"nDCG@10: {terms['ndcg10']:.3f}); for the term teacher splade-tiny, measured the same way in its own "
            f"terms: {teacher['function_free']:.3f} (`reports/csplade/splade-tiny-test.json`).")


def quantisation_section(source: str = "quantisation") -> str:
    """docs/csplade.md and BENCHMARKS.md §6: every format of ``reports/bench/quantisation.json``."""
    r = load(source)
    quant = bench_module("quantisation")
    s, counts = r["settings"], r["counts"]
    not_run = [f"`{name}`" for name in quant.FORMATS if name not in r["formats"]]
    return (f"`reports/bench/{source}.json`: {r['model']}, {counts['queries']} {r['dataset']} {r['split']} queries "
            f"over {counts['documents']} pages cut at {s['doc_tokens']} tokens, {s['threads']} threads "
            f"({r['machine']['cpu']}).\n\n" + quant.markdown_table(r["formats"])
            + (f"\n\nNot in this run: {', '.join(not_run)}." if not_run else ""))


def gates_section() -> str:
    """docs/models.md: milco-mini's gates after SAP's token alignment (``sap.log.jsonl``, step 0), those of the SAP
    delta and those of each shipped version's SCT (``manifest.json``, ``gates``; the newest in bold)."""
    from milco_os.models.sources.versions import versions

    mini = newest_delta("milco_mini")
    manifest = json.loads((mini / "manifest.json").read_text(encoding="utf-8"))
    sap_log = [r for r in _jsonl(mini / "sap.log.jsonl") if r.get("stage") == "sap" and "gates" in r]
    rows = [(f"SAP, after the token alignment alone (step {sap_log[0]['step']})", sap_log[0]["gates"], False),
            (f"SAP (token alignment + {sap_log[-1]['step']:,} pooled steps)", manifest["gates"]["sap"], False)]
    for version in versions(MODELS / "milco_mini"):
        delta = MODELS / "milco_mini" / version
        shipped = json.loads((delta / "manifest.json").read_text(encoding="utf-8"))
        sct = shipped["training"]["sct"]
        steps = [r for r in _jsonl(delta / "sct.log.jsonl") if r.get("stage") == "sct" and "gates" in r][-1]["step"]
        rows.append((f"SCT of milco-mini@{version} (FLOPS λ {sct['lambda_q']:g} / {sct['lambda_d']:g}, {steps} steps)",
                     shipped["gates"]["sct"], delta == mini))
    lines = ["| Delta | overlap en / foreign | CLIR pivot nDCG@10 (dev gate) | always-on | always-on limit | "
             "terms q / d | passed |", "|---|---|---|---|---|---|---|"]
    for label, g, bold in rows:
        b = "**" if bold else ""
        lines.append(f"| {b}{label}{b} | {b}{g['overlap_en']:.2f} / {g['overlap_foreign']:.2f}{b} | "
                     f"{b}{g['clir_pivot_ndcg@10']:.3f}{b} | `{g['always_on_term']}` {g['always_on']:.0%} | "
                     f"{g['always_on_limit']:.0%} | {g['query_terms']:.0f} / {g['doc_terms']:.0f} | "
                     f"{'yes' if g['passed'] else 'no'} |")
    return "\n".join(lines)


def demo_section() -> str:
    """The README's account of the demo, from ``reports/demo.json`` (``milco-os demo --report``)."""
    r = load_report("demo")
    examples = "; ".join(f"`{q['text']}` → `{', '.join(q['pivot_terms'][:3])}`" for q in r["per_query"]
                         if q["lang"] != "en-us" and q["pivot_terms"])
    held_out = sum(q["split"] in ("dev", "test") for q in r["per_query"])
    fusion = r.get("fusion")
    searched = (f"sparse views fused with the dense view by {fusion['norm']}, dense weight {fusion['dense_weight']:g}"
                if fusion else "sparse views only")
    return (f"In the run recorded in `reports/demo.json` ({r['created_at'][:10]}: {r['model']}, {searched}, "
            f"OpenSearch {r['opensearch']}, {r['documents']:,} pages in {len(r['languages'])} languages; {held_out} "
            "of the "
            f"{r['queries']} pages looked for are held out from training) the queries' heaviest English pivot terms "
            f"were {examples}. The page a query looks for was among the {r['size']} hits shown for {r['found']} of "
            f"{r['queries']} queries (the top hit for {r['top1_found']}), and {r['hits_in_another_language']} of the "
            f"{r['hits_shown']} hits shown were in another language than the query, where a ranking blind to "
            f"language would give about {r['hits_in_another_language_expected']:g}.")


def dense_view_section(source: str = "dense-view") -> str:
    """Which layers milco-mini's dense view reads: nDCG@10 of each variant on the dev sets."""
    r = load(source)
    labels = {"fine-tuned": "fine-tuned top layers (free)", "original": "original top layers (2 more layers)",
              "e5-prefixed": "plain e5-small with its prefixes (a second pass)"}
    runs = list(r["runs"])
    rows = [[labels[v], *(round(r["runs"][run]["metrics"][v]["ndcg@10"], 3) for run in runs),
             round(sum(r["runs"][run]["metrics"][v]["ndcg@10"] for run in runs) / len(runs), 3)]
            for v in r["variants"]]
    return (f"nDCG@10 on the dev sets (pages cut to {r['max_length']['document']} tokens, queries to "
            f"{r['max_length']['query']}; exact cosine), {r['runs'][runs[0]]['queries']} queries per set.\n\n"
            + md_table(["dense view", *runs, "mean"], rows, decimals=3))


def fusion_by_run() -> dict[str, dict[str, float]]:
    """{fused system label: {dev set: nDCG@10}} over the dense dev runs."""
    table: dict[str, dict[str, float]] = {}
    for base in DENSE_SETS:
        for system in load_report(f"eval/dense-{base}-dev")["systems"]:
            if system["kind"] == "fused":
                fusion = system["config"]["dense"]["fusion"]
                key = f"{fusion['norm']}:{fusion['weight']:g}"
                table.setdefault(key, {})[base] = system["metrics"]["overall"]["ndcg@10"]
    return table


def fusion_balance() -> dict[str, float]:
    """{fusion key (``norm:weight``; ``minmax:0``: the sparse views alone): language balance} on the dense run of
    :data:`BALANCE_RUN`."""
    balance = {}
    for label, value in language_balance(f"dense-{BALANCE_RUN}").items():
        if " fused " in label:
            balance[label.rsplit(" ", 1)[1]] = value
        elif label.startswith(f"{CHOSEN_MODEL} α="):
            balance["minmax:0"] = value
    return balance


def sparse_by_run() -> dict[str, float]:
    """{dev set: nDCG@10 of the sparse views alone} in the dense dev runs (the dense list weighted 0)."""
    return {base: next(s["metrics"]["overall"]["ndcg@10"] for s in load_report(f"eval/dense-{base}-dev")["systems"]
                       if s["kind"] == "sparse") for base in DENSE_SETS}


def fusion_candidates() -> dict[str, dict[str, float]]:
    """:func:`fusion_by_run` and the sparse views alone (``minmax:0``): the choices of the default fusion."""
    return {**fusion_by_run(), "minmax:0": sparse_by_run()}


def dev_fusion_choice() -> tuple[str, float]:
    """(normalisation, dense weight) with the best mean nDCG@10 over the dense dev runs that keeps the language
    balance; a weight of 0 (the sparse views alone) is a choice too."""
    best = balanced_choice(fusion_candidates(), fusion_balance())
    norm, _, weight = best.partition(":")
    return norm, float(weight)


def fusion_choice_section() -> str:
    from milco_os.specs import DEFAULT_DENSE_WEIGHT, DEFAULT_FUSION

    table, balance = fusion_candidates(), fusion_balance()
    rows = [[key if key != "minmax:0" else "none (sparse views alone)",
             *(round(table[key][base], 3) for base in DENSE_SETS),
             round(sum(table[key].values()) / len(table[key]), 3), round(balance[key], 2) if key in balance else None]
            for key in table]
    norm, weight = dev_fusion_choice()
    return (md_table(["fusion (norm:dense weight)", *DENSE_SETS, "mean", f"language balance ({BALANCE_RUN})"], rows,
                     decimals=3)
            + f"\n\nLanguage balance as for α (docs/evaluation.md). Best mean on dev with a balance of at least "
            f"{LANGUAGE_BALANCE:g}: {norm} with the dense list weighted {weight:g}; the default of `milco-os "
            f"search`, the service and the library: {DEFAULT_FUSION}, {DEFAULT_DENSE_WEIGHT:g}.")


#: The dense-view runs on whole pages (test only; the choices are made on the cut pages' dev runs).
DENSE_WHOLE_RUNS = ("dense-keywords-clir-test-whole", "dense-titles-clir-test-whole")


def dense_summary_section(split: str = "test") -> str:
    """Sparse, dense view and fused (the default) against BM25 and plain e5-small, per set; the fused list's
    ratio to the better of its two parts (the target: at least 1.1). ``split`` test or dev (cut pages), or whole
    (whole pages, test)."""
    from milco_os.specs import DEFAULT_ALPHA, DEFAULT_DENSE_WEIGHT, DEFAULT_FUSION

    default = f"{CHOSEN_MODEL} fused {DEFAULT_FUSION}:{DEFAULT_DENSE_WEIGHT:g}"
    columns = [f"{CHOSEN_MODEL} α={DEFAULT_ALPHA:g}", f"{CHOSEN_MODEL} dense view", default,
               "BM25 (language analyzers)", "dense multilingual-e5-small"]
    rows = []
    runs = DENSE_WHOLE_RUNS if split == "whole" else [f"dense-{base}-{split}" for base in DENSE_SETS]
    for run in runs:
        values = _overall(load_report(f"eval/{run}"))
        parts = max(values[columns[0]], values[columns[1]])
        label = run.removeprefix("dense-").replace("-test", "").replace("-dev", "")
        rows.append([label, *(round(values[c], 3) for c in columns), f"{values[default] / parts:.2f}×"])
    headers = ["set", "sparse", "dense view", f"fused ({DEFAULT_FUSION}:{DEFAULT_DENSE_WEIGHT:g})", "BM25",
               "e5-small (2nd pass)", "fused / better part"]
    return md_table(headers, rows, decimals=3)


def dense_cost_section(source: str = "dense-cost") -> str:
    """What the dense view costs (bench/dense_cost.py): encoding, index size, latency, with the targets."""
    r = load(source)
    docs = r["settings"]["docs"]
    enc = [[kind, v["sparse_texts_per_s"], v["dense_texts_per_s"], f"{v['ratio']:.2f}×"]
           for kind, v in r["encoding"].items()]
    lat = r["latency_ms"]
    rows = [[name, v["p50"], v["p95"], v["p99"], v["mean"]] for name, v in lat.items() if isinstance(v, dict)]
    size = r["index_bytes"]
    worst = max(v["ratio"] for v in r["encoding"].values())
    return ("Encoding (texts/s, the same texts with and without the dense view, alternating batch by batch):\n\n"
            + md_table(["runtime, texts", "sparse views", "+ dense view", "cost"], enc)
            + f"\n\nIndex of {docs:,} paragraphs (documents pruned `{r['settings']['doc_prune']}`, one segment): "
            f"{size['sparse'] / 2**20:.1f} MiB sparse only, {size['dense'] / 2**20:.1f} MiB with the dense view "
            f"({size['ratio']:.2f}×).\n\nSearch through the library (`search`, query pruning "
            f"`{r['settings'].get('query_prune', 'selective:0.2')}`, queries encoded beforehand), client time in ms, "
            f"{r['settings']['queries']} queries × {r['settings']['repeat']} rounds, interleaved:\n\n"
            + md_table(["search", "p50", "p95", "p99", "mean"], rows)
            + f"\n\nTargets: encoding with the dense view ≤ 1.25× sparse only (worst here {worst:.2f}×: "
            f"{'met' if worst <= 1.25 else 'missed'}); fused p50 ≤ 2× sparse only "
            f"({lat['fused_over_sparse_p50']:.2f}×: {'met' if lat['fused_over_sparse_p50'] <= 2 else 'missed'}).")


#: The test runs over whole pages, merged and with passages (bench/evaluate.py ``_passage_runs``), per set: the
#: sparse systems of both models beside BM25, and milco-mini's fused systems.
PASSAGE_RUNS = {base: (f"passages-{base}-test", f"passages-fused-{base}-test") for base in DENSE_SETS}
PASSAGE_TARGET_SETS = ("titles-clir", "titles-mlir")


def dev_passage_choice(r: dict[str, Any] | None = None) -> str:
    """The engine score mode (max, sum, avg) with the best mean nDCG@10 over the dev sets and both models."""
    from milco_os.specs import PASSAGE_SCORES

    r = r or load("passages-choice")
    return max(PASSAGE_SCORES, key=lambda m: sum(v[m] for v in r["mean_ndcg@10"].values()))


def passages_choice_section(source: str = "passages-choice") -> str:
    """nDCG@10 per way of scoring a document from its passages, per dev set and model (bench/passages.py)."""
    from milco_os.specs import DEFAULT_PASSAGE_SCORE

    r = load(source)
    parts = []
    order = ("merged", "max", "sum", "avg", "top2", "top3", "merged+max", "dense-merged", "dense-max",
             "fused-merged", "fused-max")
    for model, runs in r["results"].items():
        variants = [v for v in sorted(r["variants"], key=lambda v: order.index(v) if v in order else len(order))
                    if all(v in runs[run] for run in runs)]
        rows = [[run.removesuffix("-dev"), *(round(runs[run][v]["ndcg@10"], 3) for v in variants)] for run in runs]
        rows.append(["mean", *(round(r["mean_ndcg@10"][model][v], 3) for v in variants)])
        parts.append(f"**{model}** (dev, whole pages; "
                     f"{sum(e['queries'] for e in r['encoding'][model].values()):,} queries over the four sets, "
                     f"{next(iter(r['encoding'][model].values()))['passages_per_document']:g} passages per English "
                     "page):\n\n" + md_table(["set", *variants], rows, decimals=3))
    choice = dev_passage_choice(r)
    both = {m: v["merged+max"] / v["max"] - 1 for m, v in r["mean_ndcg@10"].items()}
    merged = {m: v["max"] / v["merged"] - 1 for m, v in r["mean_ndcg@10"].items()}
    return ("\n\n".join(parts)
            + f"\n\nBest engine score mode on dev (mean over the sets and models): {choice}; the default "
            f"(`--passage-score`): {DEFAULT_PASSAGE_SCORE}. The best passage against the merged vector: "
            + ", ".join(f"{m} {v:+.0%}" for m, v in merged.items())
            + "; storing the merged vector beside the passages and summing both scores (`merged+max`) against the "
            "best passage alone: " + ", ".join(f"{m} {v:+.0%}" for m, v in both.items()) + ".")


def passages_summary_section() -> str:
    """Whole pages on test, through the engine: BM25, merged and passages per model and milco-mini fused, and the
    targets (met or missed, for the sparse and the fused systems)."""
    from milco_os.specs import DEFAULT_ALPHA, DEFAULT_DENSE_WEIGHT, DEFAULT_FUSION

    rows, verdicts = [], {"sparse": [], "fused": []}
    fused = f"milco-mini fused {DEFAULT_FUSION}:{DEFAULT_DENSE_WEIGHT:g}"
    for base, (run, fused_run) in PASSAGE_RUNS.items():
        values = _overall(load_report(f"eval/{run}")) | _overall(load_report(f"eval/{fused_run}"))
        bm25 = values["BM25 (language analyzers)"]
        row: list[Any] = [base, round(bm25, 3)]
        for kind, model in (("sparse", f"milco-mini α={DEFAULT_ALPHA:g}"), ("sparse", "splade-tiny"), ("fused", fused)):
            merged, passages = values[model], values[f"{model} passages"]
            row += [round(merged, 3), round(passages, 3), f"{passages / merged:.2f}×"]
            if base in PASSAGE_TARGET_SETS and model != "splade-tiny":
                met = ("met" if passages >= 1.2 * bm25 else "missed", "met" if passages >= 1.15 * merged else "missed")
                verdicts[kind].append(f"{base} {passages / bm25:.2f}× BM25 ({met[0]}), {passages / merged:.2f}× "
                                      f"merged ({met[1]})")
        rows.append(row)
    headers = ["set", "BM25"]
    for model in ("milco-mini", "splade-tiny", f"milco-mini fused ({DEFAULT_FUSION}:{DEFAULT_DENSE_WEIGHT:g})"):
        headers += [f"{model} merged", "passages", "/ merged"]
    return (md_table(headers, rows, decimals=3)
            + "\n\nTargets (whole-page CLIR and MLIR: passages ≥ 1.2× BM25 and ≥ 1.15× merged), milco-mini's sparse "
            f"views: {'; '.join(verdicts['sparse'])}. Fused with its dense view: {'; '.join(verdicts['fused'])}.")


def passages_cost_section(source: str = "passages-cost") -> str:
    """What passages cost beside the merged layout (bench/passages_cost.py): encoding, index size, latency."""
    r = load(source)
    corpus, size, lat, enc = r["corpus"], r["index_bytes"], r["latency_ms"], r["encoding"]
    rows = [[name, v["p50"], v["p95"], v["p99"], v["mean"]] for name, v in lat.items() if isinstance(v, dict)]
    ratio = lat["passages_over_merged_p50"]
    corpora = ", ".join(f"{name} {n:,}" for name, n in corpus["corpora"].items())
    return (f"Whole help pages in {len(corpus['languages'])} languages (the eval sets' corpora and any languages "
            f"added whole: {corpora}): {corpus['documents']:,} pages, {corpus['passages']:,} passages "
            f"({corpus['passages_per_document']:g} per page), documents pruned `{r['settings']['doc_prune']}`, "
            "one segment each: "
            f"{size['merged'] / 2**20:.1f} MiB merged, {size['passages'] / 2**20:.1f} MiB with passages "
            f"({size['ratio']:.2f}×). Encoding {enc['texts']} of the pages merged and into passages, alternating: "
            f"{enc['merged_texts_per_s']:g} and {enc['passages_texts_per_s']:g} pages/s ({enc['ratio']:.2f}×).\n\n"
            f"Search through the library (`search`, query pruning `{r['settings']['query_prune']}`, queries encoded "
            f"beforehand), client time in ms, {r['settings']['queries']} queries × {r['settings']['repeat']} rounds, "
            "interleaved:\n\n" + md_table(["search", "p50", "p95", "p99", "mean"], rows)
            + f"\n\nTargets: index ≤ 2× merged ({size['ratio']:.2f}×: {'met' if size['ratio'] <= 2 else 'missed'}); "
            f"p50 ≤ 1.5× merged ({ratio:.2f}×: {'met' if ratio <= 1.5 else 'missed'}).")


def startup_section(source: str = "startup") -> str:
    r = load(source)
    targets = r["targets_s"]
    rows = [[what, round(seconds, 2), targets.get(what), ("met" if seconds < targets[what] else "missed")
             if what in targets else None] for what, seconds in r["seconds"].items()]
    head = (f"{r['model']}, a fresh `milco-os` process per measurement (start to exit), median of {r['runs']} runs, "
            "the model's files in the cache and in the page cache (the second of two runs a user makes); the "
            "interactive search mode keeps the model loaded, so a further query costs only its own search.\n\n")
    return head + md_table(["what", "seconds", "target (s)", ""], rows)


#: The evaluation runs repeated on Elasticsearch (``bench/evaluate.py --url <Elasticsearch> --reports
#: reports/eval/elasticsearch``), beside their OpenSearch reports.
ENGINE_RUNS = ("titles-clir-dev", "keywords-clir-dev")


def engines_section() -> str:
    """nDCG@10 of the same evaluation runs on OpenSearch and on Elasticsearch, system by system."""
    rows, versions = [], {}
    for run in ENGINE_RUNS:
        on = {"OpenSearch": load_report(f"eval/{run}"), "Elasticsearch": load_report(f"eval/elasticsearch/{run}")}
        versions = {engine: r["opensearch"]["version"] for engine, r in on.items()}
        elastic = {x["name"]: x for x in on["Elasticsearch"]["systems"]}
        for system in on["OpenSearch"]["systems"]:
            if system["name"] in elastic:
                a, b = (x["metrics"]["overall"]["ndcg@10"] for x in (system, elastic[system["name"]]))
                rows.append([run, system["name"], round(a, 3), round(b, 3), round(b - a, 3)])
    head = (f"OpenSearch {versions['OpenSearch']} and Elasticsearch {versions['Elasticsearch']} (the local node's "
            "integration-test zip), the same queries, corpus and encodings, `bench/evaluate.py` with `--url` and "
            "`--reports reports/eval/elasticsearch`; nDCG@10.\n\n")
    return head + md_table(["run", "system", "OpenSearch", "Elasticsearch", "difference"], rows, decimals=3)


def activation_outliers_section() -> str:
    """docs/csplade.md: what a per-tensor int8 quantiser sees in each model's activations
    (bench/activation_outliers.py)."""
    rows = []
    for model in ("csplade-mini", "milco-mini"):
        r = load(f"activation-outliers-{model}")
        layers = r["layers"]
        worst = max(layers, key=lambda x: x["max_over_median"])
        rows.append([model, len(layers), round(r["summary"]["median_max_over_median"]),
                     sum(x["share_rounded_to_zero"] >= 0.99 for x in layers),
                     sum(x["share_rounded_to_zero"] >= 0.9 for x in layers), f"`{worst['linear']}`",
                     round(worst["max_over_median"]), f"{worst['share_rounded_to_zero']:.1%}"])
    return md_table(["model", "linear layers", "median max/median", "layers ≥ 99% rounded to zero",
                     "layers ≥ 90%", "worst layer", "its max/median", "its values rounded to zero"], rows)


def seismic_section(source: str = "seismic") -> str:
    """BENCHMARKS.md §16 and docs/seismic.md: ``reports/bench/seismic.json`` (bench/seismic.py)."""
    r = load(source)
    runs = sorted(r["runs"].values(), key=lambda x: x["documents"])
    rows = []
    for run in runs:
        bm25 = {x["concurrency"]: x["client_ms"]["p50"] for x in run["latency"] if x["variant"] == "bm25 match"}
        for x in run["latency"]:
            index = run["indices"]["seismic" if x["variant"].startswith("seismic") else "exact"]
            rows.append([run["documents"], run["real_documents"], x["concurrency"], x["variant"], x["client_ms"]["p50"],
                         x["client_ms"]["p99"], round(x["client_ms"]["p50"] / bm25[x["concurrency"]], 2),
                         x["recall_at_10"], round(index["store_bytes"] / 2**20, 1)])
    builds = [[run["documents"], name, built["docs_per_s"], built["merge_s"], round(built["store_bytes"] / 2**20, 1)]
              for run in runs for name, built in run["indices"].items()]
    curve_run = next((run for run in runs if run["curve"]), None)
    curve = [[", ".join(f"{k}={v}" for k, v in p["params"].items()), p["client_ms"]["p50"], p["client_ms"]["p99"],
              p["recall_at_10"]] for p in (curve_run["curve"] if curve_run else [])]
    s = r["settings"]
    build = ", ".join(f"{k}={v}" for k, v in runs[0]["seismic_build"].items())
    head = (f"OpenSearch {r['opensearch']['version']} with neural-search, one node; document pruning "
            f"`{s['doc_prune']}` per view; {s['queries']} title queries × {s['repeat']} rounds, variants "
            "interleaved, each on its own index (BM25 and the exact queries on the `rank_features` index); both "
            "indices force-merged to one segment, vectors not in `_source`. "
            f"SEISMIC build: {build}. Recall@10 is against the exact full query. Documents beyond "
            f"{s['real']:,} are **synthetic**: perturbed copies of the real paragraphs (growth.py's corpus), whose "
            "near-duplicates tie closely, which lowers recall@10 against any exact ranking.\n\n")
    out = head + md_table(["documents", "real", "clients", "variant", "p50 ms", "p99 ms", "p50 / BM25", "recall@10",
                           "index MiB"], rows)
    out += "\n\nBuilding each index (bulk load, then the force-merge that clusters SEISMIC's postings):\n\n"
    out += md_table(["documents", "index", "docs/s loaded", "merge s", "MiB"], builds)
    if curve_run:
        out += (f"\n\nQuery-time parameters on the SEISMIC index of {curve_run['documents']:,} documents (1 client, "
                "one at a time, not interleaved):\n\n")
        out += md_table(["parameters", "p50 ms", "p99 ms", "recall@10"], curve)
        default = curve_run["seismic_build"]
        changed = [[", ".join(f"{k}={v}" for k, v in b["params"].items() if v != default[k]), b["index"]["docs_per_s"],
                    b["index"]["merge_s"], round(b["index"]["store_bytes"] / 2**20, 1), b["client_ms"]["p50"],
                    b["recall_at_10"]] for b in curve_run.get("build_curve", [])]
        if changed:
            out += ("\n\nBuild-time parameters (each a SEISMIC index of its own, the default query, 1 client; "
                    "the rest as the build above):\n\n")
            out += md_table(["changed", "docs/s loaded", "merge s", "MiB", "p50 ms", "recall@10"], changed)
    if "weights" in runs[0]:
        w = runs[0]["weights"]
        out += (f"\n\nLargest pivot weights (what the quantisation ceilings must cover): documents "
                f"{w['document_pivot_max']}, queries {w['query_pivot_max']}.")
    return out


MILCO_DEV_SETS = ("titles-clir", "keywords-clir", "titles-mlir", "keywords-mlir")
#: The α bench/milco_dev.py measures at beside pivot-only (its ``ALPHAS[0]``), query pruning included.
MILCO_DEV_ALPHA = 0.5


def milco_dev_report(source: str = "") -> dict[str, Any]:
    """``reports/milco/<source>.json`` (bench/milco_dev.py), by default the newest milco-mini's dev report."""
    name = source or f"milco-mini-{newest_delta('milco_mini').name}-dev"
    return json.loads((ROOT / "reports" / "milco" / f"{name}.json").read_text(encoding="utf-8"))


def milco_dev_section(source: str = "") -> str:
    """docs/models.md: milco-mini on the four dev sets in memory, and the studied changes that need no training."""
    r = milco_dev_report(source)

    def row(label: str, result: dict[str, Any]) -> list[Any]:
        s = result["summary"]
        return [label, *(f"{result['sets'][n]['0.5']['ndcg@10']:.3f}" for n in MILCO_DEV_SETS),
                f"{s['ndcg@10 a=0.5']:.3f}", f"{s['ndcg@10 a=1.0']:.3f}", f"{s['postings_per_query']:,.0f}",
                f"`{result['always_on_term']}` {100 * result['always_on']:.0f}%",
                f"{s['other_language']:.3f} / {s['other_language_blind']:.3f}",
                f"{s['names ndcg@10 a=0.5']:.3f} / {s['names ndcg@10 a=1.0']:.3f}"]

    headers = ["variant", *(f"{n} α 0.5" for n in MILCO_DEV_SETS), "mean α 0.5", "mean α 1",
               "postings / query", "always-on (English pages, top 20)", "MLIR hits in another language / blind",
               f"name queries ({r['summary']['name_queries']}) α 0.5 / α 1"]
    rows = [row(f"{r['model']} as shipped", r)] + [row(st["variant"], st) for st in r.get("studies", [])]
    return (f"nDCG@10 on {r['split']}, {r['queries_per_set']:,} queries per set, documents cut to their top "
            f"{r['doc_top_k']} terms per view, exact scores in memory (`bench/milco_dev.py`); postings / query: "
            "the pivot postings a query's terms point at in its set's 2,560 pages.\n\n" + md_table(headers, rows))


def milco_echo_languages_section(source: str = "") -> str:
    """docs/models.md: what the echo view adds for each query language (nDCG@10 at α 0.5 minus α 1), on dev."""
    r = milco_dev_report(source)
    langs = sorted({lang for n in MILCO_DEV_SETS for lang in r["sets"][n]["0.5"]["per_language"]})

    def gain(name: str, lang: str) -> str:
        by = r["sets"][name]
        if lang not in by["0.5"]["per_language"]:
            return "-"
        return f"{round(by['0.5']['per_language'][lang] - by['1.0']['per_language'][lang], 3) + 0.0:+.3f}"  # no -0.000

    rows = [[lang, *(gain(n, lang) for n in MILCO_DEV_SETS)] for lang in langs]
    return md_table(["query language", *MILCO_DEV_SETS], rows)


def milco_query_prune_section(source: str = "") -> str:
    """docs/models.md: the product's query pruning rules on dev, for the bench/milco_dev.py reports ``source`` names
    (paths under ``reports/`` without ``.json``, comma-separated; the first is the baseline the postings are counted
    against) and then the newest milco-mini."""
    from milco_os.specs import DEFAULT_QUERY_PRUNE

    reports = [json.loads((ROOT / "reports" / f"{name}.json").read_text(encoding="utf-8"))
               for name in filter(None, source.split(","))]
    shipped = milco_dev_report()
    reports += [shipped] if shipped["model"] not in {r["model"] for r in reports} else []
    base = reports[0]["summary"][f"query prune {DEFAULT_QUERY_PRUNE} postings_per_query"]
    rows = []
    for r in reports:
        s = r["summary"]
        label = r["model"] if r["model"].startswith("milco-mini@") else r["delta"].removeprefix("results/train/")
        rows.append([label, "none", f"{s[f'ndcg@10 a={MILCO_DEV_ALPHA}']:.3f}", f"{s['postings_per_query']:,.0f}",
                     f"{s['postings_per_query'] / base:.2f}x"])
        for rule in next(iter(r["sets"].values()))["query_prune"]:
            postings = s[f"query prune {rule} postings_per_query"]
            mark = " (default)" if rule == DEFAULT_QUERY_PRUNE else ""
            rows.append([label, f"`{rule}`{mark}", f"{s[f'query prune {rule} ndcg@10']:.3f}", f"{postings:,.0f}",
                         f"{postings / base:.2f}x"])
    return md_table(["model", "query pruning", f"mean nDCG@10 (α {MILCO_DEV_ALPHA:g})", "postings / query",
                     f"vs {reports[0]['model']} with `{DEFAULT_QUERY_PRUNE}`"], rows)


SECTIONS: dict[str, Callable[..., str]] = {
    "machine": machine_section, "encode": encode_section, "latency": latency_section,
    "index_size": index_size_section, "throughput": throughput_section, "quality": quality_section,
    "growth": growth_section, "scale": scale_section, "targets": targets_section, "ml_commons": ml_commons_section,
    "build-targets": build_targets_section, "eval-summary": eval_summary_section, "alpha": alpha_section,
    "demo": demo_section, "model-summary": model_summary_section, "search-choices": search_choices_section,
    "csplade-runs": csplade_runs_section, "csplade-dev": csplade_dev_section,
    "csplade-projection": csplade_projection_section, "csplade-eval": csplade_eval_section,
    "csplade-summary": csplade_summary_section, "csplade-variants": csplade_variants_section,
    "quantisation": quantisation_section,
    "quantisation-csplade-mini-1": lambda: quantisation_section("quantisation-csplade-mini-1"),
    "gates": gates_section, "dense-view": dense_view_section, "fusion-choice": fusion_choice_section,
    "dense-summary": dense_summary_section, "dense-cost": dense_cost_section,
    "passages-choice": passages_choice_section, "passages-summary": passages_summary_section,
    "passages-cost": passages_cost_section, "startup": startup_section, "engines": engines_section,
    "seismic": seismic_section, "seismic-eval": seismic_eval_section,
    "activation-outliers": activation_outliers_section,
    "seismic-targets": lambda: _targets((("seismic",), seismic_targets)),
    "milco-dev": milco_dev_section, "milco-echo-languages": milco_echo_languages_section,
    "milco-query-prune": milco_query_prune_section,
}


def render(name: str) -> str:
    """The text of section ``name``: ``SECTION`` (from its default report), ``SECTION@REPORT`` (from
    ``reports/bench/REPORT.json``), or ``eval:<run>`` (one evaluation report's tables)."""
    if name.startswith("eval:"):
        from milco_os.evaluation.report import markdown_table

        return markdown_table(load_report(f"eval/{name.removeprefix('eval:')}"), timings=False).rstrip("\n")
    section, _, source = name.partition("@")
    if section not in SECTIONS:
        raise SystemExit(f"no generator for section {name!r}; known: {', '.join(SECTIONS)}, eval:<run>")
    return SECTIONS[section](source) if source else SECTIONS[section]()


def sections_of(text: str) -> list[str]:
    return [m.group(2) for m in SECTION.finditer(text)]


class MissingReport(Exception):
    """A generated section's report is not in ``reports/``."""


def regenerate(text: str, missing: list[str] | None = None) -> str:
    """``text`` with every generated section rewritten (the sections of :data:`NOT_KEPT` whose report is still
    missing are left as they are). A section whose report is missing raises :class:`MissingReport`, or, with a
    ``missing`` list, is left as it is and named there."""
    def one(m: re.Match[str]) -> str:
        name = m.group(2)
        if name in NOT_KEPT and not report_path(f"bench/{NOT_KEPT[name]}").is_file():
            return m.group(0)
        try:
            return m.group(1) + render(name) + "\n" + m.group(4)
        except SystemExit as e:
            if missing is None:
                raise MissingReport(f"section {name}: {e}") from None
            missing.append(f"{name}: {e}")
            return m.group(0)

    return SECTION.sub(one, text)


def drifted(docs_root: Path = ROOT) -> list[str]:
    """``doc: section`` for every generated section of the docs under ``docs_root`` that differs from what
    :func:`regenerate` writes, or whose report is missing."""
    out = []
    for doc in DOCS:
        text = (docs_root / doc).read_text(encoding="utf-8")
        missing: list[str] = []
        fresh = [m.group(0) for m in SECTION.finditer(regenerate(text, missing))]
        out += [f"{doc}: {m.group(2)}" for m, new in zip(SECTION.finditer(text), fresh, strict=True)
                if new != m.group(0)]
        out += [f"{doc}: {name}" for name in missing]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="change nothing; exit 1 naming every drifted section")
    mode.add_argument("--print", metavar="NAME", help="print one section, change nothing")
    mode.add_argument("--targets", action="store_true", help="print the targets table only, change nothing")
    args = parser.parse_args(argv)
    if args.targets:
        print(targets_section() + "\n" + "\n".join(build_targets_section().splitlines()[2:]))
        return 0
    if args.print:
        print(render(args.print))
        return 0
    if args.check:
        stale = drifted()
        for line in stale:
            print(f"drifted: {line} (run bench/report.py)", file=sys.stderr)
        return 1 if stale else 0
    for doc in DOCS:
        path = ROOT / doc
        text = path.read_text(encoding="utf-8")
        try:
            fresh = regenerate(text)
        except MissingReport as e:
            raise SystemExit(f"{doc}: {e}") from None
        if fresh != text:
            path.write_text(fresh, encoding="utf-8")
            print(f"updated {doc}", file=sys.stderr)
    CHARTS.mkdir(parents=True, exist_ok=True)
    for chart in CHART_FILES:
        if (CHART_RESULTS / chart).is_file():
            shutil.copyfile(CHART_RESULTS / chart, CHARTS / chart)
    for run, chart in EVAL_CHARTS.items():
        if (ROOT / "results" / "eval" / run / "ndcg@10.png").is_file():
            shutil.copyfile(ROOT / "results" / "eval" / run / "ndcg@10.png", ROOT / "docs" / chart)
    return 0


if __name__ == "__main__":
    sys.exit(main())
