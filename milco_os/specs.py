"""Typed, frozen specs, parsed once at the edge (CLI flags, service bodies, eval plans) and passed down as is.

- :class:`IndexSpec`: what ``index create`` (and reindex's destination) builds: fields, document pruning,
  BM25, whether the vectors stay in ``_source``, shards and replicas.
- :class:`SearchOptions`: per-request knobs: size, alpha, query pruning, filters, two-phase, hybrid, explain.

Both are plain frozen dataclasses that check themselves; every front end uses the same defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from milco_os.layout import Seismic, SeismicQuery
    from milco_os.pruning import Pruning

PIVOT_FIELD = "milco_pivot"
ECHO_FIELD = "milco_echo"
DENSE_FIELD = "milco_dense"
#: The nested field of an index with passages (``index create --passages``); each object holds one passage.
PASSAGES_FIELD = "milco_passages"
#: How a document with passages scores from its passages' scores (the ``nested`` query's ``score_mode``): its
#: best passage (the default, chosen on dev: docs/passages.md), their sum or their mean.
PASSAGE_SCORES = ("max", "sum", "avg")
DEFAULT_PASSAGE_SCORE = "max"
#: Upper bound of the BM25 weight: far above any useful value, and far below where OpenSearch's boost (a
#: 32-bit float) becomes infinite and the request is refused, or scores overflow.
MAX_HYBRID_WEIGHT = 1000.0
#: The query pruning of `milco-os search`, the service and the demo: terms whose weight outweighs how common
#: they are (see ``milco_os.pruning``). Chosen on the dev split by ``bench/quality.py`` (the README and
#: BENCHMARKS.md show the choice; tests/unit/test_docs_drift.py checks this is it). The library's
#: SearchOptions default stays the full query.
DEFAULT_QUERY_PRUNE = "selective:0.2"
#: Weight of the pivot view in a query (the echo view gets 1 - alpha; 1 = pivot only), chosen on the dev split
#: (docs/evaluation.md; tests/unit/test_docs_drift.py checks this is the choice).
DEFAULT_ALPHA = 0.2
#: α of the built-in versions that were the default before: each was chosen on dev while its version was the
#: default, and search keeps it on an index that version built unless α is given (docs/lifecycle.md).
EARLIER_ALPHAS = {"milco-mini@1": 0.5}
#: What ``--alpha`` (and the service's ``alpha``) defaults to, in words.
ALPHA_DEFAULT_TEXT = (f"the one chosen on dev for the index's model ({DEFAULT_ALPHA:g}; "
                      + ", ".join(f"{a:g} on indices built with {m}" for m, a in EARLIER_ALPHAS.items()) + ")")


def alpha_for_model(name: str | None) -> float:
    """The default α on an index built with model ``name`` (its ``_meta`` record): :data:`EARLIER_ALPHAS` for an
    earlier built-in version (a built-in name without a version is from before versions: version 1), else
    :data:`DEFAULT_ALPHA`."""
    from milco_os.models.sources.versions import FIRST_VERSION, SEPARATOR, pinned_name

    if name and SEPARATOR not in name:
        name = pinned_name(name, FIRST_VERSION)
    return EARLIER_ALPHAS.get(name or "", DEFAULT_ALPHA)


#: Score normalisations of fused search (``milco_os.opensearch.hybrid``).
HYBRID_NORMS = ("minmax", "rrf")
#: How the dense view's k-NN list joins the sparse list on an index with a dense view (``--dense W``, fused by
#: ``--hybrid-norm``, else :data:`DEFAULT_FUSION`), chosen on the dev split (docs/dense.md;
#: tests/unit/test_docs_drift.py checks these are the choice).
DEFAULT_DENSE_WEIGHT = 0.25
DEFAULT_FUSION = "minmax"


def _no_pruning() -> Pruning:
    # Imported here so that the specs (and the CLI's option declarations) stay free of numpy.
    from milco_os.pruning import Pruning

    return Pruning()


@dataclass(frozen=True)
class IndexSpec:
    """A milco-os index: ``bm25`` also indexes the text fields for full-text (hybrid) search;
    ``vectors_in_source=False`` keeps the sparse vectors out of ``_source`` (a smaller index; explain then
    asks OpenSearch rather than reading the stored vectors); ``dense`` adds the model's dense view as a k-NN
    field (``dense_field``; never kept in ``_source``: explain reads its rank and similarity off the k-NN hits);
    ``passages`` stores each of a document's windows as a nested object of ``passages_field`` with its own views
    (named as the fields above) instead of one merged vector per document (docs/passages.md); ``seismic`` stores
    the sparse views in neural-search's ``sparse_vector`` fields, searched by the SEISMIC approximate index built
    with these parameters (OpenSearch 3.3+ with neural-search; docs/seismic.md)."""

    text_fields: tuple[str, ...] = ("text",)
    pivot_field: str = PIVOT_FIELD
    echo_field: str = ECHO_FIELD
    doc_pruning: Pruning = field(default_factory=_no_pruning)
    bm25: bool = True
    vectors_in_source: bool = True
    shards: int = 1
    replicas: int = 1
    dense: bool = False
    dense_field: str = DENSE_FIELD
    passages: bool = False
    passages_field: str = PASSAGES_FIELD
    seismic: Seismic | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "text_fields", tuple(self.text_fields))
        if self.passages and ("." in self.passages_field or not self.passages_field):
            msg = f"passages field {self.passages_field!r}: a plain name is needed (no dots)"
            raise ValueError(msg)
        if not self.text_fields:
            msg = "text fields: at least one is needed (e.g. text)"
            raise ValueError(msg)
        if self.doc_pruning.needs_stats:
            msg = f"document pruning {self.doc_pruning}: selective pruning is for queries (it needs the index)"
            raise ValueError(msg)
        names = [*self.text_fields, self.pivot_field, self.echo_field, *([self.dense_field] if self.dense else []),
                 *([self.passages_field] if self.passages else [])]
        if len(set(names)) != len(names):
            msg = (f"field names must differ: text fields {list(self.text_fields)}, pivot {self.pivot_field!r}, "
                   f"echo {self.echo_field!r}{f', dense {self.dense_field!r}' if self.dense else ''}"
                   f"{f', passages {self.passages_field!r}' if self.passages else ''}")
            raise ValueError(msg)
        if self.shards < 1 or self.replicas < 0:
            msg = f"shards must be >= 1 and replicas >= 0, got {self.shards} and {self.replicas}"
            raise ValueError(msg)


#: How two-phase search picks its first-phase terms: by weight (OpenSearch's two-phase processor) or by
#: value, ``w * ln(1 + N / df)`` (the rule of ``selective:R`` query pruning; needs the index's term statistics).
TWO_PHASE_SPLITS = ("weight", "value")


@dataclass(frozen=True)
class TwoPhase:
    """Retrieve with the first-phase query terms, then add the rest inside a rescore window of
    ``expansion * size`` hits.

    Scores inside the window equal the full query's exactly (first + rescore query, ``score_mode: total``);
    only documents outside the window can differ. The first phase keeps the terms at least ``ratio`` of the
    view's best, by weight or by value (``split``). The defaults were measured with milco-mini on 100k
    paragraphs (BENCHMARKS.md §2): value 0.2 with a window of 10 x size keeps the full query's top 10 for every
    query while the first phase reads half its postings. OpenSearch's neural_sparse_two_phase_processor can
    only split by weight (see :data:`PLUGIN_TWO_PHASE`).
    """

    ratio: float = 0.2
    expansion: float = 10.0
    max_window: int = 10_000
    split: str = "value"

    def __post_init__(self) -> None:
        if not 0 < self.ratio < 1 or self.expansion < 1 or self.max_window < 1:
            msg = f"two-phase needs 0 < ratio < 1, expansion >= 1, max_window >= 1; got {self}"
            raise ValueError(msg)
        if self.split not in TWO_PHASE_SPLITS:
            msg = f"two-phase split must be one of {', '.join(TWO_PHASE_SPLITS)}, got {self.split!r}"
            raise ValueError(msg)


#: Two-phase for OpenSearch's own processor (ml-commons search pipelines): by weight, 0.2 of the best, window
#: 5 x size kept the full query's top 10 for 99.5% of the 100k-paragraph queries (its own default, 0.4, 83.5%).
PLUGIN_TWO_PHASE = TwoPhase(ratio=0.2, expansion=5.0, split="weight")


@dataclass(frozen=True)
class SearchOptions:
    """Per-request knobs. Query pruning is MILCO's "dynamic efficiency": fewer query terms, faster search,
    no reindexing (document pruning is fixed at index time)."""

    size: int = 10
    from_: int = 0
    #: Weight of the pivot view; None: the index's model's (:func:`alpha_for_model`).
    alpha: float | None = None
    query_pruning: Pruning = field(default_factory=_no_pruning)
    filters: tuple[dict[str, Any], ...] = ()
    two_phase: TwoPhase | None = None
    hybrid_weight: float | None = None  # BM25 weight; None = no BM25 clause
    hybrid_norm: str | None = None  # None: BM25 added to the sparse sum; minmax | rrf: lists, fused
    #: Weight of the dense view's list on an index with one: None = DEFAULT_DENSE_WEIGHT, 0 = sparse only.
    dense_weight: float | None = None
    #: On an index with passages: how a document scores from its passages (:data:`PASSAGE_SCORES`).
    passage_score: str = DEFAULT_PASSAGE_SCORE
    #: On a SEISMIC index: its query-time parameters (None: the defaults).
    seismic: SeismicQuery | None = None
    explain: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "filters", tuple(self.filters))
        if self.size < 1 or self.from_ < 0:
            msg = f"size must be >= 1 and from >= 0, got size={self.size}, from={self.from_}"
            raise ValueError(msg)
        if self.alpha is not None and not 0 <= self.alpha <= 1:
            msg = f"alpha must be in [0, 1], got {self.alpha}"
            raise ValueError(msg)
        if self.hybrid_weight is not None and not 0 < self.hybrid_weight <= MAX_HYBRID_WEIGHT:
            msg = f"hybrid weight must be in (0, {MAX_HYBRID_WEIGHT:g}], got {self.hybrid_weight}"
            raise ValueError(msg)
        if self.passage_score not in PASSAGE_SCORES:
            msg = f"passage score {self.passage_score!r}: choose {', '.join(PASSAGE_SCORES)}"
            raise ValueError(msg)
        if self.dense_weight is not None and not 0 <= self.dense_weight <= MAX_HYBRID_WEIGHT:
            msg = f"dense weight must be in [0, {MAX_HYBRID_WEIGHT:g}] (0: sparse only), got {self.dense_weight}"
            raise ValueError(msg)
        if self.hybrid_norm is not None:
            if self.hybrid_norm not in HYBRID_NORMS:
                msg = f"hybrid normalisation {self.hybrid_norm!r}: choose {', '.join(HYBRID_NORMS)}"
                raise ValueError(msg)
            if self.hybrid_weight is None and self.dense_weight == 0:
                msg = "hybrid normalisation needs lists to fuse: a BM25 weight (--hybrid W) or the dense view"
                raise ValueError(msg)
            if self.two_phase is not None:
                msg = "hybrid normalisation and two-phase do not combine (the fused lists are not rescored)"
                raise ValueError(msg)
