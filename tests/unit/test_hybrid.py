"""Fusion (pure): each list normalised, then sparse + W * BM25 (+ W_d * dense); the options that enable it."""

from __future__ import annotations

import pytest

from milco_os.opensearch.hybrid import bm25_body, fuse, normalised, window
from milco_os.specs import SearchOptions, TwoPhase


def test_minmax_maps_each_list_to_unit_range_and_missing_documents_get_zero() -> None:
    # The lowest listed document keeps 0.001 (as neural-search's min_max): it still beats an unlisted one.
    assert normalised([("a", 12.0), ("b", 7.0), ("c", 2.0)], "minmax") == {"a": 1.0, "b": 0.5, "c": 0.001}
    assert normalised([("a", 3.0)], "minmax") == {"a": 1.0} and normalised([], "minmax") == {}
    # BM25's large scores no longer swamp the sparse ones: d (top of sparse) beats x (top of BM25) at W = 0.5.
    sparse = [("d", 2.0), ("x", 1.0)]
    bm25 = [("x", 30.0), ("y", 29.0), ("d", 10.0)]
    assert [doc for doc, _ in fuse([sparse, bm25], [1.0, 0.5], norm="minmax")] == ["d", "x", "y"]
    raw_sum = {doc: dict(sparse).get(doc, 0) + 0.5 * dict(bm25).get(doc, 0) for doc in "dxy"}
    assert max(raw_sum, key=raw_sum.get) == "x", "without normalisation BM25 decides"


def test_rrf_uses_ranks_only_and_ties_break_by_id() -> None:
    assert normalised([("a", 100.0), ("b", 0.1)], "rrf") == pytest.approx({"a": 1 / 61, "b": 1 / 62})
    fused = fuse([[("a", 5.0), ("b", 4.0)], [("b", 9.0), ("a", 1.0)]], [1.0, 1.0], norm="rrf")
    assert [doc for doc, _ in fused] == ["a", "b"] and fused[0][1] == pytest.approx(fused[1][1])
    with pytest.raises(ValueError, match="choose minmax, rrf"):
        normalised([("a", 1.0)], "l2")


def test_window_and_bm25_body() -> None:
    assert window(10, 0) == 100 and window(100, 50) == 300 and window(9000, 5000) == 10_000
    body = bm25_body("tea", ["title", "text"], [{"term": {"lang": "en"}}], ["milco_pivot"])
    assert body["query"] == {"bool": {"must": [{"multi_match": {"query": "tea", "fields": ["title", "text"]}}],
                                      "filter": [{"term": {"lang": "en"}}]}}
    assert body["_source"] == {"excludes": ["milco_pivot"]}
    assert bm25_body("tea", ["text"], None, None)["query"] == {"multi_match": {"query": "tea", "fields": ["text"]}}


def test_three_lists_fuse_with_their_weights() -> None:
    sparse, bm25, dense = [("a", 3.0), ("b", 2.0)], [("c", 9.0)], [("b", 0.9), ("c", 0.8), ("a", 0.1)]
    fused = dict(fuse([sparse, bm25, dense], [1.0, 0.5, 2.0], norm="rrf"))
    assert fused == pytest.approx({"a": 1 / 61 + 2 / 63, "b": 1 / 62 + 2 / 61, "c": 0.5 / 61 + 2 / 62})
    with pytest.raises(ValueError, match="2 lists but 1 weights"):
        fuse([sparse, bm25], [1.0], norm="rrf")


def test_knn_body_filters_inside_the_graph_search() -> None:
    from milco_os.opensearch.hybrid import knn_body

    body = knn_body([0.6, 0.8], "milco_dense", 100, [{"term": {"lang": "de"}}], ["milco_dense"])
    assert body["query"] == {"knn": {"milco_dense": {"vector": [0.6, 0.8], "k": 100,
                                                     "filter": {"bool": {"filter": [{"term": {"lang": "de"}}]}}}}}
    assert body["size"] == 100 and body["_source"] == {"excludes": ["milco_dense"]}
    assert "filter" not in knn_body([1.0], "v", 5, None, None)["query"]["knn"]["v"]


def test_on_elasticsearch_the_knn_query_filters_inside_the_graph_search_and_neural_is_refused() -> None:
    from milco_os.errors import ConfigError
    from milco_os.opensearch.engine import ELASTICSEARCH
    from milco_os.opensearch.hybrid import knn_body, knn_query

    body = knn_body([0.6, 0.8], "milco_dense", 100, [{"term": {"lang": "de"}}], None, engine=ELASTICSEARCH)
    assert body["query"] == {"knn": {"field": "milco_dense", "query_vector": [0.6, 0.8], "k": 100,
                                     "num_candidates": 100, "filter": [{"term": {"lang": "de"}}]}}
    with pytest.raises(ConfigError, match="neural.*Elasticsearch has no such query"):
        knn_query("v", {"query_text": "x", "k": 5}, None, kind="neural", engine=ELASTICSEARCH)


def test_options_refuse_a_normalisation_without_lists_with_two_phase_or_unknown() -> None:
    assert SearchOptions(hybrid_weight=1.0, hybrid_norm="minmax").hybrid_norm == "minmax"
    # Without --hybrid the normalisation may still fuse the dense view's list; with --dense 0 nothing is left.
    assert SearchOptions(hybrid_norm="rrf").dense_weight is None
    with pytest.raises(ValueError, match="needs lists to fuse"):
        SearchOptions(hybrid_norm="rrf", dense_weight=0)
    with pytest.raises(ValueError, match="dense weight must be in"):
        SearchOptions(dense_weight=-1)
    with pytest.raises(ValueError, match="do not combine"):
        SearchOptions(hybrid_weight=1.0, hybrid_norm="rrf", two_phase=TwoPhase())
    with pytest.raises(ValueError, match="choose minmax, rrf"):
        SearchOptions(hybrid_weight=1.0, hybrid_norm="zscore")


def test_neural_search_body_fuses_as_fuse_does() -> None:
    from milco_os.opensearch.hybrid import fusion_processor, plugin_body

    body = plugin_body([{"match_all": {}}, {"match": {"text": "x"}}], [1.0, 3.0], norm="minmax", size=10, from_=20)
    assert body["query"]["hybrid"]["pagination_depth"] == window(10, 20) and body["from"] == 20
    processor = body["search_pipeline"]["phase_results_processors"][0]["normalization-processor"]
    # Weighted mean 1/4 : 3/4 of the min-max scores = (sparse + 3 * bm25) / 4: the order fuse gives.
    assert processor["combination"]["parameters"]["weights"] == [0.25, 0.75]
    assert fusion_processor("rrf", [1.0, 1.0])["score-ranker-processor"]["combination"]["rank_constant"] == 60
    with pytest.raises(ValueError, match="weighs every list alike"):
        fusion_processor("rrf", [1.0, 2.0])
    weights = fusion_processor("minmax", [1.0, 0.5, 2.5])["normalization-processor"]["combination"]["parameters"]
    assert weights["weights"] == pytest.approx([0.25, 0.125, 0.625])
