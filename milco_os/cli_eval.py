"""``milco-os eval`` and ``demo``: retrieval quality measured through OpenSearch, and shown on LibreOffice help."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from milco_os.cli_index import connect
from milco_os.cli_support import (
    err,
    handle_errors,
    out,
    task_progress,
    with_settings,
)
from milco_os.errors import ConfigError
from milco_os.specs import DEFAULT_ALPHA, DEFAULT_DENSE_WEIGHT, DEFAULT_FUSION


@handle_errors
@with_settings(model=True)
def demo(
    port: Annotated[int | None, typer.Option("--port", help="HTTP port of the local node (127.0.0.1; default: the "
                                             "engine's, 9200 or 9400).")] = None,
    engine: Annotated[str, typer.Option("--engine", help="The local node's engine: opensearch or elasticsearch.")
                      ] = "opensearch",
    index: Annotated[str, typer.Option("--index", help="Index to (re)create for the demo.")] = "milco-demo",
    pages_per_language: Annotated[int, typer.Option(
        "--pages-per-language", min=1, help="LibreOffice help pages indexed per language.")] = 300,
    report: Annotated[Path | None, typer.Option("--report", help="Also write the summary (counts, per-query ranks and hit languages) as JSON to this file, e.g. reports/demo.json.")] = None,
    passages: Annotated[bool, typer.Option("--passages", help="Index whole pages with passages (docs/passages.md) and show each hit's best passage; encoding whole pages takes several times longer.")] = False,
    settings: Any = None,
) -> None:
    """Start the local node (OpenSearch, or with --engine elasticsearch Elasticsearch), index LibreOffice help pages in 6 languages with the default model, run cross-lingual searches.

    Each example query looks for a page held out from training, indexed in another language than the query's."""
    from milco_os.demo import run_demo, write_report
    from milco_os.localnode import engine_spec

    spec = engine_spec(engine)
    port = spec.default_port if port is None else port
    local = settings.model_copy(update={"opensearch_url": f"http://127.0.0.1:{port}", "engine": spec.name})
    summary = run_demo(local, port=port, index=index, console=out, pages_per_language=pages_per_language,
                       passages=passages, engine=spec.name)
    if report is not None:
        out.print(f"report: {write_report(summary, report)}", highlight=False, markup=False)


@handle_errors
@with_settings(opensearch=True)
def eval_command(
    dataset: Annotated[str, typer.Option("--dataset", help="libreoffice-clir or libreoffice-mlir (page titles as queries), libreoffice-keywords-clir or libreoffice-keywords-mlir (the help's own index entries as queries), libreoffice-en (English titles -> English pages of the split).")],
    split: Annotated[str, typer.Option("--split", help="dev (where choices are made) or test (report a choice once).")] = "dev",
    languages: Annotated[str | None, typer.Option("--languages", help="Comma-separated language codes (default: the dataset's defaults).")] = None,
    systems: Annotated[str, typer.Option("--systems", help="Comma-separated: bm25, dense (multilingual-e5-small), sparse, fused (sparse + the model's dense view, fused), dense-view (the model's dense view alone), seismic (sparse on a SEISMIC index: OpenSearch 3.3+ with neural-search).")] = "bm25,dense,sparse",
    models: Annotated[list[str] | None, typer.Option("--model", help="Model(s) for the sparse system: built-in name, directory or hub id (repeatable; default: MILCO_OS_MODEL).")] = None,
    doc_prune: Annotated[list[str] | None, typer.Option("--doc-prune", help="Document pruning PIVOT[,ECHO] for the sparse system, e.g. mass:0.9 or top_k:128 (repeatable).")] = None,
    alpha: Annotated[list[float] | None, typer.Option("--alpha", min=0, max=1, help=f"Weight of the pivot view in sparse search (1.0: pivot only; repeatable). [default: {DEFAULT_ALPHA:g}]")] = None,
    fusion: Annotated[list[str] | None, typer.Option("--fusion", help=f"For the fused system: NORM:WEIGHT, the normalisation (minmax or rrf) and the dense list's weight (repeatable). [default: {DEFAULT_FUSION}:{DEFAULT_DENSE_WEIGHT:g}]")] = None,
    units: Annotated[str, typer.Option("--units", help="What the model's systems index per document: merged (one vector), passages (each passage, a document scores as its best), or merged,passages (both, side by side).")] = "merged",
    out_dir: Annotated[Path | None, typer.Option("--out", help="Report directory (default: results/eval/<dataset>-<split>/).")] = None,
    max_queries: Annotated[int | None, typer.Option("--max-queries", min=1, help="Evaluate at most this many queries (spread over the languages).")] = None,
    keep_indices: Annotated[bool, typer.Option("--keep-indices", help="Keep the evaluation indices instead of deleting them.")] = False,
    whole_pages: Annotated[bool, typer.Option("--whole-pages", help="Index whole help pages (default: each page's first 600 characters).")] = False,
    device: Annotated[str | None, typer.Option("--device", help="Torch device for the dense system (default: cuda if available).")] = None,
    settings: Any = None,
) -> None:
    """Measure retrieval quality through OpenSearch: nDCG@10, MRR@10, Recall@100 overall and per language.

    Writes report.json, per_query.json and an nDCG@10 chart (PNG) into --out.
    """
    from milco_os.evaluation import runner
    from milco_os.evaluation.report import build_report, eval_tables, write_report

    runner.check_dataset(dataset, split)
    specs = runner.plan_systems(systems.split(","), models=models or [], doc_prunes=doc_prune or [], alpha=alpha or [DEFAULT_ALPHA],
                         default_model=settings.model, fusions=fusion or [], units=units.split(","))
    client = connect(settings) if any(s.kind != "dense" for s in specs) else None
    with err.status(f"preparing {dataset} ({split}) ..."):
        evalset, langs = runner.load_eval_set(dataset, split, runner.parse_languages(languages), settings.cache_dir, whole_pages)
    subset, skipped = runner.judged_queries(evalset, max_queries)
    if not subset.queries:
        raise ConfigError(f"{dataset} ({split}, {','.join(langs)}) has no judged queries to evaluate")
    err.print(f"{len(subset.queries)} queries, {len(subset.corpus)} documents, systems: "
              f"{', '.join(s.name for s in specs)}", highlight=False, markup=False)
    display, progress = task_progress()
    with display:
        results = runner.run_systems(client, subset, specs, cache_dir=settings.cache_dir, keep_indices=keep_indices,
                              progress=progress, device=device)
    report, per_query = build_report(
        subset, results, dataset=dataset, split=split, languages=langs, opensearch=runner.opensearch_info(client),
        extra={"max_queries": max_queries, "unjudged_queries_skipped": skipped, "whole_pages": whole_pages})
    paths = write_report(report, per_query, out_dir or Path("results") / "eval" / f"{dataset}-{split}")
    for table in eval_tables(report):
        out.print(table)
    out.print(f"report: {paths['report']}\nchart: {paths['chart']}", highlight=False, markup=False)
