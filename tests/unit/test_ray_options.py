"""--ray and its options, parsed once at the edge (no Ray needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from milco_os.cli import app
from milco_os.cli_support import build_ray_options
from milco_os.errors import ConfigError

runner = CliRunner()


@pytest.mark.parametrize("command", [["ingest"], ["reindex"], ["upgrade"]])
def test_ray_is_a_flag_and_the_address_an_option_of_its_own(command: list[str]) -> None:
    from typer.main import get_command

    click_command = get_command(app)
    for name in command:
        click_command = click_command.commands[name]  # type: ignore[attr-defined]
    params = {flag: param for param in click_command.params for flag in param.opts}
    assert params["--ray"].is_flag and params["--ray"].default is False
    assert not params["--ray-address"].is_flag and params["--ray-address"].default is None


@pytest.mark.parametrize("args", [
    ["ingest", "--index", "docs", "--ray", "{file}"],  # the file right after --ray stays the file
    ["ingest", "{file}", "--index", "docs", "--ray"],
    ["ingest", "--ray", "--ray-address", "127.0.0.1:1", "--index", "docs", "{file}"],
])
def test_ray_never_takes_the_file(args: list[str], tmp_path: Path) -> None:
    missing = tmp_path / "data.jsonl"  # not there: the command stops at that, before Ray or OpenSearch
    result = runner.invoke(app, [a.format(file=missing) for a in args], terminal_width=200)
    assert result.exit_code == 1, result.output
    assert f"{missing}: no such file" in result.output and "Missing argument" not in result.output


def test_ray_options() -> None:
    assert build_ray_options(False, None, None, 1.0, 0.0) is None
    local = build_ray_options(True, None, None, 1.0, 0.0)
    assert local.address is None and local.actors is None
    remote = build_ray_options(True, "10.0.0.5:6379", 4, 2.0, 0.5)
    assert (remote.address, remote.actors, remote.num_cpus, remote.num_gpus) == ("10.0.0.5:6379", 4, 2.0, 0.5)
    assert build_ray_options(True, "ray://head.example:10001", None, 1.0, 0.0).address == "ray://head.example:10001"
    assert build_ray_options(True, "auto", None, 1.0, 0.0).address == "auto"


@pytest.mark.parametrize(("given", "problem"), [
    (dict(ray=False, ray_address=None, actors=2, num_cpus=1.0, num_gpus=0.0),
     "--actors: sets the Ray encoder actors; add --ray"),
    (dict(ray=False, ray_address=None, actors=None, num_cpus=1.0, num_gpus=1.0),
     "--num-gpus: sets the Ray encoder actors; add --ray"),
    (dict(ray=False, ray_address="auto", actors=None, num_cpus=1.0, num_gpus=0.0),
     "--ray-address: sets the Ray encoder actors; add --ray"),
    (dict(ray=True, ray_address="docs.jsonl", actors=None, num_cpus=1.0, num_gpus=0.0),
     "--ray-address docs.jsonl: expected auto, HOST:PORT"),
])
def test_bad_ray_options_name_the_option(given: dict, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem.replace(".", r"\.")):
        build_ray_options(**given)


def test_an_address_where_nothing_listens_is_refused_at_once() -> None:
    from milco_os.opensearch.ray_pool import check_reachable

    with pytest.raises(ConfigError, match="--ray-address 127.0.0.1:1: cannot connect to the Ray cluster"):
        check_reachable("127.0.0.1:1")
    check_reachable(None)  # a Ray started here, and ...
    check_reachable("auto")  # ... the local cluster: Ray finds (or refuses) those itself
