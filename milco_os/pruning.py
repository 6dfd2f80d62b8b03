"""Sparse-vector pruning: pure, vectorised, never mutates its input.

Every rule first drops weights that OpenSearch ``rank_features`` rejects (<= 0, NaN, inf), then:

- ``top_k:K``            keep the K largest weights.
- ``mass:P``             MILCO §6: sort ascending and remove the longest low-weight prefix whose
                         cumulative weight is at most P (a fraction, 0 <= P < 1) of the total; at least
                         ``1 - P`` of the mass is kept. Applying it twice can prune further (the total
                         shrinks), so it is not idempotent.
- ``mass_percentile:P``  the per-document count reading of MILCO's Table 13: keep the top
                         ``ceil((1 - P) * n)`` of the ``n`` non-zeros.
- ``max_ratio:R``        OpenSearch semantics: keep ``w >= R * max(w)`` (0 <= R < 1).
- ``abs_value:T``        OpenSearch semantics: keep ``w >= T`` (T > 0).
- ``selective:R``        selectivity-aware, for queries: keep the terms whose value ``w * ln(1 + N / df)``
                         is at least R times the query view's best (N documents in the index, df the term's
                         document frequency: its posting list, what its clause costs). A common term must
                         weigh more to stay; a term no document holds is dropped (it costs a clause and
                         matches nothing). Needs the index's document frequencies (:class:`TermStats`).
- ``none``               only the invalid weights are dropped.

Ties are broken by term id, so results do not depend on the input order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from milco_os.types import Encoded, SparseVector

PruneKind = Literal["none", "top_k", "mass", "mass_percentile", "max_ratio", "abs_value", "selective"]
PRUNE_KINDS: tuple[str, ...] = ("none", "top_k", "mass", "mass_percentile", "max_ratio", "abs_value", "selective")


class TermStats(Protocol):
    """Document frequencies of one index: what ``selective:R`` pruning reads."""

    n_docs: int

    def doc_freq(self, view: str, vec: SparseVector) -> np.ndarray:
        """How many documents hold each term of ``vec`` (aligned with ``vec.ids``) in ``view``'s field."""
        ...


def drop_invalid(vec: SparseVector) -> SparseVector:
    """Remove weights that are not finite and strictly positive (rank_features rejects them)."""
    keep = np.isfinite(vec.weights) & (vec.weights > 0)
    if keep.all():
        return vec
    return SparseVector(vec.ids[keep], vec.weights[keep], vec.vocab)


def _descending(vec: SparseVector) -> np.ndarray:
    """Indices ordering ``vec`` by weight descending, id ascending on ties."""
    return np.lexsort((vec.ids, -vec.weights))


def _take(vec: SparseVector, idx: np.ndarray) -> SparseVector:
    return SparseVector(vec.ids[idx], vec.weights[idx], vec.vocab)


def top_k(vec: SparseVector, k: int) -> SparseVector:
    vec = drop_invalid(vec)
    if len(vec) <= k:
        return vec
    return _take(vec, _descending(vec)[:k])


def mass(vec: SparseVector, p: float) -> SparseVector:
    vec = drop_invalid(vec)
    if len(vec) == 0 or p <= 0:
        return vec
    order = _descending(vec)[::-1]  # ascending weight
    # float64 cumulative sums keep the boundary comparison stable for long vectors.
    cumulative = np.cumsum(vec.weights[order].astype(np.float64))
    budget = p * cumulative[-1]
    removed = int(np.searchsorted(cumulative, budget, side="right"))
    return _take(vec, order[removed:])


def mass_percentile(vec: SparseVector, p: float) -> SparseVector:
    vec = drop_invalid(vec)
    keep = math.ceil((1.0 - p) * len(vec) - 1e-9)
    return top_k(vec, max(keep, 0))


def max_ratio(vec: SparseVector, r: float) -> SparseVector:
    vec = drop_invalid(vec)
    if len(vec) == 0:
        return vec
    return _take(vec, np.flatnonzero(vec.weights >= r * vec.weights.max()))


def abs_value(vec: SparseVector, t: float) -> SparseVector:
    vec = drop_invalid(vec)
    return _take(vec, np.flatnonzero(vec.weights >= t))


def term_value(weights: np.ndarray, df: np.ndarray, n_docs: int) -> np.ndarray:
    """``w * ln(1 + N / df)``: a term's weight, discounted by how many documents its clause visits."""
    return weights.astype(np.float64) * np.log1p(n_docs / np.maximum(df, 1).astype(np.float64))


def selective(vec: SparseVector, df: np.ndarray, n_docs: int, r: float) -> SparseVector:
    """``selective:R`` (see the module docstring): ``df`` is aligned with ``vec.ids``."""
    vec, df = _valid_with(vec, df)
    held = np.flatnonzero(df > 0)
    vec, df = _take(vec, held), df[held]
    if len(vec) == 0:
        return vec
    value = term_value(vec.weights, df, n_docs)
    return _take(vec, np.flatnonzero(value >= r * value.max()))


def _valid_with(vec: SparseVector, aligned: np.ndarray) -> tuple[SparseVector, np.ndarray]:
    """:func:`drop_invalid`, keeping an array aligned with ``vec.ids`` aligned."""
    keep = np.isfinite(vec.weights) & (vec.weights > 0)
    if keep.all():
        return vec, np.asarray(aligned)
    return SparseVector(vec.ids[keep], vec.weights[keep], vec.vocab), np.asarray(aligned)[keep]


@dataclass(frozen=True)
class Prune:
    """One pruning rule, e.g. ``Prune.parse("mass:0.9")``."""

    kind: PruneKind = "none"
    value: float = 0.0

    def __post_init__(self) -> None:
        kind, v = self.kind, self.value
        if kind not in PRUNE_KINDS:
            msg = f"unknown pruning kind {kind!r}; expected one of {', '.join(PRUNE_KINDS)}"
            raise ValueError(msg)
        problem = None
        if not math.isfinite(v):  # checked first: int(inf) raises OverflowError, and NaN compares false
            problem = f"{kind} needs a finite number"
        elif kind == "top_k" and (v < 1 or v != int(v)):
            problem = "top_k needs a whole number >= 1"
        elif kind in ("mass", "mass_percentile", "max_ratio") and not 0 <= v < 1:
            problem = f"{kind} needs a fraction in [0, 1)"
        elif kind == "abs_value" and not v > 0:
            problem = "abs_value needs a threshold > 0"
        elif kind == "selective" and not 0 <= v <= 1:
            problem = "selective needs a fraction in [0, 1]"
        if problem:
            msg = f"invalid pruning {kind}:{v:g}: {problem}"
            raise ValueError(msg)

    @classmethod
    def parse(cls, text: str) -> Prune:
        """Parse ``KIND:VALUE`` (or ``none``)."""
        text = text.strip()
        if text in ("", "none"):
            return cls()
        kind, sep, value = text.partition(":")
        if not sep:
            msg = f"invalid pruning {text!r}: expected KIND:VALUE, e.g. top_k:64 or mass:0.9"
            raise ValueError(msg)
        try:
            number = float(value)
        except ValueError:
            msg = f"invalid pruning {text!r}: {value!r} is not a number"
            raise ValueError(msg) from None
        return cls(kind.strip(), number)  # type: ignore[arg-type]

    def __str__(self) -> str:
        return "none" if self.kind == "none" else f"{self.kind}:{self.value:g}"

    @property
    def needs_stats(self) -> bool:
        """Whether :meth:`apply` needs the index's document frequencies."""
        return self.kind == "selective"

    def apply(self, vec: SparseVector, stats: TermStats | None = None, view: str = "pivot") -> SparseVector:
        if self.kind == "none":
            return drop_invalid(vec)
        if self.kind == "selective":
            if stats is None:
                msg = "selective pruning needs the index's document frequencies (query pruning at search time)"
                raise ValueError(msg)
            return selective(vec, stats.doc_freq(view, vec), stats.n_docs, self.value)
        if self.kind == "top_k":
            return top_k(vec, int(self.value))
        rule = {"mass": mass, "mass_percentile": mass_percentile, "max_ratio": max_ratio, "abs_value": abs_value}
        return rule[self.kind](vec, self.value)


@dataclass(frozen=True)
class Pruning:
    """One rule per view, for one side (documents at index time, or queries at search time).

    Written ``PIVOT[,ECHO]``: ``mass:0.8`` prunes both views alike, ``top_k:64,none`` only the pivot view.
    """

    pivot: Prune = Prune()
    echo: Prune = Prune()

    @classmethod
    def parse(cls, text: str) -> Pruning:
        pivot, sep, echo = text.partition(",")
        if "," in echo:
            msg = f"invalid pruning {text!r}: expected PIVOT[,ECHO], e.g. mass:0.8 or top_k:64,top_k:32"
            raise ValueError(msg)
        pivot_rule = Prune.parse(pivot)
        return cls(pivot_rule, Prune.parse(echo) if sep else pivot_rule)

    def __str__(self) -> str:
        return str(self.pivot) if self.pivot == self.echo else f"{self.pivot},{self.echo}"

    @property
    def needs_stats(self) -> bool:
        return self.pivot.needs_stats or self.echo.needs_stats

    def apply(self, encoded: Encoded, stats: TermStats | None = None) -> Encoded:
        return Encoded(self.pivot.apply(encoded.pivot, stats, "pivot"), self.echo.apply(encoded.echo, stats, "echo"),
                       encoded.dense)

    def to_meta(self) -> dict[str, str]:
        """The form an index's ``_meta`` records (``{"pivot": "mass:0.8", "echo": "none"}``)."""
        return {"pivot": str(self.pivot), "echo": str(self.echo)}

    @classmethod
    def from_meta(cls, record: dict[str, str]) -> Pruning:
        return cls(Prune.parse(record.get("pivot", "none")), Prune.parse(record.get("echo", "none")))
