"""What an index holds, as one versioned record in its ``_meta.milco_os.layout``: ingest, reindex, search, the
service and eval read it instead of flags.

    engine     the search engine the index lives in                 opensearch or elasticsearch
    sparse     the field type of the pivot and echo views           rank_features (OpenSearch) or
                                                                    sparse_vector (Elasticsearch); exact scores
    units      what one stored vector covers                        merged (a document's windows in one vector)
                                                                    or passages (each window a nested object)
    retrieval  how the sparse views are searched                    exact, or seismic (OpenSearch 3.3+ with
                                                                    neural-search: the pivot view approximate, in
                                                                    a sparse_vector field; the echo view exact)
    seismic    the SEISMIC index's build parameters, or none        {n_postings, cluster_ratio, ...}
    dense      the dense view's field, or none                      knn_vector (HNSW, Lucene engine)

An index created before the record existed has today's layout: :func:`read_layout` returns
:data:`LEGACY` for it. A record this milco-os cannot serve (a newer version, an engine, field kind or unit it
does not know) is refused with one line naming the key, so an older milco-os never misreads a newer index.
The combinations (docs/dense.md has the table): ``units`` is ``merged`` or ``passages`` (docs/passages.md:
each of a document's windows is a nested object under ``passages.path`` with its own views and character
span, and a document scores as its best passage), ``dense`` is present or not, with either, on
either engine. ``retrieval: seismic`` (docs/seismic.md) stores the pivot view in neural-search's ``sparse_vector``
field, keyed by vocabulary id (:attr:`Layout.pivot_keys`), and searches it with the SEISMIC approximate index; the
echo view stays an exact ``rank_features`` field, because ``sparse_vector`` takes ids below 32,768 only
(:data:`SEISMIC_MAX_ID`) and the echo vocabulary has 250,002. On OpenSearch only, and with neither a dense view
(OpenSearch refuses an index that is both k-NN and sparse) nor, yet, passages.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from milco_os.errors import ModelMismatch

LAYOUT_VERSION = 1
ENGINES = ("opensearch", "elasticsearch")
SPARSE_KINDS = ("rank_features", "sparse_vector")
#: The sparse field types each engine's indices use.
ENGINE_SPARSE = {"opensearch": ("rank_features", "sparse_vector"), "elasticsearch": ("sparse_vector",)}
UNITS = ("merged", "passages")
RETRIEVALS = ("exact", "seismic")
#: The largest term id neural-search's ``sparse_vector`` takes (3.3-3.6 keep ids in 16 bits: a larger id is read
#: back negative, and the segment's flush or every search of it fails).
SEISMIC_MAX_ID = 32767
#: The k-NN field: HNSW graphs in Lucene (no native library), scored by cosine similarity (the dense view is
#: L2-normalised, so cosine is its dot product). OpenSearch's Lucene engine scores a hit (1 + cos) / 2.
DENSE_SPACE = "cosinesimil"
DENSE_METHOD = {"name": "hnsw", "engine": "lucene", "space_type": DENSE_SPACE,
                "parameters": {"m": 16, "ef_construction": 128}}


@dataclass(frozen=True)
class DenseLayout:
    """The dense view's field: ``dimensions`` floats per document from the model named by ``model`` (its
    name and fingerprint: a query embedded by another model is meaningless against these vectors)."""

    field: str
    dimensions: int
    model: dict[str, str]
    space: str = DENSE_SPACE

    def to_meta(self) -> dict[str, Any]:
        return {"field": self.field, "dimensions": self.dimensions, "model": dict(self.model), "space": self.space,
                "method": DENSE_METHOD["name"], "engine": DENSE_METHOD["engine"]}


@dataclass(frozen=True)
class Seismic:
    """The SEISMIC build parameters of neural-search's ``sparse_vector`` field (fixed when the index is created).

    OpenSearch's own defaults suit segments of millions of documents (an approximate index only from 1,000,000
    documents per segment, posting lists of 0.05% of a segment's documents). milco-os's defaults are for the
    sizes people run, chosen on 100k paragraphs (BENCHMARKS.md §16): every segment is approximate, so what is
    tested is what runs; posting lists keep ``n_postings`` documents; the quantisation ceilings sit at the
    largest weights milco-mini gives (a weight above the ceiling is clipped to it; below it, 255 levels)."""

    n_postings: int = 4000
    cluster_ratio: float = 0.1
    summary_prune_ratio: float = 0.4
    approximate_threshold: int = 0
    quantization_ceiling_ingest: float = 3.0
    quantization_ceiling_search: float = 3.0

    def __post_init__(self) -> None:
        for name, ok, rule in (
            ("n_postings", self.n_postings > 0, "> 0"),
            ("cluster_ratio", 0 < self.cluster_ratio < 1, "in (0, 1)"),
            ("summary_prune_ratio", 0 < self.summary_prune_ratio <= 1, "in (0, 1]"),
            ("approximate_threshold", self.approximate_threshold >= 0, ">= 0"),
            ("quantization_ceiling_ingest", self.quantization_ceiling_ingest > 0, "> 0"),
            ("quantization_ceiling_search", self.quantization_ceiling_search > 0, "> 0"),
        ):
            if not ok:
                msg = f"seismic parameter {name} must be {rule}, got {getattr(self, name)}"
                raise ValueError(msg)

    @classmethod
    def parse(cls, pairs: list[str] | tuple[str, ...]) -> Seismic:
        """From ``NAME=VALUE`` strings (``--ann-param n_postings=2000``); an unknown name or a bad value raises
        ``ValueError`` naming it."""
        return cls(**_named_values(cls, pairs, "seismic parameter"))

    def to_meta(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SeismicQuery:
    """The query-time parameters of a SEISMIC search (neural-search's ``method_parameters``; no reindexing needed):
    ``k`` hits per shard from SEISMIC, which the echo view then rescores (at least the page's depth), the ``top_n``
    heaviest pivot terms of the query that pick the clusters to visit (all terms still score), and ``heap_factor``
    (above 1 visits more clusters: better recall, slower). Measured on 100k paragraphs (BENCHMARKS.md §16)."""

    k: int = 100
    top_n: int = 10
    heap_factor: float = 1.0

    def __post_init__(self) -> None:
        for name, ok, rule in (("k", self.k >= 1, ">= 1"), ("top_n", self.top_n >= 1, ">= 1"),
                               ("heap_factor", self.heap_factor > 0, "> 0")):
            if not ok:
                msg = f"seismic query parameter {name} must be {rule}, got {getattr(self, name)}"
                raise ValueError(msg)

    @classmethod
    def parse(cls, pairs: list[str] | tuple[str, ...]) -> SeismicQuery:
        """From ``NAME=VALUE`` strings (``--ann-param k=200``); an unknown name or a bad value raises ``ValueError``."""
        return cls(**_named_values(cls, pairs, "seismic query parameter"))

    def method_parameters(self, depth: int, filters: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """neural-search's ``method_parameters``: ``k`` at least ``depth`` (the page's); ``filters`` apply while the
        index is searched (not after: a filtered top ``k`` stays ``k`` deep)."""
        method: dict[str, Any] = {**asdict(self), "k": max(self.k, depth)}
        if filters:
            method["filter"] = {"bool": {"filter": filters}}
        return method

    def clause(self, field: str, tokens: dict[str, float], boost: float, depth: int,
               filters: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """One view's approximate clause: its ``k`` nearest documents by quantised dot product, times ``boost``."""
        return {"neural_sparse": {field: {"query_tokens": tokens, "method_parameters": self.method_parameters(
            depth, filters), "boost": boost}}}


def _named_values(cls: type, pairs: list[str] | tuple[str, ...], what: str) -> dict[str, Any]:
    """``NAME=VALUE`` strings -> keyword arguments of the dataclass ``cls`` (its int and float fields)."""
    kinds = {f.name: f.type for f in fields(cls)}
    given: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        name = name.strip()
        if not sep or name not in kinds:
            msg = f"{what} {pair!r}: expected NAME=VALUE with NAME one of {', '.join(kinds)}"
            raise ValueError(msg)
        try:
            given[name] = int(value) if kinds[name] == "int" else float(value)
        except ValueError:
            msg = f"{what} {name}: {value!r} is not {'an integer' if kinds[name] == 'int' else 'a number'}"
            raise ValueError(msg) from None
    return given


@dataclass(frozen=True)
class PassageLayout:
    """Passages: a ``nested`` field ``path`` whose objects hold a passage's ``start`` and ``end`` (character
    offsets in the document's text fields joined by newlines) and its views, named as the index's fields
    (``<path>.<pivot field>`` ...)."""

    path: str

    def relative(self, field: str) -> str:
        """A field's name inside a passage object (``milco_passages.milco_pivot`` -> ``milco_pivot``)."""
        return field.removeprefix(f"{self.path}.")


@dataclass(frozen=True)
class Layout:
    engine: str = "opensearch"
    sparse: str = "rank_features"
    units: str = "merged"
    retrieval: str = "exact"
    dense: DenseLayout | None = None
    passages: PassageLayout | None = None
    seismic: Seismic | None = None
    version: int = LAYOUT_VERSION

    @property
    def pivot_keys(self) -> str:
        """How the pivot view names a term: ``names`` (the escaped vocabulary entry, :mod:`milco_os.keys`; the echo
        view's always) or ``ids`` (its vocabulary id as a decimal string: neural-search's ``sparse_vector`` takes
        nothing else). Either way the vocabularies' fingerprints in ``_meta`` guard what the keys mean."""
        return "ids" if self.seismic is not None else "names"

    def to_meta(self) -> dict[str, Any]:
        meta = {"version": self.version, "engine": self.engine, "sparse": self.sparse, "units": self.units,
                "retrieval": self.retrieval, "dense": self.dense.to_meta() if self.dense else None,
                "passages": {"path": self.passages.path} if self.passages else None}
        if self.seismic is not None:
            meta["seismic"] = self.seismic.to_meta()
        return meta


#: The layout of an index created before the record existed (and of every index without a dense view).
LEGACY = Layout()


def read_layout(record: dict[str, Any], index: str) -> Layout:
    """The layout in an index's ``_meta.milco_os`` record (:data:`LEGACY` when it has none); a layout this
    milco-os cannot serve raises :class:`~milco_os.errors.ModelMismatch` with one line naming the key."""
    raw = record.get("layout")
    if raw is None:
        return LEGACY

    def refuse(key: str, value: Any, known: tuple[Any, ...]) -> ModelMismatch:
        msg = (f"index {index!r}: _meta.milco_os.layout.{key} is {value!r}, which this milco-os cannot serve "
               f"(it knows {', '.join(map(str, known))}); upgrade milco-os")
        return ModelMismatch(msg, index)

    if not isinstance(raw, dict):
        raise refuse("", raw, ("an object",))
    version = raw.get("version")
    if not isinstance(version, int) or not 1 <= version <= LAYOUT_VERSION:
        raise refuse("version", version, tuple(range(1, LAYOUT_VERSION + 1)))
    for key, known in (("engine", ENGINES), ("sparse", ENGINE_SPARSE.get(raw.get("engine"), SPARSE_KINDS)),
                       ("units", UNITS), ("retrieval", RETRIEVALS)):
        if raw.get(key) not in known:
            raise refuse(key, raw.get(key), known)
    dense = raw.get("dense")
    if dense is not None:
        try:
            dense = DenseLayout(field=str(dense["field"]), dimensions=int(dense["dimensions"]),
                                model=dict(dense["model"]), space=str(dense.get("space", DENSE_SPACE)))
        except (KeyError, TypeError, ValueError) as e:
            raise refuse("dense", dense, ("field, dimensions, model",)) from e
        if dense.space != DENSE_SPACE:
            raise refuse("dense.space", dense.space, (DENSE_SPACE,))
    passages = raw.get("passages")
    if raw["units"] == "passages":
        if not isinstance(passages, dict) or not isinstance(passages.get("path"), str):
            raise refuse("passages", passages, ("an object with the nested field's path",))
        passages = PassageLayout(passages["path"])
    elif passages is not None:
        raise refuse("passages", passages, ("null with units merged",))
    seismic = raw.get("seismic")
    if raw["retrieval"] == "seismic":
        if raw["engine"] != "opensearch" or raw["sparse"] != "sparse_vector":
            raise refuse("sparse", raw["sparse"], ("sparse_vector on opensearch with retrieval seismic",))
        if raw["units"] != "merged":
            raise refuse("units", raw["units"], ("merged with retrieval seismic",))
        if raw.get("dense") is not None:
            raise refuse("dense", raw["dense"], ("null with retrieval seismic",))
        try:
            seismic = Seismic(**seismic)
        except (TypeError, ValueError) as e:
            raise refuse("seismic", seismic, ("the SEISMIC build parameters",)) from e
    elif seismic is not None or (raw["engine"] == "opensearch" and raw["sparse"] != "rank_features"):
        raise refuse("retrieval", raw["retrieval"], ("seismic with a sparse_vector field on OpenSearch",))
    return Layout(engine=raw["engine"], sparse=raw["sparse"], units=raw["units"], retrieval=raw["retrieval"],
                  dense=dense, passages=passages, seismic=seismic, version=version)
