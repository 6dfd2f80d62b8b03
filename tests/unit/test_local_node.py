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
