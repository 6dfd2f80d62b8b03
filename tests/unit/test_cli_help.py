"""Every command documents real options in --help."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from milco_os.cli import app

runner = CliRunner()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], ["cluster", "demo", "models", "version", "encode", "export-onnx", "serve"]),
        (["cluster"], ["up", "down", "status"]),
        (["cluster", "up"], ["--port", "--engine", "--version", "--archive", "--heap", "--fresh", "--cache-dir",
                             "--timeout"]),
        (["cluster", "down"], ["--port", "--engine", "--timeout"]),
        (["cluster", "status"], ["--port", "--engine", "--json"]),
        (["demo"], ["--model", "--port", "--index", "--pages-per-language", "--report"]),
        (["encode"], ["--model", "--kind", "--runtime", "--quantize", "--doc-prune", "--query-prune"]),
        (["index", "create"], ["--text-field", "--doc-prune", "--bm25", "--replicas"]),
        (["reindex"], ["--source", "--dest", "--text-field", "--doc-prune", "--resume", "--alias"]),
        (["search"], ["--index", "--query-prune", "--alpha", "--two-phase", "--hybrid", "--filter", "--explain"]),
        (["eval"], ["--dataset", "--doc-prune", "--alpha", "--model"]),
        (["export-onnx"], ["--model", "--out", "--quantize"]),
        (["models", "fetch"], ["--cache-dir"]),
        (["serve"], ["--host", "--port", "--model", "--url"]),
    ],
)
def test_help_lists_options(args: list[str], expected: list[str]) -> None:
    result = runner.invoke(app, [*args, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    for word in expected:
        assert word in result.output


def test_models_lists_the_default() -> None:
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0
    assert "milco-mini (default)" in result.output and "splade-tiny" in result.output


CONNECTION_FLAGS = ["--url", "--username", "--password-file", "--api-key-file", "--ca-certs", "--insecure", "--timeout"]
TALKS_TO_OPENSEARCH = [["index", "create"], ["index", "info"], ["ingest"], ["search"], ["reindex"], ["serve"], ["eval"]]


def options_of(path: list[str]) -> dict[str, object]:
    """The command's options as click sees them: each flag -> its default."""
    from typer.main import get_command

    command = get_command(app)
    for name in path:
        command = command.commands[name]  # type: ignore[attr-defined]
    return {flag: param.default for param in command.params for flag in param.opts}


@pytest.mark.parametrize("command", TALKS_TO_OPENSEARCH)
def test_every_command_that_talks_to_opensearch_takes_the_same_connection_flags(command: list[str]) -> None:
    options = options_of(command)
    for flag in CONNECTION_FLAGS:
        assert flag in options, (command, flag)
    assert options["--insecure"] is False and options["--url"] is None


def test_shared_options_have_one_name_and_one_default_everywhere() -> None:
    for command in (["index", "create"], ["reindex"]):
        options = options_of(command)
        assert options["--doc-prune"] == "none" and options["--text-field"] is None
        assert options["--replicas"] == 1 and options["--pivot-field"] == "milco_pivot"
    # Search prunes by selectivity by default, as the service does; encode has no index to read df from.
    from milco_os.service.schemas import SearchRequest
    from milco_os.specs import DEFAULT_ALPHA, DEFAULT_QUERY_PRUNE

    assert options_of(["search"])["--query-prune"] == DEFAULT_QUERY_PRUNE == "selective:0.2"
    assert SearchRequest(query="x").query_prune == DEFAULT_QUERY_PRUNE
    assert options_of(["search"])["--alpha"] is None and DEFAULT_ALPHA == 0.2  # None: the index's model's
    assert options_of(["encode"])["--doc-prune"] == options_of(["encode"])["--query-prune"] == "none"
    assert "--prune" not in options_of(["encode"]) and "--prune" not in options_of(["reindex"])


def test_every_training_stage_is_one_command_of_one_shape() -> None:
    from pathlib import Path

    from typer.main import get_command

    from milco_os.cli_admin import TRAIN_STAGES

    root = Path(__file__).resolve().parents[2]
    train = get_command(app).commands["train"]  # type: ignore[attr-defined]
    assert sorted(train.commands) == sorted(TRAIN_STAGES)
    for stage, (example, _) in TRAIN_STAGES.items():
        assert (root / example).is_file(), example  # the help's example config exists
        assert [p.name for p in train.commands[stage].params] == ["config", "cache_dir"]


def test_cli_module_stays_an_index_of_the_commands() -> None:
    """cli.py assembles the app; commands live in the module of their concern (issue 31: it had grown to ~800
    lines)."""
    from pathlib import Path

    import milco_os.cli

    lines = Path(milco_os.cli.__file__).read_text(encoding="utf-8").count("\n")
    assert lines < 450, f"milco_os/cli.py has {lines} lines; put new commands in a cli_<concern>.py module"
