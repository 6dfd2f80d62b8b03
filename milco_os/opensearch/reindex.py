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

import contextlib
import logging
import queue
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from milco_os.errors import (
    ConfigError,
    IndexExists,
    JobStopped,
    ModelMismatch,
    OpenSearchUnavailable,
    SearchIndexError,
)
from milco_os.layout import read_layout
from milco_os.opensearch.bulk import BulkConfig
from milco_os.opensearch.checkpoint import Checkpoint, InterruptedJob
from milco_os.opensearch.client import describe_transport_error
from milco_os.opensearch.engine import OPENSEARCH, Engine, engine_of, error_status, transport_error
from milco_os.opensearch.indices import create_index, document_count, index_exists, index_record
from milco_os.opensearch.ingest import Ingester, IngestReport, JobProgress, batch_pool
from milco_os.opensearch.mapping import index_meta, written_fields
from milco_os.specs import IndexSpec

if TYPE_CHECKING:
    from milco_os.opensearch.engine import Client
    from milco_os.opensearch.ray_pool import RayJob
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


def default_checkpoint_path(cache_dir: Path, source: str, dest: str) -> Path:
    return Path(cache_dir) / "jobs" / f"reindex-{source}-to-{dest}.json"


def scan_body(
    pit_id: str, slice_id: int, slices: int, after: str | int | None, page_size: int, exclude: list[str],
    engine: Engine = OPENSEARCH,
) -> dict[str, Any]:
    """One page of a slice of SRC, in the engine's scan order (``_id`` on OpenSearch) after ``after``."""
    body: dict[str, Any] = {
        "size": page_size,
        "pit": {"id": pit_id, "keep_alive": PIT_KEEP_ALIVE},
        "sort": list(engine.scan_sort),
        "track_total_hits": False,
        "_source": {"excludes": exclude} if exclude else True,
    }
    if slices > 1:
        cut = {"field": engine.slice_field} if engine.slice_field else {}
        body["slice"] = {**cut, "id": slice_id, "max": slices}
    if after is not None:
        body["search_after"] = [after]
    return body


def _read_slice(
    client: Client, pit_id: str, slice_id: int, slices: int, after: str | int | None, page_size: int,
    exclude: list[str],
) -> Iterator[list[dict[str, Any]]]:
    engine = engine_of(client)
    while True:
        body = scan_body(pit_id, slice_id, slices, after, page_size, exclude, engine)
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
    client: Client,
    source: str,
    dest: str,
    encoder: SparseEncoder | None,
    *,
    spec: IndexSpec,
    checkpoint_path: Path,
    slices: int = 1,
    resume: bool = False,
    alias: str | None = None,
    page_size: int = 64,
    config: BulkConfig | None = None,
    dead_letter: Path | None = None,
    progress: JobProgress | None = None,
    ray: RayJob | None = None,
) -> ReindexReport:
    """Reindex SRC into DEST (created from ``spec`` when missing) with ``encoder``, or on Ray actors with
    ``ray`` (``encoder`` then None); see the module docstring. When it stops before the end, the
    :class:`~milco_os.errors.JobStopped` it raises names the checkpoint."""
    from milco_os.opensearch.engine import transport_error

    # Refusals first: they need no encoder (on Ray, starting the actors takes a while).
    if slices < 1 or page_size < 1:
        msg = f"slices and page size must be >= 1, got {slices} and {page_size}"
        raise ConfigError(msg)
    if source == dest:
        msg = "the source and destination indices must differ"
        raise ConfigError(msg)
    source_count = document_count(client, source)
    if not resume and index_exists(client, dest):
        raise InterruptedJob(checkpoint_path) if checkpoint_path.exists() else IndexExists(dest)
    job = {"kind": "reindex", "source": source, "dest": dest, "slices": slices}
    start = {"after": [None] * slices, "done": [False] * slices, "written": 0, "failed": 0}
    with batch_pool(ray, dest, config=config or BulkConfig(), id_field=_ID_KEY) as pool:
        # Opened once the actors are up, so a Ray that cannot start leaves no checkpoint behind.
        checkpoint = Checkpoint.open(checkpoint_path, job, start, resume=resume)
        info = (pool or encoder).info
        if not index_exists(client, dest):
            create_index(client, dest, info, spec)
        else:
            _check_same_layout(index_record(client, dest), index_meta(info, spec, engine_of(client)), dest)

        ingester = Ingester(client, dest, encoder, config=config, dead_letter=dead_letter, id_field=_ID_KEY,
                            stop_when_unavailable=True, append_dead_letter=resume, pool=pool)
        # What milco-os wrote into the source's documents is not carried over: DEST's own views replace it.
        exclude = written_fields(ingester.record, dest)
        with contextlib.suppress(ModelMismatch):
            exclude += written_fields(index_record(client, source), source)
        failed_before = int(checkpoint.progress["failed"])
        pit_id = _point_in_time(client, source, checkpoint)
        pages: queue.Queue[tuple[int, list[dict[str, Any]] | None] | BaseException] = queue.Queue(maxsize=2 * slices)

        def reader(slice_id: int) -> None:
            try:
                after = checkpoint.progress["after"][slice_id]
                for hits in _read_slice(client, pit_id, slice_id, slices, after, page_size, exclude):
                    pages.put((slice_id, hits))
                pages.put((slice_id, None))
            except BaseException as e:  # handed to the consumer, which raises it
                pages.put(e)

        def tagged_batches() -> Iterator[tuple[list[dict[str, Any]], tuple[int, str | int | None]]]:
            open_slices = {i for i in range(slices) if not checkpoint.progress["done"][i]}
            threads = [threading.Thread(target=reader, args=(i,), daemon=True) for i in sorted(open_slices)]
            for t in threads:
                t.start()
            while open_slices:
                item = pages.get()
                if isinstance(item, transport_error()):
                    msg = f"reading {source!r} failed: {describe_transport_error(item)}"
                    if error_status(item) == 400:  # refused, not unavailable: resuming would not help
                        raise SearchIndexError(msg)
                    raise OpenSearchUnavailable(msg)
                if isinstance(item, BaseException):
                    raise item
                slice_id, hits = item
                if hits is None:
                    open_slices.discard(slice_id)
                    yield [], (slice_id, None)  # marks the slice done once everything before it is acknowledged
                    continue
                docs = [{**h.get("_source", {}), _ID_KEY: h["_id"]} for h in hits]
                yield docs, (slice_id, hits[-1]["sort"][0])

        def acknowledged(tag: tuple[int, str | int | None], n_docs: int, report: IngestReport) -> None:
            slice_id, last_after = tag
            if last_after is None:
                checkpoint.progress["done"][slice_id] = True
            else:
                checkpoint.progress["after"][slice_id] = last_after
                checkpoint.progress["written"] += n_docs
            checkpoint.progress["failed"] = failed_before + report.failed
            checkpoint.save()
            if progress is not None and n_docs:
                progress.advance(n_docs)

        if progress is not None:
            progress.start(source_count, int(checkpoint.progress["written"]))
        try:
            ingest_report = ingester.run_batches(tagged_batches(), on_batch=acknowledged, refresh=True)
        except JobStopped as e:
            e.checkpoint = checkpoint_path
            raise
        finally:
            try:
                engine_of(client).close_pit(client, pit_id)
            except Exception:  # noqa: BLE001 (the PIT expires on its own; never mask the real error)
                log.warning("could not delete point in time %s", pit_id[:16])

    report = ReindexReport(source_count=source_count, ingest=ingest_report, resumed=resume,
                           failed_total=int(checkpoint.progress["failed"]))
    report.dest_count = document_count(client, dest)
    if report.verified:
        if alias:
            swap_alias(client, alias, dest)
            report.alias = alias
        checkpoint.remove()
    elif alias:
        log.warning("not moving alias %s: %s holds %d of %d documents", alias, dest, report.dest_count,
                    report.source_count)
    return report


#: How long a point in time outlives its last page (renewed by each page).
PIT_KEEP_ALIVE = "10m"


def _point_in_time(client: Client, source: str, checkpoint: Checkpoint) -> str:
    """The point in time the job reads SRC through. On an engine whose scan order is the point in time's own
    (Elasticsearch), a resumed job reuses the one it started with; when that one has expired, the slices not yet
    done are read again from their start (rewritten by id: nothing is lost, only work repeated)."""
    engine = engine_of(client)
    saved = checkpoint.progress.get("pit")
    if engine.resume_needs_same_pit and saved:
        try:
            client.search(body={"size": 0, "pit": {"id": saved, "keep_alive": PIT_KEEP_ALIVE}})
            return str(saved)
        except transport_error() as e:
            if error_status(e) != 404:
                msg = f"cannot read {source!r} through its point in time: {describe_transport_error(e)}"
                raise OpenSearchUnavailable(msg) from None
            open_slices = [i for i, done in enumerate(checkpoint.progress["done"]) if not done]
            log.warning("the point in time of this job has expired: slices %s of %r are read again from their start",
                        open_slices, source)
            checkpoint.progress["after"] = [None if i in open_slices else a
                                            for i, a in enumerate(checkpoint.progress["after"])]
    try:
        pit_id = engine.open_pit(client, source, keep_alive=PIT_KEEP_ALIVE)
    except transport_error() as e:
        msg = f"cannot open a point in time on {source!r}: {describe_transport_error(e)}"
        raise OpenSearchUnavailable(msg) from None
    if engine.resume_needs_same_pit:
        checkpoint.progress["pit"] = pit_id
        checkpoint.save()
    return pit_id


def _check_same_layout(record: dict[str, Any], wanted: dict[str, Any], dest: str) -> None:
    """A resumed reindex writes DEST as it was created: refuse index options that say otherwise."""
    for key in ("fields", "document_pruning", "vectors_in_source"):
        if record.get(key) != wanted[key]:
            msg = f"{dest!r} was created with {key} {record.get(key)}, not {wanted[key]}"
            raise ConfigError(msg)
    has, wants = read_layout(record, dest), read_layout(wanted, dest)
    if has != wants:
        msg = f"{dest!r} was created with layout {has.to_meta()}, not {wants.to_meta()}"
        raise ConfigError(msg)


def swap_alias(client: Client, alias: str, index: str) -> None:
    """Point ``alias`` at ``index`` only, in one atomic request."""
    actions: list[dict[str, Any]] = []
    if client.indices.exists_alias(name=alias):
        for holder in client.indices.get_alias(name=alias):
            if holder != index:
                actions.append({"remove": {"index": holder, "alias": alias}})
    elif client.indices.exists(index=alias):
        msg = f"alias {alias!r} is the name of an existing index, not an alias"
        raise SearchIndexError(msg)
    actions.append({"add": {"index": index, "alias": alias}})
    client.indices.update_aliases(body={"actions": actions})
