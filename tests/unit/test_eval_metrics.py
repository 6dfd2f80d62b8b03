"""Ranking metrics against values computed by hand."""

from __future__ import annotations

import math

import pytest

from milco_os.evaluation.metrics import aggregate, evaluate, mrr_at_k, ndcg_at_k, per_query, recall_at_k


def test_ndcg_graded_by_hand() -> None:
    # relevant d1 (grade 1) at rank 2 and d3 (grade 2) at rank 3
    dcg = 1 / math.log2(3) + 2 / math.log2(4)  # 0.6309 + 1.0
    idcg = 2 / math.log2(2) + 1 / math.log2(3)  # 2.0 + 0.6309
    assert ndcg_at_k(["d2", "d1", "d3"], {"d1": 1, "d3": 2}, 10) == pytest.approx(dcg / idcg)
    assert ndcg_at_k(["d2", "d1", "d3"], {"d1": 1, "d3": 2}, 10) == pytest.approx(0.619906, abs=1e-6)


def test_ndcg_cut_off_and_perfect() -> None:
    assert ndcg_at_k(["d3", "d1"], {"d1": 1, "d3": 2}, 10) == pytest.approx(1.0)
    # only rank 1 counts at k=1; the ideal at k=1 is the grade-2 document
    assert ndcg_at_k(["d1", "d3"], {"d1": 1, "d3": 2}, 1) == pytest.approx(0.5)
    assert ndcg_at_k(["x", "y"], {"d1": 1}, 10) == 0.0
    assert ndcg_at_k([], {"d1": 0}, 10) == 0.0


def test_ndcg_ignores_zero_grades_and_duplicates() -> None:
    # d2 judged non-relevant; the second d1 must not be counted again
    assert ndcg_at_k(["d2", "d1", "d1"], {"d1": 1, "d2": 0}, 10) == pytest.approx(1 / math.log2(3))


def test_mrr() -> None:
    assert mrr_at_k(["a", "b", "c"], {"c": 1}, 10) == pytest.approx(1 / 3)
    assert mrr_at_k(["a", "b", "c"], {"c": 1}, 2) == 0.0
    assert mrr_at_k(["c", "a"], {"a": 1, "c": 2}, 10) == 1.0
    assert mrr_at_k(["a", "a", "c"], {"c": 1}, 10) == pytest.approx(1 / 2)  # duplicates collapse


def test_recall() -> None:
    judged = {"a": 1, "b": 2, "c": 0, "d": 1}
    assert recall_at_k(["a", "x", "b"], judged, 100) == pytest.approx(2 / 3)
    assert recall_at_k(["a", "x", "b"], judged, 2) == pytest.approx(1 / 3)
    assert recall_at_k(["c"], judged, 100) == 0.0
    assert recall_at_k(["a"], {"a": 0}, 100) == 0.0


def test_k_must_be_positive() -> None:
    for fn in (ndcg_at_k, mrr_at_k, recall_at_k):
        with pytest.raises(ValueError, match="k must be"):
            fn(["a"], {"a": 1}, 0)


def test_per_query_skips_unjudged_and_scores_missing_as_zero() -> None:
    qrels = {"q1": {"d1": 1}, "q2": {"d2": 0}, "q3": {"d3": 1}}
    run = {"q1": ["d1"], "q2": ["d2"]}
    scores = per_query(run, qrels)
    assert set(scores) == {"q1", "q3"}
    assert scores["q1"] == {"ndcg@10": 1.0, "mrr@10": 1.0, "recall@100": 1.0}
    assert scores["q3"] == {"ndcg@10": 0.0, "mrr@10": 0.0, "recall@100": 0.0}


def test_unknown_metric() -> None:
    with pytest.raises(ValueError, match="unknown metric"):
        per_query({}, {"q": {"d": 1}}, ["map@10"])


def test_aggregate_overall_and_per_language() -> None:
    qrels = {"q1": {"d1": 1}, "q2": {"d2": 1}, "q3": {"d3": 1}}
    run = {"q1": ["d1"], "q2": ["x", "d2"], "q3": ["x"]}
    langs = {"q1": "de", "q2": "de", "q3": "fr"}
    result = evaluate(run, qrels, langs)
    de, fr = result["per_language"]["de"], result["per_language"]["fr"]
    assert list(result["per_language"]) == ["de", "fr"]
    assert de["queries"] == 2 and fr["queries"] == 1
    assert de["mrr@10"] == pytest.approx((1 + 0.5) / 2)
    assert fr["mrr@10"] == 0.0
    assert result["overall"]["queries"] == 3
    assert result["overall"]["mrr@10"] == pytest.approx(1.5 / 3)
    assert result["overall"]["ndcg@10"] == pytest.approx((1 + 1 / math.log2(3)) / 3)
    assert result["overall"]["recall@100"] == pytest.approx(2 / 3)
    assert set(result["per_query"]) == {"q1", "q2", "q3"}


def test_aggregate_empty_and_unknown_language() -> None:
    assert aggregate({}, {})["overall"] == {"ndcg@10": 0.0, "mrr@10": 0.0, "recall@100": 0.0, "queries": 0}
    result = aggregate({"q": {"ndcg@10": 1.0, "mrr@10": 1.0, "recall@100": 1.0}}, {})
    assert list(result["per_language"]) == ["?"]


def test_other_language_share_counts_top_hits_in_another_language_against_a_language_blind_ranking() -> None:
    from milco_os.evaluation.metrics import language_blind_share, other_language_share

    doc_lang = {"d1": "de", "d2": "de", "f1": "fr", "e1": "en", "e2": "en", "e3": "en"}
    query_lang = {"q1": "de", "q2": "en"}
    run = {"q1": ["d1", "d1", "f1", "x"], "q2": ["e1", "e2", "e3", "d1"]}  # x: unknown, d1 twice counts once
    assert other_language_share(run, query_lang, doc_lang, k=3) == (1 / 2 + 0 / 3) / 2
    assert other_language_share(run, query_lang, doc_lang, k=4) == (1 / 2 + 1 / 4) / 2
    assert language_blind_share(query_lang, doc_lang) == ((1 - 2 / 6) + (1 - 3 / 6)) / 2
    assert language_blind_share(query_lang, {}) == 0.0
