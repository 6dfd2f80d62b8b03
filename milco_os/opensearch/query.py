"""Pure builders for search requests: a query's sparse vectors -> weighted ``rank_feature`` clauses.

Score of a hit = alpha * <q_pivot, d_pivot> + (1 - alpha) * <q_echo, d_echo>, exactly up to the
precision of stored feature values (Lucene keeps 9 significant bits, ~0.4%). alpha = 0.5 ranks like
MILCO's unweighted sum.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from milco_os.keys import decode_key, encode_key
from milco_os.types import Encoded, SparseVector


def feature_clauses(vec: SparseVector, field: str, scale: float) -> list[dict[str, Any]]:
    """One ``rank_feature`` clause per term: linear in the stored value, boosted by scale * weight."""
    if scale <= 0:
        return []
    return [
        {"rank_feature": {"field": f"{field}.{encode_key(token)}", "linear": {}, "boost": scale * weight}}
        for token, weight in vec.to_terms().items()
    ]


def expansion_query(
    query: Encoded,
    *,
    alpha: float = 0.5,
    pivot_field: str,
    echo_field: str,
    filters: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """``bool.should`` over pivot and echo terms (and ``filter`` clauses, which do not score)."""
    if not 0 <= alpha <= 1:
        msg = f"alpha must be in [0, 1], got {alpha}"
        raise ValueError(msg)
    should = feature_clauses(query.pivot, pivot_field, alpha) + feature_clauses(query.echo, echo_field, 1 - alpha)
    boolean: dict[str, Any] = {"should": should, "minimum_should_match": 1 if should else 0}
    if filters:
        boolean["filter"] = filters
    if not should:
        # A query with no terms (e.g. empty text) matches nothing rather than everything.
        return {"bool": {"must_not": [{"match_all": {}}]}}
    return {"bool": boolean}


def search_body(
    query: Encoded,
    *,
    pivot_field: str,
    echo_field: str,
    alpha: float = 0.5,
    size: int = 10,
    from_: int = 0,
    filters: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "query": expansion_query(query, alpha=alpha, pivot_field=pivot_field, echo_field=echo_field, filters=filters),
        "size": size,
        "from": from_,
        # Exact hit counts would disable Lucene's block-max WAND/MaxScore skipping.
        "track_total_hits": False,
    }


@dataclass(frozen=True)
class TermContribution:
    view: str  # "pivot" | "echo"
    term: str
    query_weight: float
    document_weight: float
    contribution: float  # view weight (alpha or 1 - alpha) * query_weight * document_weight


def term_contributions(
    query: Encoded,
    document_source: dict[str, Any],
    *,
    alpha: float,
    pivot_field: str,
    echo_field: str,
) -> list[TermContribution]:
    """Which query terms matched a document and how much each added, largest first.

    Computed from the vectors stored in the hit's ``_source``: exact, and free of an extra request.
    """
    out: list[TermContribution] = []
    for view, vec, field, scale in (
        ("pivot", query.pivot, pivot_field, alpha),
        ("echo", query.echo, echo_field, 1 - alpha),
    ):
        stored = document_source.get(field) or {}
        doc_terms = {decode_key(k): float(v) for k, v in stored.items()}
        for term, q_weight in vec.to_terms().items():
            d_weight = doc_terms.get(term)
            if d_weight is not None and scale > 0:
                out.append(TermContribution(view, term, q_weight, d_weight, scale * q_weight * d_weight))
    out.sort(key=lambda c: -c.contribution)
    return out
