"""Fused search: result lists from one ``_msearch`` round trip (the sparse expansion, and BM25 and/or the dense
view's k-NN), each normalised, then summed with weights per query (pure :func:`fuse`; IO in :func:`fused_hits`).

``--hybrid W`` alone adds BM25 to the sparse query's sum, where BM25's score scale (unbounded, ~5-20 per
matching term) meets the dot products' (~0.5-5). With ``--hybrid-norm``, each list is normalised first:
``minmax`` maps a list's scores to [0.001, 1] (a document missing from a list gets 0 there), ``rrf`` replaces
scores by reciprocal ranks ``1 / (60 + rank)``; a document's score is then ``sparse + W * bm25``. An index with
a dense view adds its k-NN list the same way, weighted ``--dense W`` (docs/dense.md).

Where the neural-search plugin is installed, OpenSearch can fuse instead: :func:`plugin_body` is one search
request with a ``hybrid`` query over the same lists and a temporary search pipeline whose
``normalization-processor`` (min-max, weights ``1 : W ...``) or ``score-ranker-processor`` (RRF, 60) ranks as
:func:`fuse` does (``milco-os search --print-query ...`` prints it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from milco_os.opensearch.engine import OPENSEARCH, Engine
from milco_os.specs import HYBRID_NORMS

if TYPE_CHECKING:
    from milco_os.opensearch.engine import Client
    from milco_os.opensearch.query import PassageQuery

RRF_K = 60
#: The min-max score of a list's lowest document.
MIN_SCORE = 0.001
#: Hits fetched from each list: fusion can lift a document from deep in one list into the top of the other.
MIN_WINDOW = 100


def normalised(scores: list[tuple[str, float]], norm: str) -> dict[str, float]:
    """One list's ``(id, score)`` pairs, best first, normalised by ``norm``."""
    if norm == "rrf":
        return {doc: 1.0 / (RRF_K + rank) for rank, (doc, _) in enumerate(scores, 1)}
    if norm != "minmax":
        msg = f"hybrid normalisation {norm!r}: choose {', '.join(HYBRID_NORMS)}"
        raise ValueError(msg)
    if not scores:
        return {}
    values = [s for _, s in scores]
    low, high = min(values), max(values)
    # A list's lowest document gets MIN_SCORE rather than 0, so it still outranks documents missing from the
    # list; neural-search's min_max does exactly this, so both fusions rank alike.
    return {doc: ((s - low) / (high - low) or MIN_SCORE) if high > low else 1.0 for doc, s in scores}


def fuse(lists: Sequence[list[tuple[str, float]]], weights: Sequence[float], *, norm: str) -> list[tuple[str, float]]:
    """``sum(weight * normalised list score)`` over the lists (a list missing a document adds 0); best first, ties
    by id."""
    if len(lists) != len(weights):
        msg = f"fuse: {len(lists)} lists but {len(weights)} weights"
        raise ValueError(msg)
    scored = [normalised(scores, norm) for scores in lists]
    fused: dict[str, float] = {}
    for scores, weight in zip(scored, weights, strict=True):
        for doc, score in scores.items():
            fused[doc] = fused.get(doc, 0.0) + weight * score
    return sorted(fused.items(), key=lambda item: (-item[1], item[0]))


def window(size: int, from_: int) -> int:
    return min(max(MIN_WINDOW, 2 * (size + from_)), 10_000)


def bm25_body(text: str, fields: list[str], filters: list[dict[str, Any]] | None,
              source_excludes: list[str] | None) -> dict[str, Any]:
    """BM25 over the index's text fields, restricted by the same filters as the sparse query."""
    match: dict[str, Any] = {"multi_match": {"query": text, "fields": fields}}
    body: dict[str, Any] = {"query": {"bool": {"must": [match], "filter": filters}} if filters else match,
                            "track_total_hits": False}
    if source_excludes:
        body["_source"] = {"excludes": source_excludes}
    return body


def knn_query(field: str, clause: dict[str, Any], filters: list[dict[str, Any]] | None,
              passages: PassageQuery | None = None, kind: str = "knn", engine: Engine = OPENSEARCH) -> dict[str, Any]:
    """A ``knn`` (or neural-search's ``neural``) query on ``field`` with ``clause`` (vector or text, and ``k``):
    ``filters`` inside it, applied while the graph is searched; on an index with passages a ``nested`` query
    (a document's nearest passage) with the filters, on the documents, outside it."""
    if passages is None:
        return engine.knn_clause(field, clause, filters, kind)
    query = passages.wrap(engine.knn_clause(field, clause, None, kind))
    return {"bool": {"must": [query], "filter": filters}} if filters else query


def knn_body(vector: list[float], field: str, k: int, filters: list[dict[str, Any]] | None,
             source_excludes: list[str] | None, passages: PassageQuery | None = None,
             engine: Engine = OPENSEARCH) -> dict[str, Any]:
    """The dense view's ``k`` nearest documents (the k-NN plugin's ``knn`` query on the Lucene engine, which applies
    ``filters`` while it searches the graph, so a filter never empties the list). On an index with passages, the
    ``k`` documents with the nearest passages, each with that passage (a ``nested`` query; the filters, on the
    documents, then apply after the graph search and can leave fewer than ``k``)."""
    query = knn_query(field, {"vector": vector, "k": k}, filters, passages, engine=engine)
    body: dict[str, Any] = {"query": query, "size": k, "track_total_hits": False}
    if source_excludes:
        body["_source"] = {"excludes": source_excludes}
    return body


def fusion_processor(norm: str, weights: Sequence[float]) -> dict[str, Any]:
    """neural-search's search-phase processor ranking like :func:`fuse`: the weighted arithmetic mean of min-max
    scores with weights ``w_i / sum(w)`` is ``sum(w_i * score_i) / sum(w)``; RRF sums ``1 / (60 + rank)``."""
    if norm == "minmax":
        total = sum(weights)
        return {"normalization-processor": {
            "normalization": {"technique": "min_max"},
            "combination": {"technique": "arithmetic_mean",
                            "parameters": {"weights": [w / total for w in weights]}}}}
    if norm == "rrf":
        if any(w != weights[0] for w in weights):
            msg = ("rrf in OpenSearch: neural-search's score-ranker-processor weighs every list alike; "
                   "give the lists equal weights (--hybrid 1, --dense 1)")
            raise ValueError(msg)
        return {"score-ranker-processor": {"combination": {"technique": "rrf", "rank_constant": RRF_K}}}
    msg = f"hybrid normalisation {norm!r}: choose {', '.join(HYBRID_NORMS)}"
    raise ValueError(msg)


def plugin_body(queries: Sequence[dict[str, Any]], weights: Sequence[float], *, norm: str, size: int,
                from_: int) -> dict[str, Any]:
    """One search request fused by OpenSearch (neural-search plugin): a ``hybrid`` query of the lists, each
    ``window`` hits deep as :func:`fused_hits` fetches them, and a temporary search pipeline that fuses."""
    return {
        "query": {"hybrid": {"queries": list(queries), "pagination_depth": window(size, from_)}},
        "size": size,
        "from": from_,
        "search_pipeline": {"phase_results_processors": [fusion_processor(norm, weights)]},
    }


@dataclass(frozen=True)
class Listed:
    """Where a fused hit stood in one of the lists: its rank (from 1) and its score there."""

    rank: int
    score: float


def fused_hits(
    client: Client, index: str, bodies: dict[str, dict[str, Any]], weights: dict[str, float], *,
    norm: str, size: int, from_: int, page_sources: bool = True,
) -> tuple[list[dict[str, Any]], int, list[dict[str, Listed]]]:
    """Run the named bodies (each asked for :func:`window` hits; a ``knn`` body keeps its own ``k``) in one
    ``_msearch`` and fuse them: the hits of the page ``from_ .. from_ + size`` (from the first list holding a
    document) with ``_score`` the fused score, OpenSearch's own time in ms, and per hit where it stood in each
    list that held it.

    ``page_sources``: the lists return ids and scores only, and the page's ``_source`` (filtered as the first
    body says) comes from one ``_mget`` afterwards, so a query never transfers the text of every document in
    every list (hundreds of hits); False: the lists return their hits whole (what explanations need)."""
    from milco_os.errors import SearchIndexError

    n = window(size, from_)
    names = list(bodies)
    lines: list[dict[str, Any]] = []
    for name in names:
        body = {**bodies[name], "size": n, "from": 0}
        lines += [{"index": index}, {**body, "_source": False} if page_sources else body]
    lists, raw, took = [], {}, 0
    for name, response in zip(names, client.msearch(body=lines)["responses"], strict=True):
        if "error" in response:
            msg = f"{name} search on {index!r} failed: {response['error']}"
            raise SearchIndexError(msg)
        hits = response["hits"]["hits"]
        lists.append([(h["_id"], float(h["_score"])) for h in hits])
        for h in hits:
            raw.setdefault(h["_id"], h)
        took = max(took, int(response.get("took", 0)))
    page = fuse(lists, [weights[name] for name in names], norm=norm)[from_ : from_ + size]
    where = [{name: Listed(rank, score) for name, scores in zip(names, lists, strict=True)
              for rank, (doc_id, score) in enumerate(scores, 1) if doc_id == doc} for doc, _ in page]
    if page_sources and page:
        excludes = (bodies[names[0]].get("_source") or {}).get("excludes")
        filtered = {"_source_excludes": ",".join(excludes)} if excludes else {}
        found = client.mget(index=index, body={"ids": [doc for doc, _ in page]}, **filtered)["docs"]
        sources = {d["_id"]: d.get("_source", {}) for d in found if d.get("found")}
        for doc, _ in page:
            raw[doc] = {**raw[doc], "_source": sources.get(doc, {})}
    return [{**raw[doc], "_score": score} for doc, score in page], took, where
