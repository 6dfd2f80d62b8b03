"""Write the measured sections of BENCHMARKS.md from ``results/bench/*.json`` and copy the charts to
``docs/bench/``, so the document shows exactly what the last run printed.

    .venv/bin/python bench/report.py            # update BENCHMARKS.md in place
    .venv/bin/python bench/report.py --print    # print the sections instead
    .venv/bin/python bench/report.py --targets  # print the targets, met and missed (the end of make bench)

Each generated section sits between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->``; the prose
around them is written by people and left alone.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results" / "bench"
DOC = ROOT / "BENCHMARKS.md"
CHARTS = ROOT / "docs" / "bench"
CHART_FILES = ["encode.png", "latency.png", "index_size.png", "throughput.png", "quality-libreoffice-clir.png",
               "quality-libreoffice-mlir.png", "growth.png", "scale.png"]


def load(name: str) -> dict[str, Any]:
    path = RESULTS / f"{name}.json"
    if not path.is_file():
        raise SystemExit(f"{path}: missing; run `make bench` (or the bench/{name}.py script) first")
    return json.loads(path.read_text(encoding="utf-8"))


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        if v is None:
            return "-"
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
def machine_section() -> str:
    m = load("latency")["machine"]
    os_facts = load("latency")["opensearch"]
    return (f"{m['logical_cores']} logical CPUs ({m['cpu']}), {m['memory_gb']} GiB RAM, "
            f"{'GPU ' + m['gpu'] if m['gpu'] else 'no GPU'}; Python {m['python']}, torch {m['torch']}, "
            f"onnxruntime {m['onnxruntime']}; OpenSearch {os_facts['version']} (one node, heap "
            f"{os_facts['heap_max_mb'][0]} MB) on the same machine as the benchmark client.")


def encode_section() -> str:
    r = load("encode")
    rows = [[x["kind"], x["batch_size"], x["runtime"], round(x["texts_per_s"], 1), x["speedup"], x["peak_rss_mb"],
             x["top10_overlap"]] for x in r["results"]]
    t = r["texts"]
    head = (f"{r['model']}: {t['queries']} queries of {t['mean_tokens']['queries']} tokens, {t['documents']} "
            f"documents of {t['mean_tokens']['documents']} tokens on average.\n\n")
    return head + md_table(["texts", "batch", "runtime", "texts/s", "× torch fp32", "peak RSS MB",
                            "top-10 overlap"], rows)


def latency_section() -> str:
    r = load("latency")
    c = r["corpus"]
    rows = [[x["variant"], x["concurrency"], x["query_terms"].get("total"), x.get("postings_per_query"),
             x["client_ms"]["p50"],
             x["client_ms"]["p95"], x["client_ms"]["p99"], x["opensearch_took_ms"]["p50"], x["qps"],
             x["p50_vs_bm25"], x["p99_vs_full"], x["top10_overlap_with_full"], x["identical_top10_with_full"]]
            for x in sorted(r["results"], key=lambda x: x["concurrency"])]
    enc = r["query_encoding_ms"]
    s = r["settings"]
    head = (f"{c['documents']:,} paragraphs in {len(c['languages'])} languages; document pruning "
            f"`{s['doc_prune']}` per view ({c['terms_per_doc_indexed']['total']} terms/doc indexed, "
            f"{c['terms_per_doc_unpruned']['total']} before pruning); {s['queries']} title queries; index "
            f"{c['store_bytes'] / 2**20:.0f} MiB after force-merge. Milliseconds are client-side (request sent "
            f"to response parsed) and exclude query encoding; \"took\" is OpenSearch's own time; \"postings / query\" "
            f"is how many (document, term) entries the query's terms point at, the work before any skipping.\n\n")
    tail = (f"\n\nQuery encoding, measured separately ({s['model']}, {s['runtime']}, one query at a time): "
            f"p50 {enc['p50']} ms, p95 {enc['p95']} ms, p99 {enc['p99']} ms.")
    return head + md_table(["variant", "clients", "query terms", "postings / query", "p50 ms", "p95 ms", "p99 ms",
                            "took p50 ms", "QPS",
                            "p50 / BM25", "p99 / full", "top-10 overlap with full", "identical top-10"],
                           rows) + tail


def index_size_section() -> str:
    r = load("index_size")
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


def throughput_section() -> str:
    r = load("throughput")
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


def scale_section() -> str:
    r = load("scale")
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


def quality_section() -> str:
    r = load("quality")
    parts = []
    for dataset, data in r["datasets"].items():
        rows = [[p["system"], p["doc_pruning"] or "-", p["query_pruning"] or "-",
                 (p["doc_terms"] or {}).get("total"), (p.get("query_terms") or {}).get("total"),
                 round(p["ndcg@10"], 3), pct(p["vs_full_query"]) if p.get("vs_full_query") is not None else "-",
                 p["latency_ms"]["p50"], p["latency_ms"]["p99"]] for p in data["points"]]
        parts.append(f"**{dataset}** (test split, {data['documents']:,} documents, {data['queries']} queries)\n\n"
                     + md_table(["system", "document pruning", "query pruning", "doc terms", "query terms",
                                 "nDCG@10", "vs full query", "p50 ms", "p99 ms"], rows))
    return "\n\n".join(parts)


def p50_growth(results: list[dict[str, Any]], small: int, large: int, variant: str, c: int) -> float:
    """How many times slower ``variant`` answers (p50, ``c`` clients) on ``large`` documents than on ``small``."""
    p50 = {x["documents"]: x["client_ms"]["p50"] for x in results if x["variant"] == variant and x["concurrency"] == c}
    return round(p50[large] / p50[small], 2)


def growth_section() -> str:
    r = load("growth")
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
    """The search targets (latency, quality, growth); missing results are missed targets, named by script."""
    return _targets((("latency", "quality"), search_targets),)


def build_targets_section() -> str:
    """The encoding, ingest and index-size targets."""
    return _targets((("encode",), encode_targets), (("throughput",), throughput_targets),
                    (("index_size",), index_size_targets))


def _targets(*groups: tuple[tuple[str, ...], Callable[..., list[list[str]]]]) -> str:
    rows = []
    for names, build in groups:
        missing = [n for n in names if not (RESULTS / f"{n}.json").is_file()]
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
    if not (RESULTS / "growth.json").is_file():
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


SECTIONS: dict[str, Callable[[], str]] = {
    "machine": machine_section, "encode": encode_section, "latency": latency_section,
    "index_size": index_size_section, "throughput": throughput_section, "quality": quality_section,
    "growth": growth_section, "scale": scale_section, "targets": targets_section,
    "build-targets": build_targets_section,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--print", action="store_true", help="print the sections, change nothing")
    parser.add_argument("--targets", action="store_true", help="print the targets table only, change nothing")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help="the sections to write (after a partial run: those whose scripts ran)")
    args = parser.parse_args(argv)
    if args.targets:
        print(targets_section() + "\n" + "\n".join(build_targets_section().splitlines()[2:]))
        return 0
    sections = {name: SECTIONS[name]() for name in args.sections.split(",")}
    if args.print:
        for name, text in sections.items():
            print(f"<!-- bench:{name} -->\n{text}\n<!-- /bench:{name} -->\n")
        return 0
    doc = DOC.read_text(encoding="utf-8")
    for name, text in sections.items():
        pattern = re.compile(rf"(<!-- bench:{name} -->\n).*?(<!-- /bench:{name} -->)", re.S)
        if not pattern.search(doc):
            raise SystemExit(f"{DOC.name}: no <!-- bench:{name} --> ... <!-- /bench:{name} --> section")
        doc = pattern.sub(lambda m, text=text: m.group(1) + text + "\n" + m.group(2), doc)
    DOC.write_text(doc, encoding="utf-8")
    CHARTS.mkdir(parents=True, exist_ok=True)
    for chart in CHART_FILES:
        if (RESULTS / chart).is_file():
            shutil.copyfile(RESULTS / chart, CHARTS / chart)
    print(f"updated {DOC.name} and {CHARTS.relative_to(ROOT)}/", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
