"""Search (IO): encode a query, prune it, send the expansion, explain each hit term by term."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from milco_os.layout import SeismicQuery, read_layout
from milco_os.opensearch.engine import OPENSEARCH, engine_of_record
from milco_os.opensearch.hybrid import Listed
from milco_os.opensearch.indices import checked_record
from milco_os.opensearch.query import (
    Hybrid,
    PassageQuery,
    TermContribution,
    contributions_from_explanation,
    contributions_from_seismic,
    search_body,
    term_contributions,
)
from milco_os.specs import (
    DEFAULT_DENSE_WEIGHT,
    DEFAULT_FUSION,
    DEFAULT_QUERY_PRUNE,
    SearchOptions,
    alpha_for_model,
)
from milco_os.types import Encoded

if TYPE_CHECKING:
    from milco_os.opensearch.engine import Client
    from milco_os.pruning import TermStats
    from milco_os.runtime.encoder import SparseEncoder


@dataclass
class PassageHit:
    """The passage that scored a hit on an index with passages: characters ``start:end`` of the document's text
    fields joined by newlines (``text``), its score in the list it came from (``sparse``, or ``dense`` for a hit
    only the dense view found)."""

    start: int
    end: int
    text: str
    score: float
    list: str = "sparse"

    def excerpt(self, width: int) -> str:
        """``1,204-1,910 text…``: the span and the text on one line, cut to ``width`` characters."""
        text = " ".join(self.text.split())
        return f"{self.start:,}-{self.end:,} {text if len(text) <= width else text[: width - 1] + '…'}"


@dataclass
class Hit:
    """One hit. ``lists``: where a fused hit stood in each result list that held it (``sparse``, ``bm25``,
    ``dense``); empty without fusion. ``passage``: on an index with passages, the passage that scored it (its
    ``terms`` are that passage's)."""

    id: str
    score: float
    source: dict[str, Any]
    terms: list[TermContribution] = field(default_factory=list)
    lists: dict[str, Listed] = field(default_factory=dict)
    passage: PassageHit | None = None

    @property
    def sparse_score(self) -> float:
        """The score of the sparse expansion (what the terms add up to): the hit's score without fusion."""
        listed = self.lists.get("sparse")
        return listed.score if listed is not None else (0.0 if self.lists else self.score)

    @property
    def dense_similarity(self) -> float | None:
        """Cosine of query and document dense views, from the k-NN score ((1 + cos) / 2); None: not in that list."""
        listed = self.lists.get("dense")
        return None if listed is None else 2 * listed.score - 1

    def to_dict(self, top_terms: int | None = None) -> dict[str, Any]:
        terms = self.terms if top_terms is None else self.terms[:top_terms]
        out = {"id": self.id, "score": self.score, "source": self.source, "terms": [asdict(t) for t in terms]}
        if self.lists:
            out["lists"] = {name: asdict(listed) for name, listed in self.lists.items()}
            out["dense_similarity"] = self.dense_similarity
        if self.passage is not None:
            out["passage"] = asdict(self.passage)
        return out


@dataclass
class SearchResult:
    query: Encoded
    hits: list[Hit]
    took_ms: int
    body: dict[str, Any]
    #: The fused lists, in order (empty without fusion).
    lists: tuple[str, ...] = ()
    #: The model that encoded the query (the index's own version when a bare built-in name followed it).
    model: str = ""

    def to_dict(self, top_terms: int | None = None) -> dict[str, Any]:
        return {
            "took_ms": self.took_ms,
            "model": self.model,
            "query": {"pivot": self.query.pivot.readable_terms(), "echo": self.query.echo.readable_terms()},
            "hits": [h.to_dict(top_terms) for h in self.hits],
        }


#: The query forms ``query_request`` writes (``milco-os search --print-query FORM``).
QUERY_FORMS = ("rank_feature", "neural_sparse", "model")


def query_request(
    client: Client,
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
    registered for the index: Client encodes the text; no encoder needed). When ``search`` would fuse lists
    (``hybrid_norm``, an index with a dense view) the body is neural-search's ``hybrid`` query of that sparse
    query, BM25 and the dense view (``knn`` with the query's vector, or for ``model`` a ``neural`` query with the
    index's ml-commons dense model), fused by a temporary search pipeline
    (:func:`milco_os.opensearch.hybrid.plugin_body`; ``search`` fuses the same lists itself)."""
    from milco_os.errors import ConfigError
    from milco_os.opensearch.documents import dense_values
    from milco_os.opensearch.hybrid import bm25_body, knn_query, plugin_body, window
    from milco_os.opensearch.indices import index_record
    from milco_os.opensearch.mlcommons import record_model, record_query
    from milco_os.opensearch.query import expansion_query, neural_sparse_query, through_passages
    from milco_os.pruning import Pruning

    options = options or SearchOptions()
    if form not in QUERY_FORMS:
        msg = f"--print-query {form!r}: choose {', '.join(QUERY_FORMS)}"
        raise ConfigError(msg)
    if form == "model":
        record = index_record(client, index)
    else:
        assert encoder is not None
        record = checked_record(client, index, encoder.info)
    options = options_for(record, index, options)
    fusion = fusion_plan(record, index, options)
    engine = engine_of_record(record, index)
    if form != "rank_feature" and engine is not OPENSEARCH:
        msg = (f"--print-query {form}: that query belongs to OpenSearch's neural-search plugin; "
               f"index {index!r} is in {engine.label}")
        raise ConfigError(msg)
    seismic = seismic_query(record, options)
    if seismic is not None and fusion is None and form == "model":
        from milco_os.opensearch.mlcommons import model_search_body

        if options.hybrid_weight is not None:
            msg = (f"--print-query model: index {index!r} is a SEISMIC index; its ml-commons query has no BM25 sum "
                   "(drop --hybrid, or --hybrid-norm to fuse BM25 as a list in milco-os search)")
            raise ConfigError(msg)
        query = record_query(text, record, alpha=options.alpha, seismic=seismic, depth=options.size + options.from_)
        if options.filters:
            query["bool"]["filter"] = list(options.filters)
        return model_search_body(query, size=options.size, from_=options.from_, seismic=seismic,
                                 pivot_field=record["fields"]["pivot"])
    if seismic is not None:  # SEISMIC's body is its own (two phases)
        if fusion is not None:
            msg = (f"--print-query: index {index!r} is a SEISMIC index, whose query is a rescored SEISMIC search; "
                   "milco-os search fuses the lists itself (drop --hybrid-norm to print the sparse request)")
            raise ConfigError(msg)
        assert encoder is not None
        return _request(record, text, encoder, options, None)[1]
    if form == "rank_feature" and fusion is None:
        assert encoder is not None
        return _request(record, text, encoder, options, term_stats(client, index, record, options, stats))[1]
    if options.two_phase is not None or (options.hybrid_weight is not None and options.hybrid_norm is None):
        msg = (f"--print-query {form}: two-phase and a raw hybrid sum belong to the index's ml-commons search "
               "pipeline (milco-os ml-commons register --two-phase), not to the query")
        raise ConfigError(msg)
    dense_clause: dict[str, Any] | None = None
    if form == "model":
        # OpenSearch encodes and prunes the query as registered: only the full query or the CLI's default
        # (which nobody asked for) can pass here unnoticed.
        if str(options.query_pruning) not in (str(Pruning.parse("none")), str(Pruning.parse(DEFAULT_QUERY_PRUNE))):
            msg = ("--print-query model: Client encodes the query, pruned as registered "
                   "(milco-os ml-commons register --query-prune); drop --query-prune here")
            raise ConfigError(msg)
        query = record_query(text, record, alpha=options.alpha)
    else:
        assert encoder is not None
        stats = term_stats(client, index, record, options, stats)
        dense = fusion is not None and fusion.dense_field is not None
        encoded = options.query_pruning.apply(encoder.encode_queries([text], dense=dense)[0], stats)
        fields = {"pivot_field": record["fields"]["pivot"], "echo_field": record["fields"]["echo"]}
        query = (neural_sparse_query(encoded, **fields, alpha=options.alpha) if form == "neural_sparse"
                 else expansion_query(encoded, **fields, alpha=options.alpha, engine=engine))
        query = through_passages(query, passage_query(record, options))
        if dense and encoded.dense is not None:
            dense_clause = {"vector": dense_values(encoded.dense)}
    filters = list(options.filters)
    if filters and "should" in query["bool"]:
        query["bool"] |= {"filter": filters, "minimum_should_match": 1}
    if fusion is None:
        return {"query": query, "size": options.size, "from": options.from_}
    if engine is not OPENSEARCH:
        msg = (f"--print-query: index {index!r} is in {engine.label}, which has no neural-search hybrid query; "
               "search fuses the lists itself (drop --print-query, or --dense 0 for the sparse request alone)")
        raise ConfigError(msg)
    # Fused by OpenSearch: neural-search's hybrid query and processors.
    queries, weights = [query], [1.0]
    if "bm25" in fusion.weights:
        queries.append(bm25_body(text, list(record["fields"]["text"]), filters or None, None)["query"])
        weights.append(fusion.weights["bm25"])
    if fusion.dense_field is not None:
        if form == "model":
            dense_clause = {"query_text": text, "model_id": record_model(record, "query/dense")}
        if dense_clause is not None:
            dense_clause["k"] = window(options.size, options.from_)
            queries.append(knn_query(fusion.dense_field, dense_clause, filters or None,
                                     passage_query(record, options, name="dense"),
                                     kind="neural" if form == "model" else "knn"))
            weights.append(fusion.weights["dense"])
    try:
        return plugin_body(queries, weights, norm=fusion.norm, size=options.size, from_=options.from_)
    except ValueError as e:
        raise ConfigError(str(e)) from e


def options_for(record: dict[str, Any], index: str, options: SearchOptions) -> SearchOptions:
    """``options`` as they apply to the index with ``record``: α, when not given, is the one of the model that
    built it. A SEISMIC index prunes the query itself (``top_n``),
    has no term statistics to read and is a first phase of its own: the default query pruning gives way to
    SEISMIC's, and ``selective`` pruning, two-phase or SEISMIC parameters where they cannot apply get one line."""
    from milco_os.errors import ConfigError
    from milco_os.pruning import Pruning

    if options.alpha is None:
        options = replace(options, alpha=alpha_for_model(record.get("model", {}).get("name")))
    layout = read_layout(record, index)
    if layout.seismic is None:
        if options.seismic is not None:
            msg = f"--ann-param: index {index!r} is not a SEISMIC index (create one with --ann seismic)"
            raise ConfigError(msg)
        return options
    if options.two_phase is not None:
        msg = (f"--two-phase: index {index!r} is a SEISMIC index, already approximate (its top_n and k cut the "
               "query); tune it with --ann-param instead")
        raise ConfigError(msg)
    if options.query_pruning.needs_stats:
        if str(options.query_pruning) != str(Pruning.parse(DEFAULT_QUERY_PRUNE)):
            msg = (f"--query-prune {options.query_pruning}: a SEISMIC index has no per-term document frequencies; "
                   "use top_k:N or threshold:W, or SEISMIC's own --ann-param top_n=N")
            raise ConfigError(msg)
        options = replace(options, query_pruning=Pruning.parse("none"))
    return options


def seismic_query(record: dict[str, Any], options: SearchOptions) -> SeismicQuery | None:
    """The SEISMIC query parameters on a SEISMIC index (None: an exact index)."""
    if read_layout(record, "").seismic is None:
        return None
    return options.seismic or SeismicQuery()


def needs_term_stats(options: SearchOptions) -> bool:
    """Whether the query pruning (``selective``) or a two-phase ``value`` split reads document frequencies."""
    return options.query_pruning.needs_stats or (options.two_phase is not None and options.two_phase.split == "value")


def term_stats(
    client: Client, index: str, record: dict[str, Any], options: SearchOptions, stats: TermStats | None = None
) -> TermStats | None:
    """The index's term statistics when ``options`` need them (``stats`` if given), else None."""
    if not needs_term_stats(options) or stats is not None:
        return stats
    from milco_os.opensearch.stats import IndexTermStats

    return IndexTermStats(client, index, record)


def _request(
    record: dict[str, Any], text: str, encoder: SparseEncoder, options: SearchOptions, stats: TermStats | None = None,
    *, dense: bool = False,
) -> tuple[Encoded, dict[str, Any]]:
    """(the pruned query, the ``rank_feature`` search body) for ``text`` on an index with ``record``; ``dense``:
    the query's dense view too (same pass)."""
    pivot_field, echo_field = record["fields"]["pivot"], record["fields"]["echo"]
    from_source = record.get("vectors_in_source", True)
    query = options.query_pruning.apply(encoder.encode_queries([text], dense=dense)[0], stats)
    engine = engine_of_record(record)
    hybrid = (
        Hybrid(text=text, fields=tuple(record["fields"]["text"]), weight=options.hybrid_weight)
        if options.hybrid_weight is not None
        else None
    )
    # Explain from the stored vectors when _source has them (exact, no extra work for OpenSearch);
    # otherwise ask OpenSearch to explain its scoring.
    explain_stored = options.explain and from_source
    passages = passage_query(record, options)
    if passages is not None:  # the best passage's span (and vectors, to explain) come back as its inner hit
        excludes = [passages.path]
    else:
        excludes = None if explain_stored else [pivot_field, echo_field]
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
        explain=options.explain and not from_source and passages is None,
        source_excludes=excludes,
        stats=stats,
        passages=passages,
        engine=engine,
        seismic=seismic_query(record, options),
    )
    return query, body


def passage_query(record: dict[str, Any], options: SearchOptions, name: str = "sparse") -> PassageQuery | None:
    """How a query reaches the passages of an index with passages (None: the index has none)."""
    passages = read_layout(record, "").passages
    if passages is None:
        return None
    from_source = record.get("vectors_in_source", True)
    views = (record["fields"]["pivot"], record["fields"]["echo"]) if options.explain and from_source else ()
    return PassageQuery(passages.path, options.passage_score, views=views, name=name,
                        explain=options.explain and not from_source)


def search(
    client: Client,
    index: str,
    text: str,
    encoder: SparseEncoder,
    options: SearchOptions | None = None,
    stats: TermStats | None = None,
) -> SearchResult:
    """Encode, prune and run ``text``. ``stats``: the index's term statistics for ``selective`` pruning, kept
    by callers that search one index many times (read here when needed and not given)."""
    record = checked_record(client, index, encoder.info)
    options = options_for(record, index, options or SearchOptions())
    pivot_field, echo_field = record["fields"]["pivot"], record["fields"]["echo"]
    from_source = record.get("vectors_in_source", True)
    stats = term_stats(client, index, record, options, stats)
    fusion = fusion_plan(record, index, options)
    where: list[dict[str, Listed]] = []
    if fusion is not None:  # several lists from one _msearch, normalised and fused
        from milco_os.opensearch.hybrid import fused_hits

        query, bodies = _fused_bodies(record, text, encoder, options, fusion, stats)
        # Explanations come with the list's hits; otherwise only the page's sources are fetched.
        explained = options.explain and not from_source
        raw_hits, took, where = fused_hits(client, index, bodies, fusion.weights, norm=fusion.norm,
                                           size=options.size, from_=options.from_, page_sources=not explained)
        body = {"msearch": list(bodies.values()), "fusion": {"norm": fusion.norm, "weights": fusion.weights}}
    else:
        query, body = _request(record, text, encoder, options, stats)
        resp = client.search(index=index, body=body)
        raw_hits, took = resp["hits"]["hits"], int(resp.get("took", 0))
    layout = read_layout(record, index)
    passages = layout.passages
    vocabs = {"pivot": query.pivot.vocab, "echo": query.echo.vocab}  # explained terms as people read them
    hits = []
    for i, h in enumerate(raw_hits):
        source = h.get("_source", {})
        passage, scored = None, h
        if passages is not None:
            passage, scored = best_passage(h, passages.path, record["fields"]["text"])
        terms: list[TermContribution] = []
        if options.explain and scored is not None:
            views = {"alpha": options.alpha, "pivot_field": pivot_field, "echo_field": echo_field}
            if from_source:
                stored = scored.get("_source", {})
                if passages is not None:  # the passage's own source names its views relative to it
                    stored = {f: stored.get(passages.relative(f)) or {} for f in (pivot_field, echo_field)}
                terms = term_contributions(query, stored, **views, pivot_keys=layout.pivot_keys)
            else:
                explanation = scored.get("_explanation", {})
                terms = contributions_from_explanation(explanation, **views, engine=engine_of_record(record, index))
                if layout.seismic is not None:  # the pivot view's terms, as SEISMIC explains them
                    terms = sorted(terms + contributions_from_seismic(explanation, query, **views),
                                   key=lambda c: -c.contribution)
        terms = [replace(t, term=vocabs[t.view].readable(t.term)) for t in terms]
        shown = {k: v for k, v in source.items() if k not in (pivot_field, echo_field)}
        hits.append(Hit(id=h["_id"], score=float(h["_score"]), source=shown, terms=terms,
                        lists=where[i] if where else {}, passage=passage))
    return SearchResult(query=query, hits=hits, took_ms=took, body=body,
                        lists=tuple(fusion.weights) if fusion is not None else (), model=encoder.info.name)


def best_passage(
    hit: dict[str, Any], path: str, text_fields: list[str]
) -> tuple[PassageHit | None, dict[str, Any] | None]:
    """The passage a hit came back with (its sparse inner hit, else its dense one) and that inner hit (its
    ``_source`` holds the passage's span and, when asked for, its vectors; ``_explanation`` its score's)."""
    from milco_os.opensearch.ingest import document_text

    for name in ("sparse", "dense"):
        inner = (hit.get("inner_hits") or {}).get(name, {}).get("hits", {}).get("hits", [])
        if inner:
            best = inner[0]
            span = best.get("_source", {})
            start, end = int(span.get("start", 0)), int(span.get("end", 0))
            text = document_text(hit.get("_source", {}), text_fields)[start:end]
            return PassageHit(start, end, text, float(best.get("_score") or 0.0), name), best
    return None, None


@dataclass(frozen=True)
class Fusion:
    """Which lists a search fuses (``sparse`` always; ``bm25``, ``dense``), their weights and the normalisation."""

    weights: dict[str, float]
    norm: str
    dense_field: str | None = None  # the index's dense view, when its list is fused


def fusion_plan(record: dict[str, Any], index: str, options: SearchOptions) -> Fusion | None:
    """The lists ``options`` fuse on an index with ``record`` (None: one sparse request, BM25 summed in if asked).
    The dense view joins when the index has one, weighted ``options.dense_weight`` (None: the default; 0: not)."""
    from milco_os.errors import ConfigError

    dense = read_layout(record, index).dense
    dense_weight = options.dense_weight
    if dense is None and dense_weight:
        msg = f"--dense: index {index!r} has no dense view (create it with milco-os index create --dense)"
        raise ConfigError(msg)
    weights = {"sparse": 1.0}
    if options.hybrid_norm is not None and options.hybrid_weight is not None:
        weights["bm25"] = options.hybrid_weight
    dense_weight = DEFAULT_DENSE_WEIGHT if dense_weight is None else dense_weight
    if dense is not None and dense_weight != 0:  # 0, given or the default: the sparse views alone
        weights["dense"] = dense_weight
    if len(weights) == 1:
        if options.hybrid_norm is not None:
            msg = f"--hybrid-norm: nothing to fuse on index {index!r} (no --hybrid weight, no dense view)"
            raise ConfigError(msg)
        return None
    return Fusion(weights, options.hybrid_norm or DEFAULT_FUSION, dense.field if "dense" in weights and dense else None)


def _fused_bodies(
    record: dict[str, Any], text: str, encoder: SparseEncoder, options: SearchOptions, fusion: Fusion,
    stats: TermStats | None,
) -> tuple[Encoded, dict[str, dict[str, Any]]]:
    """(the pruned query, a body per fused list): each list as deep as the fusion reads it."""
    from milco_os.opensearch.documents import dense_values
    from milco_os.opensearch.hybrid import bm25_body, knn_body, window

    depth = window(options.size, options.from_)
    # BM25 joins the sparse sum unless it is a list of its own; the sparse list is asked for `depth` hits
    # directly, so a two-phase rescore window covers all of them.
    sparse_options = replace(options, size=depth, from_=0, hybrid_norm=None,
                             hybrid_weight=None if "bm25" in fusion.weights else options.hybrid_weight)
    query, sparse = _request(record, text, encoder, sparse_options, stats, dense=fusion.dense_field is not None)
    excludes = sparse.get("_source", {}).get("excludes")
    filters = list(options.filters) or None
    bodies = {"sparse": sparse}
    if "bm25" in fusion.weights:
        bodies["bm25"] = bm25_body(text, list(record["fields"]["text"]), filters, excludes)
    if fusion.dense_field is not None and query.dense is not None:
        bodies["dense"] = knn_body(dense_values(query.dense), fusion.dense_field, depth, filters, excludes,
                                   passages=passage_query(record, replace(options, explain=False), name="dense"),
                                   engine=engine_of_record(record))
    return query, bodies


def msearch_ids(client: Client, index: str, bodies: list[dict[str, Any]]) -> list[list[str]]:
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
