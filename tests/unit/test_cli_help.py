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
        (["cluster", "up"], ["--port", "--version", "--archive", "--heap", "--fresh", "--cache-dir", "--timeout"]),
        (["cluster", "down"], ["--port", "--timeout"]),
        (["cluster", "status"], ["--port", "--json"]),
        (["demo"], ["--model", "--port", "--index"]),
        (["encode"], ["--model", "--kind", "--runtime", "--quantize", "--prune", "--prune-echo"]),
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
