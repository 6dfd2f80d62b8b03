"""Pruning rules: examples and property-based invariants."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from milco_os.pruning import Prune, Pruning, abs_value, drop_invalid, mass, mass_percentile, max_ratio, top_k
from milco_os.types import Encoded, SparseVector, Vocab

VOCAB = Vocab("v", tuple(f"t{i}" for i in range(200)))


def vec(weights: list[float], ids: list[int] | None = None) -> SparseVector:
    ids = ids if ids is not None else list(range(len(weights)))
    return SparseVector(np.array(ids, dtype=np.int64), np.array(weights, dtype=np.float32), VOCAB)


vectors = st.lists(
    st.floats(min_value=0.0001220703125, max_value=50.0, allow_nan=False, width=32), min_size=0, max_size=120
).map(vec)
fractions = st.floats(min_value=0.0, max_value=0.99)


def test_invalid_weights_are_always_dropped() -> None:
    v = vec([1.0, 0.0, -2.0, float("nan"), float("inf"), 0.5])
    for rule in ["none", "top_k:10", "mass:0.1", "mass_percentile:0.1", "max_ratio:0.1", "abs_value:0.01"]:
        kept = Prune.parse(rule).apply(v)
        assert sorted(kept.weights.tolist()) == [0.5, 1.0], rule


def test_examples() -> None:
    v = vec([4.0, 3.0, 2.0, 1.0])  # total 10
    assert sorted(top_k(v, 2).weights.tolist()) == [3.0, 4.0]
    assert sorted(mass(v, 0.3).weights.tolist()) == [3.0, 4.0]  # removes 1 + 2 = 3 <= 0.3 * 10 (boundary included)
    assert sorted(mass(v, 0.25).weights.tolist()) == [2.0, 3.0, 4.0]  # 1 + 2 > 2.5: only 1 goes
    assert sorted(max_ratio(v, 0.5).weights.tolist()) == [2.0, 3.0, 4.0]
    assert sorted(abs_value(v, 2.5).weights.tolist()) == [3.0, 4.0]
    assert len(mass_percentile(v, 0.5)) == 2
    assert len(mass_percentile(vec([1.0] * 10), 0.95)) == 1  # ceil(0.5)


def test_parse_errors_name_the_problem() -> None:
    for text, message in [
        ("top_k:0", "whole number"),
        ("top_k:2.5", "whole number"),
        ("mass:1.0", r"\[0, 1\)"),
        ("abs_value:0", "> 0"),
        ("foo:1", "unknown pruning kind"),
        ("mass", "expected KIND:VALUE"),
        ("mass:x", "not a number"),
    ]:
        with pytest.raises(ValueError, match=message):
            Prune.parse(text)
    assert str(Prune.parse(" mass:0.9 ")) == "mass:0.9"


def test_pruning_per_view_parses_pivot_then_echo() -> None:
    assert Pruning.parse("top_k:64") == Pruning(Prune("top_k", 64), Prune("top_k", 64))
    assert Pruning.parse("top_k:64,none") == Pruning(Prune("top_k", 64), Prune())
    assert Pruning.parse("mass:0.8, top_k:32").echo == Prune("top_k", 32)
    assert str(Pruning.parse("top_k:64,top_k:64")) == "top_k:64"
    assert str(Pruning.parse("top_k:64,none")) == "top_k:64,none"
    meta = Pruning.parse("mass:0.8,none").to_meta()
    assert meta == {"pivot": "mass:0.8", "echo": "none"}
    assert Pruning.from_meta(meta) == Pruning.parse("mass:0.8,none")
    for bad in ("top_k:1,top_k:2,top_k:3", "top_k:0,none", "none,mass:2"):
        with pytest.raises(ValueError, match="invalid pruning"):
            Pruning.parse(bad)


@given(vectors, st.integers(min_value=1, max_value=130))
def test_top_k_keeps_the_largest(v: SparseVector, k: int) -> None:
    kept = top_k(v, k)
    assert len(kept) == min(k, len(v))
    dropped = np.setdiff1d(v.ids, kept.ids)
    if len(kept) and len(dropped):
        assert kept.weights.min() >= v.weights[np.isin(v.ids, dropped)].max()


@given(vectors, fractions)
def test_mass_keeps_at_least_the_asked_share_and_the_largest(v: SparseVector, p: float) -> None:
    kept = mass(v, p)
    total = float(v.weights.astype(np.float64).sum())
    assert float(kept.weights.astype(np.float64).sum()) >= (1 - p) * total - 1e-6 * max(total, 1)
    dropped = v.weights[~np.isin(v.ids, kept.ids)]
    if len(kept) and len(dropped):
        assert kept.weights.min() >= dropped.max()
    # Maximal: adding back the next-smallest would exceed the removal budget.
    if len(dropped):
        removed = float(dropped.astype(np.float64).sum())
        assert removed <= p * total + 1e-6 * max(total, 1)
        assert removed + float(kept.weights.min()) > p * total - 1e-6 * max(total, 1)


@given(vectors, fractions)
def test_mass_percentile_keeps_the_top_share_of_terms(v: SparseVector, p: float) -> None:
    kept = mass_percentile(v, p)
    assert len(kept) == min(len(v), math.ceil((1 - p) * len(v) - 1e-9))


@given(vectors, fractions)
def test_max_ratio_and_abs_value_thresholds(v: SparseVector, r: float) -> None:
    kept = max_ratio(v, r)
    if len(v):
        assert (kept.weights >= r * v.weights.max()).all()
        assert len(kept) == int((v.weights >= r * v.weights.max()).sum())
    t = r * 10 + 1e-3
    assert (abs_value(v, t).weights >= t).all()


RULES = ["top_k:5", "max_ratio:0.3", "abs_value:1.0", "none"]


@settings(max_examples=50)
@given(vectors, st.sampled_from(RULES))
def test_idempotent_rules(v: SparseVector, rule: str) -> None:
    once = Prune.parse(rule).apply(v)
    twice = Prune.parse(rule).apply(once)
    assert once.to_terms() == twice.to_terms()


@settings(max_examples=50)
@given(vectors, st.sampled_from(RULES + ["mass:0.5", "mass_percentile:0.5"]), st.randoms())
def test_order_free(v: SparseVector, rule: str, rng) -> None:  # noqa: ANN001
    perm = np.array(rng.sample(range(len(v)), len(v)), dtype=np.int64)
    shuffled = SparseVector(v.ids[perm], v.weights[perm], VOCAB) if len(v) else v
    assert Prune.parse(rule).apply(v).to_terms() == Prune.parse(rule).apply(shuffled).to_terms()


def test_input_is_never_mutated() -> None:
    v = vec([3.0, 0.0, 1.0])
    before = (v.ids.copy(), v.weights.copy())
    for rule in ["top_k:1", "mass:0.5", "none"]:
        Prune.parse(rule).apply(v)
    assert (v.ids == before[0]).all() and np.array_equal(v.weights, before[1])
    assert drop_invalid(vec([1.0])).weights.tolist() == [1.0]


class ArrayStats:
    """Document frequencies from arrays indexed by term id (what the benchmarks compute in-process)."""

    def __init__(self, n_docs: int, pivot_df: np.ndarray, echo_df: np.ndarray | None = None) -> None:
        self.n_docs, self.df = n_docs, {"pivot": pivot_df, "echo": pivot_df if echo_df is None else echo_df}

    def doc_freq(self, view: str, v: SparseVector) -> np.ndarray:
        return self.df[view][v.ids]


def test_selective_keeps_terms_whose_weight_outweighs_their_commonness() -> None:
    from milco_os.pruning import selective

    # N = 1000. Term 0 is heavy but in 900 docs (stopword-like): value 3 * ln(1 + 1000/900) = 2.2; term 1
    # (df 50) 2 * ln(21) = 6.1; term 2 (df 10) 1 * ln(101) = 4.6; term 3 is in no document; term 4 (df 400)
    # 0.5 * ln(3.5) = 0.63.
    v = vec([3.0, 2.0, 1.0, 5.0, 0.5], ids=[0, 1, 2, 3, 4])
    df = np.array([900, 50, 10, 0, 400])
    assert selective(v, df, 1000, 0.5).ids.tolist() == [1, 2]
    assert selective(v, df, 1000, 0.3).ids.tolist() == [0, 1, 2]
    assert selective(v, df, 1000, 0.0).ids.tolist() == [0, 1, 2, 4], "the unheld term goes even at 0"
    assert len(selective(vec([1.0], ids=[3]), np.array([0]), 1000, 0.2)) == 0


@given(vectors, st.floats(min_value=0.0, max_value=1.0))
@settings(max_examples=60, deadline=None)
def test_selective_keeps_the_best_term_and_only_held_terms_at_least_r_of_it(v: SparseVector, r: float) -> None:
    from milco_os.pruning import selective, term_value

    n_docs = 500
    df_all = (np.arange(200) * 37) % (n_docs + 1)
    kept = selective(v, df_all[v.ids], n_docs, r)
    assert (df_all[kept.ids] > 0).all() and set(kept.ids.tolist()) <= set(v.ids.tolist())
    held = drop_invalid(v)
    held_ids = held.ids[df_all[held.ids] > 0]
    if len(held_ids):
        values = term_value(held.weights[df_all[held.ids] > 0], df_all[held_ids], n_docs)
        assert int(held_ids[np.argmax(values)]) in kept.ids.tolist()
        assert (term_value(kept.weights, df_all[kept.ids], n_docs) >= r * values.max() - 1e-9).all()


def test_selective_rule_parses_needs_stats_and_is_query_only() -> None:
    from milco_os.specs import IndexSpec

    rule = Pruning.parse("selective:0.2,top_k:8")
    assert str(rule) == "selective:0.2,top_k:8" and rule.needs_stats and not Pruning.parse("top_k:8").needs_stats
    with pytest.raises(ValueError, match="selective needs a fraction in"):
        Prune.parse("selective:1.5")
    with pytest.raises(ValueError, match="needs the index's document frequencies"):
        rule.apply(Encoded(vec([1.0]), vec([1.0])))
    pruned = rule.apply(Encoded(vec([1.0, 2.0], ids=[1, 2]), vec([1.0, 2.0, 3.0])),
                        ArrayStats(10, np.array([0, 1, 9] + [0] * 197)))
    # Term 1: 1 * ln(11) = 2.4, term 2: 2 * ln(2.1) = 1.5 >= 0.2 * 2.4: both stay; echo is top_k:8.
    assert pruned.pivot.ids.tolist() == [1, 2] and len(pruned.echo) == 3
    strict = Pruning.parse("selective:0.7").apply(Encoded(vec([1.0, 2.0], ids=[1, 2]), vec([])),
                                                   ArrayStats(10, np.array([0, 1, 9] + [0] * 197)))
    assert strict.pivot.ids.tolist() == [1]
    with pytest.raises(ValueError, match="selective pruning is for queries"):
        IndexSpec(doc_pruning=Pruning.parse("selective:0.5"))


def test_two_phase_value_split_puts_selective_terms_first_and_the_rest_in_the_rescore() -> None:
    from milco_os.opensearch.query import search_body, two_phase_split
    from milco_os.specs import TwoPhase

    # Same weights and frequencies as the selective example above: values 2.2, 6.1, 4.6, 0.63 (term 3 unheld).
    q = Encoded(vec([3.0, 2.0, 1.0, 5.0, 0.5], ids=[0, 1, 2, 3, 4]), vec([1.0], ids=[7]))
    stats = ArrayStats(1000, np.array([900, 50, 10, 0, 400] + [5] * 195))
    first, rest = two_phase_split(q, TwoPhase(ratio=0.5, split="value"), stats)
    # Term 3 (the heaviest) is in no document: it must not set the bar, nor take the first phase's place.
    assert first.pivot.ids.tolist() == [1, 2] and rest.pivot.ids.tolist() == [0, 3, 4]
    assert first.echo.ids.tolist() == [7] and len(rest.echo) == 0
    by_weight, _ = two_phase_split(q, TwoPhase(ratio=0.5, split="weight"))
    assert by_weight.pivot.ids.tolist() == [0, 3], "OpenSearch's split keeps heavy terms, common or absent"
    with pytest.raises(ValueError, match="needs the index's term statistics"):
        two_phase_split(q, TwoPhase(split="value"))
    with pytest.raises(ValueError, match="split must be one of weight, value"):
        TwoPhase(split="idf")
    body = search_body(q, pivot_field="p", echo_field="e", size=10, stats=stats,
                       two_phase=TwoPhase(ratio=0.5, expansion=8, split="value"))
    first_fields = {c["rank_feature"]["field"] for c in body["query"]["bool"]["should"]}
    rescore = body["rescore"]
    assert first_fields == {"p.t1", "p.t2", "e.t7"} and rescore["window_size"] == 80
    rescored = {c["rank_feature"]["field"] for c in rescore["query"]["rescore_query"]["bool"]["should"]}
    assert rescored == {"p.t0", "p.t3", "p.t4"}
