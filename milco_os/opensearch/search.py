"""Search (IO): encode a query, prune it, send the expansion, explain each hit term by term."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from milco_os.opensearch.indices import checked_record
from milco_os.opensearch.query import (
    Hybrid,
    TermContribution,
    contributions_from_explanation,
    search_body,
    term_contributions,
)
from milco_os.specs import DEFAULT_QUERY_PRUNE, SearchOptions
from milco_os.types import Encoded

if TYPE_CHECKING:
    from opensearchpy import OpenSearch

    from milco_os.pruning import TermStats
    from milco_os.runtime.encoder import SparseEncoder


@dataclass
class Hit:
    id: str
    score: float
    source: dict[str, Any]
    terms: list[TermContribution] = field(default_factory=list)

    def to_dict(self, top_terms: int | None = None) -> dict[str, Any]:
        terms = self.terms if top_terms is None else self.terms[:top_terms]
        return {"id": self.id, "score": self.score, "source": self.source, "terms": [asdict(t) for t in terms]}


@dataclass
class SearchResult:
    query: Encoded
    hits: list[Hit]
    took_ms: int
    body: dict[str, Any]

    def to_dict(self, top_terms: int | None = None) -> dict[str, Any]:
        return {
            "took_ms": self.took_ms,
            "query": {"pivot": self.query.pivot.to_terms(), "echo": self.query.echo.to_terms()},
            "hits": [h.to_dict(top_terms) for h in self.hits],
        }


#: The query forms ``query_request`` writes (``milco-os search --print-query FORM``).
QUERY_FORMS = ("rank_feature", "neural_sparse", "model")


def query_request(
    client: OpenSearch,
    index: str,
    text: str,
    encoder: SparseEncoder | None,
    options: SearchOptions | None = None,
    form: str = "rank_feature",
    stats: TermStats | None = None,
) -> dict[str, Any]:
    """The exact search body for ``text``, for users who send queries from their own code: ``rank_feature``
    (what ``search`` sends), ``neural_sparse`` with ``query_tokens`` (neural-search plugin; keys as the index
    stores them, alpha folded into the weights), or ``model`` (``neural_sparse`` with the ml-commons query models
    registered for the index: OpenSearch encodes the text; no encoder needed). With ``hybrid_norm`` the body
    is neural-search's ``hybrid`` query of that sparse query and BM25, fused by a temporary search pipeline
    (:func:`milco_os.opensearch.hybrid.plugin_body`; ``search`` fuses the same lists itself)."""
    from milco_os.errors import ConfigError
    from milco_os.opensearch.indices import index_record
    from milco_os.opensearch.mlcommons import record_query
    from milco_os.opensearch.query import expansion_query, neural_sparse_query
    from milco_os.pruning import Pruning

    options = options or SearchOptions()
    if form not in QUERY_FORMS:
        msg = f"--print-query {form!r}: choose {', '.join(QUERY_FORMS)}"
        raise ConfigError(msg)
    if form == "rank_feature" and options.hybrid_norm is None:
        assert encoder is not None
        record = checked_record(client, index, encoder.info)
        return _request(record, text, encoder, options, term_stats(client, index, record, options, stats))[1]
    if options.two_phase is not None or (options.hybrid_weight is not None and options.hybrid_norm is None):
        msg = (f"--print-query {form}: two-phase and a raw hybrid sum belong to the index's ml-commons search "
               "pipeline (milco-os ml-commons register --two-phase), not to the query")
        raise ConfigError(msg)
    if form == "model":
        # OpenSearch encodes and prunes the query as registered: only the full query or the CLI's default
        # (which nobody asked for) can pass here unnoticed.
        if str(options.query_pruning) not in (str(Pruning.parse("none")), str(Pruning.parse(DEFAULT_QUERY_PRUNE))):
            msg = ("--print-query model: OpenSearch encodes the query, pruned as registered "
                   "(milco-os ml-commons register --query-prune); drop --query-prune here")
            raise ConfigError(msg)
        record = index_record(client, index)
        query = record_query(text, record, alpha=options.alpha)
    else:
        assert encoder is not None
        record = checked_record(client, index, encoder.info)
        stats = term_stats(client, index, record, options, stats)
        encoded = options.query_pruning.apply(encoder.encode_queries([text])[0], stats)
        fields = {"pivot_field": record["fields"]["pivot"], "echo_field": record["fields"]["echo"]}
        query = (neural_sparse_query(encoded, **fields, alpha=options.alpha) if form == "neural_sparse"
                 else expansion_query(encoded, **fields, alpha=options.alpha))
    filters = list(options.filters)
    if filters and "should" in query["bool"]:
        query["bool"] |= {"filter": filters, "minimum_should_match": 1}
    if options.hybrid_norm is not None:  # fused by OpenSearch: neural-search's hybrid query and processors
        from milco_os.opensearch.hybrid import bm25_body, plugin_body

        bm25 = bm25_body(text, list(record["fields"]["text"]), filters or None, None)["query"]
        try:
            return plugin_body(query, bm25, norm=options.hybrid_norm, weight=options.hybrid_weight or 1.0,
                               size=options.size, from_=options.from_)
        except ValueError as e:
            raise ConfigError(str(e)) from e
    return {"query": query, "size": options.size, "from": options.from_}


def needs_term_stats(options: SearchOptions) -> bool:
    """Whether the query pruning (``selective``) or a two-phase ``value`` split reads document frequencies."""
    return options.query_pruning.needs_stats or (options.two_phase is not None and options.two_phase.split == "value")


def term_stats(
    client: OpenSearch, index: str, record: dict[str, Any], options: SearchOptions, stats: TermStats | None = None
) -> TermStats | None:
    """The index's term statistics when ``options`` need them (``stats`` if given), else None."""
    if not needs_term_stats(options) or stats is not None:
        return stats
    from milco_os.opensearch.stats import IndexTermStats

    return IndexTermStats(client, index, record)


def _request(
    record: dict[str, Any], text: str, encoder: SparseEncoder, options: SearchOptions, stats: TermStats | None = None
) -> tuple[Encoded, dict[str, Any]]:
    """(the pruned query, the ``rank_feature`` search body) for ``text`` on an index with ``record``."""
    pivot_field, echo_field = record["fields"]["pivot"], record["fields"]["echo"]
    from_source = record.get("vectors_in_source", True)
    query = options.query_pruning.apply(encoder.encode_queries([text])[0], stats)
    hybrid = (
        Hybrid(text=text, fields=tuple(record["fields"]["text"]), weight=options.hybrid_weight)
        if options.hybrid_weight is not None
        else None
    )
    body = search_body(
        query,
        pivot_field=pivot_field,
        echo_field=echo_field,
        alpha=options.alpha,
        size=options.size,
        from_=options.from_,
        filters=list(options.filters) or None,
        two_phase=options.two_phase,
        hybrid=hybrid,
        # Explain from the stored vectors when _source has them (exact, no extra work for OpenSearch);
        # otherwise ask OpenSearch to explain its scoring.
        explain=options.explain and not from_source,
        source_excludes=None if options.explain and from_source else [pivot_field, echo_field],
        stats=stats,
    )
    return query, body


def search(
    client: OpenSearch,
    index: str,
    text: str,
    encoder: SparseEncoder,
    options: SearchOptions | None = None,
    stats: TermStats | None = None,
) -> SearchResult:
    """Encode, prune and run ``text``. ``stats``: the index's term statistics for ``selective`` pruning, kept
    by callers that search one index many times (read here when needed and not given)."""
    options = options or SearchOptions()
    record = checked_record(client, index, encoder.info)
    pivot_field, echo_field = record["fields"]["pivot"], record["fields"]["echo"]
    from_source = record.get("vectors_in_source", True)
    stats = term_stats(client, index, record, options, stats)
    if options.hybrid_norm is not None:  # two lists from one _msearch, normalised and fused
        from milco_os.opensearch.hybrid import bm25_body, fused_hits

        query, body = _request(record, text, encoder, replace(options, hybrid_weight=None, hybrid_norm=None), stats)
        bm25 = bm25_body(text, list(record["fields"]["text"]), list(options.filters) or None,
                         body.get("_source", {}).get("excludes"))
        raw_hits, took = fused_hits(client, index, body, bm25, weight=options.hybrid_weight or 1.0,
                                    norm=options.hybrid_norm, size=options.size, from_=options.from_)
        body = {"msearch": [body, bm25], "fusion": {"norm": options.hybrid_norm, "weight": options.hybrid_weight}}
    else:
        query, body = _request(record, text, encoder, options, stats)
        resp = client.search(index=index, body=body)
        raw_hits, took = resp["hits"]["hits"], int(resp.get("took", 0))
    hits = []
    for h in raw_hits:
        source = h.get("_source", {})
        terms: list[TermContribution] = []
        if options.explain:
            if from_source:
                terms = term_contributions(
                    query, source, alpha=options.alpha, pivot_field=pivot_field, echo_field=echo_field
                )
            else:
                terms = contributions_from_explanation(
                    h.get("_explanation", {}), alpha=options.alpha, pivot_field=pivot_field, echo_field=echo_field
                )
        shown = {k: v for k, v in source.items() if k not in (pivot_field, echo_field)}
        hits.append(Hit(id=h["_id"], score=float(h["_score"]), source=shown, terms=terms))
    return SearchResult(query=query, hits=hits, took_ms=took, body=body)


def msearch_ids(client: OpenSearch, index: str, bodies: list[dict[str, Any]]) -> list[list[str]]:
    """The hit ids of several searches on ``index``, in one ``_msearch`` round trip."""
    from milco_os.errors import SearchIndexError

    lines: list[dict[str, Any]] = []
    for body in bodies:
        lines += [{"index": index}, body]
    resp = client.msearch(body=lines)
    out = []
    for item in resp["responses"]:
        if "error" in item:
            msg = f"search on {index!r} failed: {item['error']}"
            raise SearchIndexError(msg)
        out.append([h["_id"] for h in item["hits"]["hits"]])
    return out
