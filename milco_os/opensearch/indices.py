"""Index operations (IO): create an index for a model, read and check its ``_meta``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from milco_os.errors import SearchIndexError
from milco_os.opensearch.mapping import META_KEY, check_meta, index_body
from milco_os.runtime.encoder import ModelInfo

if TYPE_CHECKING:
    from opensearchpy import OpenSearch


def create_index(client: OpenSearch, name: str, info: ModelInfo, **body_kwargs: Any) -> dict[str, Any]:
    from opensearchpy.exceptions import RequestError

    body = index_body(info, **body_kwargs)
    try:
        client.indices.create(index=name, body=body)
    except RequestError as e:
        if e.error == "resource_already_exists_exception":
            msg = f"index {name!r} already exists; delete it first or choose another name"
            raise SearchIndexError(msg) from e
        msg = f"OpenSearch refused to create index {name!r}: {e.info}"
        raise SearchIndexError(msg) from e
    return body


def index_record(client: OpenSearch, name: str) -> dict[str, Any]:
    """The ``_meta.milco_os`` record of an index (raises a clear error for a missing index)."""
    from opensearchpy.exceptions import NotFoundError

    try:
        mapping = client.indices.get_mapping(index=name)
    except NotFoundError as e:
        msg = f"index {name!r} does not exist; create it with `milco-os index create {name}`"
        raise SearchIndexError(msg) from e
    if len(mapping) != 1:
        msg = f"{name!r} names {len(mapping)} indices; give exactly one index or alias"
        raise SearchIndexError(msg)
    meta = next(iter(mapping.values()))["mappings"].get("_meta")
    record = (meta or {}).get(META_KEY)
    if record is None:
        msg = f"index {name!r} was not created by milco-os (no _meta.{META_KEY})"
        raise SearchIndexError(msg)
    return record


def checked_record(client: OpenSearch, name: str, info: ModelInfo) -> dict[str, Any]:
    """The index's record, after refusing a model that differs from the one that built it."""
    return check_meta({META_KEY: index_record(client, name)}, info, name)


def index_info(client: OpenSearch, name: str) -> dict[str, Any]:
    """``_meta.milco_os``, document count and store size of an index (or the index behind an alias)."""
    record = index_record(client, name)
    stats = client.indices.stats(index=name, metric="docs,store")
    total = stats["_all"]["primaries"]
    return {
        "index": name,
        "documents": int(total["docs"]["count"]),
        "size_bytes": int(total["store"]["size_in_bytes"]),
        "meta": record,
    }
