"""Pure builders for search requests: a query's sparse vectors -> one weighted clause per term (``rank_feature`` on
OpenSearch, a boosted ``term`` on Elasticsearch's ``sparse_vector``: :mod:`milco_os.opensearch.engine`); on a
SEISMIC index the pivot view is one approximate ``neural_sparse`` clause (:class:`~milco_os.layout.SeismicQuery`).

Score of a hit = alpha * <q_pivot, d_pivot> + (1 - alpha) * <q_echo, d_echo>, exactly up to the
precision of stored feature values (Lucene keeps 9 significant bits, ~0.4%). alpha = 0.5 ranks like
MILCO's unweighted sum. On a SEISMIC index the pivot clause returns its approximate top ``k`` with
byte-quantised weights, and a hit's score sums what that list and the exact echo terms give it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from milco_os.keys import decode_key, stored_terms
from milco_os.layout import SeismicQuery
from milco_os.opensearch.engine import OPENSEARCH, Engine
from milco_os.pruning import selective
from milco_os.specs import DEFAULT_ALPHA, TwoPhase
from milco_os.types import Encoded, SparseVector

if TYPE_CHECKING:
    from milco_os.pruning import TermStats


def match_nothing() -> dict[str, Any]:
    """What a query with no terms sends: a ``bool`` with no clause at all would match every document."""
    return {"bool": {"must_not": [{"match_all": {}}]}}


def query_tokens(vec: SparseVector, scale: float = 1.0, keys: str = "names") -> dict[str, float]:
    """``{feature name: scale * weight}``: a query's terms under the keys the index stores (``.`` -> ``%2E``;
    ``keys="ids"``: vocabulary ids, as a SEISMIC index stores them)."""
    return {key: scale * weight for key, weight in stored_terms(vec, keys).items()}


def key_token(key: str, vocab_tokens: list[str], keys: str = "names") -> str:
    """The vocabulary entry a stored key names (the inverse of :func:`query_tokens`'s keys)."""
    return vocab_tokens[int(key)] if keys == "ids" else decode_key(key)


def feature_clauses(vec: SparseVector, field: str, scale: float, engine: Engine = OPENSEARCH) -> list[dict[str, Any]]:
    """One clause per term: linear in the stored value, boosted by scale * weight."""
    if scale <= 0:
        return []
    return [engine.term_clause(field, key, weight) for key, weight in query_tokens(vec, scale).items()]


def expansion_query(
    query: Encoded,
    *,
    alpha: float = DEFAULT_ALPHA,
    pivot_field: str,
    echo_field: str,
    filters: list[dict[str, Any]] | None = None,
    engine: Engine = OPENSEARCH,
) -> dict[str, Any]:
    """``bool.should`` over pivot and echo terms (and ``filter`` clauses, which do not score)."""
    if not 0 <= alpha <= 1:
        msg = f"alpha must be in [0, 1], got {alpha}"
        raise ValueError(msg)
    should = (feature_clauses(query.pivot, pivot_field, alpha, engine)
              + feature_clauses(query.echo, echo_field, 1 - alpha, engine))
    boolean: dict[str, Any] = {"should": should, "minimum_should_match": 1 if should else 0}
    if filters:
        boolean["filter"] = filters
    if not should:
        # A query with no terms (e.g. empty text) matches nothing rather than everything.
        return match_nothing()
    return {"bool": boolean}


def split_by_weight(vec: SparseVector, ratio: float) -> tuple[SparseVector, SparseVector]:
    """(high, low): terms with weight >= ratio * max weight, and the rest (OpenSearch's two-phase split)."""
    if len(vec) == 0:
        return vec, vec
    return _split(vec, vec.weights >= ratio * vec.weights.max())


def split_by_value(vec: SparseVector, df: np.ndarray, n_docs: int, ratio: float) -> tuple[SparseVector, SparseVector]:
    """(high, low): the terms ``selective:ratio`` keeps (by ``w * ln(1 + N / df)``; ``df`` aligned with
    ``vec.ids``), and the rest. A term no document holds is never high: it would only narrow the window."""
    return _split(vec, np.isin(vec.ids, selective(vec, df, n_docs, ratio).ids))


def _split(vec: SparseVector, high: np.ndarray) -> tuple[SparseVector, SparseVector]:
    return (
        SparseVector(vec.ids[high], vec.weights[high], vec.vocab),
        SparseVector(vec.ids[~high], vec.weights[~high], vec.vocab),
    )


def two_phase_split(query: Encoded, two_phase: TwoPhase, stats: TermStats | None = None) -> tuple[Encoded, Encoded]:
    """(first-phase query, rescore query). A ``value`` split reads the index's term statistics."""
    if two_phase.split == "weight":
        pivot, echo = (split_by_weight(v, two_phase.ratio) for v in (query.pivot, query.echo))
    else:
        if stats is None:
            msg = "two-phase split 'value' needs the index's term statistics"
            raise ValueError(msg)
        pivot, echo = (
            split_by_value(vec, stats.doc_freq(view, vec), stats.n_docs, two_phase.ratio)
            for view, vec in (("pivot", query.pivot), ("echo", query.echo))
        )
    return Encoded(pivot[0], echo[0]), Encoded(pivot[1], echo[1])


@dataclass(frozen=True)
class PassageQuery:
    """On an index with passages: a document scores from its passages' scores (the nested field ``path``;
    ``score_mode`` max, sum or avg), and each hit brings its best passage back as the inner hit ``name``: its span
    and, named in ``views`` (full paths), its stored vectors (for explain); ``explain``: OpenSearch's explanation of
    that passage's score."""

    path: str
    score_mode: str = "max"
    views: tuple[str, ...] = ()
    explain: bool = False
    name: str = "sparse"

    def wrap(self, query: dict[str, Any], *, inner_hits: bool = True) -> dict[str, Any]:
        """``query`` (on the passages' fields) as a ``nested`` query; a query that matches nothing stays as it is."""
        if query == match_nothing():
            return query
        nested: dict[str, Any] = {"path": self.path, "score_mode": self.score_mode, "query": query}
        if inner_hits:
            inner: dict[str, Any] = {"name": self.name, "size": 1,
                                     "_source": [f"{self.path}.start", f"{self.path}.end", *self.views]}
            if self.explain:
                inner["explain"] = True
            nested["inner_hits"] = inner
        return {"nested": nested}


def scored_query(
    query: Encoded, *, alpha: float, pivot_field: str, echo_field: str, filters: list[dict[str, Any]] | None = None,
    passages: PassageQuery | None = None, inner_hits: bool = True, engine: Engine = OPENSEARCH,
) -> dict[str, Any]:
    """:func:`expansion_query`, on an index with passages scored through its passages (``filters`` apply to the
    documents, outside the nested query); either way a ``bool`` whose ``should`` takes more clauses."""
    views = {"alpha": alpha, "pivot_field": pivot_field, "echo_field": echo_field, "engine": engine}
    if passages is None:
        return expansion_query(query, **views, filters=filters)
    inner = expansion_query(query, **views)
    return through_passages(inner, passages, filters, inner_hits=inner_hits)


def through_passages(
    query: dict[str, Any], passages: PassageQuery | None, filters: list[dict[str, Any]] | None = None, *,
    inner_hits: bool = True,
) -> dict[str, Any]:
    """A query on the passages' fields as a ``bool`` whose ``should`` holds it nested (and takes more clauses),
    ``filters`` on the documents beside it; unchanged without passages or when it matches nothing."""
    if passages is None or query == match_nothing():
        return query
    boolean: dict[str, Any] = {"should": [passages.wrap(query, inner_hits=inner_hits)], "minimum_should_match": 1}
    if filters:
        boolean["filter"] = filters
    return {"bool": boolean}


@dataclass(frozen=True)
class Hybrid:
    """Add a BM25 ``multi_match`` over the text fields, weighted by ``weight``."""

    text: str
    fields: tuple[str, ...]
    weight: float = 1.0


def search_body(
    query: Encoded,
    *,
    pivot_field: str,
    echo_field: str,
    alpha: float = DEFAULT_ALPHA,
    size: int = 10,
    from_: int = 0,
    filters: list[dict[str, Any]] | None = None,
    two_phase: TwoPhase | None = None,
    hybrid: Hybrid | None = None,
    explain: bool = False,
    source_excludes: list[str] | None = None,
    stats: TermStats | None = None,
    passages: PassageQuery | None = None,
    engine: Engine = OPENSEARCH,
    seismic: SeismicQuery | None = None,
) -> dict[str, Any]:
    """The whole search request. Filters restrict without scoring; ``hybrid`` adds BM25 to the score;
    ``stats``: the index's term statistics, for a two-phase ``value`` split; ``passages``: an index with passages
    (documents score through their passages; the best one comes back with each hit); ``seismic``: a SEISMIC
    index (:func:`seismic_body`)."""
    if seismic is not None:
        if two_phase is not None or passages is not None:
            msg = "a SEISMIC index is searched in two phases of its own: no two-phase, no passages"
            raise ValueError(msg)
        return seismic_body(query, seismic, pivot_field=pivot_field, echo_field=echo_field, alpha=alpha, size=size,
                            from_=from_, filters=filters, hybrid=hybrid, explain=explain,
                            source_excludes=source_excludes)
    first = query
    rest: Encoded | None = None
    if two_phase is not None:
        first, rest = two_phase_split(query, two_phase, stats)
    views = {"alpha": alpha, "pivot_field": pivot_field, "echo_field": echo_field, "engine": engine}
    main = scored_query(first, **views, filters=filters, passages=passages)

    def with_bm25(scored: dict[str, Any]) -> dict[str, Any]:
        if hybrid is not None and "should" in scored["bool"]:
            match = {"multi_match": {"query": hybrid.text, "fields": list(hybrid.fields), "boost": hybrid.weight}}
            scored["bool"]["should"].append(match)
        return scored

    body: dict[str, Any] = {
        "query": with_bm25(main),
        "size": size,
        "from": from_,
        # Exact hit counts would disable Lucene's block-max WAND/MaxScore skipping.
        "track_total_hits": False,
    }
    if rest is not None and two_phase is not None and (len(rest.pivot) or len(rest.echo)):
        window = min(two_phase.max_window, max(int((size + from_) * two_phase.expansion), size + from_))
        if passages is None:  # first + rest = the full query, term by term
            rescore, weights = expansion_query(rest, **views), (1.0, 1.0)
        else:  # a best passage is not a sum over terms: the window is scored again with the full query
            rescore = with_bm25(scored_query(query, **views, passages=passages, inner_hits=False))
            weights = (0.0, 1.0)
        body["rescore"] = {
            "window_size": window,
            "query": {
                "rescore_query": rescore,
                "query_weight": weights[0],
                "rescore_query_weight": weights[1],
                "score_mode": "total",
            },
        }
    if explain:
        body["explain"] = True
    if source_excludes:
        body["_source"] = {"excludes": source_excludes}
    return body


def seismic_body(
    query: Encoded, seismic: SeismicQuery, *, pivot_field: str, echo_field: str, alpha: float, size: int = 10,
    from_: int = 0, filters: list[dict[str, Any]] | None = None, hybrid: Hybrid | None = None, explain: bool = False,
    source_excludes: list[str] | None = None,
) -> dict[str, Any]:
    """The search request on a SEISMIC index: SEISMIC finds the pivot view's approximate top ``k`` (``filters``
    applied while it searches), and a rescore window over those ``k`` adds the echo view's exact terms (and BM25
    with ``hybrid``). Summing an approximate top ``k`` with an exact echo query over all documents instead would
    give documents outside that top ``k`` their echo score alone, and lose most of the exact query's top 10
    (BENCHMARKS.md §16, ``seismic summed``). A query without pivot terms (or ``alpha`` 0) is exact."""
    if not 0 <= alpha <= 1:
        msg = f"alpha must be in [0, 1], got {alpha}"
        raise ValueError(msg)
    depth = max(seismic.k, size + from_)
    bm25 = ([{"multi_match": {"query": hybrid.text, "fields": list(hybrid.fields), "boost": hybrid.weight}}]
            if hybrid is not None else [])
    rescore: list[dict[str, Any]] = []
    if len(query.pivot) and alpha > 0:
        pivot = seismic.clause(pivot_field, query_tokens(query.pivot, keys="ids"), alpha, depth, filters)
        main = {"bool": {"should": [pivot], "minimum_should_match": 1, **({"filter": filters} if filters else {})}}
        rescore = feature_clauses(query.echo, echo_field, 1 - alpha) + bm25
    else:  # nothing for SEISMIC to do: the echo terms, exactly
        main = expansion_query(query, alpha=alpha, pivot_field=pivot_field, echo_field=echo_field, filters=filters)
        if main != match_nothing():
            main["bool"]["should"] += bm25
    body: dict[str, Any] = {"query": main, "size": size, "from": from_, "track_total_hits": False}
    if rescore:
        body["rescore"] = added_in_window(rescore, depth)
    if explain:
        body["explain"] = True
    if source_excludes:
        body["_source"] = {"excludes": source_excludes}
    return body


def added_in_window(should: list[dict[str, Any]], window: int) -> dict[str, Any]:
    """A ``rescore`` that adds the ``should`` clauses' scores to the first phase's over its top ``window`` hits (a
    SEISMIC search's second phase: the echo view, and BM25)."""
    return {"window_size": window, "query": {"rescore_query": {"bool": {"should": should}}, "query_weight": 1.0,
                                             "rescore_query_weight": 1.0, "score_mode": "total"}}


def neural_sparse_query(
    query: Encoded, *, pivot_field: str, echo_field: str, alpha: float = DEFAULT_ALPHA
) -> dict[str, Any]:
    """The same expansion as a ``neural_sparse`` query with raw ``query_tokens`` (neural-search plugin,
    OpenSearch 2.14+), for clusters that prefer it; weights already carry alpha. No terms: matches nothing."""
    if not 0 <= alpha <= 1:
        msg = f"alpha must be in [0, 1], got {alpha}"
        raise ValueError(msg)
    should = []
    for vec, field, scale in ((query.pivot, pivot_field, alpha), (query.echo, echo_field, 1 - alpha)):
        if len(vec) and scale > 0:
            should.append({"neural_sparse": {field: {"query_tokens": query_tokens(vec, scale)}}})
    if not should:  # an empty bool.should would match every document
        return match_nothing()
    return {"bool": {"should": should}}


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
    pivot_keys: str = "names",
) -> list[TermContribution]:
    """Which query terms matched a document and how much each added, largest first.

    Computed from the vectors stored in the hit's ``_source``: exact, and free of an extra request (on a SEISMIC
    index the engine scored the pivot view's byte-quantised weights, so the hit's score differs a little).
    """
    out: list[TermContribution] = []
    for view, vec, field, scale in (
        ("pivot", query.pivot, pivot_field, alpha),
        ("echo", query.echo, echo_field, 1 - alpha),
    ):
        stored = document_source.get(field) or {}
        keys = pivot_keys if view == "pivot" else "names"
        doc_terms = {key_token(k, vec.vocab.tokens, keys): float(v) for k, v in stored.items()}
        for term, q_weight in vec.to_terms().items():
            d_weight = doc_terms.get(term)
            if d_weight is not None and scale > 0:
                out.append(TermContribution(view, term, q_weight, d_weight, scale * q_weight * d_weight))
    out.sort(key=lambda c: -c.contribution)
    return out


#: SEISMIC's explanation of a view's score (neural-search 3.3+): the field, each term's quantised weights, and
#: the factor that turns their product back into a score (boost * ceiling_ingest * ceiling_search / 255 / 255).
_SEISMIC_FIELD = re.compile(r"^sparse_ann score for doc \d+ in field '(?P<field>.+)'")
_SEISMIC_TERM = re.compile(r"^token '(?P<key>\d+)' contribution: query_weight=(?P<q>\d+) \* doc_weight=(?P<d>\d+)")
_SEISMIC_SCALE = re.compile(r"^quantization rescaling")


def contributions_from_seismic(
    explanation: dict[str, Any], query: Encoded, *, alpha: float, pivot_field: str, echo_field: str
) -> list[TermContribution]:
    """Per-term contributions read from SEISMIC's explanation of a hit (used when the vectors are not kept in
    ``_source``): the byte-quantised weights SEISMIC scored, turned back into weights on the model's scale."""
    views = {pivot_field: ("pivot", alpha, query.pivot), echo_field: ("echo", 1 - alpha, query.echo)}
    out: list[TermContribution] = []
    stack = [explanation]
    while stack:
        node = stack.pop()
        m = _SEISMIC_FIELD.match(node.get("description", ""))
        named = m and next((v for f, v in views.items() if m.group("field") in (f, f.rsplit(".", 1)[-1])), None)
        if not named:
            stack.extend(node.get("details", []))
            continue
        view, scale, vec = named
        details = node.get("details", [])
        scaling = next((d for d in details if _SEISMIC_SCALE.match(d.get("description", ""))), {})
        rescale = float(scaling.get("value", 0.0))
        ceilings = [float(d["value"]) for d in scaling.get("details", []) if "ceiling" in d.get("description", "")]
        ingest, search = (ceilings + [0.0, 0.0])[:2]
        for d in details:
            for term in d.get("details", []):
                t = _SEISMIC_TERM.match(term.get("description", ""))
                if t:
                    q, w = int(t.group("q")), int(t.group("d"))
                    out.append(TermContribution(view, vec.vocab.tokens[int(t.group("key"))], q * search / 255,
                                                w * ingest / 255, q * w * rescale))
    out.sort(key=lambda c: -c.contribution)
    return out


def contributions_from_explanation(
    explanation: dict[str, Any], *, alpha: float, pivot_field: str, echo_field: str, engine: Engine = OPENSEARCH
) -> list[TermContribution]:
    """Per-term contributions read from the engine's ``_explanation`` (used when the vectors are not kept
    in ``_source``). Document weights are the values Lucene stored (9 significant bits)."""
    views = {pivot_field: ("pivot", alpha), echo_field: ("echo", 1 - alpha)}
    out: list[TermContribution] = []
    stack = [explanation]
    while stack:
        node = stack.pop()
        m = engine.explained_term.match(node.get("description", ""))
        if m and m.group("field") in views:
            view, scale = views[m.group("field")]
            values = {d["description"].split(",")[0]: float(d["value"]) for d in node.get("details", [])}
            boost, stored = values.get("w", 0.0), values.get("S", 0.0)
            out.append(
                TermContribution(view, decode_key(m.group("key")), boost / scale if scale else 0.0, stored,
                                 float(node["value"]))
            )
        else:
            stack.extend(node.get("details", []))
    out.sort(key=lambda c: -c.contribution)
    return out
