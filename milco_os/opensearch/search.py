"""Search (IO): encode a query, send the expansion, attach per-term explanations."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from milco_os.opensearch.indices import checked_record
from milco_os.opensearch.query import TermContribution, search_body, term_contributions
from milco_os.pruning import Prune
from milco_os.types import Encoded

if TYPE_CHECKING:
    from opensearchpy import OpenSearch

    from milco_os.runtime.encoder import SparseEncoder


@dataclass
class Hit:
    id: str
    score: float
    source: dict[str, Any]
    terms: list[TermContribution] = field(default_factory=list)


@dataclass
class SearchResult:
    query: Encoded
    hits: list[Hit]
    took_ms: int


def prune_query(query: Encoded, pivot: Prune, echo: Prune) -> Encoded:
    return Encoded(pivot.apply(query.pivot), echo.apply(query.echo))


def search(
    client: OpenSearch,
    index: str,
    text: str,
    encoder: SparseEncoder,
    *,
    size: int = 10,
    alpha: float = 0.5,
    query_pruning: tuple[Prune, Prune] = (Prune(), Prune()),
    explain: bool = False,
) -> SearchResult:
    record = checked_record(client, index, encoder.info)
    pivot_field, echo_field = record["fields"]["pivot"], record["fields"]["echo"]
    query = prune_query(encoder.encode_queries([text])[0], *query_pruning)
    body = search_body(query, pivot_field=pivot_field, echo_field=echo_field, alpha=alpha, size=size)
    resp = client.search(index=index, body=body)
    hits = []
    for h in resp["hits"]["hits"]:
        source = h.get("_source", {})
        terms = (
            term_contributions(query, source, alpha=alpha, pivot_field=pivot_field, echo_field=echo_field)
            if explain
            else []
        )
        shown = {k: v for k, v in source.items() if k not in (pivot_field, echo_field)}
        hits.append(Hit(id=h["_id"], score=float(h["_score"]), source=shown, terms=terms))
    return SearchResult(query=query, hits=hits, took_ms=int(resp.get("took", 0)))
