"""The distribution a local node runs: which version and artifacts, fetching them with Maven, unpacking them,
adding the modules OpenSearch's integration-test zip lacks (their descriptors), and the JDK it needs."""

from __future__ import annotations

import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from milco_os.errors import ClusterError

log = logging.getLogger(__name__)


#: The OpenSearch version milco-os pins: the newest 2.x on Maven Central that runs on JDK 11+.
#: docker-compose.yml pins the same image tag (a unit test keeps them equal).
OPENSEARCH_VERSION = "2.19.6"
#: The OpenSearch 3.x release the test command also runs the integration tests against (Java 21+), with
#: neural-search's SEISMIC index (3.3+; docs/seismic.md). Its integration-test zip ships the modules 2.x's lacks.
OPENSEARCH_3_VERSION = "3.6.0"
DISTRIBUTION_ARTIFACT = "org.opensearch.distribution.integ-test-zip:opensearch:{version}:zip"
MAPPER_EXTRAS_ARTIFACT = "org.opensearch.plugin:mapper-extras-client:{version}:jar"


@dataclass(frozen=True)
class ModuleSpec:
    """A module the integration-test zip lacks: one jar from Maven Central plus a written descriptor."""

    name: str
    artifact: str  # Maven coordinates with a {version} placeholder
    classname: str
    description: str
    extends: str = ""  # the module whose classes it uses (descriptor's extended.plugins)
    policy: str | None = None  # its plugin-security.policy, where it needs permissions

    def jar_name(self, version: str) -> str:
        artifact_id = self.artifact.split(":")[1]
        return f"{artifact_id}-{version}.jar"


#: Modules added to a distribution that lacks them. Neither jar needs anything outside the core lib/
#: (the analyzers come from lucene-analysis-common, which core ships). The official analysis-common
#: descriptor extends lang-painless (for its script filters only); without painless it stays empty.
EXTRA_MODULES = (
    ModuleSpec(
        "mapper-extras",
        MAPPER_EXTRAS_ARTIFACT,
        "org.opensearch.index.mapper.MapperExtrasPlugin",
        "Adds advanced field mappers (rank_feature, rank_features, ...)",
    ),
    ModuleSpec(
        "analysis-common",
        "org.opensearch.plugin:analysis-common:{version}:jar",
        "org.opensearch.analysis.common.CommonAnalysisPlugin",
        "Adds the built-in analyzers (language analyzers, cjk, ...)",
    ),
)

#: Marks a distribution (or a module's jars) as completely unpacked.
READY_MARK = ".milco-os-ready"


#: (major version, the Java it needs), newest first: OpenSearch 3.x needs 21, 2.x needs 11.
OPENSEARCH_JAVA = ((3, 21), (0, 11))


def required_java(version: str, java: tuple[tuple[int, int], ...] = OPENSEARCH_JAVA) -> int:
    """Minimum JDK major version for ``version``, by the table ``java`` (default: OpenSearch's): the first entry
    whose major version ``version`` reaches."""
    major = int(version.split(".")[0])
    return next(needed for since, needed in java if major >= since)


def java_major(java: Path) -> int | None:
    """Major version of a ``java`` binary, or None if it does not run."""
    import subprocess

    try:
        out = subprocess.run([str(java), "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not m:
        return None
    major = int(m.group(1))
    return int(m.group(2) or 0) if major == 1 else major  # "1.8.0" is Java 8


def find_java_home(min_major: int, engine: str = "OpenSearch", env_prefix: str = "OPENSEARCH") -> Path:
    """A JDK home with ``java`` >= ``min_major`` for ``engine`` (its title, for the message).

    Order: <env_prefix>_JAVA_HOME (OPENSEARCH_JAVA_HOME, ES_JAVA_HOME), JAVA_HOME, ``java`` on PATH, then the
    newest suitable JDK under /usr/lib/jvm. The first suitable one wins.
    """
    own = f"{env_prefix}_JAVA_HOME"
    preferred: list[Path] = [Path(os.environ[v]) for v in (own, "JAVA_HOME") if os.environ.get(v)]
    on_path = shutil.which("java")
    if on_path:
        preferred.append(Path(os.path.realpath(on_path)).parent.parent)
    jvm_dir = Path("/usr/lib/jvm")
    installed = sorted(p for p in jvm_dir.iterdir() if p.is_dir()) if jvm_dir.is_dir() else []
    seen: list[str] = []
    # The user's explicit choice (environment, PATH) wins when it is new enough ...
    for home in preferred:
        major = java_major(home / "bin" / "java")
        if major is not None:
            seen.append(f"{home} (Java {major})")
            if major >= min_major:
                return home
    # ... otherwise the newest suitable installed JDK.
    best: tuple[int, Path] | None = None
    for home in installed:
        major = java_major(home / "bin" / "java")
        if major is not None:
            seen.append(f"{home} (Java {major})")
            if major >= min_major and (best is None or major > best[0]):
                best = (major, home)
    if best:
        return best[1]
    found = "; ".join(seen) or "none"
    msg = (
        f"{engine} needs Java {min_major} or newer; found: {found}. Install a JDK "
        f"(e.g. apt-get install openjdk-17-jdk-headless) or set {own}."
    )
    raise ClusterError(msg)


def _maven(artifact: str, goal: list[str], dest: Path, cwd: str | None = None) -> None:
    """Run one Maven ``goal`` that downloads ``artifact`` (and maybe more) into ``dest``."""
    import subprocess

    mvn = shutil.which("mvn")
    if not mvn:
        msg = (
            f"Maven (mvn) is needed to download {artifact}; install it (apt-get install maven) "
            "or pass --archive with a zip or tarball of the distribution"
        )
        raise ClusterError(msg)
    dest.mkdir(parents=True, exist_ok=True)
    log.info("fetching %s with Maven", artifact)
    proc = subprocess.run([mvn, "-q", "-B", *goal, f"-DoutputDirectory={dest}"], capture_output=True, text=True,
                          cwd=cwd)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-8:])
        msg = f"Maven could not fetch {artifact} (is the version right?):\n{tail}"
        raise ClusterError(msg)


def _maven_copy(artifact: str, dest: Path) -> None:
    _maven(artifact, ["dependency:copy", f"-Dartifact={artifact}"], dest)


def _maven_copy_with_dependencies(artifact: str, dest: Path) -> None:
    """``artifact``'s jar and its runtime dependencies into ``dest`` (Maven resolves them from a one-line pom),
    without OpenSearch itself and what it brings (the distribution's lib/ has those; twice is jar hell)."""
    import tempfile

    group, artifact_id, version = artifact.split(":")[:3]
    pom = (
        '<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
        "<groupId>local.milco-os</groupId><artifactId>module-jars</artifactId><version>1</version>"
        "<packaging>pom</packaging><dependencies><dependency>"
        f"<groupId>{group}</groupId><artifactId>{artifact_id}</artifactId><version>{version}</version>"
        "<exclusions><exclusion><groupId>org.opensearch</groupId><artifactId>opensearch</artifactId></exclusion>"
        "</exclusions></dependency></dependencies></project>"
    )
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "pom.xml").write_text(pom, encoding="utf-8")
        _maven(artifact, ["dependency:copy-dependencies", "-DincludeScope=runtime"], dest, cwd=tmp)


def _unzip(archive: Path, dest: Path) -> None:
    import zipfile

    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            target = zf.extract(info, dest)
            mode = (info.external_attr >> 16) & 0o777
            if mode:  # zipfile drops permission bits; bin/opensearch must stay executable
                os.chmod(target, mode)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(src, dst)


def _extract(archive: Path, dest: Path, binary: str = "opensearch", engine: str = "OpenSearch") -> Path:
    """Unpack a zip or tarball into ``dest`` and return the directory holding ``bin/<binary>`` (``bin/opensearch``,
    ``bin/elasticsearch``; ``engine`` is its title, for messages)."""
    import tarfile

    dest.mkdir(parents=True, exist_ok=True)
    name = archive.name
    if name.endswith(".zip"):
        _unzip(archive, dest)
    elif name.endswith((".tar.gz", ".tgz", ".tar")):
        with tarfile.open(archive) as tf:
            tf.extractall(dest, filter="data")
    else:
        msg = f"--archive {archive}: expected a .zip, .tar.gz or .tgz {engine} distribution"
        raise ClusterError(msg)
    homes = [p.parent.parent for p in dest.glob(f"*/bin/{binary}")] + [
        p.parent.parent for p in dest.glob(f"bin/{binary}")
    ]
    if not homes:
        msg = f"--archive {archive}: no bin/{binary} inside; is this an {engine} distribution?"
        raise ClusterError(msg)
    return homes[0]


def archive_version(home: Path, binary: str = "opensearch") -> str:
    """The version of an unpacked distribution (from ``lib/<binary>-<v>.jar``: ``lib/opensearch-2.19.6.jar``)."""
    for jar in (home / "lib").glob(f"{binary}-*.jar"):
        m = re.fullmatch(rf"{re.escape(binary)}-(\d+\.\d+\.\d+)\.jar", jar.name)
        if m:
            return m.group(1)
    msg = f"cannot tell the version of {home}: no lib/{binary}-<version>.jar"
    raise ClusterError(msg)


def plugin_class(spec: ModuleSpec, jar: Path) -> str:
    """The module's plugin class in ``jar``: OpenSearch 3.x renamed each ``XPlugin`` of a module to
    ``XModulePlugin`` (``CommonAnalysisPlugin`` -> ``CommonAnalysisModulePlugin``)."""
    import zipfile

    renamed = spec.classname.removesuffix("Plugin") + "ModulePlugin"
    with zipfile.ZipFile(jar) as zf:
        return renamed if renamed.replace(".", "/") + ".class" in zf.namelist() else spec.classname


def plugin_descriptor(spec: ModuleSpec, version: str, classname: str | None = None) -> str:
    """``plugin-descriptor.properties`` for a module added from its jar."""
    java_version = "21" if required_java(version) >= 21 else "11"
    return (
        f"description={spec.description}\n"
        f"version={version}\nname={spec.name}\n"
        f"classname={classname or spec.classname}\n"
        f"java.version={java_version}\nopensearch.version={version}\n"
        f"custom.foldername=\nextended.plugins={spec.extends}\nhas.native.controller=false\n"
    )
