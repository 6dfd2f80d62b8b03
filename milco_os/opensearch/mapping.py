"""Pure builders for the index body: text fields, the sparse views' fields (``rank_features``; ``sparse_vector`` on
Elasticsearch), the dense view's vector field and the ``_meta`` contract (with its layout record,
:mod:`milco_os.layout`)."""

from __future__ import annotations

from typing import Any

from milco_os import __version__
from milco_os.errors import ConfigError, ModelMismatch
from milco_os.keys import KEY_SCHEME_VERSION
from milco_os.layout import SEISMIC_MAX_ID, DenseLayout, Layout, PassageLayout, read_layout
from milco_os.opensearch.engine import OPENSEARCH, Engine
from milco_os.specs import IndexSpec
from milco_os.types import ModelInfo

META_KEY = "milco_os"


def index_layout(info: ModelInfo, spec: IndexSpec, engine: Engine = OPENSEARCH) -> Layout:
    """The layout ``spec`` asks of an index in ``engine`` for the model ``info`` (a dense field needs a model with a
    dense view)."""
    passages = PassageLayout(spec.passages_field) if spec.passages else None
    units = "passages" if passages else "merged"
    where: dict[str, Any] = {"engine": engine.name, "sparse": engine.sparse, "units": units, "passages": passages}
    if spec.seismic is not None:
        if engine.name != "opensearch":
            msg = (f"--ann seismic is OpenSearch's (neural-search 3.3+); {engine.label} has no SEISMIC index: "
                   "leave --ann out there")
            raise ConfigError(msg)
        if spec.dense:
            msg = ("--ann seismic with --dense: OpenSearch refuses an index that is both (the k-NN and neural-search "
                   "plugins each take over the index's codec, up to 3.6 at least); choose one of the two")
            raise ConfigError(msg)
        if spec.passages:
            msg = ("--ann seismic with --passages: not built yet (a SEISMIC search is rescored over its top k, and a "
                   "document's best passage would need its own window); choose one of the two")
            raise ConfigError(msg)
        if len(info.pivot_vocab.tokens) > SEISMIC_MAX_ID + 1:
            msg = (f"--ann seismic: model {info.name!r} has {len(info.pivot_vocab.tokens):,} pivot terms; "
                   f"neural-search's sparse_vector takes ids up to {SEISMIC_MAX_ID:,} (milco-mini's 30,522 fit)")
            raise ConfigError(msg)
        where |= {"sparse": "sparse_vector", "retrieval": "seismic", "seismic": spec.seismic}
    if not spec.dense:
        return Layout(**where)
    if info.dense is None:
        msg = f"--dense: model {info.name!r} has no dense view (milco-mini has one; docs/dense.md)"
        raise ConfigError(msg)
    model = {"name": info.dense.name, "fingerprint": info.dense.fingerprint}
    dense = DenseLayout(field=_in(passages, spec.dense_field), dimensions=info.dense.dimensions, model=model)
    return Layout(**where, dense=dense)


def _in(passages: PassageLayout | None, field: str) -> str:
    """A view's field: inside the passage objects on an index with passages."""
    return f"{passages.path}.{field}" if passages else field


def index_meta(info: ModelInfo, spec: IndexSpec, engine: Engine = OPENSEARCH) -> dict[str, Any]:
    """The ``_meta.milco_os`` record every milco-os index carries (its ``fields`` name the views' full paths)."""
    layout = index_layout(info, spec, engine)
    return {
        "layout": layout.to_meta(),
        "model": {"name": info.name, "family": info.family, "fingerprint": info.fingerprint},
        "vocab": {
            "pivot": {"name": info.pivot_vocab.name, "fingerprint": info.pivot_vocab.fingerprint},
            "echo": (
                {"name": info.echo_vocab.name, "fingerprint": info.echo_vocab.fingerprint}
                if info.echo_vocab is not None
                else None
            ),
        },
        "key_scheme": KEY_SCHEME_VERSION,
        "document_pruning": spec.doc_pruning.to_meta(),
        "fields": {"text": list(spec.text_fields), "pivot": _in(layout.passages, spec.pivot_field),
                   "echo": _in(layout.passages, spec.echo_field)},
        "vectors_in_source": spec.vectors_in_source,
        "milco_os_version": __version__,
    }


def index_body(info: ModelInfo, spec: IndexSpec, engine: Engine = OPENSEARCH) -> dict[str, Any]:
    """Settings + mappings for a new index in ``engine`` (see :class:`~milco_os.specs.IndexSpec`)."""
    text_mapping = {"type": "text"} if spec.bm25 else {"type": "text", "index": False}
    properties: dict[str, Any] = {field: dict(text_mapping) for field in spec.text_fields}
    meta = index_meta(info, spec, engine)
    views: dict[str, Any] = {spec.pivot_field: pivot_mapping(read_layout(meta, ""), engine),
                             spec.echo_field: engine.sparse_mapping()}
    mappings: dict[str, Any] = {"_meta": {META_KEY: meta}, "properties": properties}
    settings: dict[str, Any] = {"number_of_shards": spec.shards, "number_of_replicas": spec.replicas}
    if spec.seismic is not None:
        settings["sparse"] = True  # neural-search builds SEISMIC's structures only in an index that says so
    excludes = [] if spec.vectors_in_source else [meta["fields"]["pivot"], meta["fields"]["echo"]]
    dense = meta["layout"]["dense"]
    if dense is not None:
        views[spec.dense_field] = engine.dense_mapping(dense["dimensions"])
        settings.update(engine.dense_settings())
        excludes.append(dense["field"])
    if spec.passages:
        # A passage's span is read back from _source (inner hits), never searched: stored, not indexed.
        span = {"type": "integer", "index": False}
        properties[spec.passages_field] = {"type": "nested", "properties": {"start": span, "end": span, **views}}
    else:
        properties.update(views)
    if excludes:
        mappings["_source"] = {"excludes": excludes}
    return {"settings": {"index": settings}, "mappings": mappings}


def pivot_mapping(layout: Layout, engine: Engine = OPENSEARCH) -> dict[str, Any]:
    """The pivot view's field: the engine's exact field, or neural-search's ``sparse_vector`` with SEISMIC."""
    if layout.seismic is None:
        return engine.sparse_mapping()
    return {"type": "sparse_vector", "method": {"name": "seismic", "parameters": layout.seismic.to_meta()}}


def spec_of(record: dict[str, Any], properties: dict[str, Any], settings: dict[str, Any], index: str) -> IndexSpec:
    """The options an index was created with, read back from its ``_meta`` record, its mapping's ``properties`` and
    its ``index`` settings (``number_of_shards`` ...): what a re-encoded copy of it is created with."""
    from milco_os.pruning import Pruning

    layout = read_layout(record, index)
    relative = layout.passages.relative if layout.passages else str
    text_fields = tuple(record["fields"]["text"])
    defaults = IndexSpec()
    return IndexSpec(
        text_fields=text_fields,
        pivot_field=relative(record["fields"]["pivot"]),
        echo_field=relative(record["fields"]["echo"]),
        doc_pruning=Pruning.from_meta(record.get("document_pruning") or {}),
        bm25=properties.get(text_fields[0], {}).get("index", True) is not False,
        vectors_in_source=bool(record.get("vectors_in_source", True)),
        shards=int(settings["number_of_shards"]),
        replicas=int(settings["number_of_replicas"]),
        dense=layout.dense is not None,
        dense_field=relative(layout.dense.field) if layout.dense else defaults.dense_field,
        passages=layout.passages is not None,
        passages_field=layout.passages.path if layout.passages else defaults.passages_field,
        seismic=layout.seismic,
    )


def written_fields(record: dict[str, Any], index: str) -> list[str]:
    """The top-level fields milco-os writes into each document of an index with ``record`` (beside the user's)."""
    layout = read_layout(record, index)
    if layout.passages is not None:
        return [layout.passages.path]
    return [record["fields"]["pivot"], record["fields"]["echo"], *([layout.dense.field] if layout.dense else [])]


def check_meta(meta: dict[str, Any] | None, info: ModelInfo, index: str) -> dict[str, Any]:
    """Refuse to encode for ``index`` with a model other than the one that built it; returns the record."""
    record = (meta or {}).get(META_KEY)
    if record is None:
        msg = f"index {index!r} was not created by milco-os (no _meta.{META_KEY})"
        raise ModelMismatch(msg, index)
    if record.get("key_scheme") != KEY_SCHEME_VERSION:
        msg = (
            f"index {index!r} uses term-key scheme {record.get('key_scheme')}, this milco-os writes "
            f"scheme {KEY_SCHEME_VERSION}"
        )
        raise ModelMismatch(msg, index, record.get("model", {}).get("name"))
    model = record.get("model", {})
    if model.get("fingerprint") != info.fingerprint:
        msg = (
            f"index {index!r} was built with model {model.get('name')!r} ({model.get('fingerprint')}), "
            f"but the loaded model is {info.name!r} ({info.fingerprint}); mixing models gives meaningless scores"
        )
        raise ModelMismatch(msg, index, model.get("name"))
    dense = read_layout(record, index).dense
    if dense is not None and (info.dense is None or info.dense.fingerprint != dense.model.get("fingerprint")):
        loaded = f"{info.dense.name!r} ({info.dense.fingerprint})" if info.dense else "none"
        msg = (f"index {index!r} has a dense view from {dense.model.get('name')!r} ({dense.model.get('fingerprint')}),"
               f" but the loaded model's dense view is {loaded}")
        raise ModelMismatch(msg, index, model.get("name"))
    return record
