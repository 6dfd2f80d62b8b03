"""Ingest (IO): documents -> encode -> bulk write. Failed documents are reported and kept, never lost.

The encoder (this thread) works on the next batch while a writer thread has the previous batch in flight
(:mod:`milco_os.opensearch.bulk` does the writing and its retries). Documents that cannot be indexed are
reported (id + reason) and written to the dead-letter file, which can be ingested again as it is.

Given a :class:`BatchPool` (the Ray actors of :mod:`milco_os.opensearch.ray_pool`), batches are encoded and
written elsewhere instead, each by :meth:`Ingester.write_batch`; their results come back in input order and are
acknowledged here exactly as a local batch is (counts, dead-letter file, ``on_batch``/checkpoint), so both
paths keep the same guarantees.

With ``stop_when_unavailable`` (file ingest, reindex), a batch that still cannot reach OpenSearch after the
retries stops the job with :class:`~milco_os.errors.OpenSearchUnavailable` instead: that batch is not
acknowledged (so a checkpoint never moves past it) and nothing of it goes to the dead-letter file, because a
resumed run reads it again. :func:`ingest_file` is the resumable job over a JSONL file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from milco_os.errors import ConfigError, JobStopped, OpenSearchUnavailable
from milco_os.layout import read_layout
from milco_os.opensearch.batch import MAX_DOCUMENT_CHARS, BatchPool, BatchResult, PoolRequest
from milco_os.opensearch.bulk import BulkConfig, BulkWriter
from milco_os.opensearch.checkpoint import Checkpoint
from milco_os.opensearch.documents import index_action
from milco_os.opensearch.indices import checked_record
from milco_os.pruning import Pruning

if TYPE_CHECKING:
    from milco_os.opensearch.engine import Client
    from milco_os.runtime.encoder import SparseEncoder

log = logging.getLogger(__name__)

#: Marks a dead-letter line; ingest reads such lines back as the original document (so a dead-letter
#: file can be ingested again as it is).
DEAD_LETTER_MARK = "_milco_os_failed"
#: OpenSearch rejects a whole bulk request when one ``_id`` is longer than this (in UTF-8 bytes).
MAX_ID_BYTES = 512


@dataclass(frozen=True)
class UnreadableLine:
    """An input line that is not a JSON document (invalid JSON or invalid UTF-8)."""

    number: int
    problem: str
    raw: str


@dataclass
class IngestReport:
    indexed: int = 0
    failed: int = 0
    superseded: int = 0  # Ray path: a later line with the same id was stored first (ray_pool's versions)
    retried: int = 0
    elapsed_s: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)
    unavailable: list[str] = field(default_factory=list)  # ids that failed only because OpenSearch was down

    @property
    def docs_per_s(self) -> float:
        return (self.indexed + self.failed + self.superseded) / self.elapsed_s if self.elapsed_s > 0 else 0.0


def batches(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def validate_document(
    doc: Any, text_fields: list[str], id_field: str = "id", max_chars: int = MAX_DOCUMENT_CHARS
) -> str | None:
    """Why ``doc`` cannot be indexed, or None."""
    if isinstance(doc, UnreadableLine):
        return f"line {doc.number}: {doc.problem}"
    if not isinstance(doc, dict):
        return f"a document must be a JSON object, got {type(doc).__name__}"
    doc_id = doc.get(id_field)
    if doc_id is None or isinstance(doc_id, bool) or (isinstance(doc_id, str) and not doc_id.strip()):
        return f"field {id_field!r}: missing or empty"
    if not isinstance(doc_id, (str, int)):
        return f"field {id_field!r}: must be a string or integer, got {type(doc_id).__name__}"
    if len(str(doc_id).encode("utf-8")) > MAX_ID_BYTES:
        return f"field {id_field!r}: longer than {MAX_ID_BYTES} bytes (OpenSearch's limit for an _id)"
    for f in text_fields:
        value = doc.get(f)
        if value is not None and not isinstance(value, str):
            return f"field {f!r}: must be a string, got {type(value).__name__}"
    if all(doc.get(f) in (None, "") for f in text_fields):
        return f"no text in any of the fields {text_fields}"
    chars = sum(len(doc[f]) for f in text_fields if doc.get(f))
    if chars > max_chars:
        return f"text fields {text_fields}: {chars:,} characters, over the limit of {max_chars:,}; split the document"
    return None


def document_text(doc: dict[str, Any], text_fields: list[str]) -> str:
    return "\n".join(str(doc[f]) for f in text_fields if doc.get(f))


class DeadLetter:
    """JSONL of documents that could not be indexed, each with its reason.

    A fresh run rotates an existing file to ``.1`` (up to ``.5``), so each file holds one run's failures;
    a resumed run appends. The file is opened without following a symlink and created private (0600):
    it holds whole documents.
    """

    KEEP = 5

    def __init__(self, path: Path | None, *, append: bool = False) -> None:
        self.path = path
        self._file: Any = None
        if path is not None and not append:
            self._rotate(Path(path))

    def _rotate(self, path: Path) -> None:
        import os

        if not path.exists() or path.is_symlink() or path.stat().st_size == 0:
            return
        for n in range(self.KEEP - 1, 0, -1):
            older = path.with_name(f"{path.name}.{n}")
            if older.exists():
                os.replace(older, path.with_name(f"{path.name}.{n + 1}"))
        os.replace(path, path.with_name(f"{path.name}.1"))

    def write(self, doc: Any, doc_id: str, reason: str) -> None:
        if self.path is None:
            return
        if self._file is None:
            self._file = self._open(Path(self.path))
        record = {DEAD_LETTER_MARK: True, "id": doc_id, "reason": reason, "document": doc}
        self._file.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
        self._file.flush()

    @staticmethod
    def _open(path: Path) -> Any:
        import os

        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
        except OSError as e:
            why = "it is a symbolic link" if path.is_symlink() else e.strerror
            msg = f"--dead-letter {path}: cannot open ({why})"
            raise ConfigError(msg) from None
        return os.fdopen(fd, "a", encoding="utf-8")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def unwrap_dead_letter(record: Any) -> Any:
    """A dead-letter line -> the document it kept; anything else unchanged."""
    if isinstance(record, dict) and record.get(DEAD_LETTER_MARK) is True and "document" in record:
        return record["document"]
    return record


class Ingester:
    """Encode and index documents into a milco-os index (see the module docstring)."""

    def __init__(
        self,
        client: Client,
        index: str,
        encoder: SparseEncoder | None,
        *,
        pool: BatchPool | None = None,
        config: BulkConfig | None = None,
        dead_letter: Path | None = None,
        id_field: str = "id",
        sleep: Callable[[float], None] = time.sleep,
        stop_when_unavailable: bool = False,
        append_dead_letter: bool = False,
        max_chars: int = MAX_DOCUMENT_CHARS,
    ) -> None:
        self.client = client
        self.id_field = id_field
        self.stop_when_unavailable = stop_when_unavailable
        self.max_chars = max_chars
        self.index = index
        if (encoder is None) == (pool is None):
            msg = "an Ingester encodes here (encoder) or in a pool (pool): give exactly one"
            raise ValueError(msg)
        self.encoder = encoder
        self.pool = pool
        self.config = config or BulkConfig()
        self.record = checked_record(client, index, (pool or encoder).info)
        self.text_fields: list[str] = self.record["fields"]["text"]
        self.pivot_field = self.record["fields"]["pivot"]
        self.echo_field = self.record["fields"]["echo"]
        layout = read_layout(self.record, index)
        self.dense_field = layout.dense.field if layout.dense is not None else None
        self.passages = layout.passages
        self.pivot_keys = layout.pivot_keys
        self.pruning = Pruning.from_meta(self.record["document_pruning"])
        self.writer = BulkWriter(client, self.config, sleep=sleep)
        self.dead_letter = DeadLetter(dead_letter, append=append_dead_letter)

    def encode_batch(
        self, docs: list[Any], first_version: int | None = None
    ) -> tuple[list[dict[str, Any]], dict[str, Any], list[tuple[Any, str]]]:
        """Validate and encode one batch: (bulk actions, {id: original doc}, [(invalid doc, reason)]). With
        ``first_version``, ``docs[i]`` is written with the external version ``first_version + i``."""
        valid: list[tuple[int, Any]] = []  # (position in the batch, document)
        invalid: list[tuple[Any, str]] = []
        for position, doc in enumerate(docs):
            problem = validate_document(doc, self.text_fields, self.id_field, self.max_chars)
            if problem:
                invalid.append((doc, problem))
            else:
                valid.append((position, doc))
        assert self.encoder is not None
        texts = [document_text(d, self.text_fields) for _, d in valid]
        dense = self.dense_field is not None
        views = {"pivot_field": self.pivot_field, "echo_field": self.echo_field, "dense_field": self.dense_field}
        if self.passages is None:
            encoded: list[Any] = [self.pruning.apply(e) for e in self.encoder.encode_documents(texts, dense=dense)]
        else:  # each passage pruned as a merged document is; the views named inside the passage objects
            encoded = [[replace(p, encoded=self.pruning.apply(p.encoded)) for p in passages]
                       for passages in self.encoder.encode_passages(texts, dense=dense)]
            views = {key: None if field is None else self.passages.relative(field) for key, field in views.items()}
            views["passages_field"] = self.passages.path
            encoded, valid = self._whole_texts_only(texts, encoded, valid, invalid)
        actions, originals = [], {}
        for (position, doc), enc in zip(valid, encoded, strict=True):
            doc_id = str(doc[self.id_field])
            fields = {k: v for k, v in doc.items() if k != self.id_field}
            version = None if first_version is None else first_version + position
            actions.append(index_action(self.index, doc_id, fields, enc, **views, version=version,
                                        pivot_keys=self.pivot_keys))
            originals[doc_id] = doc
        return actions, originals, invalid

    def _whole_texts_only(
        self, texts: list[str], encoded: list[Any], valid: list[tuple[int, Any]], invalid: list[tuple[Any, str]]
    ) -> tuple[list[Any], list[tuple[int, Any]]]:
        """Documents whose passages cover their whole text; the others (more windows than the encoder makes for
        one text) are refused with their reason rather than stored without their end."""
        assert self.encoder is not None
        kept_encoded, kept_docs = [], []
        for text, passages, (position, doc) in zip(texts, encoded, valid, strict=True):
            if len(passages) >= self.encoder.max_windows and passages[-1].end < len(text.rstrip()):
                invalid.append((doc, f"text fields {self.text_fields}: more than {self.encoder.max_windows} passages "
                                     f"(the first end at character {passages[-1].end:,} of {len(text):,}); split "
                                     "the document"))
            else:
                kept_encoded.append(passages)
                kept_docs.append((position, doc))
        return kept_encoded, kept_docs

    def write_batch(self, docs: list[Any], first_version: int | None = None) -> BatchResult:
        """Encode and write one batch here (a pool's worker calls this); nothing is acknowledged yet.
        ``first_version``: see :meth:`encode_batch`."""
        actions, originals, invalid = self.encode_batch(docs, first_version)
        retried = self.writer.retried
        outcome = self.writer.write(actions)
        not_written = {doc_id for doc_id, _ in outcome.failed + outcome.unavailable}
        kept = {doc_id: doc for doc_id, doc in originals.items() if doc_id in not_written}
        return BatchResult(len(docs), outcome, invalid, kept, self.writer.retried - retried)

    def acknowledge(self, report: IngestReport, result: BatchResult) -> None:
        """Account for every document of a written batch, in input order: counts and the dead-letter file.
        With ``stop_when_unavailable``, a batch OpenSearch did not take raises instead (not acknowledged: the
        checkpoint stays before it and ``--resume`` reads it again)."""
        outcome = result.outcome
        if outcome.unavailable and self.stop_when_unavailable:
            msg = f"writing {self.index!r}: {outcome.unavailable[0][1]}"
            raise OpenSearchUnavailable(msg, outcome.unavailable)
        for doc, reason in result.invalid:
            self._fail(report, doc, reason)
        report.indexed += len(outcome.written)
        report.superseded += len(outcome.superseded)
        for doc_id, reason in outcome.failed + outcome.unavailable:
            self._fail(report, result.originals.get(doc_id, {self.id_field: doc_id}), reason)
        report.unavailable += [doc_id for doc_id, _ in outcome.unavailable]
        report.retried += result.retried

    def run(
        self,
        documents: Iterable[Any],
        *,
        on_batch: Callable[[int, IngestReport], None] | None = None,
        refresh: bool = False,
    ) -> IngestReport:
        """Ingest everything; ``on_batch(n_docs, report)`` runs after each batch is acknowledged (or failed),
        in input order, so callers can checkpoint there."""
        tagged = ((batch, None) for batch in batches(documents, self.config.encode_batch))
        callback = (lambda _tag, n, report: on_batch(n, report)) if on_batch else None
        return self.run_batches(tagged, on_batch=callback, refresh=refresh)

    def run_batches(
        self,
        tagged_batches: Iterable[tuple[list[Any], Any]],
        *,
        on_batch: Callable[[Any, int, IngestReport], None] | None = None,
        refresh: bool = False,
    ) -> IngestReport:
        """Like :meth:`run` over ready-made ``(documents, tag)`` batches; ``on_batch`` gets the tag back
        once that batch is acknowledged (reindex checkpoints the tag: a slice and its last sort value)."""
        report = IngestReport()
        start = time.monotonic()
        try:
            if self.pool is not None:
                for tag, result in self.pool.results(tagged_batches):
                    self.acknowledge(report, result)
                    if on_batch:
                        on_batch(tag, result.n_docs, report)
            else:
                self._run_here(tagged_batches, report, on_batch)
        finally:
            self.dead_letter.close()
        if refresh:
            self.client.indices.refresh(index=self.index)
        report.elapsed_s = time.monotonic() - start
        return report

    def _run_here(
        self,
        tagged_batches: Iterable[tuple[list[Any], Any]],
        report: IngestReport,
        on_batch: Callable[[Any, int, IngestReport], None] | None,
    ) -> None:
        """Encode in this thread while a writer thread has the previous batch in flight."""
        # One batch in flight while the next is encoded; a bounded queue keeps memory flat.
        work: queue.Queue[tuple[Any, int, list[dict[str, Any]], dict[str, Any], list[tuple[Any, str]]] | None] = (
            queue.Queue(maxsize=1)
        )
        errors: list[BaseException] = []

        def writer() -> None:
            try:
                while (item := work.get()) is not None:
                    tag, n_docs, actions, originals, invalid = item
                    retried = self.writer.retried
                    outcome = self.writer.write(actions)
                    result = BatchResult(n_docs, outcome, invalid, originals, self.writer.retried - retried)
                    self.acknowledge(report, result)
                    if on_batch:
                        on_batch(tag, n_docs, report)
            except BaseException as e:  # surfaced in the main thread
                errors.append(e)
                while work.get() is not None:  # drain so the producer never blocks forever
                    pass

        thread = threading.Thread(target=writer, name="milco-os-bulk", daemon=True)
        thread.start()
        try:
            for batch, tag in tagged_batches:
                if errors:
                    break
                work.put((tag, len(batch), *self.encode_batch(batch)))
        finally:
            work.put(None)
            thread.join()
        if errors:
            raise errors[0]

    def _fail(self, report: IngestReport, doc: Any, reason: str) -> None:
        if isinstance(doc, UnreadableLine):
            doc_id, doc = f"line {doc.number}", doc.raw
        elif isinstance(doc, dict):
            doc_id = str(doc.get(self.id_field))
            if self.id_field != "id" and self.id_field in doc:
                # Dead-letter lines are ingested again with the default id field (`milco-os ingest`).
                doc = {**{k: v for k, v in doc.items() if k != self.id_field}, "id": doc[self.id_field]}
        else:
            doc_id = "?"
        report.failed += 1
        report.failures.append((doc_id, reason))
        self.dead_letter.write(doc, doc_id, reason)


def ingest(
    client: Client,
    index: str,
    documents: Iterable[Any],
    encoder: SparseEncoder,
    *,
    batch_size: int = 32,
    dead_letter: Path | None = None,
    on_progress: Callable[[int], None] | None = None,
    refresh: bool = False,
) -> IngestReport:
    """Convenience wrapper around :class:`Ingester`."""
    ingester = Ingester(client, index, encoder, config=BulkConfig(encode_batch=batch_size), dead_letter=dead_letter)
    return ingester.run(
        documents, on_batch=(lambda n, _report: on_progress(n)) if on_progress else None, refresh=refresh
    )


class JobProgress(Protocol):
    """What a long job reports as it goes (the CLI draws a bar; the library never prints)."""

    def start(self, total: int | None, completed: int) -> None: ...

    def advance(self, n: int) -> None: ...


def read_jsonl(path: Path | None, start_line: int = 0) -> Iterator[tuple[int, Any]]:
    """Yield (line number, document) from a JSONL file or stdin (``None``), after ``start_line``; a line that
    is not valid UTF-8 JSON becomes an :class:`UnreadableLine` (reported and dead-lettered with its reason).
    Dead-letter lines come back as the documents they kept."""
    stream = sys.stdin.buffer if path is None else open(path, "rb")  # noqa: SIM115
    try:
        for number, raw in enumerate(stream, 1):
            if number <= start_line or not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raw_text = raw.decode("utf-8", "replace")
                yield number, UnreadableLine(number, f"not valid UTF-8 (byte {e.start})", raw_text)
                continue
            try:
                yield number, unwrap_dead_letter(json.loads(text))
            except ValueError as e:
                yield number, UnreadableLine(number, f"invalid JSON ({e})", text.rstrip("\n"))
    finally:
        if path is not None:
            stream.close()


@dataclass
class FileIngestReport:
    """A file (or stdin) ingest: this run's report, and the failures of every run of the job."""

    report: IngestReport
    failed_total: int
    dead_letter: Path
    checkpoint: Path | None  # kept (marked finished) when documents failed; None for stdin or when all went in


def default_dead_letter(path: Path | None, index: str) -> Path:
    return Path(f"{path}.failed.jsonl") if path is not None else Path(f"{index}.failed.jsonl")


def checkpoint_path(path: Path) -> Path:
    return path.with_name(path.name + ".milco-os-checkpoint.json")


def batch_pool(
    ray: PoolRequest | None, index: str, **worker: Any
) -> contextlib.AbstractContextManager[BatchPool | None]:
    """Where a job encodes: the Ray actors of ``ray`` writing ``index`` (stopped when the job ends), or None
    (here). ``worker``: the actors' writer settings (``config``, ``id_field``, ``max_chars``)."""
    return ray.pool(index, **worker) if ray is not None else contextlib.nullcontext()


def ingest_file(
    client: Client,
    index: str,
    encoder: SparseEncoder | None,
    path: Path | None,
    *,
    resume: bool = False,
    dead_letter: Path | None = None,
    config: BulkConfig | None = None,
    max_chars: int = MAX_DOCUMENT_CHARS,
    progress: JobProgress | None = None,
    ray: PoolRequest | None = None,
    refresh: bool = False,
) -> FileIngestReport:
    """Ingest a JSONL file (``None``: stdin), one document per line; ``refresh``: refresh the index once at the
    end, so that what was written is searchable when this returns.

    From a file the job is resumable: a checkpoint records the last line of every acknowledged batch, an
    outage stops the job (:class:`~milco_os.errors.OpenSearchUnavailable`, its ``checkpoint`` set) and
    ``resume=True`` continues after the last acknowledged batch (writes are by id, so nothing is
    duplicated). The checkpoint is removed when every document is in, and kept (marked finished) when some
    failed. Stdin cannot be re-read, so there every document that cannot be written is dead-lettered.

    With ``ray`` (``encoder`` then None), Ray actors encode and write the batches
    (:mod:`milco_os.opensearch.ray_pool`); the checkpoint, the dead-letter file and the report are the same.
    """
    if path is not None and not path.is_file():
        msg = f"{path}: no such file"
        raise ConfigError(msg)
    if resume and path is None:
        msg = "stdin cannot be resumed (it cannot be read again); resume needs a file"
        raise ConfigError(msg)
    dead = dead_letter or default_dead_letter(path, index)
    if path is not None and dead.resolve() == path.resolve():
        msg = f"dead-letter file {dead}: is the input file"
        raise ConfigError(msg)
    with batch_pool(ray, index, config=config or BulkConfig(), max_chars=max_chars) as pool:
        ingester = Ingester(client, index, encoder, config=config, dead_letter=dead, max_chars=max_chars,
                            stop_when_unavailable=path is not None, append_dead_letter=resume, pool=pool)
        return _ingest_file(ingester, path, resume, dead, progress, refresh)


def _ingest_file(
    ingester: Ingester, path: Path | None, resume: bool, dead: Path, progress: JobProgress | None,
    refresh: bool = False,
) -> FileIngestReport:
    checkpoint = None
    start = {"line": 0, "done": 0, "failed": 0}
    if path is not None:
        job = {"kind": "ingest", "file": str(path.resolve()), "index": ingester.index}
        checkpoint = Checkpoint.open(checkpoint_path(path), job, start, resume=resume)
        start = dict(checkpoint.progress)

    def numbered_batches() -> Iterator[tuple[list[Any], int]]:
        """Batches tagged with their last line number, all the checkpoint needs: only the batches in flight hold
        line numbers, so memory does not grow with the input."""
        for numbered in batches(read_jsonl(path, start["line"]), ingester.config.encode_batch):
            yield [doc for _, doc in numbered], numbered[-1][0]

    done = [0]

    def acknowledged(last_line: int, n_docs: int, report: IngestReport) -> None:
        done[0] += n_docs
        if checkpoint is not None:
            checkpoint.progress.update(line=last_line, done=start["done"] + done[0],
                                       failed=start["failed"] + report.failed)
            checkpoint.save()
        if progress is not None:
            progress.advance(n_docs)

    if progress is not None:
        progress.start(_count_lines(path) if path is not None else None, start["done"])
    try:
        report = ingester.run_batches(numbered_batches(), on_batch=acknowledged, refresh=refresh)
    except JobStopped as e:
        e.checkpoint = checkpoint.path if checkpoint else None
        e.dead_letter = dead
        raise
    failed_total = start["failed"] + report.failed
    if checkpoint is not None and failed_total == 0:
        checkpoint.remove()
        checkpoint = None
    elif checkpoint is not None:
        checkpoint.finish()
    return FileIngestReport(report, failed_total, dead, checkpoint.path if checkpoint else None)


def _count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())
