"""Library errors say what is wrong; the CLI adds how to fix it, chosen by the error's type."""

from __future__ import annotations

from pathlib import Path

import pytest

from milco_os.cli_support import fix_for
from milco_os.errors import ConfigError, IndexExists, IndexNotFound, ModelMismatch, OpenSearchUnavailable
from milco_os.opensearch.checkpoint import InterruptedJob, NothingToResume
from milco_os.opensearch.client import ConnectionProblem


def stopped(checkpoint: Path | None = None, dead_letter: Path | None = None) -> OpenSearchUnavailable:
    error = OpenSearchUnavailable("writing 'docs': HTTP 503")
    error.checkpoint, error.dead_letter = checkpoint, dead_letter
    return error


@pytest.mark.parametrize(
    ("error", "library_says", "cli_adds"),
    [
        (IndexNotFound("docs"), "index 'docs' does not exist", "milco-os index create docs"),
        (IndexExists("docs"), "index 'docs' already exists", "delete it first"),
        (ModelMismatch("index 'docs' was built with model 'a'", "docs", "a"), "built with model 'a'", "--model a"),
        (ModelMismatch("index 'docs' was not created by milco-os", "docs"), "not created by milco-os",
         "milco-os index create"),
        (InterruptedJob(Path("cp.json")), "interrupted run left the checkpoint cp.json", "--resume"),
        (NothingToResume(Path("cp.json")), "no checkpoint cp.json", "--resume:"),
        (ConnectionProblem("cannot reach OpenSearch at http://x:1 (ConnectionError)", "check --url"),
         "cannot reach OpenSearch", "check --url"),
        (stopped(checkpoint=Path("cp.json")), "HTTP 503", "progress is saved in cp.json"),
        (stopped(dead_letter=Path("failed.jsonl")), "HTTP 503", "not written are in failed.jsonl"),
        (ConfigError("--size: must be >= 1"), "--size: must be >= 1", ""),
    ],
)
def test_the_cli_adds_the_fix_to_what_the_library_says(error: Exception, library_says: str, cli_adds: str) -> None:
    assert library_says in str(error) and (not cli_adds or cli_adds not in str(error))
    line = fix_for(error)  # type: ignore[arg-type]
    assert library_says in line and cli_adds in line
    assert "\n" not in line
