"""Reindex (IO): read SRC with point-in-time + search_after (sliced), encode, bulk-write DEST.

Each slice reads its documents in ``_id`` order (slices are assigned by ``_id`` too, so the assignment
is the same for every point in time). After each batch is acknowledged the checkpoint records, per
slice, the last ``_id`` written. A killed job resumes from there with a fresh point in time: documents
after the checkpoint are read again and rewritten by id, so nothing is lost or duplicated. When OpenSearch
goes away (reading SRC or writing DEST), the job stops with :class:`OpenSearchUnavailable` before the
checkpoint moves past anything unacknowledged; ``--resume`` continues. DEST is verified by count, and the
checkpoint is removed and the alias moved only when DEST holds every document of SRC.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from milco_os.errors import SearchIndexError
from milco_os.opensearch.client import describe_transport_error
from milco_os.opensearch.indices import create_index
from milco_os.opensearch.ingest import BulkConfig, Ingester, IngestReport, OpenSearchUnavailable
from milco_os.paths import write_text_atomic

if TYPE_CHECKING:
    from opensearchpy import OpenSearch

    from milco_os.runtime.encoder import SparseEncoder

log = logging.getLogger(__name__)

#: The id travels inside the document under this key, so a source field named "id" survives.
_ID_KEY = "_milco_os_source_id"


@dataclass
class ReindexReport:
    source_count: int
    dest_count: int = 0
    ingest: IngestReport = field(default_factory=IngestReport)
    failed_total: int = 0  # documents that failed over every run of this job (all in the dead-letter file)
    resumed: bool = False
    alias: str | None = None

    @property
    def verified(self) -> bool:
        """DEST holds as many documents as SRC (written by SRC's ids, so: all of them)."""
        return self.dest_count == self.source_count


class Checkpoint:
    """Per-slice progress, written atomically (temp file + rename) after each acknowledged batch."""

    def __init__(self, path: Path, source: str, dest: str, slices: int) -> None:
        self.path = path
        self.state: dict[str, Any] = {
            "source": source,
            "dest": dest,
            "slices": slices,
            "after": [None] * slices,  # last _id written, per slice
            "done": [False] * slices,
            "written": 0,
            "failed": 0,  # over every run of this job
        }

    @classmethod
    def load(cls, path: Path, source: str, dest: str, slices: int) -> Checkpoint:
        cp = cls(path, source, dest, slices)
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            msg = f"--resume: cannot read the checkpoint {path}: {e}"
            raise SearchIndexError(msg) from e
        if (state.get("source"), state.get("dest"), state.get("slices")) != (source, dest, slices):
            msg = (
                f"--resume: checkpoint {path} is for {state.get('source')} -> {state.get('dest')} with "
                f"{state.get('slices')} slices, not {source} -> {dest} with {slices}"
            )
            raise SearchIndexError(msg)
        cp.state = {**cp.state, **state}
        return cp

    def save(self) -> None:
        write_text_atomic(self.path, json.dumps(self.state))


def default_checkpoint_path(cache_dir: Path, source: str, dest: str) -> Path:
    return Path(cache_dir) / "jobs" / f"reindex-{source}-to-{dest}.json"


def _read_slice(
    client: OpenSearch, pit_id: str, slice_id: int, slices: int, after: str | None, page_size: int,
    exclude: list[str],
) -> Iterator[list[dict[str, Any]]]:
    while True:
        body: dict[str, Any] = {
            "size": page_size,
            "pit": {"id": pit_id, "keep_alive": "10m"},
            "sort": [{"_id": "asc"}],
            "track_total_hits": False,
            "_source": {"excludes": exclude} if exclude else True,
        }
        if slices > 1:
            body["slice"] = {"field": "_id", "id": slice_id, "max": slices}
        if after is not None:
            body["search_after"] = [after]
        with warnings.catch_warnings():
            # Sorting on _id loads its fielddata, which OpenSearch flags as deprecated. It is the only
            # unique key every index has that stays stable across points in time (2.x has no _shard_doc),
            # and resuming with a fresh point in time needs exactly that.
            warnings.filterwarnings("ignore", message="Loading the fielddata on the _id field")
            hits = client.search(body=body)["hits"]["hits"]
        if not hits:
            return
        yield hits
        after = hits[-1]["sort"][0]


def reindex(
    client: OpenSearch,
    source: str,
    dest: str,
    encoder: SparseEncoder,
    *,
    text_fields: list[str],
    checkpoint_path: Path,
    slices: int = 1,
    resume: bool = False,
    alias: str | None = None,
    page_size: int = 64,
    config: BulkConfig | None = None,
    dead_letter: Path | None = None,
    index_options: dict[str, Any] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> ReindexReport:
    """Reindex SRC into DEST (created when missing) with ``encoder``; see the module docstring."""
    from opensearchpy.exceptions import NotFoundError, TransportError

    if slices < 1 or page_size < 1:
        msg = f"slices and page size must be >= 1, got {slices} and {page_size}"
        raise SearchIndexError(msg)
    if source == dest:
        msg = "--source and --dest must differ"
        raise SearchIndexError(msg)
    try:
        source_count = int(client.count(index=source)["count"])
    except NotFoundError as e:
        msg = f"source index {source!r} does not exist"
        raise SearchIndexError(msg) from e

    if resume:
        if not checkpoint_path.exists():
            msg = f"--resume: no checkpoint at {checkpoint_path}; nothing to resume"
            raise SearchIndexError(msg)
        checkpoint = Checkpoint.load(checkpoint_path, source, dest, slices)
    else:
        if checkpoint_path.exists():
            msg = (
                f"an interrupted reindex {source} -> {dest} left a checkpoint ({checkpoint_path}); "
                "continue it with --resume, or delete the file to start over"
            )
            raise SearchIndexError(msg)
        if client.indices.exists(index=dest):
            msg = f"destination index {dest!r} already exists; reindex writes a new index (or use --resume)"
            raise SearchIndexError(msg)
        checkpoint = Checkpoint(checkpoint_path, source, dest, slices)
        checkpoint.save()  # first, so that a kill right after creating DEST still leaves a resumable job
    if not client.indices.exists(index=dest):
        create_index(client, dest, encoder.info, text_fields=text_fields, **(index_options or {}))

    ingester = Ingester(client, dest, encoder, config=config, dead_letter=dead_letter, id_field=_ID_KEY,
                        stop_when_unavailable=True, append_dead_letter=resume)
    exclude = [ingester.pivot_field, ingester.echo_field]
    failed_before = int(checkpoint.state["failed"])
    try:
        pit_id = client.create_pit(index=source, keep_alive="10m")["pit_id"]
    except TransportError as e:
        msg = f"cannot open a point in time on {source!r}: {describe_transport_error(e)}"
        raise OpenSearchUnavailable(msg) from None
    pages: queue.Queue[tuple[int, list[dict[str, Any]] | None] | BaseException] = queue.Queue(maxsize=2 * slices)

    def reader(slice_id: int) -> None:
        try:
            after = checkpoint.state["after"][slice_id]
            for hits in _read_slice(client, pit_id, slice_id, slices, after, page_size, exclude):
                pages.put((slice_id, hits))
            pages.put((slice_id, None))
        except BaseException as e:  # handed to the consumer, which raises it
            pages.put(e)

    def tagged_batches() -> Iterator[tuple[list[dict[str, Any]], tuple[int, str | None]]]:
        open_slices = {i for i in range(slices) if not checkpoint.state["done"][i]}
        threads = [threading.Thread(target=reader, args=(i,), daemon=True) for i in sorted(open_slices)]
        for t in threads:
            t.start()
        while open_slices:
            item = pages.get()
            if isinstance(item, TransportError):
                msg = f"reading {source!r} failed: {describe_transport_error(item)}"
                raise OpenSearchUnavailable(msg)
            if isinstance(item, BaseException):
                raise item
            slice_id, hits = item
            if hits is None:
                open_slices.discard(slice_id)
                yield [], (slice_id, None)  # marks the slice done once everything before it is acknowledged
                continue
            docs = [{**h.get("_source", {}), _ID_KEY: h["_id"]} for h in hits]
            yield docs, (slice_id, hits[-1]["_id"])

    def acknowledged(tag: tuple[int, str | None], n_docs: int, report: IngestReport) -> None:
        slice_id, last_id = tag
        if last_id is None:
            checkpoint.state["done"][slice_id] = True
        else:
            checkpoint.state["after"][slice_id] = last_id
            checkpoint.state["written"] += n_docs
        checkpoint.state["failed"] = failed_before + report.failed
        checkpoint.save()
        if on_progress and n_docs:
            on_progress(n_docs)

    try:
        ingest_report = ingester.run_batches(tagged_batches(), on_batch=acknowledged, refresh=True)
    finally:
        try:
            client.delete_pit(body={"pit_id": [pit_id]})
        except Exception:  # noqa: BLE001 (the PIT expires on its own; never mask the real error)
            log.warning("could not delete point in time %s", pit_id[:16])

    report = ReindexReport(source_count=source_count, ingest=ingest_report, resumed=resume,
                           failed_total=int(checkpoint.state["failed"]))
    report.dest_count = int(client.count(index=dest)["count"])
    if report.verified:
        if alias:
            swap_alias(client, alias, dest)
            report.alias = alias
        checkpoint_path.unlink(missing_ok=True)
    elif alias:
        log.warning("not moving alias %s: %s holds %d of %d documents", alias, dest, report.dest_count,
                    report.source_count)
    return report


def swap_alias(client: OpenSearch, alias: str, index: str) -> None:
    """Point ``alias`` at ``index`` only, in one atomic request."""
    actions: list[dict[str, Any]] = []
    if client.indices.exists_alias(name=alias):
        for holder in client.indices.get_alias(name=alias):
            if holder != index:
                actions.append({"remove": {"index": holder, "alias": alias}})
    elif client.indices.exists(index=alias):
        msg = f"--alias {alias!r} is the name of an existing index, not an alias"
        raise SearchIndexError(msg)
    actions.append({"add": {"index": index, "alias": alias}})
    client.indices.update_aliases(body={"actions": actions})
