"""Pure builders: an encoded document -> a bulk action with its sparse views (``{key: weight}``, the key a term's
escaped name, or for the pivot view of a SEISMIC index its vocabulary id: :attr:`~milco_os.layout.Layout.pivot_keys`)
and the dense view's vector; on an index with passages, one nested object per passage with its span and views."""

from __future__ import annotations

from typing import Any

import numpy as np

from milco_os.keys import stored_terms
from milco_os.types import Encoded, Passage, SparseVector


def feature_map(vec: SparseVector, keys: str = "names") -> dict[str, float]:
    """``{escaped key: weight}`` (``keys="ids"``: ``{vocabulary id: weight}``), largest weight first. Five
    significant digits are plenty: Lucene keeps about three, SEISMIC a byte."""
    return {key: float(f"{weight:.5g}") for key, weight in stored_terms(vec, keys).items()}


def dense_values(vector: np.ndarray) -> list[float]:
    """The dense view as JSON numbers: seven significant digits, about what a float32 holds."""
    return [float(f"{x:.7g}") for x in vector.tolist()]


def document_source(
    fields: dict[str, Any], encoded: Encoded, *, pivot_field: str, echo_field: str, dense_field: str | None = None,
    pivot_keys: str = "names",
) -> dict[str, Any]:
    """The document as stored: its fields, the sparse views (the pivot view keyed as ``pivot_keys`` says) and, for
    an index with a dense view (``dense_field``), the embedding (an empty text has none)."""
    source = dict(fields)
    if len(encoded.pivot):
        source[pivot_field] = feature_map(encoded.pivot, pivot_keys)
    if len(encoded.echo):
        source[echo_field] = feature_map(encoded.echo)
    if dense_field is not None and encoded.dense is not None:
        source[dense_field] = dense_values(encoded.dense)
    return source


def passages_source(
    fields: dict[str, Any], passages: list[Passage], *, passages_field: str, pivot_field: str, echo_field: str,
    dense_field: str | None = None, pivot_keys: str = "names",
) -> dict[str, Any]:
    """The document as stored on an index with passages: its fields and, under ``passages_field``, one object per
    passage: its character span (``start``, ``end``) and its views, named as the ``*_field`` arguments say
    (relative to the passage object)."""
    objects = [document_source({"start": p.start, "end": p.end}, p.encoded, pivot_field=pivot_field,
                               echo_field=echo_field, dense_field=dense_field, pivot_keys=pivot_keys) for p in passages]
    return {**fields, passages_field: objects}


def index_action(
    index: str, doc_id: str, fields: dict[str, Any], encoded: Encoded | list[Passage], *, pivot_field: str,
    echo_field: str, dense_field: str | None = None, passages_field: str | None = None, version: int | None = None,
    pivot_keys: str = "names",
) -> dict[str, Any]:
    """A bulk ``index`` action; writing by id makes a retried or repeated write idempotent. With
    ``passages_field``, ``encoded`` is the document's passages (:func:`passages_source`). With ``version``, an
    external version: the write is refused (409) when the index holds that id at this version or a higher one."""
    views = {"pivot_field": pivot_field, "echo_field": echo_field, "dense_field": dense_field, "pivot_keys": pivot_keys}
    if passages_field is not None:
        assert isinstance(encoded, list)
        source = passages_source(fields, encoded, passages_field=passages_field, **views)
    else:
        assert isinstance(encoded, Encoded)
        source = document_source(fields, encoded, **views)
    action = {"_op_type": "index", "_index": index, "_id": doc_id, "_source": source}
    if version is not None:
        action |= {"version": version, "version_type": "external"}
    return action
