"""Hybrid search with score normalisation: the sparse expansion and BM25 as two result lists from one
``_msearch`` round trip, fused per query (pure :func:`fuse`; IO in :func:`fused_hits`).

``--hybrid W`` alone adds BM25 to the sparse query's sum, where BM25's score scale (unbounded, ~5-20 per
matching term) meets the dot products' (~0.5-5). With ``--hybrid-norm``, each list is normalised first:
``minmax`` maps a list's scores to [0.001, 1] (a document missing from a list gets 0 there), ``rrf`` replaces
scores by reciprocal ranks ``1 / (60 + rank)``; a document's score is then ``sparse + W * bm25``.

Where the neural-search plugin is installed, OpenSearch can fuse instead: :func:`plugin_body` is one search
request with a ``hybrid`` query over the same two lists and a temporary search pipeline whose
``normalization-processor`` (min-max, weights ``1 : W``) or ``score-ranker-processor`` (RRF, 60) ranks as
:func:`fuse` does (``milco-os search --print-query ... --hybrid W --hybrid-norm N`` prints it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from milco_os.specs import HYBRID_NORMS

if TYPE_CHECKING:
    from opensearchpy import OpenSearch

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


def fuse(sparse: list[tuple[str, float]], bm25: list[tuple[str, float]], *, weight: float,
         norm: str) -> list[tuple[str, float]]:
    """``sparse + weight * bm25`` after normalising each list; best first, ties by id."""
    a, b = normalised(sparse, norm), normalised(bm25, norm)
    fused = {doc: a.get(doc, 0.0) + weight * b.get(doc, 0.0) for doc in a.keys() | b.keys()}
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


def fusion_processor(norm: str, weight: float) -> dict[str, Any]:
    """neural-search's search-phase processor ranking like :func:`fuse`: the weighted arithmetic mean of min-max
    scores with weights ``1 : W`` is ``(sparse + W * bm25) / (1 + W)``; RRF sums ``1 / (60 + rank)``."""
    if norm == "minmax":
        return {"normalization-processor": {
            "normalization": {"technique": "min_max"},
            "combination": {"technique": "arithmetic_mean",
                            "parameters": {"weights": [1 / (1 + weight), weight / (1 + weight)]}}}}
    if norm == "rrf":
        if weight != 1:
            msg = ("--hybrid-norm rrf in OpenSearch: neural-search's score-ranker-processor weighs both lists alike; "
                   "use --hybrid 1")
            raise ValueError(msg)
        return {"score-ranker-processor": {"combination": {"technique": "rrf", "rank_constant": RRF_K}}}
    msg = f"hybrid normalisation {norm!r}: choose {', '.join(HYBRID_NORMS)}"
    raise ValueError(msg)


def plugin_body(sparse_query: dict[str, Any], bm25_query: dict[str, Any], *, norm: str, weight: float, size: int,
                from_: int) -> dict[str, Any]:
    """One search request fused by OpenSearch (neural-search plugin): a ``hybrid`` query of both lists, each
    ``window`` hits deep as :func:`fused_hits` fetches them, and a temporary search pipeline that fuses."""
    return {
        "query": {"hybrid": {"queries": [sparse_query, bm25_query], "pagination_depth": window(size, from_)}},
        "size": size,
        "from": from_,
        "search_pipeline": {"phase_results_processors": [fusion_processor(norm, weight)]},
    }


def fused_hits(
    client: OpenSearch, index: str, sparse_body: dict[str, Any], bm25: dict[str, Any], *,
    weight: float, norm: str, size: int, from_: int,
) -> tuple[list[dict[str, Any]], int]:
    """Run both bodies (each asked for :func:`window` hits) in one ``_msearch`` and fuse them: the hits of the
    page ``from_ .. from_ + size`` as OpenSearch returned them (from the sparse list where a document is in
    both) with ``_score`` the fused score, and OpenSearch's own time in ms."""
    from milco_os.errors import SearchIndexError

    n = window(size, from_)
    lines: list[dict[str, Any]] = []
    for body in (sparse_body, bm25):
        lines += [{"index": index}, {**body, "size": n, "from": 0}]
    lists, raw, took = [], {}, 0
    for response in client.msearch(body=lines)["responses"]:
        if "error" in response:
            msg = f"hybrid search on {index!r} failed: {response['error']}"
            raise SearchIndexError(msg)
        hits = response["hits"]["hits"]
        lists.append([(h["_id"], float(h["_score"])) for h in hits])
        for h in hits:
            raw.setdefault(h["_id"], h)
        took = max(took, int(response.get("took", 0)))
    page = fuse(lists[0], lists[1], weight=weight, norm=norm)[from_ : from_ + size]
    return [{**raw[doc], "_score": score} for doc, score in page], took
