"""Helpers of the fault-injection suite: run the CLI as a subprocess, wait (always bounded) for its
checkpoint, and check the two outcomes the contract allows: a clean stop, or a converged index."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

T = TypeVar("T")

#: Short English texts: splade-tiny (English) encodes them fast.
WORDS = (
    "tea heart attack green river mountain city music book garden window coffee train station school doctor "
    "bridge winter summer letter market bread cheese lamp forest ocean island road bicycle"
).split()

#: Lines of stderr that are not the error message: the progress bar's final render (rich prints it once
#: when stderr is not a terminal) and log records (``LEVEL logger: message``, e.g. the bounded retries).
_PROGRESS_LINE = re.compile(r"^\s*(ingest|reindex)\s.*(\d+/\d+|[━╸╺]).*\d+%")
_LOG_LINE = re.compile(r"^(DEBUG|INFO|WARNING) [\w.]+: ")


def tail(text: str, n: int = 3000) -> str:
    return text if len(text) <= n else "..." + text[-n:]


@dataclass
class Result:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    elapsed_s: float

    def describe(self) -> str:
        return (
            f"$ milco-os {' '.join(self.args)}\nexit code {self.returncode} after {self.elapsed_s:.1f}s\n"
            f"--- stdout ---\n{tail(self.stdout)}\n--- stderr ---\n{tail(self.stderr)}"
        )


class Run:
    """A CLI subprocess whose output goes to files (a pipe nobody reads could block it)."""

    def __init__(self, args: list[str], env: dict[str, str], out_dir: Path, name: str) -> None:
        self.args = args
        self.out_path = out_dir / f"{name}.stdout"
        self.err_path = out_dir / f"{name}.stderr"
        self.started = time.monotonic()
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "milco_os.cli", *args], env=env, stdin=subprocess.DEVNULL,
                stdout=out, stderr=err,
            )

    def running(self) -> bool:
        return self.proc.poll() is None

    def result(self) -> Result:
        assert self.proc.returncode is not None
        return Result(
            self.args, self.proc.returncode,
            self.out_path.read_text(encoding="utf-8", errors="replace"),
            self.err_path.read_text(encoding="utf-8", errors="replace"),
            time.monotonic() - self.started,
        )

    def wait(self, timeout: float, what: str = "the command") -> Result:
        """The finished run; a run still going after ``timeout`` seconds is killed and fails the test."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        if self.proc.returncode is None:
            self.kill()
            pytest.fail(f"{what} did not finish within {timeout:.0f}s (killed it)\n{self.result().describe()}")
        return self.result()

    def kill(self) -> None:
        """SIGKILL (a no-op once it has exited) and reap."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)


class Cli:
    """Runs ``milco-os`` as ``python -m milco_os.cli`` with the test's cache dir, splade-tiny (or ``model``) and the
    fault node."""

    def __init__(self, url: str, cache_dir: Path, out_dir: Path) -> None:
        self.url = url
        self.out_dir = out_dir
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MILCO_OS_") and k not in ("COLUMNS",)}
        self.env["MILCO_OS_CACHE_DIR"] = str(cache_dir)
        self.runs: list[Run] = []

    def start(self, *args: str, model: str = "splade-tiny") -> Run:
        full = [*args, "--model", model, "--url", self.url]
        run = Run(full, self.env, self.out_dir, f"run{len(self.runs):02d}-{args[0]}")
        self.runs.append(run)
        return run

    def run(self, *args: str, timeout: float = 180, model: str = "splade-tiny") -> Result:
        return self.start(*args, model=model).wait(timeout, f"milco-os {args[0]}")

    def kill_all(self) -> None:
        for run in self.runs:
            run.kill()


def wait_until(
    probe: Callable[[], T | None], timeout: float, what: str, watch: Run | None = None, interval: float = 0.01
) -> T:
    """Poll ``probe`` until it returns something truthy; fail after ``timeout`` seconds, or as soon as
    ``watch`` (the process expected to make it true) has exited."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if watch is not None and not watch.running():
            pytest.fail(f"waiting for {what}: the command exited first\n{watch.result().describe()}")
        if time.monotonic() > deadline:
            extra = f"\n{watch.args}" if watch is not None else ""
            pytest.fail(f"waiting for {what}: not within {timeout:.0f}s{extra}")
        time.sleep(interval)


def read_checkpoint(path: Path) -> dict[str, Any] | None:
    """A checkpoint's progress, or None while it does not exist (it is replaced atomically, never half-written)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))["progress"]
    except (OSError, ValueError):
        return None


def message_lines(stderr: str) -> list[str]:
    """The non-empty stderr lines that are neither the progress bar nor log records."""
    return [
        line for line in stderr.splitlines()
        if line.strip() and not _PROGRESS_LINE.match(line) and not _LOG_LINE.match(line)
    ]


def check_clean_stop(result: Result, checkpoint: Path) -> dict[str, Any]:
    """The contract for a run that could not finish: exit code 1, one line on stderr (no traceback) that
    says how to continue (--resume), and the checkpoint kept. Every violation is reported at once."""
    problems = []
    if result.returncode != 1:
        problems.append(f"exit code {result.returncode}, expected 1")
    if "Traceback" in result.stderr:
        problems.append("stderr has a traceback")
    lines = message_lines(result.stderr)
    if len(lines) != 1:
        problems.append(f"expected one line on stderr, got {len(lines)}: {lines[:8]}")
    text = " ".join(lines)
    if "--resume" not in text:
        problems.append("stderr does not say to re-run with --resume")
    if not re.search(r"saved|checkpoint|progress", text, re.IGNORECASE):
        problems.append("stderr does not say that the progress is saved")
    state = read_checkpoint(checkpoint)
    if state is None:
        problems.append(f"checkpoint {checkpoint.name} was not kept")
    if problems:
        pytest.fail("the run did not stop cleanly:\n  - " + "\n  - ".join(problems) + "\n" + result.describe())
    assert state is not None
    return state


def check_success(result: Result, checkpoint: Path) -> None:
    assert result.returncode == 0, result.describe()
    assert "Traceback" not in result.stderr, result.describe()
    assert not checkpoint.exists(), f"checkpoint {checkpoint} left behind after a complete run\n{result.describe()}"


def write_docs(path: Path, n: int, prefix: str = "doc") -> list[str]:
    """``n`` small documents, one JSON object a line; returns their ids in file order (line i+1 -> ids[i])."""
    ids = [f"{prefix}-{i:05d}" for i in range(n)]
    with open(path, "w", encoding="utf-8") as f:
        for i, doc_id in enumerate(ids):
            text = " ".join(WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(6))
            f.write(json.dumps({"id": doc_id, "text": f"{text} number {i}", "n": i}) + "\n")
    return ids


def dead_letter_ids(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [json.loads(line)["id"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def all_ids(client: Any, index: str) -> list[str]:
    """Every ``_id`` in ``index`` (a scroll over all of it, so duplicates would show), with the client library's own
    scan helper."""
    from milco_os.opensearch.engine import ELASTICSEARCH, engine_of

    if engine_of(client) is ELASTICSEARCH:
        from elasticsearch import helpers
    else:
        from opensearchpy import helpers  # type: ignore[no-redef]

    query = {"query": {"match_all": {}}, "_source": False}
    return [hit["_id"] for hit in helpers.scan(client, index=index, query=query, size=1000, scroll="2m")]


def assert_converged(client: Any, index: str, expected: Iterable[str]) -> None:
    """``index`` holds exactly ``expected``: the ids scanned, ``_count`` and the ``docs.count`` stat agree."""
    expected = set(expected)
    client.indices.refresh(index=index)
    ids = all_ids(client, index)
    count = int(client.count(index=index)["count"])
    stats = client.indices.stats(index=index, metric="docs")["_all"]["primaries"]["docs"]
    seen: set[str] = set()
    duplicates = {i for i in ids if i in seen or seen.add(i)}  # type: ignore[func-returns-value]
    missing, extra = expected - seen, seen - expected
    assert not duplicates, f"{len(duplicates)} duplicated ids, e.g. {sorted(duplicates)[:5]}"
    assert not missing, f"{len(missing)} documents missing, e.g. {sorted(missing)[:5]}"
    assert not extra, f"{len(extra)} unexpected documents, e.g. {sorted(extra)[:5]}"
    assert len(ids) == count == int(stats["count"]) == len(expected), (len(ids), count, stats, len(expected))


def slice_ids(client: Any, index: str, slice_id: int, slices: int) -> list[tuple[str, Any]]:
    """(id, sort value) of each document of one slice of ``index``, in reindex's order, read by its own slice reader
    (OpenSearch: ``_id`` slices in ``_id`` order, the sort value the id; Elasticsearch: the point in time's own slices
    and ``_shard_doc`` order, the same in every point in time while the index does not change)."""
    from milco_os.opensearch.engine import engine_of
    from milco_os.opensearch.reindex import _read_slice

    engine = engine_of(client)
    pit = engine.open_pit(client, index, keep_alive="2m")
    try:
        return [(h["_id"], h["sort"][0]) for hits in _read_slice(client, pit, slice_id, slices, None, 500, [])
                for h in hits]
    finally:
        engine.close_pit(client, pit)


