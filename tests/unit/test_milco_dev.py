"""bench/milco_dev.py's pure parts: the in-memory score is the product's dual-view score, the term prior's cap
holds, and the two post-hoc transforms change what they say they change."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import milco_dev  # noqa: E402

from milco_os.training.gates import always_on  # noqa: E402


def rows(rng: np.random.Generator, n: int, vocab: int, terms: int) -> milco_dev.Rows:
    def view() -> tuple[np.ndarray, np.ndarray]:
        ids = rng.choice(vocab, size=terms, replace=False).astype(np.int64)
        return ids, rng.random(terms) + 0.01

    return milco_dev.Rows([(*view(), *view()) for _ in range(n)])


def dense(view: list[tuple[np.ndarray, np.ndarray]], vocab: int) -> np.ndarray:
    out = np.zeros((len(view), vocab))
    for r, (ids, w) in enumerate(view):
        out[r, ids] = w
    return out


def test_scores_are_the_weighted_sum_of_the_two_views_dot_products() -> None:
    rng = np.random.default_rng(0)
    queries = milco_dev.views(rows(rng, 5, 50, 6), None, None)
    docs = milco_dev.views(rows(rng, 7, 50, 12), None, top_k=8)
    assert all(len(ids) == 8 for ids, _ in docs[0] + docs[1])  # each view cut to its top 8
    expected = 0.3 * dense(queries[0], 50) @ dense(docs[0], 50).T + 0.7 * dense(queries[1], 50) @ dense(docs[1], 50).T
    np.testing.assert_allclose(milco_dev.scores(queries, docs, 0.3), expected, rtol=1e-5)


def test_term_prior_lowers_the_logit_and_echo_prior_scales_the_piece() -> None:
    pid, pw = np.array([1, 2]), np.log1p(np.array([2.0, 0.5]))
    eid, ew = np.array([3, 4]), np.array([1.0, 2.0])
    delta = np.zeros(5)
    delta[[1, 2]] = [1.0, 1.0]
    _, new_pw, _, same_ew = milco_dev.term_prior(delta)(pid, pw, eid, ew)
    np.testing.assert_allclose(new_pw, [np.log1p(1.0), 0.0])  # logit 0.5 - 1 falls below zero: the term is gone
    np.testing.assert_array_equal(same_ew, ew)
    factor = np.ones(5)
    factor[4] = 0.25
    _, same_pw, _, new_ew = milco_dev.echo_prior(factor)(pid, pw, eid, ew)
    np.testing.assert_allclose(new_ew, [1.0, 0.5])
    np.testing.assert_array_equal(same_pw, pw)


def test_cap_delta_keeps_every_term_out_of_the_top_of_more_than_the_cap() -> None:
    rng = np.random.default_rng(1)
    logits = rng.random((200, 60)) * (rng.random((200, 60)) < 0.5)
    logits[:, :3] += 2.0  # three terms on top of every row
    before = always_on(torch.from_numpy(logits), k=5)[1]
    delta = milco_dev.cap_delta(logits, 0.2, top=5)
    _, after = always_on(torch.from_numpy(np.maximum(logits - delta, 0)), k=5)
    assert before == 1.0
    assert after <= 0.2
    assert (delta >= 0).all() and delta[:3].min() > 0


def test_default_query_pruning_drops_the_clause_every_page_holds_and_its_postings() -> None:
    from milco_os.pruning import Pruning
    from milco_os.types import Vocab

    vocab = Vocab("v", tuple(f"t{i}" for i in range(6)))
    info = type("Info", (), {"pivot_vocab": vocab, "echo_vocab": vocab})()
    page = (np.array([0, 1]), np.array([1.0, 1.0]))
    rare = (np.array([0, 2]), np.array([1.0, 1.0]))
    docs = ([page, page, page, rare], [page, page, page, rare])
    stats = milco_dev.PageStats.of(docs, (6, 6))
    np.testing.assert_array_equal(stats.df["pivot"], [4, 3, 1, 0, 0, 0])
    query = (np.array([0, 2]), np.array([1.0, 1.0]))
    kept = milco_dev.pruned(([query], [query]), stats, Pruning.parse("selective:0.5"), info)
    assert [ids.tolist() for ids, _ in kept[0]] == [[2]]  # term 0 (in every page) is worth ln 2 against ln 5
    assert milco_dev.postings([query], stats) == 5.0
    assert milco_dev.postings(kept[0], stats) == 1.0


def test_name_queries_need_a_rare_name_their_page_spells_the_same() -> None:
    pages = {f"p{i}": "Über LibreOffice Calc" for i in range(60)} | {"time": "TIME function (LibreOffice)",
                                                                     "serial": "TimeSerial returns a date"}
    queries = [{"id": "a", "text": "función TIME"}, {"id": "b", "text": "TimeSerial 関数"},
               {"id": "c", "text": "versión de LibreOffice"}, {"id": "d", "text": "función TIME"},
               {"id": "e", "text": "2024 Neuerungen"}]
    qrels = {"a": {"time": 1}, "b": {"serial": 1}, "c": {"p0": 1}, "d": {"serial": 1}, "e": {"p1": 1}}
    # c: LibreOffice is on every page; d: its page does not spell TIME; e: digits are not a name
    assert milco_dev.name_queries(queries, qrels, pages) == [True, True, False, False, False]
