"""Pure parts of the engine a local node runs (`cluster up --engine elasticsearch`): the per-engine spec, the
Elasticsearch config file, archives, which node a port names, and the one-line refusals. The real nodes are in
tests/integration/test_elasticsearch_node.py."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from milco_os.cli import app
from milco_os.errors import ClusterError, ConfigError
from milco_os.localnode import (
    ELASTICSEARCH,
    ENGINES,
    OPENSEARCH,
    EngineSpec,
    LocalCluster,
    LocalNode,
    _extract,
    archive_version,
    engine_spec,
)
from milco_os.localnode.security import elasticsearch_security_settings


def test_engines_are_named_and_unknown_ones_refused() -> None:
    assert list(ENGINES) == ["opensearch", "elasticsearch"]
    assert engine_spec("elasticsearch") is ELASTICSEARCH and engine_spec(OPENSEARCH) is OPENSEARCH
    with pytest.raises(ConfigError, match="--engine 'solr': expected one of opensearch, elasticsearch"):
        engine_spec("solr")


def test_elasticsearch_spec() -> None:
    assert ELASTICSEARCH.default_version == "8.19.21"
    assert ELASTICSEARCH.distribution_artifact.format(version="8.19.21") == (
        "org.elasticsearch.distribution.integ-test-zip:elasticsearch:8.19.21:zip")
    assert ELASTICSEARCH.required_java("8.19.21") == 17 and ELASTICSEARCH.required_java("9.1.0") == 21
    assert OPENSEARCH.required_java("2.19.6") == 11 and OPENSEARCH.required_java("3.3.2") == 21
    assert (ELASTICSEARCH.binary, ELASTICSEARCH.config_file, ELASTICSEARCH.admin_user) == (
        "elasticsearch", "elasticsearch.yml", "elastic")
    assert not ELASTICSEARCH.takes_plugins and not ELASTICSEARCH.multi_node and ELASTICSEARCH.security_bundled


def test_both_engines_run_side_by_side() -> None:
    def ports(spec: EngineSpec) -> set[int]:
        first, last = map(int, spec.transport_ports.split("-"))
        return set(range(first, last + 1)) | {spec.default_port}

    assert not ports(OPENSEARCH) & ports(ELASTICSEARCH)
    assert LocalNode(Path("/c"), engine="elasticsearch").port == 9400 and LocalNode(Path("/c")).port == 9200
    assert LocalNode(Path("/c"), 9254, "elasticsearch").node_dir == Path("/c/elasticsearch/nodes/9254")


def fake_es_home(tmp_path: Path, modules: tuple[str, ...] = ()) -> Path:
    """Just enough of an Elasticsearch distribution for _write_config."""
    home = tmp_path / "elasticsearch-8.19.21"
    (home / "config").mkdir(parents=True)
    (home / "config" / "jvm.options").write_text("-XX:ErrorFile=hs_err_pid%p.log\n")
    (home / "config" / "elasticsearch.yml").write_text("cluster.name: stock\n")
    for module in ("x-pack-core", *modules):
        (home / "modules" / module).mkdir(parents=True)
    return home


def test_elasticsearch_config(tmp_path: Path) -> None:
    node = LocalNode(tmp_path, 9254, "elasticsearch")
    conf = node._write_config(fake_es_home(tmp_path), "512m")
    assert not (conf / "opensearch.yml").exists()
    assert yaml.safe_load((conf / "elasticsearch.yml").read_text()) == {
        "cluster.name": "milco-os-local",
        "node.name": "milco-os-9254",
        "network.host": "127.0.0.1",
        "http.port": 9254,
        "transport.port": "9500-9599",
        "discovery.type": "single-node",
        "path.data": str(node.node_dir / "data"),
        "path.logs": str(node.node_dir / "logs"),
        "cluster.routing.allocation.disk.threshold_enabled": False,
        "xpack.ml.enabled": False,
        "xpack.security.enabled": False,
    }


def test_elasticsearch_config_names_only_settings_of_modules_it_has(tmp_path: Path) -> None:
    # Elasticsearch refuses to start with a setting no loaded module defines (the zip has no ingest-geoip).
    node = LocalNode(tmp_path, 9254, "elasticsearch")
    official = fake_es_home(tmp_path / "official", modules=("ingest-geoip",))
    yml = yaml.safe_load((node._write_config(official, "512m") / "elasticsearch.yml").read_text())
    assert yml["ingest.geoip.downloader.enabled"] is False


def test_secure_elasticsearch_config(tmp_path: Path) -> None:
    settings = yaml.safe_load(elasticsearch_security_settings())
    assert settings["xpack.security.enabled"] is True
    for layer in ("http", "transport"):
        assert settings[f"xpack.security.{layer}.ssl.enabled"] is True
        assert settings[f"xpack.security.{layer}.ssl.certificate"] == "certs/node.pem"
        assert settings[f"xpack.security.{layer}.ssl.key"] == "certs/node-key.pem"
        assert settings[f"xpack.security.{layer}.ssl.certificate_authorities"] == ["certs/root-ca.pem"]
    node = LocalNode(tmp_path, 9255, "elasticsearch")
    yml = yaml.safe_load((node._write_config(fake_es_home(tmp_path), "512m", secure=True) / "elasticsearch.yml")
                         .read_text())
    assert yml["xpack.security.enabled"] is True and yml["xpack.security.http.ssl.enabled"] is True


def test_an_elasticsearch_archive_is_found_by_its_binary(tmp_path: Path) -> None:
    archive = tmp_path / "es.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("elasticsearch-8.19.21/bin/elasticsearch")
        info.external_attr = 0o755 << 16
        zf.writestr(info, "#!/bin/sh\n")
        for jar in ("elasticsearch-core-8.19.21.jar", "elasticsearch-8.19.21.jar"):
            zf.writestr(f"elasticsearch-8.19.21/lib/{jar}", "")
    home = _extract(archive, tmp_path / "out", "elasticsearch", "Elasticsearch")
    assert archive_version(home, "elasticsearch") == "8.19.21"
    with pytest.raises(ClusterError, match="no bin/opensearch inside"):
        _extract(archive, tmp_path / "out2")
    node = LocalNode(tmp_path / "cache", 9254, "elasticsearch")
    home, version = node.install(archive=archive)
    assert version == "8.19.21" and home.parent == tmp_path / "cache" / "elasticsearch" / "dist"


def write_node_json(node: LocalNode, started_at: float) -> None:
    record = {"version": node.engine.default_version, "port": node.port, "pid": 1, "url": node.url, "home": "h",
              "node_dir": str(node.node_dir), "user": "u", "started_at": started_at, "engine": node.engine.name}
    node.node_dir.mkdir(parents=True, exist_ok=True)
    (node.node_dir / "node.json").write_text(json.dumps(record))


def test_a_port_names_the_node_last_started_there(tmp_path: Path) -> None:
    assert LocalNode.find(tmp_path, 9254).engine is OPENSEARCH  # nothing recorded
    assert LocalNode.find(tmp_path).port == 9200
    assert LocalNode.find(tmp_path, engine="elasticsearch").port == 9400
    write_node_json(LocalNode(tmp_path, 9254, "elasticsearch"), started_at=2.0)
    found = LocalNode.find(tmp_path, 9254)
    assert found.engine is ELASTICSEARCH and found.info() is not None and found.info().engine == "elasticsearch"
    write_node_json(LocalNode(tmp_path, 9254), started_at=3.0)  # OpenSearch there since
    assert LocalNode.find(tmp_path, 9254).engine is OPENSEARCH
    assert LocalNode.find(tmp_path, 9254, "elasticsearch").engine is ELASTICSEARCH
    assert LocalCluster.of(tmp_path, 9254, "elasticsearch").members[0].engine is ELASTICSEARCH


def test_elasticsearch_refuses_plugins_and_clusters(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--plugins: OpenSearch plugins, which an Elasticsearch node does not take"):
        LocalNode(tmp_path, 9254, "elasticsearch").up(plugins=("knn",))
    with pytest.raises(ConfigError, match="--nodes 3 with --engine elasticsearch: not supported"):
        LocalCluster(tmp_path, 9254, 3, "elasticsearch")


@pytest.mark.parametrize(("args", "fragment"), [
    (["--engine", "solr"], "--engine 'solr': expected one of opensearch, elasticsearch"),
    (["--engine", "elasticsearch", "--plugins", "knn"], "--plugins: OpenSearch plugins"),
    (["--engine", "elasticsearch", "--nodes", "2"], "--nodes 2 with --engine elasticsearch"),
])
def test_cli_refuses_in_one_line(tmp_path: Path, args: list[str], fragment: str) -> None:
    result = CliRunner().invoke(app, ["cluster", "up", "--port", "9299", *args],
                                env={"MILCO_OS_CACHE_DIR": str(tmp_path)})
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], result.stderr
