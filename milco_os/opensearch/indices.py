"""Index operations (IO): create an index for a model, read and check its ``_meta``, list and delete milco-os
indices, and the small administrative requests the front ends need (exists, count, refresh, server version)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from milco_os.errors import IndexExists, IndexNotFound, ModelMismatch, SearchIndexError
from milco_os.opensearch.client import describe_transport_error
from milco_os.opensearch.engine import engine_of, not_found_error
from milco_os.opensearch.mapping import META_KEY, check_meta, index_body, spec_of
from milco_os.specs import IndexSpec
from milco_os.types import ModelInfo

if TYPE_CHECKING:
    from milco_os.opensearch.engine import Client


def create_index(client: Client, name: str, info: ModelInfo, spec: IndexSpec | None = None) -> dict[str, Any]:
    """Create a milco-os index for the model ``info``; returns the body sent. A SEISMIC index is refused, with one
    line naming the fix, on a node that cannot build one."""
    spec = spec or IndexSpec()
    body = index_body(info, spec, engine_of(client))
    if spec.seismic is not None:
        check_seismic_support(client)
    create_plain_index(client, name, body)
    return body


#: The first OpenSearch release whose neural-search has the ``sparse_vector`` field and SEISMIC.
SEISMIC_SINCE = (3, 3)
SEISMIC_NODE_HINT = "milco-os cluster up --version 3.6.0 --plugins neural-search"


def check_seismic_support(client: Client) -> None:
    """Refuse (one line, naming the fix) a cluster that cannot hold a SEISMIC index: OpenSearch below 3.3, or a
    node without the neural-search plugin."""
    from milco_os.errors import ConfigError

    engine = engine_of(client)
    version = engine.version(client)
    if tuple(int(x) for x in version.split(".")[:2]) < SEISMIC_SINCE:
        msg = (f"--ann seismic needs OpenSearch 3.3 or newer with the neural-search plugin; this cluster runs "
               f"{engine.label} {version} (try: {SEISMIC_NODE_HINT})")
        raise ConfigError(msg)
    with_plugin = {row["name"] for row in client.cat.plugins(format="json", h="name,component")
                   if row["component"] == "opensearch-neural-search"}
    missing = sorted({node["name"] for node in client.cat.nodes(format="json", h="name")} - with_plugin)
    if missing:
        msg = (f"--ann seismic needs the neural-search plugin on every node; {', '.join(missing)} lacks it "
               f"(try: {SEISMIC_NODE_HINT})")
        raise ConfigError(msg)


def create_plain_index(client: Client, name: str, body: dict[str, Any]) -> None:
    """Create an index from a ready body (e.g. a BM25 baseline); a clear error when it exists or is refused."""
    from milco_os.opensearch.engine import bad_request_error

    try:
        client.indices.create(index=name, body=body)
    except bad_request_error() as e:
        if e.error == "resource_already_exists_exception":
            raise IndexExists(name) from e
        msg = f"{engine_of(client).label} refused to create index {name!r}: {describe_transport_error(e)}"
        raise SearchIndexError(msg) from e


def index_record(client: Client, name: str) -> dict[str, Any]:
    """The ``_meta.milco_os`` record of an index (raises IndexNotFound for a missing index)."""
    return _milco_mapping(client, name)[1]


def _milco_mapping(client: Client, name: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(the index behind ``name``, its ``_meta.milco_os`` record, its mapping): IndexNotFound for a missing index,
    one line for a name of several indices or an index milco-os did not create."""
    try:
        mapping = client.indices.get_mapping(index=name)
    except not_found_error() as e:
        raise IndexNotFound(name) from e
    if len(mapping) != 1:
        msg = f"{name!r} names {len(mapping)} indices; give exactly one index or alias"
        raise SearchIndexError(msg)
    concrete, found = next(iter(mapping.items()))
    record = (found["mappings"].get("_meta") or {}).get(META_KEY)
    if record is None:
        msg = f"index {name!r} was not created by milco-os (no _meta.{META_KEY})"
        raise ModelMismatch(msg, name)
    return concrete, record, found["mappings"]


def checked_record(client: Client, name: str, info: ModelInfo) -> dict[str, Any]:
    """The index's record, after refusing a model that differs from the one that built it."""
    return check_meta({META_KEY: index_record(client, name)}, info, name)


def index_info(client: Client, name: str) -> dict[str, Any]:
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


def created_spec(client: Client, name: str) -> IndexSpec:
    """The options the milco-os index ``name`` (or the one index behind an alias) was created with."""
    concrete, record, mappings = _milco_mapping(client, name)
    settings = client.indices.get_settings(index=concrete)[concrete]["settings"]["index"]
    return spec_of(record, mappings.get("properties", {}), settings, concrete)


def list_indices(client: Client) -> list[dict[str, Any]]:
    """Every open milco-os index this client may see, by name: its aliases, model, layout, documents and size."""
    from milco_os.layout import read_layout

    # Not the dot-prefixed system indices (ml-commons' .plugins-ml-config ...): reading them draws a deprecation
    # warning, and milco-os never names an index so.
    everything = "*,-.*"
    mappings = client.indices.get_mapping(index=everything, expand_wildcards="open")
    records = {name: m["mappings"]["_meta"][META_KEY] for name, m in mappings.items()
               if META_KEY in (m["mappings"].get("_meta") or {})}
    if not records:
        return []
    stats = client.indices.stats(index=everything, metric="store", expand_wildcards="open")["indices"]
    aliases = client.indices.get_alias(index=everything, expand_wildcards="open")
    rows = []
    for name in sorted(records):
        record = records[name]
        try:
            layout = read_layout(record, name)
            units = layout.units + (" + dense" if layout.dense else "") + (" + seismic" if layout.seismic else "")
        except ModelMismatch:  # written by a newer milco-os
            units = "unknown"
        rows.append({
            "index": name,
            "aliases": sorted(aliases.get(name, {}).get("aliases", {})),
            "model": record.get("model", {}).get("name"),
            "layout": units,
            "documents": document_count(client, name),
            "size_bytes": int(stats.get(name, {}).get("primaries", {}).get("store", {}).get("size_in_bytes", 0)),
        })
    return rows


def delete_milco_index(client: Client, name: str, *, with_aliases: bool = False) -> list[str]:
    """Delete the milco-os index ``name``, never an alias nor an index milco-os did not create; an index that
    aliases point at only ``with_aliases`` (searches through them would fail). Returns those aliases."""
    if client.indices.exists_alias(name=name):
        holders = ", ".join(sorted(client.indices.get_alias(name=name)))
        msg = f"{name!r} is an alias (of {holders}), not an index; delete an index by its own name"
        raise SearchIndexError(msg)
    index_record(client, name)  # missing, or not milco-os's: refused
    aliases = sorted(client.indices.get_alias(index=name).get(name, {}).get("aliases", {}))
    if aliases and not with_aliases:
        msg = (f"index {name!r} is the target of alias {', '.join(aliases)}: searches through it would fail; "
               "delete it with its aliases (--with-aliases) or move them first")
        raise SearchIndexError(msg)
    client.indices.delete(index=name)
    return aliases


def index_exists(client: Client, name: str) -> bool:
    return bool(client.indices.exists(index=name))


def document_count(client: Client, name: str) -> int:
    """Documents in ``name`` (raises IndexNotFound for a missing index)."""
    try:
        return int(client.count(index=name)["count"])
    except not_found_error() as e:
        raise IndexNotFound(name) from e


def passage_count(client: Client, index: str, path: str) -> int:
    """The number of passages in ``index`` (objects of the nested field ``path``)."""
    body = {"size": 0, "aggs": {"passages": {"nested": {"path": path}}}}
    return int(client.search(index=index, body=body)["aggregations"]["passages"]["doc_count"])


def refresh(client: Client, name: str) -> None:
    client.indices.refresh(index=name)


def delete_index(client: Client, name: str) -> None:
    """Delete ``name`` if it exists."""
    client.indices.delete(index=name, ignore_unavailable=True)


def server_version(client: Client) -> str:
    """The cluster's version number, e.g. ``2.19.6``."""
    return engine_of(client).version(client)
