"""Ranking metrics (pure, no IO): nDCG@k, MRR@k, Recall@k per query, then averaged overall and per language.

Conventions (those of trec_eval / BEIR):

- a *run* is ``{query id: [document ids, best first]}``; a document listed twice counts once (first rank);
- *qrels* are ``{query id: {document id: grade}}``; grade > 0 is relevant, and nDCG uses the grade as a
  linear gain, ``sum(grade / log2(rank + 1))``, normalised by the ideal ordering of the judged grades;
- queries without any relevant document are left out (no metric is defined for them);
- a query with judgments but no entry in the run scores 0 on every metric.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

Run = Mapping[str, Sequence[str]]
Qrels = Mapping[str, Mapping[str, int]]

#: The metrics every report carries, in display order.
METRICS: tuple[str, ...] = ("ndcg@10", "mrr@10", "recall@100")


def _unique(ranked: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    for doc_id in ranked:
        if doc_id not in seen:
            seen.add(doc_id)
            out.append(doc_id)
    return out


def ndcg_at_k(ranked: Sequence[str], judged: Mapping[str, int], k: int) -> float:
    """nDCG@k of one ranking (linear gain); 0.0 when nothing is relevant."""
    if k < 1:
        msg = f"k must be >= 1, got {k}"
        raise ValueError(msg)
    dcg = sum(
        judged.get(doc_id, 0) / math.log2(rank + 1)
        for rank, doc_id in enumerate(_unique(ranked)[:k], 1)
        if judged.get(doc_id, 0) > 0
    )
    ideal = sorted((g for g in judged.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(rank + 1) for rank, g in enumerate(ideal, 1))
    return dcg / idcg if idcg > 0 else 0.0


def mrr_at_k(ranked: Sequence[str], judged: Mapping[str, int], k: int) -> float:
    """Reciprocal rank of the first relevant document within the top k (0.0 if none)."""
    if k < 1:
        msg = f"k must be >= 1, got {k}"
        raise ValueError(msg)
    for rank, doc_id in enumerate(_unique(ranked)[:k], 1):
        if judged.get(doc_id, 0) > 0:
            return 1.0 / rank
    return 0.0


def recall_at_k(ranked: Sequence[str], judged: Mapping[str, int], k: int) -> float:
    """Share of the relevant documents found within the top k (0.0 when nothing is relevant)."""
    if k < 1:
        msg = f"k must be >= 1, got {k}"
        raise ValueError(msg)
    relevant = {doc_id for doc_id, g in judged.items() if g > 0}
    if not relevant:
        return 0.0
    return len(relevant.intersection(_unique(ranked)[:k])) / len(relevant)


def _parse(metric: str) -> tuple[str, int]:
    name, sep, k = metric.partition("@")
    if not sep or name not in ("ndcg", "mrr", "recall") or not k.isdigit() or int(k) < 1:
        msg = f"unknown metric {metric!r}; expected ndcg@K, mrr@K or recall@K"
        raise ValueError(msg)
    return name, int(k)


_FUNCTIONS = {"ndcg": ndcg_at_k, "mrr": mrr_at_k, "recall": recall_at_k}


def per_query(run: Run, qrels: Qrels, metrics: Sequence[str] = METRICS) -> dict[str, dict[str, float]]:
    """``{query id: {metric: value}}`` for every query in ``qrels`` that has a relevant document."""
    parsed = [(m, *_parse(m)) for m in metrics]
    scores: dict[str, dict[str, float]] = {}
    for qid, judged in qrels.items():
        if not any(g > 0 for g in judged.values()):
            continue
        ranked = list(run.get(qid, ()))
        scores[qid] = {m: _FUNCTIONS[name](ranked, judged, k) for m, name, k in parsed}
    return scores


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def aggregate(
    scores: Mapping[str, Mapping[str, float]],
    query_lang: Mapping[str, str],
    metrics: Sequence[str] = METRICS,
) -> dict[str, object]:
    """Means over queries: ``{"overall": {metric: mean, "queries": n}, "per_language": {lang: {...}}}``.

    ``query_lang`` maps a query id to its language; queries missing from it are grouped under ``"?"``.
    Languages are sorted by code.
    """
    by_lang: dict[str, list[str]] = {}
    for qid in scores:
        by_lang.setdefault(query_lang.get(qid, "?"), []).append(qid)

    def summary(qids: Sequence[str]) -> dict[str, float | int]:
        out: dict[str, float | int] = {m: mean([scores[q][m] for q in qids]) for m in metrics}
        out["queries"] = len(qids)
        return out

    return {
        "overall": summary(list(scores)),
        "per_language": {lang: summary(qids) for lang, qids in sorted(by_lang.items())},
    }


def evaluate(run: Run, qrels: Qrels, query_lang: Mapping[str, str], metrics: Sequence[str] = METRICS) -> dict:
    """:func:`per_query` then :func:`aggregate`; ``"per_query"`` holds the per-query values too."""
    scores = per_query(run, qrels, metrics)
    return {**aggregate(scores, query_lang, metrics), "per_query": scores}


def other_language_share(run: Run, query_lang: Mapping[str, str], doc_lang: Mapping[str, str], k: int = 10) -> float:
    """Mean over the run's queries of the share of their top ``k`` hits in another language than the query."""
    shares = []
    for qid, ranked in run.items():
        langs = [doc_lang[d] for d in _unique(ranked)[:k] if d in doc_lang]
        if qid in query_lang and langs:
            shares.append(sum(lang != query_lang[qid] for lang in langs) / len(langs))
    return mean(shares)


def language_blind_share(query_lang: Mapping[str, str], doc_lang: Mapping[str, str]) -> float:
    """What :func:`other_language_share` gives for a ranking blind to language: mean over the queries of the
    corpus share in another language than the query (a lower share means a bias towards the query's language)."""
    counts: dict[str, int] = {}
    for lang in doc_lang.values():
        counts[lang] = counts.get(lang, 0) + 1
    total = len(doc_lang)
    return mean([1 - counts.get(lang, 0) / total for lang in query_lang.values()]) if total else 0.0
