"""What an index holds, as one versioned record in its ``_meta.milco_os.layout``: ingest, reindex, search, the
service and eval read it instead of flags.

    engine     the search engine the index lives in                 opensearch or elasticsearch
    sparse     the field type of the pivot and echo views           rank_features (OpenSearch) or
                                                                    sparse_vector (Elasticsearch); exact scores
    units      what one stored vector covers                        merged (a document's windows in one vector)
                                                                    or passages (each window a nested object)
    retrieval  how the sparse views are searched                    exact
    dense      the dense view's field, or none                      knn_vector (HNSW, Lucene engine)

An index created before the record existed has today's layout: :func:`read_layout` returns
:data:`LEGACY` for it. A record this milco-os cannot serve (a newer version, an engine, field kind or unit it
does not know) is refused with one line naming the key, so an older milco-os never misreads a newer index.
The combinations (docs/dense.md has the table): ``units`` is ``merged`` or ``passages`` (docs/passages.md:
each of a document's windows is a nested object under ``passages.path`` with its own views and character
span, and a document scores as its best passage), ``dense`` is present or not, with either, on
either engine; approximate sparse retrieval is a value later layouts add.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from milco_os.errors import ModelMismatch

LAYOUT_VERSION = 1
ENGINES = ("opensearch", "elasticsearch")
SPARSE_KINDS = ("rank_features", "sparse_vector")
#: The sparse field types each engine's indices use.
ENGINE_SPARSE = {"opensearch": ("rank_features",), "elasticsearch": ("sparse_vector",)}
UNITS = ("merged", "passages")
RETRIEVALS = ("exact",)
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
    version: int = LAYOUT_VERSION

    def to_meta(self) -> dict[str, Any]:
        return {"version": self.version, "engine": self.engine, "sparse": self.sparse, "units": self.units,
                "retrieval": self.retrieval, "dense": self.dense.to_meta() if self.dense else None,
                "passages": {"path": self.passages.path} if self.passages else None}


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
    return Layout(engine=raw["engine"], sparse=raw["sparse"], units=raw["units"], retrieval=raw["retrieval"],
                  dense=dense, passages=passages, version=version)
