"""--ray and its options, parsed once at the edge (no Ray needed)."""

from __future__ import annotations

import pytest

from milco_os.cli_support import LOCAL_RAY, build_ray_options, ray_address_default
from milco_os.errors import ConfigError


@pytest.mark.parametrize(("args", "expected"), [
    (["ingest", "f.jsonl", "--ray"], ["ingest", "f.jsonl", "--ray", LOCAL_RAY]),
    (["ingest", "f.jsonl", "--ray", "--actors", "2"], ["ingest", "f.jsonl", "--ray", LOCAL_RAY, "--actors", "2"]),
    (["ingest", "f.jsonl", "--ray", "auto"], ["ingest", "f.jsonl", "--ray", "auto"]),
    (["ingest", "f.jsonl", "--index", "x"], ["ingest", "f.jsonl", "--index", "x"]),
])
def test_ray_without_an_address_means_a_ray_started_here(args: list[str], expected: list[str]) -> None:
    assert ray_address_default(args) == expected


def test_ray_options() -> None:
    assert build_ray_options(None, None, 1.0, 0.0) is None
    local = build_ray_options(LOCAL_RAY, None, 1.0, 0.0)
    assert local.address is None and local.actors is None
    remote = build_ray_options("10.0.0.5:6379", 4, 2.0, 0.5)
    assert (remote.address, remote.actors, remote.num_cpus, remote.num_gpus) == ("10.0.0.5:6379", 4, 2.0, 0.5)
    assert build_ray_options("ray://head.example:10001", None, 1.0, 0.0).address == "ray://head.example:10001"
    assert build_ray_options("auto", None, 1.0, 0.0).address == "auto"


@pytest.mark.parametrize(("given", "problem"), [
    (dict(ray=None, actors=2, num_cpus=1.0, num_gpus=0.0), "--actors: sets the Ray encoder actors; add --ray"),
    (dict(ray=None, actors=None, num_cpus=1.0, num_gpus=1.0), "--num-gpus: sets the Ray encoder actors; add --ray"),
    (dict(ray="docs.jsonl", actors=None, num_cpus=1.0, num_gpus=0.0), "--ray docs.jsonl: expected nothing"),
])
def test_bad_ray_options_name_the_option(given: dict, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem.replace(".", r"\.")):
        build_ray_options(**given)


def test_an_address_where_nothing_listens_is_refused_at_once() -> None:
    from milco_os.opensearch.ray_pool import check_reachable

    with pytest.raises(ConfigError, match="--ray 127.0.0.1:1: cannot connect to the Ray cluster"):
        check_reachable("127.0.0.1:1")
    check_reachable(None)  # a Ray started here, and ...
    check_reachable("auto")  # ... the local cluster: Ray finds (or refuses) those itself
