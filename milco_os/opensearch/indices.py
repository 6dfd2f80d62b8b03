"""Index operations (IO): create an index for a model, read and check its ``_meta``, and the small
administrative requests the front ends need (exists, count, refresh, delete, server version)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from milco_os.errors import IndexExists, IndexNotFound, ModelMismatch, SearchIndexError
from milco_os.opensearch.client import describe_transport_error
from milco_os.opensearch.mapping import META_KEY, check_meta, index_body
from milco_os.specs import IndexSpec
from milco_os.types import ModelInfo

if TYPE_CHECKING:
    from opensearchpy import OpenSearch


def create_index(client: OpenSearch, name: str, info: ModelInfo, spec: IndexSpec | None = None) -> dict[str, Any]:
    """Create a milco-os index for the model ``info``; returns the body sent."""
    body = index_body(info, spec or IndexSpec())
    create_plain_index(client, name, body)
    return body


def create_plain_index(client: OpenSearch, name: str, body: dict[str, Any]) -> None:
    """Create an index from a ready body (e.g. a BM25 baseline); a clear error when it exists or is refused."""
    from opensearchpy.exceptions import RequestError

    try:
        client.indices.create(index=name, body=body)
    except RequestError as e:
        if e.error == "resource_already_exists_exception":
            raise IndexExists(name) from e
        msg = f"OpenSearch refused to create index {name!r}: {describe_transport_error(e)}"
        raise SearchIndexError(msg) from e


def index_record(client: OpenSearch, name: str) -> dict[str, Any]:
    """The ``_meta.milco_os`` record of an index (raises IndexNotFound for a missing index)."""
    from opensearchpy.exceptions import NotFoundError

    try:
        mapping = client.indices.get_mapping(index=name)
    except NotFoundError as e:
        raise IndexNotFound(name) from e
    if len(mapping) != 1:
        msg = f"{name!r} names {len(mapping)} indices; give exactly one index or alias"
        raise SearchIndexError(msg)
    meta = next(iter(mapping.values()))["mappings"].get("_meta")
    record = (meta or {}).get(META_KEY)
    if record is None:
        msg = f"index {name!r} was not created by milco-os (no _meta.{META_KEY})"
        raise ModelMismatch(msg, name)
    return record


def checked_record(client: OpenSearch, name: str, info: ModelInfo) -> dict[str, Any]:
    """The index's record, after refusing a model that differs from the one that built it."""
    return check_meta({META_KEY: index_record(client, name)}, info, name)


def index_info(client: OpenSearch, name: str) -> dict[str, Any]:
    """``_meta.milco_os``, document count and store size of an index (or the index behind an alias)."""
    from milco_os.layout import read_layout

    record = index_record(client, name)
    stats = client.indices.stats(index=name, metric="store")
    info = {
        "index": name,
        # The count API, not the index stats: Lucene counts each passage (a nested object) as a document too.
        "documents": document_count(client, name),
        "size_bytes": int(stats["_all"]["primaries"]["store"]["size_in_bytes"]),
        "meta": record,
    }
    passages = read_layout(record, name).passages
    if passages is not None:
        info["passages"] = passage_count(client, name, passages.path)
    return info


def index_exists(client: OpenSearch, name: str) -> bool:
    return bool(client.indices.exists(index=name))


def document_count(client: OpenSearch, name: str) -> int:
    """Documents in ``name`` (raises IndexNotFound for a missing index)."""
    from opensearchpy.exceptions import NotFoundError

    try:
        return int(client.count(index=name)["count"])
    except NotFoundError as e:
        raise IndexNotFound(name) from e


def passage_count(client: OpenSearch, index: str, path: str) -> int:
    """The number of passages in ``index`` (objects of the nested field ``path``)."""
    body = {"size": 0, "aggs": {"passages": {"nested": {"path": path}}}}
    return int(client.search(index=index, body=body)["aggregations"]["passages"]["doc_count"])


def refresh(client: OpenSearch, name: str) -> None:
    client.indices.refresh(index=name)


def delete_index(client: OpenSearch, name: str) -> None:
    """Delete ``name`` if it exists."""
    client.indices.delete(index=name, ignore_unavailable=True)


def server_version(client: OpenSearch) -> str:
    """The cluster's version number, e.g. ``2.19.6``."""
    return str(client.info()["version"]["number"])
