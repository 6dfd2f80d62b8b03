"""Ingest (IO): documents -> encode in batches -> bulk write; failed documents are reported, never lost."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from milco_os.errors import IngestError
from milco_os.opensearch.documents import index_action
from milco_os.opensearch.indices import checked_record
from milco_os.pruning import PruningConfig
from milco_os.types import Encoded

if TYPE_CHECKING:
    from opensearchpy import OpenSearch

    from milco_os.runtime.encoder import SparseEncoder


@dataclass
class IngestReport:
    indexed: int = 0
    failed: int = 0
    retried: int = 0
    elapsed_s: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)


def _batches(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def ingest(
    client: OpenSearch,
    index: str,
    documents: Iterable[dict[str, Any]],
    encoder: SparseEncoder,
    *,
    batch_size: int = 32,
    dead_letter: Path | None = None,
    on_progress: Callable[[int], None] | None = None,
    refresh: bool = False,
) -> IngestReport:
    """Encode and index ``documents`` (dicts with ``id`` and the index's text fields)."""
    from opensearchpy.helpers import streaming_bulk

    record = checked_record(client, index, encoder.info)
    text_fields: list[str] = record["fields"]["text"]
    pivot_field, echo_field = record["fields"]["pivot"], record["fields"]["echo"]
    pivot_rule, echo_rule = PruningConfig(**record["document_pruning"]).rules()
    report = IngestReport()
    start = time.monotonic()
    dead = open(dead_letter, "a", encoding="utf-8") if dead_letter else None  # noqa: SIM115
    try:
        for batch in _batches(documents, batch_size):
            valid, actions = [], []
            for doc in batch:
                problem = _validate(doc, text_fields)
                if problem:
                    _fail(report, dead, doc, problem)
                else:
                    valid.append(doc)
            texts = ["\n".join(str(doc.get(f) or "") for f in text_fields) for doc in valid]
            for doc, enc in zip(valid, encoder.encode_documents(texts), strict=True):
                pruned = Encoded(pivot_rule.apply(enc.pivot), echo_rule.apply(enc.echo))
                fields = {k: v for k, v in doc.items() if k != "id"}
                actions.append(
                    index_action(index, str(doc["id"]), fields, pruned, pivot_field=pivot_field, echo_field=echo_field)
                )
            by_id = {str(doc["id"]): doc for doc in valid}
            for ok, item in streaming_bulk(
                client, actions, raise_on_error=False, raise_on_exception=False, max_retries=3, initial_backoff=1
            ):
                result = item.get("index", {})
                if ok:
                    report.indexed += 1
                else:
                    doc_id = str(result.get("_id"))
                    reason = json.dumps(result.get("error", result))
                    _fail(report, dead, by_id.get(doc_id, {"id": doc_id}), reason)
            if on_progress:
                on_progress(len(batch))
        if refresh:
            client.indices.refresh(index=index)
    finally:
        if dead:
            dead.close()
    report.elapsed_s = time.monotonic() - start
    return report


def _validate(doc: Any, text_fields: list[str]) -> str | None:
    if not isinstance(doc, dict):
        return f"a document must be a JSON object, got {type(doc).__name__}"
    doc_id = doc.get("id")
    if doc_id is None or (isinstance(doc_id, str) and not doc_id.strip()):
        return "missing 'id'"
    if not isinstance(doc_id, (str, int)):
        return f"'id' must be a string or integer, got {type(doc_id).__name__}"
    for f in text_fields:
        value = doc.get(f)
        if value is not None and not isinstance(value, str):
            return f"field {f!r} must be a string, got {type(value).__name__}"
    if all(doc.get(f) in (None, "") for f in text_fields):
        return f"no text in any of the fields {text_fields}"
    return None


def _fail(report: IngestReport, dead: Any, doc: Any, reason: str) -> None:
    doc_id = str(doc.get("id")) if isinstance(doc, dict) else "?"
    report.failed += 1
    report.failures.append((doc_id, reason))
    if dead is not None:
        dead.write(json.dumps({"document": doc, "reason": reason}, ensure_ascii=False) + "\n")


__all__ = ["IngestError", "IngestReport", "ingest"]
