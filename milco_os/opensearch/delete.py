"""Deleting documents (IO): bulk ``delete`` actions by id through :class:`~milco_os.opensearch.bulk.BulkWriter`, so
deletes get the same bounded retries as writes; an id that could not be deleted goes to a dead-letter file, whose
lines ``milco-os delete --ids-file`` reads again as they are."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from milco_os.errors import ConfigError
from milco_os.opensearch.bulk import BulkConfig, BulkWriter, delete_actions
from milco_os.opensearch.indices import index_record
from milco_os.opensearch.ingest import DeadLetter, JobProgress, UnreadableLine, batches, read_jsonl

if TYPE_CHECKING:
    from milco_os.opensearch.engine import Client

#: Ids deleted per round (each round is acknowledged and counted before the next).
ROUND = 5_000


@dataclass
class DeleteReport:
    deleted: list[str] = field(default_factory=list)
    not_found: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (id, reason), OpenSearch unavailable included
    unavailable: list[str] = field(default_factory=list)  # the failed ids that failed only because of that
    retried: int = 0


def delete_documents(
    client: Client,
    index: str,
    ids: Iterable[str],
    *,
    config: BulkConfig | None = None,
    dead_letter: Path | None = None,
    progress: JobProgress | None = None,
) -> DeleteReport:
    """Delete the documents ``ids`` (each once, in order) from a milco-os index or an alias of one; a deleted
    document is gone from search once this returns (the index is refreshed). ``progress`` gets the number of ids."""
    index_record(client, index)  # a missing index, or one milco-os did not build, is refused before anything
    unique = list(dict.fromkeys(str(i) for i in ids))
    report = DeleteReport()
    writer = BulkWriter(client, config or BulkConfig())
    dead = DeadLetter(dead_letter)
    if progress is not None:
        progress.start(len(unique), 0)
    try:
        for part in batches(unique, ROUND):
            outcome = writer.write(list(delete_actions(index, part)))
            report.deleted += outcome.written
            report.not_found += outcome.not_found
            for doc_id, reason in outcome.failed + outcome.unavailable:
                report.failed.append((doc_id, reason))
                dead.write({"id": doc_id}, doc_id, reason)
            report.unavailable += [doc_id for doc_id, _ in outcome.unavailable]
            if progress is not None:
                progress.advance(len(part))
    finally:
        dead.close()
    report.retried = writer.retried
    if report.deleted:
        client.indices.refresh(index=index)
    return report


def read_ids(path: Path | None) -> Iterator[str]:
    """The ids of a JSONL file (``None``: stdin): each line an id (a JSON string or number) or an object with an
    ``id`` (a document, or a dead-letter line of ingest or delete). A line that is neither is a one-line
    ConfigError naming it; nothing is deleted before the whole file has been read (the caller lists it first)."""
    where = "stdin" if path is None else str(path)
    if path is not None and not Path(path).is_file():
        msg = f"{path}: no such file"
        raise ConfigError(msg)
    for number, item in read_jsonl(path):
        if isinstance(item, UnreadableLine):
            msg = f"{where} line {number}: {item.problem}"
            raise ConfigError(msg)
        value: Any = item.get("id") if isinstance(item, dict) else item
        if isinstance(value, bool) or not isinstance(value, (str, int)) or str(value) == "":
            msg = f"{where} line {number}: expected an id (a string or number) or an object with an \"id\""
            raise ConfigError(msg)
        yield str(value)
