"""Pure builders for the index body: text fields, ``rank_features`` fields and the ``_meta`` contract."""

from __future__ import annotations

from typing import Any

from milco_os import __version__
from milco_os.errors import ModelMismatch
from milco_os.keys import KEY_SCHEME_VERSION
from milco_os.specs import IndexSpec
from milco_os.types import ModelInfo

META_KEY = "milco_os"


def index_meta(info: ModelInfo, spec: IndexSpec) -> dict[str, Any]:
    """The ``_meta.milco_os`` record every milco-os index carries."""
    return {
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
        "fields": {"text": list(spec.text_fields), "pivot": spec.pivot_field, "echo": spec.echo_field},
        "vectors_in_source": spec.vectors_in_source,
        "milco_os_version": __version__,
    }


def index_body(info: ModelInfo, spec: IndexSpec) -> dict[str, Any]:
    """Settings + mappings for a new index (see :class:`~milco_os.specs.IndexSpec`)."""
    text_mapping = {"type": "text"} if spec.bm25 else {"type": "text", "index": False}
    properties: dict[str, Any] = {field: dict(text_mapping) for field in spec.text_fields}
    properties[spec.pivot_field] = {"type": "rank_features"}
    properties[spec.echo_field] = {"type": "rank_features"}
    mappings: dict[str, Any] = {"_meta": {META_KEY: index_meta(info, spec)}, "properties": properties}
    if not spec.vectors_in_source:
        mappings["_source"] = {"excludes": [spec.pivot_field, spec.echo_field]}
    return {
        "settings": {"index": {"number_of_shards": spec.shards, "number_of_replicas": spec.replicas}},
        "mappings": mappings,
    }


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
    return record
