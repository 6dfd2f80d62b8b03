"""Bad input at the command line: every command answers with exit code 1 and exactly one line on stderr
naming the option and the problem — no traceback, no credentials — against a real node of each engine where the
problem is one the engine finds (a result window too large, ...)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from milco_os.cli import app
from milco_os.opensearch.indices import create_index
from milco_os.specs import IndexSpec

PASSWORD = "hunter2-not-shown"


@pytest.fixture(scope="module")
def searchable(engine_client, splade_tiny) -> str:  # noqa: ANN001
    """An index on the engine under test."""
    name = "test-cli-bad-input"
    engine_client.indices.delete(index=name, ignore_unavailable=True)
    create_index(engine_client, name, splade_tiny.info, IndexSpec(replicas=0))
    yield name
    engine_client.indices.delete(index=name, ignore_unavailable=True)


def cases(url: str, index: str, tmp: Path) -> list[tuple[list[str], dict[str, str], str]]:
    """(arguments, extra environment, a fragment the one error line must contain)."""
    garbage = tmp / "missing.jsonl"
    search = ["search", "heart attack", "--index", index, "--url", url, "--model", "splade-tiny"]
    create = ["index", "create", "x-new", "--url", url, "--model", "splade-tiny"]
    reindex = ["reindex", "--source", index, "--dest", "x-dest", "--text-field", "text", "--url", url,
               "--model", "splade-tiny"]
    return [
        ([*search[:4], "--url", "not a url"], {}, "--url / MILCO_OS_OPENSEARCH_URL"),
        ([*search[:4], "--url", "http://127.0.0.1:99999"], {}, "between 1 and 65535"),
        ([*search[:4], "--url", "ftp://127.0.0.1:9200"], {}, "http:// or https://"),
        ([*search[:4], "--url", f"http://admin:{PASSWORD}@127.0.0.1:1"], {}, "cannot reach OpenSearch"),
        ([*search[:4], "--url", f"ftp://admin:{PASSWORD}@127.0.0.1:1"], {}, "http:// or https://"),
        ([*search, "--timeout", "0"], {}, "--timeout"),
        (search, {"MILCO_OS_OPENSEARCH_TIMEOUT": "abc"}, "MILCO_OS_OPENSEARCH_TIMEOUT"),
        ([*search, "--filter", '{"bogus": 1}'], {}, "--filter: filters[0]"),
        ([*search, "--filter", '{"script": {"script": "1"}}'], {}, "script"),
        ([*search, "--filter", "{not json"], {}, "--filter"),
        ([*search, "--from", "20000"], {}, "Result window is too large"),
        ([*search, "--query-prune", "top_k:inf"], {}, "--query-prune"),
        ([*search, "--query-prune", "top_k:1e400"], {}, "--query-prune"),
        ([*search, "--hybrid", "1e308"], {}, "hybrid weight"),
        ([*search[:2], "--index", "_search", *search[4:]], {}, "--index: index name '_search'"),
        ([*create, "--doc-prune", "mass:2"], {}, "--doc-prune"),
        ([*create, "--doc-prune", "top_k:1,top_k:2,top_k:3"], {}, "--doc-prune: invalid pruning"),
        ([*create[:2], "Upper", *create[3:]], {}, "lowercase"),
        ([*reindex, "--doc-prune", "top_k:0"], {}, "--doc-prune"),
        ([reindex[0], "--source", "bad/name", *reindex[3:]], {}, "--source"),
        (["ingest", str(garbage), "--index", index, "--url", url], {}, "no such file"),
        (["ingest", str(garbage), "--index", "_bad", "--url", url], {}, "--index"),
        (["encode", "x", "--doc-prune", "top_k:inf", "--model", "splade-tiny"], {}, "--doc-prune"),
        (["encode", "x", "--query-prune", "top_k:3", "--model", "splade-tiny"], {}, "--query-prune: does not apply"),
        (["cluster", "up", "--port", "99999"], {}, "--port 99999"),
        (["index", "info", "no-such-index-anywhere", "--url", url], {}, "no-such-index-anywhere"),
    ]


def test_every_bad_input_gets_one_clear_line(engine_settings, searchable: str, cache_dir: Path,  # noqa: ANN001
                                             tmp_path: Path) -> None:
    runner = CliRunner()
    for args, env, fragment in cases(engine_settings.opensearch_url, searchable, tmp_path):
        result = runner.invoke(app, args, env={"MILCO_OS_CACHE_DIR": str(cache_dir), **env})
        lines = result.stderr.splitlines()
        where = f"milco-os {' '.join(args)} -> exit {result.exit_code}, stderr {result.stderr!r}"
        assert result.exit_code == 1, where
        assert isinstance(result.exception, SystemExit), f"{where}: {result.exception!r}"  # not an escaped error
        assert len(lines) == 1 and lines[0].startswith("error: "), where
        assert fragment in lines[0], where
        assert PASSWORD not in result.stderr + result.stdout, where


def test_a_real_process_prints_no_traceback(engine_settings, searchable: str, cache_dir: Path) -> None:  # noqa: ANN001
    """The same through a real interpreter (what a user sees), for an error the engine itself raises."""
    run = subprocess.run(
        [sys.executable, "-m", "milco_os.cli", "search", "x", "--index", searchable, "--from", "20000",
         "--url", engine_settings.opensearch_url, "--model", "splade-tiny", "--cache-dir", str(cache_dir)],
        capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert run.stderr.strip().count("\n") == 0 and "Result window is too large" in run.stderr


def test_usage_errors_are_one_line_too() -> None:
    for args, fragment in ((["search", "x", "--index", "i", "--size", "0"], "--size"),
                           (["reindex", "--source", "a"], "--dest"), (["no-such-command"], "no-such-command")):
        run = subprocess.run([sys.executable, "-m", "milco_os.cli", *args], capture_output=True, text=True, timeout=120)
        assert run.returncode == 2 and run.stderr.count("\n") == 1 and fragment in run.stderr, run.stderr


def test_unreadable_lines_are_reported_as_such(engine_settings, searchable: str, cache_dir: Path,  # noqa: ANN001
                                               tmp_path: Path) -> None:
    opensearch_url = engine_settings.opensearch_url
    source = tmp_path / "docs.jsonl"
    source.write_bytes(b'{"id": "1", "text": "heart attack"}\n{oops\n\xff\xfe\n')
    result = CliRunner().invoke(app, ["ingest", str(source), "--index", searchable, "--url", opensearch_url,
                                      "--model", "splade-tiny"], env={"MILCO_OS_CACHE_DIR": str(cache_dir)})
    assert result.exit_code == 1
    assert "line 2: invalid JSON" in result.stderr and "line 3: not valid UTF-8" in result.stderr
    assert "field 'id'" not in result.stderr
    assert "indexed 1, failed 2" in result.stdout
    checkpoint = source.with_name(source.name + ".milco-os-checkpoint.json")
    assert checkpoint.exists()  # documents failed: the run's record stays
