"""Pure parts of the local-node manager (the real start/stop is in tests/integration)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from milco_os.errors import ClusterError
from milco_os.localnode import LocalNode, _extract, archive_version, java_major, required_java


def test_required_java() -> None:
    assert required_java("2.19.6") == 11
    assert required_java("3.3.0") == 21


def test_java_major_of_missing_binary_is_none(tmp_path: Path) -> None:
    assert java_major(tmp_path / "java") is None


def test_extract_keeps_executable_bits_and_finds_home(tmp_path: Path) -> None:
    archive = tmp_path / "os.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("opensearch-9.9.9/bin/opensearch")
        info.external_attr = 0o755 << 16
        zf.writestr(info, "#!/bin/sh\n")
        zf.writestr("opensearch-9.9.9/lib/opensearch-9.9.9.jar", "")
    home = _extract(archive, tmp_path / "out")
    assert (home / "bin" / "opensearch").stat().st_mode & 0o111
    assert archive_version(home) == "9.9.9"


def test_archive_without_opensearch_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "other.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("readme.txt", "hello")
    with pytest.raises(ClusterError, match="no bin/opensearch"):
        _extract(archive, tmp_path / "out")


def test_unknown_archive_type_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "os.rar"
    archive.write_bytes(b"x")
    with pytest.raises(ClusterError, match="expected a .zip"):
        LocalNode(tmp_path, 9299).install(archive=archive)


def test_invalid_port_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ClusterError, match="--port 70000"):
        LocalNode(tmp_path, 70000)


def test_missing_modules_are_added_from_cached_jars(tmp_path: Path) -> None:
    from milco_os.localnode import EXTRA_MODULES

    node = LocalNode(tmp_path, 9299)
    home = tmp_path / "home"
    (home / "modules").mkdir(parents=True)
    archives = node.root / "archives"
    archives.mkdir(parents=True)
    assert [s.name for s in EXTRA_MODULES] == ["mapper-extras", "analysis-common"]
    for spec in EXTRA_MODULES:
        with zipfile.ZipFile(archives / spec.jar_name("2.19.6"), "w") as jar:  # cached: no Maven call
            jar.writestr(spec.classname.replace(".", "/") + ".class", b"")
        node._add_module(home, "2.19.6", spec)
    descriptor = (home / "modules" / "analysis-common" / "plugin-descriptor.properties").read_text()
    assert "classname=org.opensearch.analysis.common.CommonAnalysisPlugin\n" in descriptor
    assert "opensearch.version=2.19.6\n" in descriptor and "java.version=11\n" in descriptor
    assert (home / "modules" / "analysis-common" / "analysis-common-2.19.6.jar").exists()
    assert (home / "modules" / "mapper-extras" / "mapper-extras-client-2.19.6.jar").exists()
    # OpenSearch 3.x renamed a module's XPlugin to XModulePlugin: the descriptor names what the jar has.
    home3 = tmp_path / "home3"
    (home3 / "modules").mkdir(parents=True)
    spec = EXTRA_MODULES[1]
    with zipfile.ZipFile(archives / spec.jar_name("3.3.2"), "w") as jar:
        jar.writestr("org/opensearch/analysis/common/CommonAnalysisModulePlugin.class", b"")
    node._add_module(home3, "3.3.2", spec)
    descriptor = (home3 / "modules" / "analysis-common" / "plugin-descriptor.properties").read_text()
    assert "classname=org.opensearch.analysis.common.CommonAnalysisModulePlugin\n" in descriptor
    assert "java.version=21\n" in descriptor


# ------------------------------------------------------------------------------------------ clusters (--nodes N)
def fake_home(tmp_path: Path) -> Path:
    """Just enough of a distribution for _write_config: its config directory."""
    home = tmp_path / "dist"
    (home / "config").mkdir(parents=True)
    (home / "config" / "jvm.options").write_text("-XX:HeapDumpPath=data\n-Xlog:gc*:file=logs/gc.log\n")
    (home / "config" / "log4j2.properties").write_text("status = error\n")
    (home / "config" / "opensearch.yml").write_text("cluster.name: stock\n")
    return home


def written_yml(conf: Path) -> dict:
    import yaml

    return yaml.safe_load((conf / "opensearch.yml").read_text())


def test_single_node_config_is_unchanged(tmp_path: Path) -> None:
    node = LocalNode(tmp_path, 9299)
    conf = node._write_config(fake_home(tmp_path), "1g")
    assert written_yml(conf) == {
        "cluster.name": "milco-os-local",
        "node.name": "milco-os-9299",
        "network.host": "127.0.0.1",
        "http.port": 9299,
        "transport.port": "9300-9399",
        "discovery.type": "single-node",
        "path.data": str(node.node_dir / "data"),
        "path.logs": str(node.node_dir / "logs"),
        "cluster.routing.allocation.disk.threshold_enabled": False,
        "indices.query.bool.max_clause_count": 8192,
    }
    assert (conf / "heap").read_text() == "1g"
    assert f"HeapDumpPath={node.node_dir / 'data'}" in (conf / "jvm.options").read_text()


def test_cluster_member_config_names_every_member(tmp_path: Path) -> None:
    from milco_os.localnode import ClusterMembership

    membership = ClusterMembership((9270, 9271, 9272), (10270, 10271, 10275))
    node = LocalNode(tmp_path, 9271)
    yml = written_yml(node._write_config(fake_home(tmp_path), "512m", membership=membership))
    assert yml["cluster.name"] == "milco-os-local-9270"
    assert yml["node.name"] == "milco-os-9271"
    assert yml["http.port"] == 9271
    assert yml["transport.port"] == 10271  # fixed, not a range
    assert yml["discovery.seed_hosts"] == ["127.0.0.1:10270", "127.0.0.1:10271", "127.0.0.1:10275"]
    assert yml["cluster.initial_cluster_manager_nodes"] == ["milco-os-9270", "milco-os-9271", "milco-os-9272"]
    assert "discovery.type" not in yml and "node.roles" not in yml  # default roles: cluster-manager-eligible, data
    assert yml["path.data"] == str(node.node_dir / "data") and yml["network.host"] == "127.0.0.1"


def write_node_json(node: LocalNode, **fields: object) -> None:
    import json

    record = {"version": "2.19.6", "port": node.port, "pid": 1, "url": node.url, "home": "h",
              "node_dir": str(node.node_dir), "user": "u", "started_at": 0.0} | fields
    node.node_dir.mkdir(parents=True, exist_ok=True)
    (node.node_dir / "node.json").write_text(json.dumps(record))


def test_node_json_without_cluster_fields_is_a_single_node(tmp_path: Path) -> None:
    node = LocalNode(tmp_path, 9299)
    write_node_json(node)  # written before clusters existed
    info = node.info()
    assert info is not None and info.members() == [9299] and info.transport_port is None
    write_node_json(node, cluster_ports=[9298, 9299], transport_port=10299)
    info = node.info()
    assert info is not None and info.members() == [9298, 9299] and info.transport_port == 10299


def test_membership_conflicts_are_refused_unless_fresh(tmp_path: Path) -> None:
    single = LocalNode(tmp_path, 9270)
    write_node_json(single)  # pid 1 is not OpenSearch: not running
    (single.node_dir / "data" / "nodes").mkdir(parents=True)
    with pytest.raises(ClusterError, match="holds the data of a single node.*--fresh"):
        single.check_membership([9270, 9271, 9272], fresh=False)
    single.check_membership([9270, 9271, 9272], fresh=True)
    single.check_membership([9270], fresh=False)  # as before: fine

    member = LocalNode(tmp_path, 9281)
    write_node_json(member, cluster_ports=[9280, 9281, 9282], transport_port=10281)
    member.check_membership([9280, 9281, 9282], fresh=False)
    member.check_membership([9281], fresh=False)  # no data yet: nothing to lose
    (member.node_dir / "data" / "nodes").mkdir(parents=True)
    with pytest.raises(ClusterError, match="one of the 3-node cluster on port 9280 .* cannot start as a single node"):
        member.check_membership([9281], fresh=False)
    with pytest.raises(ClusterError, match="cannot start as one of the 2-node cluster"):
        member.check_membership([9280, 9281], fresh=False)


def test_multi_node_cluster_refuses_secure_and_plugins(tmp_path: Path) -> None:
    from milco_os.errors import ConfigError
    from milco_os.localnode import LocalCluster

    cluster = LocalCluster(tmp_path, 9290, 3)
    assert cluster.ports == [9290, 9291, 9292] and cluster.name == "milco-os-local-9290"
    with pytest.raises(ConfigError, match="--nodes 3 with --secure: not supported yet"):
        cluster.up(secure=True)
    with pytest.raises(ConfigError, match="--nodes 3 with --plugins: not supported yet"):
        cluster.up(plugins=("knn",))
    with pytest.raises(ClusterError, match="--heap"):
        cluster.up(heap="lots")
    with pytest.raises(ClusterError, match="above 65535"):
        LocalCluster(tmp_path, 65535, 2)


def test_cluster_of_a_port_follows_node_json(tmp_path: Path) -> None:
    from milco_os.localnode import LocalCluster

    assert LocalCluster.of(tmp_path, 9250).ports == [9250]  # nothing recorded: that node alone
    write_node_json(LocalNode(tmp_path, 9271), cluster_ports=[9270, 9271, 9272], transport_port=10271)
    assert LocalCluster.of(tmp_path, 9271).ports == [9270, 9271, 9272]


def test_transport_ports_are_recorded_and_reused(tmp_path: Path) -> None:
    import socket

    from milco_os.localnode import LocalCluster, free_transport_port

    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        busy = blocker.getsockname()[1]
        if busy <= 64000:
            assert free_transport_port(busy - 1000, set()) != busy  # the next one up
        assert free_transport_port(20000, {21000}) != 21000
        cluster = LocalCluster(tmp_path, 9270, 3)
        write_node_json(cluster.members[0], cluster_ports=[9270, 9271, 9272], transport_port=23456)
        write_node_json(cluster.members[1], cluster_ports=[9270, 9271], transport_port=23457)  # another cluster
        write_node_json(cluster.members[2], cluster_ports=[9270, 9271, 9272], transport_port=busy)
        membership = cluster._membership(running=set())
    assert membership.http_ports == (9270, 9271, 9272)
    assert membership.transport_ports[0] == 23456  # recorded: reused
    assert membership.transport_ports[1] != 23457  # recorded for another layout: chosen anew
    assert membership.transport_ports[2] != busy  # recorded but taken by another process: chosen anew
    assert len(set(membership.transport_ports)) == 3


def test_log_tail_reads_the_newest_log(tmp_path: Path) -> None:
    import os

    node = LocalNode(tmp_path, 9271)
    write_node_json(node, cluster_ports=[9270, 9271], transport_port=10271)
    logs = node.node_dir / "logs"
    logs.mkdir()
    assert node.log_tail() == "(no log output)"
    (logs / "milco-os-local-9270.log").write_text("an earlier run\n")  # the cluster's log file
    (logs / "console.log").write_text("Error occurred during initialization of VM\n")
    os.utime(logs / "milco-os-local-9270.log", (1, 1))
    assert node.log_tail() == "Error occurred during initialization of VM"
    os.utime(logs / "console.log", (0, 0))
    assert node.log_tail() == "an earlier run"
