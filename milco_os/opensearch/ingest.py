"""Ingest (IO): documents -> encode -> bulk write. Failed documents are reported and kept, never lost.

The encoder (this thread) works on the next batch while a writer thread has the previous bulk request in
flight. Bulk requests are cut by document count and by bytes. Items that fail with 429 or 5xx, and
whole requests that fail with a connection error, 429 or 5xx, are retried (only those items) with capped
exponential backoff, a bounded number of times; what still fails is reported (id + reason) and written
to the dead-letter file. Writes are idempotent (by ``_id``), so a retried or resumed write never
duplicates a document.

A whole request that OpenSearch rejects (400, e.g. one id over 512 bytes) is split in halves until the
bad document is alone, so one bad item never sinks the valid documents sent with it. With
``stop_when_unavailable`` (file ingest, reindex), a batch that still cannot reach OpenSearch after the
retries stops the job with :class:`OpenSearchUnavailable` instead: that batch is not acknowledged (so a
checkpoint never moves past it) and nothing of it goes to the dead-letter file, because ``--resume``
reads it again.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from milco_os.errors import ConfigError, IngestError
from milco_os.opensearch.client import describe_transport_error
from milco_os.opensearch.documents import index_action
from milco_os.opensearch.indices import checked_record
from milco_os.pruning import PruningConfig
from milco_os.types import Encoded

if TYPE_CHECKING:
    from opensearchpy import OpenSearch

    from milco_os.runtime.encoder import SparseEncoder

log = logging.getLogger(__name__)

#: Marks a dead-letter line; ingest reads such lines back as the original document (so a dead-letter
#: file can be ingested again as it is).
DEAD_LETTER_MARK = "_milco_os_failed"
#: OpenSearch rejects a whole bulk request when one ``_id`` is longer than this (in UTF-8 bytes).
MAX_ID_BYTES = 512
#: Text per document (all text fields together). Longer texts are refused with a clear reason: encoding
#: cost grows with length (one 5 MB document ran for 29 minutes at 3 GB), and a retrieval unit that long
#: should be split into passages before indexing.
MAX_DOCUMENT_CHARS = 200_000


class OpenSearchUnavailable(IngestError):
    """OpenSearch stayed unreachable (or kept answering 429/5xx) after the bounded retries."""


@dataclass(frozen=True)
class UnreadableLine:
    """An input line that is not a JSON document (invalid JSON or invalid UTF-8)."""

    number: int
    problem: str
    raw: str


@dataclass(frozen=True)
class BulkConfig:
    """How documents are grouped and retried."""

    encode_batch: int = 32  # documents encoded together
    max_docs: int = 500  # per bulk request
    max_bytes: int = 8 * 1024 * 1024  # per bulk request
    max_retries: int = 5
    initial_backoff: float = 1.0  # seconds; doubles per attempt ...
    max_backoff: float = 30.0  # ... up to this

    def backoff(self, attempt: int) -> float:
        return min(self.max_backoff, self.initial_backoff * 2 ** (attempt - 1))


@dataclass
class IngestReport:
    indexed: int = 0
    failed: int = 0
    retried: int = 0
    elapsed_s: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def docs_per_s(self) -> float:
        return (self.indexed + self.failed) / self.elapsed_s if self.elapsed_s > 0 else 0.0


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


def is_retryable_status(status: int) -> bool:
    return status == 429 or status >= 500


@dataclass
class BulkOutcome:
    """What became of the documents of one write."""

    written: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (id, reason): the document is at fault
    unavailable: list[tuple[str, str]] = field(default_factory=list)  # (id, reason): OpenSearch was

    def add(self, other: BulkOutcome) -> None:
        self.written += other.written
        self.failed += other.failed
        self.unavailable += other.unavailable


class BulkWriter:
    """Sends bulk requests with bounded, capped-backoff retries of the failed items only."""

    def __init__(self, client: OpenSearch, config: BulkConfig, sleep: Callable[[float], None] = time.sleep) -> None:
        self.client = client
        self.config = config
        self.sleep = sleep
        self.retried = 0

    def chunks(self, actions: list[dict[str, Any]]) -> Iterator[list[tuple[dict[str, Any], str]]]:
        """Split into bulk bodies by count and bytes; each action is paired with its NDJSON lines."""
        chunk: list[tuple[dict[str, Any], str]] = []
        size = 0
        for action in actions:
            header = {"index": {"_index": action["_index"], "_id": action["_id"]}}
            lines = json.dumps(header) + "\n" + json.dumps(action["_source"], ensure_ascii=False) + "\n"
            n = len(lines.encode("utf-8"))
            if chunk and (len(chunk) >= self.config.max_docs or size + n > self.config.max_bytes):
                yield chunk
                chunk, size = [], 0
            chunk.append((action, lines))
            size += n
        if chunk:
            yield chunk

    def write(self, actions: list[dict[str, Any]]) -> BulkOutcome:
        """Write ``actions``, retrying what failed for OpenSearch's reasons (bounded)."""
        outcome = BulkOutcome()
        for chunk in self.chunks(actions):
            outcome.add(self._write_chunk(chunk))
        return outcome

    def _write_chunk(self, chunk: list[tuple[dict[str, Any], str]]) -> BulkOutcome:
        from opensearchpy.exceptions import ConnectionError as TransportConnectionError
        from opensearchpy.exceptions import TransportError

        outcome = BulkOutcome()
        pending = chunk
        attempt = 0
        while pending:
            retry: list[tuple[dict[str, Any], str]] = []
            reason = ""
            try:
                resp = self.client.bulk(body="".join(lines for _, lines in pending))
            except TransportConnectionError as e:  # includes timeouts: nothing (or not all) was written
                retry, reason = pending, f"OpenSearch unreachable: {e.__class__.__name__}: {e.info or e.error}"
            except TransportError as e:
                status = e.status_code if isinstance(e.status_code, int) else 0
                reason = f"bulk request failed with HTTP {status}: {describe_transport_error(e)}"
                if is_retryable_status(status):
                    retry = pending
                elif len(pending) > 1:
                    # OpenSearch refused the whole request for one bad document: halve until it is alone,
                    # so the valid documents sent with it are still written.
                    half = len(pending) // 2
                    outcome.add(self._write_chunk(pending[:half]))
                    outcome.add(self._write_chunk(pending[half:]))
                else:
                    outcome.failed.append((str(pending[0][0]["_id"]), reason))
            else:
                for (action, lines), item in zip(pending, resp["items"], strict=True):
                    result = next(iter(item.values()))
                    status = int(result.get("status", 0))
                    if 200 <= status < 300:
                        outcome.written.append(str(action["_id"]))
                    elif is_retryable_status(status):
                        retry.append((action, lines))
                        reason = f"HTTP {status}: {json.dumps(result.get('error'))}"
                    else:
                        outcome.failed.append((str(action["_id"]), f"HTTP {status}: {json.dumps(result.get('error'))}"))
            if not retry:
                break
            attempt += 1
            if attempt > self.config.max_retries:
                outcome.unavailable += [
                    (str(a["_id"]), f"{reason} (gave up after {self.config.max_retries} retries)") for a, _ in retry
                ]
                break
            delay = self.config.backoff(attempt)
            log.warning("retrying %d documents in %.1fs (attempt %d): %s", len(retry), delay, attempt, reason)
            self.retried += len(retry)
            self.sleep(delay)
            pending = retry
        return outcome


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
        client: OpenSearch,
        index: str,
        encoder: SparseEncoder,
        *,
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
        self.encoder = encoder
        self.config = config or BulkConfig()
        self.record = checked_record(client, index, encoder.info)
        self.text_fields: list[str] = self.record["fields"]["text"]
        self.pivot_field = self.record["fields"]["pivot"]
        self.echo_field = self.record["fields"]["echo"]
        self.pivot_rule, self.echo_rule = PruningConfig(**self.record["document_pruning"]).rules()
        self.writer = BulkWriter(client, self.config, sleep=sleep)
        self.dead_letter = DeadLetter(dead_letter, append=append_dead_letter)

    def encode_batch(
        self, docs: list[Any]
    ) -> tuple[list[dict[str, Any]], dict[str, Any], list[tuple[Any, str]]]:
        """Validate and encode one batch: (bulk actions, {id: original doc}, [(invalid doc, reason)])."""
        valid, invalid = [], []
        for doc in docs:
            problem = validate_document(doc, self.text_fields, self.id_field, self.max_chars)
            if problem:
                invalid.append((doc, problem))
            else:
                valid.append(doc)
        encoded = self.encoder.encode_documents([document_text(d, self.text_fields) for d in valid])
        actions, originals = [], {}
        for doc, enc in zip(valid, encoded, strict=True):
            pruned = Encoded(self.pivot_rule.apply(enc.pivot), self.echo_rule.apply(enc.echo))
            doc_id = str(doc[self.id_field])
            fields = {k: v for k, v in doc.items() if k != self.id_field}
            actions.append(
                index_action(self.index, doc_id, fields, pruned, pivot_field=self.pivot_field,
                             echo_field=self.echo_field)
            )
            originals[doc_id] = doc
        return actions, originals, invalid

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
        # One batch in flight while the next is encoded; a bounded queue keeps memory flat.
        work: queue.Queue[tuple[Any, int, list[dict[str, Any]], dict[str, Any], list[tuple[Any, str]]] | None] = (
            queue.Queue(maxsize=1)
        )
        errors: list[BaseException] = []
        lock = threading.Lock()

        def writer() -> None:
            try:
                while (item := work.get()) is not None:
                    tag, n_docs, actions, originals, invalid = item
                    outcome = self.writer.write(actions)
                    if outcome.unavailable and self.stop_when_unavailable:
                        # Not acknowledged: the checkpoint stays before this batch and --resume reads it again.
                        msg = f"writing {self.index!r}: {outcome.unavailable[0][1]}"
                        raise OpenSearchUnavailable(msg, outcome.unavailable)
                    with lock:  # the batch is acknowledged: account for every document of it, in order
                        for doc, reason in invalid:
                            self._fail(report, doc, reason)
                        report.indexed += len(outcome.written)
                        for doc_id, reason in outcome.failed + outcome.unavailable:
                            self._fail(report, originals.get(doc_id, {self.id_field: doc_id}), reason)
                        report.retried = self.writer.retried
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
                actions, originals, invalid = self.encode_batch(batch)
                work.put((tag, len(batch), actions, originals, invalid))
        finally:
            work.put(None)
            thread.join()
            self.dead_letter.close()
        if errors:
            raise errors[0]
        if refresh:
            self.client.indices.refresh(index=self.index)
        report.elapsed_s = time.monotonic() - start
        return report

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
    client: OpenSearch,
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
