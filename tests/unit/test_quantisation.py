"""bench/quantisation.py's pure parts: the format registry and its errors, exact sparse scoring, nDCG/MRR,
top-10 overlap, sampling and cutting the texts, tensor sizes, the table."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import common  # noqa: E402
import quantisation as qz  # noqa: E402

from milco_os.types import Encoded, SparseVector, Vocab  # noqa: E402

VOCAB = Vocab("test", tuple(f"t{i}" for i in range(50)))


def vec(weights: dict[int, float]) -> SparseVector:
    return SparseVector(np.array(list(weights), dtype=np.int64), np.array(list(weights.values()), np.float32), VOCAB)


# ------------------------------------------------------------------------------------------ formats
def test_parse_formats_keeps_registry_order_and_always_fp32() -> None:
    assert qz.parse_formats(None) == list(qz.FORMATS) == qz.parse_formats("all")
    assert qz.parse_formats("ort-int8, bf16") == ["fp32", "bf16", "ort-int8"]
    assert qz.parse_formats("fp32") == ["fp32"]


@pytest.mark.parametrize(("text", "match"), [("fp32,int3", "unknown format.*int3.*expected"), (" , ", "none given")])
def test_parse_formats_errors(text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        qz.parse_formats(text)


def test_missing_required_package_is_one_line_naming_it() -> None:
    absent = lambda name: None  # noqa: E731
    message = qz.missing_required(qz.parse_formats("all"), find_spec=absent)
    assert message is not None and "\n" not in message
    assert "torchao package is missing" in message and "torchao-int8wo" in message and "[quant]" in message
    # Without a torchao format, or with torchao present, nothing is missing; bitsandbytes is never required.
    assert qz.missing_required(["fp32", "bf16", "ort-int8", "bnb-int8"], find_spec=absent) is None
    assert qz.missing_required(qz.parse_formats("all"), find_spec=lambda name: object()) is None


def test_registry_descriptions_and_unknown_torchao_config() -> None:
    assert {f.kind for f in qz.FORMATS.values()} == {"torch", "torchao", "ort", "bnb"}
    assert all(f.package == "torchao" for f in qz.FORMATS.values() if f.kind == "torchao")
    with pytest.raises(ValueError, match="bf16: not a torchao format"):
        qz.torchao_config("bf16")  # checked before torchao is imported


def test_not_runnable_reason_is_one_line_with_a_hint() -> None:
    reason = qz._not_runnable(ImportError("Requires mslk >= 1.0.0\nmore"))
    assert reason.startswith("not runnable here: ImportError: Requires mslk") and "\n" not in reason
    assert "CPU int4" in reason
    assert qz._not_runnable(RuntimeError()) == "not runnable here: RuntimeError"


# ------------------------------------------------------------------------------------------ scoring
def test_score_matrix_is_the_exact_dot_product() -> None:
    queries = [vec({1: 1.0, 2: 2.0}), vec({7: 1.0, 40: 1.0}), vec({})]  # 7, 40: in no document
    docs = [vec({1: 3.0}), vec({2: 1.0, 1: 1.0, 9: 5.0}), vec({3: 4.0})]
    scores = qz.score_matrix(queries, docs)
    dense_q = np.zeros((3, 50))
    dense_d = np.zeros((3, 50))
    for m, vs in ((dense_q, queries), (dense_d, docs)):
        for i, v in enumerate(vs):
            m[i, v.ids] = v.weights
    np.testing.assert_allclose(scores, dense_q @ dense_d.T)
    assert scores[0].tolist() == [3.0, 3.0, 0.0]


def test_rank_drops_zero_scores_and_breaks_ties_by_corpus_order() -> None:
    ranked = qz.rank(np.array([[3.0, 3.0, 0.0, 5.0], [0.0, 0.0, 0.0, 0.0]]), ["a", "b", "c", "d"])
    assert ranked == [["d", "a", "b"], []]


def test_quality_ndcg_and_mrr() -> None:
    docs = [vec({1: 1.0}), vec({2: 1.0}), vec({1: 0.5, 2: 0.5})]
    queries = [vec({1: 1.0}), vec({2: 1.0}), vec({9: 1.0})]
    # q1: d1 first (ndcg 1, rr 1); q2: "d3" is relevant, ranked 2nd after d2; q3: nothing retrieved.
    qrels = {"q1": {"d1": 1}, "q2": {"d3": 1}, "q3": {"d2": 1}}
    got = qz.quality(queries, docs, ["q1", "q2", "q3"], ["d1", "d2", "d3"], qrels)
    assert got["ndcg@10"] == pytest.approx((1 + 1 / np.log2(3) + 0) / 3)
    assert got["mrr@10"] == pytest.approx((1 + 0.5 + 0) / 3)


def test_top10_overlap() -> None:
    a = vec({i: float(20 - i) for i in range(20)})  # top 10: ids 0..9
    b = vec({i: float(i) for i in range(20)})  # top 10: ids 10..19
    c = vec({**{i: float(20 - i) for i in range(5)}, **{i: 100.0 + i for i in range(30, 35)}})
    assert qz.top_terms(a) == list(range(10))
    assert qz.topk_overlap(a, a) == 1.0
    assert qz.topk_overlap(a, b) == 0.0
    assert qz.topk_overlap(a, c) == 0.5  # ids 0..4 shared, 30..34 new
    assert qz.topk_overlap(vec({1: 1.0, 2: 1.0}), vec({1: 2.0, 2: 0.5})) == 1.0  # short vectors: over 2
    assert qz.topk_overlap(vec({1: 1.0, 2: 1.0}), vec({1: 2.0})) == 0.5
    assert qz.topk_overlap(vec({}), vec({})) == 1.0
    assert qz.topk_overlap(vec({1: 0.0}), vec({})) == 1.0  # zero weights are no terms
    assert qz.top_terms(vec({5: 1.0, 3: 1.0, 4: 2.0}), k=2) == [4, 3]  # ties: smaller id first
    assert qz.mean_overlap([a, a], [a, b]) == 0.5
    with pytest.raises(ValueError, match="2 vectors against 1"):
        qz.mean_overlap([a, a], [a])


def test_vectors_round_trip_through_the_child_file(tmp_path: Path) -> None:
    q, d = [vec({1: 1.0}), vec({})], [vec({2: 0.5, 3: 1.5})]
    pack = lambda vs: common.pack([Encoded(v, SparseVector.empty(VOCAB)) for v in vs])  # noqa: E731
    arrays = {f"q_{k}": v for k, v in pack(q).items()} | {f"d_{k}": v for k, v in pack(d).items()}
    np.savez(tmp_path / "x.npz", **arrays)
    q2, d2 = qz.load_vectors(tmp_path / "x.npz")
    assert [v.ids.tolist() for v in q2] == [[1], []] and d2[0].weights.tolist() == [0.5, 1.5]


# ------------------------------------------------------------------------------------------ texts
def test_sample_eval_keeps_queries_whose_page_is_sampled() -> None:
    corpus = [{"id": f"p{i}", "text": f"text {i}", "lang": "en-us"} for i in range(10)]
    queries = [{"id": f"q{i}", "text": f"title {i}", "lang": "en-us"} for i in range(10)]
    qrels = {f"q{i}": {f"p{i}": 1} for i in range(10)}
    qrels["q9"] = {"p9": 0}  # unjudged
    evalset = SimpleNamespace(corpus=corpus, queries=queries, qrels=qrels)
    docs, qs, judged = qz.sample_eval(evalset, 4, seed=1)
    assert len(docs) == 4 and docs == sorted(docs, key=lambda d: d["id"])
    kept = {d["id"] for d in docs}
    assert {q["id"] for q in qs} == {f"q{d[1:]}" for d in kept if d != "p9"}
    assert all(set(judged[q["id"]]) <= kept for q in qs)
    assert qz.sample_eval(evalset, 4, seed=1) == (docs, qs, judged)  # seeded
    all_docs, all_qs, _ = qz.sample_eval(evalset, None)
    assert len(all_docs) == 10 and len(all_qs) == 9


def test_cut_to_tokens() -> None:
    from tests.unit.tiny_models import english_tokenizer

    tok = english_tokenizer()
    cut, mean = qz.cut_to_tokens(tok, ["the heart attack blood tea", "dog cat"], 3)
    assert cut == ["the heart attack", "dog cat"] and mean == pytest.approx(2.5)


# ------------------------------------------------------------------------------------------ memory, table
def test_module_bytes_counts_shared_tensors_once() -> None:
    import torch
    lin = torch.nn.Linear(64, 32)
    assert qz.module_bytes(lin) == (64 * 32 + 32) * 4
    tied = torch.nn.Module()
    tied.a, tied.b = torch.nn.Linear(8, 8, bias=False), torch.nn.Linear(8, 8, bias=False)
    tied.b.weight = tied.a.weight
    assert qz.module_bytes(tied) == 64 * 4


def test_module_bytes_of_a_torchao_int8_linear_is_its_quantised_size() -> None:
    import torch
    from torchao.quantization import quantize_  # a dev dependency

    lin = torch.nn.Sequential(torch.nn.Linear(64, 32, bias=False))
    quantize_(lin, qz.torchao_config("torchao-int8wo"))
    size = qz.module_bytes(lin)
    assert 64 * 32 <= size < 64 * 32 * 2  # int8 data plus per-row scales, far below fp32's 8 KiB


def test_markdown_table_marks_formats_that_did_not_run() -> None:
    results = {
        "fp32": {"status": "ok", "ndcg@10": 0.5, "mrr@10": 0.4, "top10_overlap": 1.0, "queries_per_s": 10.0,
                 "documents_per_s": 3.0, "weights_mb": 540.0, "rss_ready_mb": 600.0, "peak_rss_mb": 700.0,
                 "doc_terms": 300.0},
        "torchao-int4wo": {"status": "not runnable here: ImportError: x"},
    }
    table = qz.markdown_table(results).splitlines()
    assert table[0].startswith("| format | nDCG@10 |") and len(table) == 4
    assert table[2].startswith("| fp32 | 0.500 | 0.400 | 1.000 | 10.00 | 3.00 | 540.0 |")
    assert table[3].startswith("| torchao-int4wo | not runnable here")
    assert all(row.count("|") == table[0].count("|") for row in table)
