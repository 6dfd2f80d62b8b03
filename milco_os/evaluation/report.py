"""Evaluation reports: one JSON document per evaluation, a PNG chart of nDCG@10, a Markdown table, and the
terminal tables ``milco-os eval`` prints.

Report layout (``report.json``)::

    {"dataset", "split", "languages", "created_at", "milco_os_version", "opensearch": {...},
     "counts": {"documents", "queries", "judged_queries", "qrels", "documents_per_language",
                "queries_per_language"},
     "metrics": ["ndcg@10", "mrr@10", "recall@100"],
     "systems": [{"name", "kind", "config", "stats", "timing",
                  "metrics": {"overall": {metric: mean, "queries": n}, "per_language": {lang: {...}}}}]}

Per-query values go into ``per_query.json`` (``{system: {query id: {metric: value}}}``) beside it.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from milco_os import __version__
from milco_os.evaluation.metrics import METRICS, evaluate, language_blind_share, other_language_share
from milco_os.evaluation.systems import EvalSetLike, SystemResult

REPORT_FILE = "report.json"
PER_QUERY_FILE = "per_query.json"
CHART_FILE = "ndcg@10.png"
#: The overall metric of a system on a corpus in several languages: its top-10 hits in another language than
#: the query (a share); the report carries a ranking blind to language's as ``other_language@10_blind``.
OTHER_LANGUAGE = "other_language@10"

if TYPE_CHECKING:
    from rich.table import Table


def eval_counts(evalset: EvalSetLike) -> dict[str, Any]:
    judged = [qid for qid, docs in evalset.qrels.items() if any(g > 0 for g in docs.values())]
    query_ids = {q["id"] for q in evalset.queries}
    return {
        "documents": len(evalset.corpus),
        "queries": len(evalset.queries),
        "judged_queries": len([q for q in judged if q in query_ids]),
        "qrels": sum(1 for qid, docs in evalset.qrels.items() if qid in query_ids for g in docs.values() if g > 0),
        "documents_per_language": dict(sorted(Counter(d["lang"] for d in evalset.corpus).items())),
        "queries_per_language": dict(sorted(Counter(q["lang"] for q in evalset.queries).items())),
    }


def build_report(
    evalset: EvalSetLike,
    results: Sequence[SystemResult],
    *,
    dataset: str,
    split: str,
    languages: Sequence[str],
    opensearch: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(report, per_query)``: metrics of every system on the queries of ``evalset``."""
    query_ids = {q["id"] for q in evalset.queries}
    qrels = {qid: docs for qid, docs in evalset.qrels.items() if qid in query_ids}
    query_lang = {q["id"]: q["lang"] for q in evalset.queries}
    # A corpus in several languages: how often hits are in another language than their query (and what a
    # ranking blind to language would give), the preference for the query's own language that nDCG hides.
    doc_lang = {d["id"]: d["lang"] for d in evalset.corpus if "lang" in d}
    balance = len(set(doc_lang.values())) > 1
    judged_lang = {qid: lang for qid, lang in query_lang.items() if qid in qrels}
    systems, per_query = [], {}
    for result in results:
        scores = evaluate(result.run, qrels, query_lang)
        per_query[result.name] = scores.pop("per_query")
        if balance:  # over the judged queries: the share skips queries that judged_lang leaves out
            scores["overall"][OTHER_LANGUAGE] = other_language_share(result.run, judged_lang, doc_lang)
        systems.append({
            "name": result.name,
            "kind": result.kind,
            "config": result.config,
            "stats": result.stats,
            "timing": {k: round(v, 3) for k, v in result.timing.items()},
            "metrics": scores,
        })
    report = {
        "dataset": dataset,
        "split": split,
        "languages": list(languages),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "milco_os_version": __version__,
        "opensearch": dict(opensearch or {}),
        "counts": eval_counts(evalset),
        "metrics": list(METRICS),
        "systems": systems,
        **({f"{OTHER_LANGUAGE}_blind": language_blind_share(judged_lang, doc_lang)} if balance else {}),
        **dict(extra or {}),
    }
    return report, per_query


def write_report(report: Mapping[str, Any], per_query: Mapping[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write ``report.json``, ``per_query.json`` and the nDCG@10 chart into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"report": out_dir / REPORT_FILE, "per_query": out_dir / PER_QUERY_FILE, "chart": out_dir / CHART_FILE}
    paths["report"].write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    paths["per_query"].write_text(json.dumps(per_query, ensure_ascii=False) + "\n", encoding="utf-8")
    plot_ndcg(report, paths["chart"])
    return paths


def read_report(path: Path) -> dict[str, Any]:
    path = Path(path)
    return json.loads((path / REPORT_FILE if path.is_dir() else path).read_text(encoding="utf-8"))


def chart_groups(report: Mapping[str, Any], metric: str = "ndcg@10") -> tuple[list[str], dict[str, list[float]]]:
    """``(groups, {system: value per group})``: "overall" first, then every language of any system."""
    langs = sorted({lang for s in report["systems"] for lang in s["metrics"]["per_language"]})
    groups = ["overall", *langs]
    values = {}
    for s in report["systems"]:
        per_lang = s["metrics"]["per_language"]
        values[s["name"]] = [float(s["metrics"]["overall"][metric])] + [
            float(per_lang[lang][metric]) if lang in per_lang else 0.0 for lang in langs
        ]
    return groups, values


def plot_ndcg(report: Mapping[str, Any], path: Path, metric: str = "ndcg@10") -> Path:
    """A grouped bar chart of ``metric``: one group overall plus one per language, one bar per system."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups, values = chart_groups(report, metric)
    n_systems = max(len(values), 1)
    width = 0.8 / n_systems
    fig, ax = plt.subplots(figsize=(max(6.0, 1.0 + len(groups) * (0.5 + 0.3 * n_systems)), 4.5), dpi=120)
    try:
        for i, (system, ys) in enumerate(values.items()):
            xs = [g + (i - (n_systems - 1) / 2) * width for g in range(len(groups))]
            bars = ax.bar(xs, ys, width=width, label=system)
            overall = bars.patches[0]  # label the overall value
            ax.annotate(f"{ys[0]:.3f}", (overall.get_x() + overall.get_width() / 2, overall.get_height()),
                        xytext=(0, 2), textcoords="offset points", ha="center", va="bottom", fontsize=7,
                        rotation=90 if n_systems > 2 else 0)
        ax.set_xticks(range(len(groups)), groups)
        ax.set_ylim(0, 1.15 if n_systems > 2 else 1.08)
        ax.set_ylabel(metric)
        counts = report.get("counts", {})
        ax.set_title(
            f"{report.get('dataset', '?')} ({report.get('split', '?')}): {metric}, "
            f"{counts.get('judged_queries', '?')} queries, {counts.get('documents', '?')} documents",
            fontsize=10,
        )
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        fig.tight_layout()
        fig.savefig(path, bbox_inches="tight")
    finally:
        plt.close(fig)
    return Path(path)


def _system_label(system: Mapping[str, Any]) -> str:
    config = system.get("config", {})
    if system["kind"] == "sparse":
        pruning = config.get("document_pruning", {})
        prune = pruning.get("pivot", "none")
        if pruning.get("echo", prune) != prune:
            prune = f"pivot {prune}, echo {pruning.get('echo')}"
        return f"{system['name']} ({config.get('model', {}).get('name')}, α={config.get('alpha')}, prune {prune})"
    if system["kind"] == "bm25":
        return f"{system['name']} ({config.get('analyzer')} analyzers)"
    return f"{system['name']} ({config.get('model', {}).get('name', '')})"


def _optional(system: Mapping[str, Any], stat: str, unit: float, fmt: str) -> str:
    """A stat cell, ``-`` where the system or an older report has none."""
    value = system.get("stats", {}).get(stat)
    return "-" if value is None else format(value / unit, fmt)


def markdown_table(report: Mapping[str, Any], timings: bool = True) -> str:
    """Two Markdown tables: every metric overall (with document terms, index size and, with ``timings``, index
    and search seconds), then nDCG@10 per language."""
    metrics = report.get("metrics", list(METRICS))
    lines = [
        f"**{report['dataset']}**, split {report['split']}: {report['counts']['judged_queries']} queries, "
        f"{report['counts']['documents']} documents, languages {', '.join(report['languages'])}.",
        "",
        "| system | " + " | ".join(metrics)
        + " | doc terms (pivot / echo) | query terms | index MB |" + (" index s | search s |" if timings else ""),
        "|---|" + "---:|" * (len(metrics) + 3 + 2 * timings),
    ]
    for s in report["systems"]:
        overall = s["metrics"]["overall"]
        terms = s.get("stats", {}).get("avg_document_terms")
        terms_cell = f"{terms['pivot']:.0f} / {terms['echo']:.0f}" if terms else "-"
        timing = s.get("timing", {})
        lines.append(
            f"| {_system_label(s)} | " + " | ".join(f"{overall[m]:.3f}" for m in metrics)
            + f" | {terms_cell} | {_optional(s, 'avg_query_terms', 1, '.0f')}"
            + f" | {_optional(s, 'index_bytes', 1e6, '.2f')} |"
            + (f" {timing.get('index_s', 0):.1f} | {timing.get('search_s', 0):.1f} |" if timings else "")
        )
    groups, values = chart_groups(report, "ndcg@10")
    langs = groups[1:]
    if langs:
        lines += ["", "nDCG@10 per query language:", "", "| system | " + " | ".join(langs) + " |",
                  "|---|" + "---:|" * len(langs)]
        for s in report["systems"]:
            lines.append(f"| {s['name']} | " + " | ".join(f"{v:.3f}" for v in values[s["name"]][1:]) + " |")
    return "\n".join(lines) + "\n"


def eval_tables(report: Mapping[str, Any]) -> list[Table]:
    """Two rich tables: every metric overall per system (with document terms and timing), then nDCG@10 per
    query language (languages as rows)."""
    from rich.markup import escape
    from rich.table import Table

    metrics = report["metrics"]
    systems = report["systems"]
    table = Table(title=f"{escape(report['dataset'])} ({report['split']}): {report['counts']['judged_queries']} "
                        f"queries, {report['counts']['documents']} documents")
    table.add_column("system", no_wrap=True)
    for m in metrics:
        table.add_column(m, justify="right")
    table.add_column("terms p/e", justify="right")
    table.add_column("index s", justify="right")
    table.add_column("search s", justify="right")
    for s in systems:
        terms = s["stats"].get("avg_document_terms")
        table.add_row(
            escape(s["name"]), *(f"{s['metrics']['overall'][m]:.3f}" for m in metrics),
            f"{terms['pivot']:.0f}/{terms['echo']:.0f}" if terms else "-",
            f"{s['timing'].get('index_s', 0):.1f}", f"{s['timing'].get('search_s', 0):.1f}",
        )
    langs = sorted({lang for s in systems for lang in s["metrics"]["per_language"]})
    per_lang = Table(title="nDCG@10 per query language")
    per_lang.add_column("language")
    per_lang.add_column("queries", justify="right")
    for s in systems:
        per_lang.add_column(escape(s["name"]), justify="right")
    for lang in langs:
        cells = [s["metrics"]["per_language"].get(lang) for s in systems]
        queries = next((c["queries"] for c in cells if c), 0)
        per_lang.add_row(lang, str(queries), *(f"{c['ndcg@10']:.3f}" if c else "-" for c in cells))
    return [table, per_lang]
