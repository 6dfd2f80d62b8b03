"""Pure builders for the index body: text fields, ``rank_features`` fields and the ``_meta`` contract."""

from __future__ import annotations

from typing import Any

from milco_os import __version__
from milco_os.errors import SearchIndexError
from milco_os.keys import KEY_SCHEME_VERSION
from milco_os.pruning import PruningConfig
from milco_os.runtime.encoder import ModelInfo

PIVOT_FIELD = "milco_pivot"
ECHO_FIELD = "milco_echo"
META_KEY = "milco_os"


def index_meta(
    info: ModelInfo,
    *,
    text_fields: list[str],
    pivot_field: str = PIVOT_FIELD,
    echo_field: str = ECHO_FIELD,
    doc_pruning: PruningConfig | None = None,
    vectors_in_source: bool = True,
) -> dict[str, Any]:
    """The ``_meta.milco_os`` record every milco-os index carries."""
    pruning = doc_pruning or PruningConfig()
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
        "document_pruning": pruning.model_dump(),
        "fields": {"text": list(text_fields), "pivot": pivot_field, "echo": echo_field},
        "vectors_in_source": vectors_in_source,
        "milco_os_version": __version__,
    }


def index_body(
    info: ModelInfo,
    *,
    text_fields: list[str],
    pivot_field: str = PIVOT_FIELD,
    echo_field: str = ECHO_FIELD,
    doc_pruning: PruningConfig | None = None,
    bm25: bool = True,
    vectors_in_source: bool = True,
    shards: int = 1,
    replicas: int = 1,
) -> dict[str, Any]:
    """Settings + mappings for a new index.

    ``bm25`` indexes the text fields for full-text (hybrid) search; without it they are stored only.
    ``vectors_in_source=False`` keeps the sparse vectors out of ``_source`` (a smaller index; explain
    then asks OpenSearch rather than reading the stored vectors).
    """
    if not text_fields:
        msg = "at least one text field is needed (e.g. --text-field text)"
        raise SearchIndexError(msg)
    clash = {pivot_field, echo_field} & set(text_fields)
    if clash or pivot_field == echo_field:
        msg = f"field names must differ: text fields {text_fields}, pivot {pivot_field!r}, echo {echo_field!r}"
        raise SearchIndexError(msg)
    properties: dict[str, Any] = {
        field: ({"type": "text"} if bm25 else {"type": "text", "index": False}) for field in text_fields
    }
    properties[pivot_field] = {"type": "rank_features"}
    properties[echo_field] = {"type": "rank_features"}
    mappings: dict[str, Any] = {
        "_meta": {
            META_KEY: index_meta(
                info, text_fields=text_fields, pivot_field=pivot_field, echo_field=echo_field,
                doc_pruning=doc_pruning, vectors_in_source=vectors_in_source,
            )
        },
        "properties": properties,
    }
    if not vectors_in_source:
        mappings["_source"] = {"excludes": [pivot_field, echo_field]}
    return {
        "settings": {"index": {"number_of_shards": shards, "number_of_replicas": replicas}},
        "mappings": mappings,
    }


def check_meta(meta: dict[str, Any] | None, info: ModelInfo, index: str) -> dict[str, Any]:
    """Refuse to encode for ``index`` with a model other than the one that built it; returns the record."""
    record = (meta or {}).get(META_KEY)
    if record is None:
        msg = f"index {index!r} was not created by milco-os (no _meta.{META_KEY}); use `milco-os index create`"
        raise SearchIndexError(msg)
    if record.get("key_scheme") != KEY_SCHEME_VERSION:
        msg = (
            f"index {index!r} uses term-key scheme {record.get('key_scheme')}, this milco-os writes "
            f"scheme {KEY_SCHEME_VERSION}; reindex it"
        )
        raise SearchIndexError(msg)
    model = record.get("model", {})
    if model.get("fingerprint") != info.fingerprint:
        msg = (
            f"index {index!r} was built with model {model.get('name')!r} ({model.get('fingerprint')}), "
            f"but the loaded model is {info.name!r} ({info.fingerprint}); mixing models gives meaningless "
            f"scores. Use --model {model.get('name')} or reindex into a new index."
        )
        raise SearchIndexError(msg)
    return record
