"""Bulk writes (IO): opensearch-py's ``streaming_bulk`` with our retries and classification on top.

``streaming_bulk`` cuts the actions into requests by count and by bytes and retries items answered with
429 (capped exponential backoff). On top of it, items that failed with a 5xx or because OpenSearch could
not be reached are retried (only those items), a bounded number of times, with the same backoff. A
whole request that OpenSearch refuses (400, e.g. one id over 512 bytes) is split in halves until the bad
document is alone, so one bad item never sinks the valid documents sent with it. Every action ends in
exactly one of :class:`BulkOutcome`'s lists: written, not found (a delete of an id the index does not
hold), superseded (an externally versioned write refused because a newer version of the id is stored), failed
(the document is at fault) or unavailable (OpenSearch was, after the retries). Writes are by ``_id``, so a
retried write never duplicates a document.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from milco_os.opensearch.client import describe_transport_error

if TYPE_CHECKING:
    from milco_os.opensearch.engine import Client

log = logging.getLogger(__name__)


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
class BulkOutcome:
    """What became of the documents of one write."""

    written: list[str] = field(default_factory=list)  # indexed, or deleted
    not_found: list[str] = field(default_factory=list)  # deletes of ids the index does not hold
    superseded: list[str] = field(default_factory=list)  # a newer external version of the id is stored
    failed: list[tuple[str, str]] = field(default_factory=list)  # (id, reason): the document is at fault
    unavailable: list[tuple[str, str]] = field(default_factory=list)  # (id, reason): OpenSearch was

    def add(self, other: BulkOutcome) -> None:
        self.written += other.written
        self.not_found += other.not_found
        self.superseded += other.superseded
        self.failed += other.failed
        self.unavailable += other.unavailable


def index_actions(index: str, documents: Iterable[tuple[str, dict[str, Any]]]) -> Iterator[dict[str, Any]]:
    """``(id, source)`` pairs -> bulk ``index`` actions (by id, so a repeated write overwrites)."""
    for doc_id, source in documents:
        yield {"_op_type": "index", "_index": index, "_id": str(doc_id), "_source": source}


def delete_actions(index: str, ids: Iterable[str]) -> Iterator[dict[str, Any]]:
    """Ids -> bulk ``delete`` actions."""
    for doc_id in ids:
        yield {"_op_type": "delete", "_index": index, "_id": str(doc_id)}


#: How OpenSearch and Elasticsearch word an external version conflict: "[id]: version conflict, current version
#: [7] is higher or equal to the one provided [5]".
_STORED_VERSION = re.compile(r"current version \[(\d+)\]")


def _ours_is_stored(action: dict[str, Any], result: dict[str, Any]) -> bool:
    """A version conflict where the stored version is the action's own: an earlier attempt of this very write got
    through (a request resent after its answer was lost), so the document is written, not superseded."""
    match = _STORED_VERSION.search(str((result.get("error") or {}).get("reason", "")))
    return match is not None and int(match.group(1)) == action.get("version")


def _retryable(status: Any) -> bool:
    """5xx, 429 or no HTTP answer at all (opensearch-py reports a connection error's status as "N/A")."""
    return not isinstance(status, int) or status == 429 or status >= 500


class BulkWriter:
    """Writes bulk actions (``_op_type``/``_index``/``_id``/``_source`` dicts); see the module docstring."""

    def __init__(self, client: Client, config: BulkConfig, sleep: Callable[[float], None] = time.sleep) -> None:
        self.client = client
        self.config = config
        self.sleep = sleep
        self.retried = 0  # items sent again because of a 5xx or an unreachable OpenSearch

    def write(self, actions: list[dict[str, Any]]) -> BulkOutcome:
        outcome = BulkOutcome()
        pending = actions
        attempt = 0
        while pending:
            retry, reason = self._send(pending, outcome)
            if not retry:
                break
            attempt += 1
            if attempt > self.config.max_retries:
                gave_up = f"{reason} (gave up after {self.config.max_retries} retries)"
                outcome.unavailable += [(str(a["_id"]), gave_up) for a in retry]
                break
            delay = self.config.backoff(attempt)
            log.warning("retrying %d documents in %.1fs (attempt %d): %s", len(retry), delay, attempt, reason)
            self.retried += len(retry)
            self.sleep(delay)
            pending = retry
        return outcome

    def _send(self, actions: list[dict[str, Any]], outcome: BulkOutcome) -> tuple[list[dict[str, Any]], str]:
        """One pass of ``streaming_bulk`` over ``actions``; returns the actions to retry and why."""
        from milco_os.opensearch.engine import connection_error, engine_of

        by_id: dict[str, deque[dict[str, Any]]] = defaultdict(deque)  # results name ids; ids may repeat
        for action in actions:
            by_id[str(action["_id"])].append(action)
        retry: list[dict[str, Any]] = []
        reason = ""
        refused: dict[int, tuple[Exception, list[dict[str, Any]]]] = {}  # whole requests refused (4xx)
        engine = engine_of(self.client)
        label = engine.label
        results = engine.streaming_bulk()(
            self.client, actions, chunk_size=self.config.max_docs, max_chunk_bytes=self.config.max_bytes,
            raise_on_error=False, raise_on_exception=False, max_retries=self.config.max_retries,
            initial_backoff=self.config.initial_backoff, max_backoff=self.config.max_backoff,  # type: ignore[arg-type]
        )
        try:
            for ok, item in results:
                result = next(iter(item.values()))
                doc_id = str(result.get("_id"))
                action = by_id[doc_id].popleft()
                status = result.get("status")
                if ok:
                    outcome.written.append(doc_id)
                elif status == 404 and result.get("result") == "not_found":  # a delete of an id that is not there
                    outcome.not_found.append(doc_id)
                elif status == 409 and action.get("version_type") == "external":  # expected: see ray_pool
                    (outcome.written if _ours_is_stored(action, result) else outcome.superseded).append(doc_id)
                elif (error := result.get("exception")) is not None and not _retryable(status):
                    refused.setdefault(id(error), (error, []))[1].append(action)
                elif status == 429:  # streaming_bulk already backed off and retried it max_retries times
                    gave_up = f"(gave up after {self.config.max_retries} retries)"
                    outcome.unavailable.append((doc_id, f"{label} is overloaded: {_item_error(result)} {gave_up}"))
                elif _retryable(status):
                    retry.append(action)
                    reason = _item_error(result)
                else:
                    outcome.failed.append((doc_id, _item_error(result)))
        except connection_error() as e:
            # opensearch-py's streaming_bulk reports a request that got no answer on each of its items; Elastic's
            # raises it: every action this pass has seen no answer for is retried, as on OpenSearch.
            retry += [action for waiting in by_id.values() for action in waiting]
            reason = _item_error({"exception": e})
        for error, part in refused.values():
            if len(part) == 1:
                outcome.failed.append((str(part[0]["_id"]), _item_error({"exception": error})))
            else:  # halve until the document OpenSearch refuses is alone
                half = len(part) // 2
                outcome.add(self.write(part[:half]))
                outcome.add(self.write(part[half:]))
        return retry, reason


def _item_error(result: dict[str, Any]) -> str:
    """One line for a failed item: OpenSearch's reason for it, or the error of its whole request."""
    from milco_os.opensearch.engine import connection_error, error_engine, error_status

    error = result.get("exception")
    if isinstance(error, connection_error()):
        detail = getattr(error, "info", None) or getattr(error, "error", None) or error
        return f"{error_engine(error).label} unreachable: {type(error).__name__}: {detail}"
    if error is not None:
        status = error_status(error) or 0
        return f"bulk request failed with HTTP {status}: {describe_transport_error(error)}"
    return f"HTTP {result.get('status')}: {json.dumps(result.get('error'))}"


def write_documents(
    client: Client, index: str, documents: Iterable[tuple[str, dict[str, Any]]], config: BulkConfig | None = None
) -> BulkOutcome:
    """Write ``(id, source)`` pairs to a plain index (e.g. a BM25 baseline) with the retries above."""
    return BulkWriter(client, config or BulkConfig()).write(list(index_actions(index, documents)))
