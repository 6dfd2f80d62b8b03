"""The gates of a milco-mini checkpoint: overlap with the teacher, always-on terms, pivot-only ranking."""

from __future__ import annotations

import math

import pytest
import torch

from milco_os.datasets.libreoffice import Page, page_text, split_of
from milco_os.training import gates


def test_topk_overlap_counts_shared_positive_terms() -> None:
    teacher = torch.tensor([[3.0, 2.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    same = teacher.clone()
    assert gates.topk_overlap(same, teacher, k=3) == 1.0  # the empty teacher row is not judged
    half = torch.tensor([[3.0, 0.0, 0.0, 2.0, 1.0], [1.0, 1.0, 1.0, 1.0, 1.0]])
    assert gates.topk_overlap(half, teacher, k=3) == pytest.approx(1 / 3)
    # A teacher row with 3 terms judged at k=10 is judged on those 3; zeros in the student never count.
    assert gates.topk_overlap(torch.tensor([[0.0, 2.0, 0.0, 0.0, 0.0]]), teacher[:1], k=10) == pytest.approx(1 / 3)


def test_always_on_finds_the_term_in_every_row() -> None:
    pivots = torch.zeros(10, 50)
    for r in range(10):
        pivots[r, r] = 2.0
        pivots[r, 40] = 0.5 if r < 7 else 0.0  # term 40 fires in 7 of 10 rows
    term, share = gates.always_on(pivots, k=20)
    assert term == 40 and share == pytest.approx(0.7)


def test_ndcg_at_10_of_known_items() -> None:
    docs = torch.eye(12)
    queries = torch.stack([docs[0], docs[1] + 0.5 * docs[2], torch.zeros(12)])
    # Query 0 finds its doc first; query 1 ranks doc 1 (score 1) above its target doc 2 (0.5); query 2
    # scores nothing, which counts as a miss (a tie with every document).
    value = gates.ndcg_at_10(queries, docs, [0, 2, 5])
    assert value == pytest.approx((1.0 + 1 / math.log2(3) + 0.0) / 3)


def test_passed_needs_every_threshold() -> None:
    good = {"overlap_en": 0.6, "overlap_foreign": 0.4, "always_on": 0.05, "clir_pivot_ndcg@10": 0.31}
    assert gates.passed(good)
    for name, bad in (("overlap_en", 0.49), ("overlap_foreign", 0.3), ("always_on", 0.2),
                      ("clir_pivot_ndcg@10", 0.1)):
        assert not gates.passed({**good, name: bad}), name
    # Where the teacher itself puts a term into most documents, the student may do as much.
    assert gates.passed({**good, "always_on": 0.2, "always_on_limit": 0.3})
    assert not gates.passed({**good, "always_on": 0.35, "always_on_limit": 0.3})


def test_gate_set_uses_held_out_pages_only() -> None:
    paths = [f"text/p{i}.html" for i in range(60)]
    english = {p: Page(p, "en-us", f"Title {i}", {"a": f"English paragraph number {i} about things"})
               for i, p in enumerate(paths)}
    german = {p: Page(p, "de", f"Titel {i}", {"a": f"Deutscher Absatz Nummer {i} über Dinge"})
              for i, p in enumerate(paths)}
    data = gates.gate_set({"en-us": english, "de": german}, ["de"], split="dev", n_docs=20)
    dev = [p for p in paths if split_of(p) == "dev"]
    assert dev and len(data.queries) == len(dev) and len(data.en) == len(dev)
    assert all(q.startswith("Titel") for q in data.queries)
    for query, target in zip(data.queries, data.targets, strict=True):
        assert data.docs[target].startswith(query.replace("Titel", "Title") + " ")
    assert len(data.docs) == 20
    # Distractors are train pages, never test pages: with room for every page, exactly dev + train.
    everything = gates.gate_set({"en-us": english, "de": german}, ["de"], split="dev", n_docs=1000)
    assert sorted(everything.docs) == sorted(page_text(english[p]) for p in paths if split_of(p) != "test")
    assert any(split_of(p) == "test" for p in paths)
