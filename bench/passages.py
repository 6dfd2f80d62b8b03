"""How should a document with passages score, and is its merged vector still worth storing? Measured on the dev
sets over whole pages, exact dot products in numpy.

One encoding per corpus and model serves every variant: a document's passages are the encoder's windows
(``encode_passages``), and its merged vector is what ``encode_documents`` makes of the same windows (pivot and
echo: the largest weight over windows; dense view: the normalised mean). Each passage, like each merged vector,
is pruned as the eval indexes them (``top_k:40``); queries are full, α is the default. A document scores as

    merged       its merged vector's score (today's layout)
    max          its best passage's (nested ``score_mode: max``)
    sum, avg     the sum of its passages' scores, their mean over the passages that match (``sum``, ``avg``)
    top2, top3   the mean of its best 2 or 3 passages (of all, when it has fewer; no OpenSearch score mode)
    merged+max   the merged score plus the best passage's (both stored, one ``bool`` query over both)

and for milco-mini also the dense view alone (merged: the page's mean embedding, passages: its best passage's
cosine) and fused with the sparse list (min-max, weight 1, 100 deep: the default fusion). The engine scores
exactly these dot products up to Lucene's stored precision (9 significant bits); the test numbers come from the
engine (bench/evaluate.py, the ``passages-*`` runs).

    .venv/bin/python bench/passages.py            # writes reports/bench/passages-choice.json
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RUNS = {  # the dev sets, whole pages
    "titles-clir-dev": "libreoffice-clir",
    "titles-mlir-dev": "libreoffice-mlir",
    "keywords-clir-dev": "libreoffice-keywords-clir",
    "keywords-mlir-dev": "libreoffice-keywords-mlir",
}
MODELS = ("milco-mini", "splade-tiny")
DOC_PRUNE = "top_k:40"
SPARSE_VARIANTS = ("merged", "max", "sum", "avg", "top2", "top3", "merged+max")
DEPTH = 100  # how deep each list is for fusion (milco_os.opensearch.hybrid.MIN_WINDOW)


class Postings:
    """The vectors of one view as posting lists: ``scores(query)`` is every row's exact dot product."""

    def __init__(self, vectors: Sequence[Any]) -> None:
        ids = np.concatenate([v.ids for v in vectors] or [np.zeros(0, np.int64)])
        weights = np.concatenate([v.weights for v in vectors] or [np.zeros(0, np.float32)]).astype(np.float64)
        rows = np.repeat(np.arange(len(vectors)), [len(v) for v in vectors])
        order = np.argsort(ids, kind="stable")
        self.ids, self.weights, self.rows, self.n = ids[order], weights[order], rows[order], len(vectors)

    def scores(self, query: Any) -> np.ndarray:
        out = np.zeros(self.n)
        for term, weight in zip(query.ids.tolist(), query.weights.tolist(), strict=True):
            lo, hi = np.searchsorted(self.ids, [term, term + 1])
            np.add.at(out, self.rows[lo:hi], weight * self.weights[lo:hi])
        return out


def by_document(scores: np.ndarray, owner: np.ndarray, n_docs: int, mode: str) -> np.ndarray:
    """Passage scores -> document scores by ``mode`` (a passage that matches nothing scores 0)."""
    if mode == "max":
        out = np.zeros(n_docs)
        np.maximum.at(out, owner, scores)
        return out
    total = np.zeros(n_docs)
    np.add.at(total, owner, scores)
    if mode == "sum":
        return total
    if mode == "avg":  # OpenSearch averages over the nested documents that match
        matching = np.zeros(n_docs)
        np.add.at(matching, owner, scores > 0)
        return np.divide(total, matching, out=np.zeros(n_docs), where=matching > 0)
    k = int(mode.removeprefix("top"))  # the mean of the best k passages (of all of them, when fewer)
    order = np.lexsort((-scores, owner))
    first = np.searchsorted(owner[order], owner[order], side="left")
    keep = (np.arange(len(order)) - first) < k
    out = np.zeros(n_docs)
    np.add.at(out, owner[order][keep], scores[order][keep])
    return out / np.minimum(np.bincount(owner, minlength=n_docs), k).clip(min=1)


def ranked(scores: np.ndarray, ids: Sequence[str], depth: int = 10) -> list[tuple[str, float]]:
    """The ``depth`` best documents with a positive score, best first (ties by id)."""
    top = np.argsort(-scores, kind="stable")[:depth]
    return [(ids[i], float(scores[i])) for i in top if scores[i] > 0]


def main() -> int:
    from common import REPORTS, encode_cached, machine, merged_from_passages, write_json

    from milco_os.evaluation import metrics, runner
    from milco_os.loading import load_encoder
    from milco_os.opensearch.hybrid import fuse
    from milco_os.pruning import Pruning
    from milco_os.settings import get_settings
    from milco_os.specs import DEFAULT_ALPHA, DEFAULT_DENSE_WEIGHT, DEFAULT_FUSION

    cache = get_settings().cache_dir
    prune = Pruning.parse(DOC_PRUNE)
    results: dict[str, Any] = {}
    encoding: dict[str, Any] = {}
    for model in MODELS:
        encoder = load_encoder(model, cache, runtime="torch")
        dense = encoder.info.dense is not None
        for run, dataset in RUNS.items():
            evalset, _ = runner.load_eval_set(dataset, "dev", None, cache, whole_pages=True)
            judged, _ = runner.judged_queries(evalset, 1000)
            corpus = [d for d in judged.corpus if d.get("text")]
            texts = [d["text"] for d in corpus]
            doc_ids = [str(d["id"]) for d in corpus]
            start = time.perf_counter()
            passages, _ = encode_cached(encoder, "torch", texts, cache, f"passages-{model}", dense=dense,
                                        passages=True)
            owner = np.repeat(np.arange(len(passages)), [len(p) for p in passages])
            flat = [p.encoded for doc in passages for p in doc]
            merged = [merged_from_passages(doc, encoder.info) for doc in passages]
            views: dict[str, dict[str, Postings]] = {}
            for name, encoded in (("passages", flat), ("merged", merged)):
                pruned = [prune.apply(e) for e in encoded]
                views[name] = {v: Postings([getattr(e, v) for e in pruned]) for v in ("pivot", "echo")}
            queries = encoder.encode_queries([q["text"] for q in judged.queries], dense=dense)
            if dense:
                passage_vectors = np.stack([p.dense for p in flat])
                merged_vectors = np.stack([e.dense for e in merged])
            runs: dict[str, dict[str, list[str]]] = {}
            lists: dict[str, dict[str, list[tuple[str, float]]]] = {}
            for q, query in zip(judged.queries, queries, strict=True):
                sparse = {name: DEFAULT_ALPHA * views[name]["pivot"].scores(query.pivot)
                          + (1 - DEFAULT_ALPHA) * views[name]["echo"].scores(query.echo) for name in views}
                scored = {"merged": sparse["merged"]}
                for mode in ("max", "sum", "avg", "top2", "top3"):
                    scored[mode] = by_document(sparse["passages"], owner, len(passages), mode)
                scored["merged+max"] = scored["merged"] + scored["max"]
                if dense:
                    # Cosine + 1: every document stays positive, as the engine's (1 + cos) / 2 does.
                    scored["dense-merged"] = merged_vectors @ query.dense + 1.0
                    scored["dense-max"] = by_document(passage_vectors @ query.dense + 1.0, owner, len(passages), "max")
                for name, scores in scored.items():
                    found = ranked(scores, doc_ids, DEPTH)
                    lists.setdefault(name, {})[q["id"]] = found
                    runs.setdefault(name, {})[q["id"]] = [d for d, _ in found[:10]]
                if dense:
                    for units, sparse_name, dense_name in (("merged", "merged", "dense-merged"),
                                                           ("max", "max", "dense-max")):
                        fused = fuse([lists[sparse_name][q["id"]], lists[dense_name][q["id"]]],
                                     [1.0, DEFAULT_DENSE_WEIGHT], norm=DEFAULT_FUSION)
                        runs.setdefault(f"fused-{units}", {})[q["id"]] = [d for d, _ in fused[:10]]
            langs = {q["id"]: q["lang"] for q in judged.queries}
            results.setdefault(model, {})[run] = {
                name: metrics.evaluate(r, judged.qrels, langs)["overall"] for name, r in runs.items()}
            encoding.setdefault(model, {})[run] = {
                "documents": len(passages), "passages": len(flat),
                "passages_per_document": round(len(flat) / max(len(passages), 1), 2),
                "queries": len(judged.queries), "seconds": round(time.perf_counter() - start, 1)}
            line = "  ".join(f"{name} {m['ndcg@10']:.3f}" for name, m in results[model][run].items())
            print(f"{model} {run}: {line}", file=sys.stderr, flush=True)
    variants = sorted({name for model in results.values() for run in model.values() for name in run},
                      key=lambda n: (n.startswith(("dense", "fused")), n))
    mean = {model: {name: round(float(np.mean([r[name]["ndcg@10"] for r in runs.values()])), 4)
                    for name in variants if all(name in r for r in runs.values())}
            for model, runs in results.items()}
    record = {"machine": machine(), "doc_prune": DOC_PRUNE, "alpha": DEFAULT_ALPHA, "runs": list(RUNS),
              "variants": variants, "results": results, "mean_ndcg@10": mean, "encoding": encoding}
    path = write_json("passages-choice", record)
    print(f"wrote {path.relative_to(REPORTS.parent.parent) if REPORTS in path.parents else path}")
    for model, values in mean.items():
        print(model, "  ".join(f"{name} {value:.3f}" for name, value in values.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
