"""Ingest (IO): documents -> encode -> bulk write. Failed documents are reported and kept, never lost.

The encoder (this thread) works on the next batch while a writer thread has the previous bulk request in
flight. Bulk requests are cut by document count and by bytes. Items that fail with 429 or 5xx, and
whole requests that fail with a connection error, 429 or 5xx, are retried (only those items) with capped
exponential backoff, a bounded number of times; what still fails is reported (id + reason) and written
to the dead-letter file. Writes are idempotent (by ``_id``), so a retried or resumed write never
duplicates a document.
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


def validate_document(doc: Any, text_fields: list[str], id_field: str = "id") -> str | None:
    """Why ``doc`` cannot be indexed, or None."""
    if not isinstance(doc, dict):
        return f"a document must be a JSON object, got {type(doc).__name__}"
    doc_id = doc.get(id_field)
    if doc_id is None or isinstance(doc_id, bool) or (isinstance(doc_id, str) and not doc_id.strip()):
        return f"field {id_field!r}: missing or empty"
    if not isinstance(doc_id, (str, int)):
        return f"field {id_field!r}: must be a string or integer, got {type(doc_id).__name__}"
    for f in text_fields:
        value = doc.get(f)
        if value is not None and not isinstance(value, str):
            return f"field {f!r}: must be a string, got {type(value).__name__}"
    if all(doc.get(f) in (None, "") for f in text_fields):
        return f"no text in any of the fields {text_fields}"
    return None


def document_text(doc: dict[str, Any], text_fields: list[str]) -> str:
    return "\n".join(str(doc[f]) for f in text_fields if doc.get(f))


def is_retryable_status(status: int) -> bool:
    return status == 429 or status >= 500


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

    def write(self, actions: list[dict[str, Any]]) -> tuple[list[str], list[tuple[str, str]]]:
        """Write ``actions``; returns (ids written, [(id, reason)] failed after retries)."""
        written: list[str] = []
        failed: list[tuple[str, str]] = []
        for chunk in self.chunks(actions):
            ok, bad = self._write_chunk(chunk)
            written += ok
            failed += bad
        return written, failed

    def _write_chunk(self, chunk: list[tuple[dict[str, Any], str]]) -> tuple[list[str], list[tuple[str, str]]]:
        from opensearchpy.exceptions import ConnectionError as TransportConnectionError
        from opensearchpy.exceptions import TransportError

        written: list[str] = []
        failed: list[tuple[str, str]] = []
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
                reason = f"bulk request failed with HTTP {status}: {e.error}"
                if is_retryable_status(status):
                    retry = pending
                else:
                    failed += [(str(a["_id"]), reason) for a, _ in pending]
            else:
                for (action, lines), item in zip(pending, resp["items"], strict=True):
                    result = next(iter(item.values()))
                    status = int(result.get("status", 0))
                    if 200 <= status < 300:
                        written.append(str(action["_id"]))
                    elif is_retryable_status(status):
                        retry.append((action, lines))
                        reason = f"HTTP {status}: {json.dumps(result.get('error'))}"
                    else:
                        failed.append((str(action["_id"]), f"HTTP {status}: {json.dumps(result.get('error'))}"))
            if not retry:
                break
            attempt += 1
            if attempt > self.config.max_retries:
                failed += [(str(a["_id"]), f"{reason} (gave up after {self.config.max_retries} retries)")
                           for a, _ in retry]
                break
            delay = self.config.backoff(attempt)
            log.warning("retrying %d documents in %.1fs (attempt %d): %s", len(retry), delay, attempt, reason)
            self.retried += len(retry)
            self.sleep(delay)
            pending = retry
        return written, failed


class DeadLetter:
    """Append-only JSONL of documents that could not be indexed, each with its reason."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._file = None

    def write(self, doc: Any, doc_id: str, reason: str) -> None:
        if self.path is None:
            return
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        record = {DEAD_LETTER_MARK: True, "id": doc_id, "reason": reason, "document": doc}
        self._file.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


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
    ) -> None:
        self.client = client
        self.id_field = id_field
        self.index = index
        self.encoder = encoder
        self.config = config or BulkConfig()
        self.record = checked_record(client, index, encoder.info)
        self.text_fields: list[str] = self.record["fields"]["text"]
        self.pivot_field = self.record["fields"]["pivot"]
        self.echo_field = self.record["fields"]["echo"]
        self.pivot_rule, self.echo_rule = PruningConfig(**self.record["document_pruning"]).rules()
        self.writer = BulkWriter(client, self.config, sleep=sleep)
        self.dead_letter = DeadLetter(dead_letter)

    def encode_batch(
        self, docs: list[Any]
    ) -> tuple[list[dict[str, Any]], dict[str, Any], list[tuple[Any, str]]]:
        """Validate and encode one batch: (bulk actions, {id: original doc}, [(invalid doc, reason)])."""
        valid, invalid = [], []
        for doc in docs:
            problem = validate_document(doc, self.text_fields, self.id_field)
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
        work: queue.Queue[tuple[Any, int, list[dict[str, Any]], dict[str, Any]] | None] = queue.Queue(maxsize=1)
        errors: list[BaseException] = []
        lock = threading.Lock()

        def writer() -> None:
            try:
                while (item := work.get()) is not None:
                    tag, n_docs, actions, originals = item
                    written, failed = self.writer.write(actions)
                    with lock:
                        report.indexed += len(written)
                        for doc_id, reason in failed:
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
                with lock:
                    for doc, reason in invalid:
                        self._fail(report, doc, reason)
                work.put((tag, len(batch), actions, originals))
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
        doc_id = str(doc.get(self.id_field)) if isinstance(doc, dict) else "?"
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
