"""Local OpenSearch without Docker: one node, or a cluster of several on consecutive ports; provision,
start, stop, status.

The distribution is Maven Central's integration-test zip (no bundled JDK; only the transport module).
``rank_features`` lives in the ``mapper-extras`` module and the language analyzers (``german``, ``cjk``,
...) in the ``analysis-common`` module, which that zip both lacks, so provisioning adds them from Maven
Central's ``mapper-extras-client`` and ``analysis-common`` jars. A user-given archive (``--archive``,
e.g. the official tarball) is used as it is (it already has both modules).

Layout under ``<cache>/opensearch/``::

    archives/                     downloaded zips and jars
    dist/opensearch-<version>/    unpacked distribution (read-only at run time)
    nodes/<port>/                 config/, data/, logs/, tmp/, node.json (what `up` started)

A single node (:class:`LocalNode`) runs with ``discovery.type: single-node`` in the cluster
``milco-os-local``, its transport port the first free one in 9300-9399. A cluster of N nodes
(:class:`LocalCluster`, ``cluster up --nodes N``) has HTTP ports P..P+N-1, one node directory each, the
cluster name ``milco-os-local-<P>`` and node names ``milco-os-<port>``. Every node is cluster-manager-eligible
and holds data; each gets a fixed transport port, chosen free on its first start (P+1000 and up) and
recorded in its ``node.json`` with the HTTP ports of all members (``cluster_ports``), so a restarted node
gets the same port and data back. The seed hosts are every member's transport address and the initial
cluster managers are every member's name.

OpenSearch refuses to run as root; when milco-os runs as root it starts the node as the unprivileged
system user ``milco-os`` (created on first use).

A secure node (``up(secure=True)``, ``cluster up --secure``) runs from its own copy of the distribution,
``dist/opensearch-<version>-secure/``, which adds the security plugin from Maven Central, so the plain
distribution stays security-free. It gets TLS on HTTP and transport with certificates generated for it
(``nodes/<port>/certs/``: a root CA, the node's certificate and an admin client certificate) and one
basic-auth user, ``admin``, whose password is read from a file (generated into ``nodes/<port>/admin-password``
when none is given).

A node with plugins (``up(plugins=("neural-search",))``, ``cluster up --plugins neural-search``) likewise runs
from a copy of its own, ``dist/opensearch-<version>-with-<plugins>/``, with the plugin zips from Maven Central (and
every plugin they need: neural-search needs ml-commons and knn, ml-commons needs job-scheduler), plus the
``lang-painless`` and ``ingest-common`` modules the integration-test zip lacks, assembled from their Maven jars
(knn extends painless; ml-commons ingest pipelines use ingest-common's ``script`` and ``remove`` processors).
Its ``opensearch.yml`` lets ml-commons run models on this data node and call connectors on the loopback
address, where ``milco-os serve`` listens.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from milco_os.errors import ClusterError, ConfigError

if TYPE_CHECKING:
    import ssl

log = logging.getLogger(__name__)

#: The OpenSearch version milco-os pins: the newest 2.x on Maven Central that runs on JDK 11+.
#: docker-compose.yml pins the same image tag (a unit test keeps them equal).
OPENSEARCH_VERSION = "2.19.6"
#: The OpenSearch 3.x release the test command also runs the integration tests against (Java 21+).
OPENSEARCH_3_VERSION = "3.3.2"
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
SERVICE_USER = "milco-os"
DEFAULT_PORT = 9200
DEFAULT_HEAP = "1g"
_READY_MARK = ".milco-os-ready"
_MAIN_CLASS = "org.opensearch.bootstrap.OpenSearch"

SECURITY_PLUGIN = "opensearch-security"
SECURITY_PLUGIN_ARTIFACT = "org.opensearch.plugin:opensearch-security:{version}:zip"
#: Node versions for which Maven Central has no security plugin build of their own, mapped to the nearest
#: earlier patch release it has (checked with mvn: for 2.19 it has 2.19.3.0 and 2.19.4.0, not 2.19.6.0).
#: The plugin's descriptor is then widened to a same-minor "~" range, which OpenSearch 2.x honours.
SECURITY_PLUGIN_FALLBACK = {"2.19.6": "2.19.4.0"}
ADMIN_USER = "admin"
#: Distinguished names of the generated certificates, as the security plugin writes them (RFC 2253).
NODE_DN = "CN=localhost,OU=node,O=milco-os"
ADMIN_DN = "CN=admin,OU=client,O=milco-os"
CA_FILE = "root-ca.pem"


@dataclass(frozen=True)
class PluginSpec:
    """A plugin ``cluster up --plugins`` can install: its zip on Maven Central and the plugins it needs."""

    folder: str  # the name in its descriptor, and its folder under plugins/
    artifact: str  # Maven coordinates; {version} is the node's, plugins add a fourth number
    requires: tuple[str, ...] = ()


#: By the names users give. Plugin releases are numbered <node version>.0 and built for that node exactly.
PLUGINS = {
    "job-scheduler": PluginSpec(
        "opensearch-job-scheduler", "org.opensearch.plugin:opensearch-job-scheduler:{version}.0:zip"
    ),
    "ml-commons": PluginSpec(
        "opensearch-ml", "org.opensearch.plugin:opensearch-ml-plugin:{version}.0:zip", ("job-scheduler",)
    ),
    "knn": PluginSpec("opensearch-knn", "org.opensearch.plugin:opensearch-knn:{version}.0:zip"),
    "neural-search": PluginSpec(
        "opensearch-neural-search", "org.opensearch.plugin:neural-search:{version}.0:zip", ("ml-commons", "knn")
    ),
}
#: Modules a node with plugins also gets, each with its jar's runtime dependencies: knn extends lang-painless,
#: and an ml-commons ingest pipeline joins text fields with the ``script`` processor and drops the joined text
#: with ``remove`` (both in ingest-common). lang-painless's policy is OpenSearch's own
#: (modules/lang-painless/src/main/plugin-metadata): Painless compiles scripts into classes.
PLUGIN_MODULES = (
    ModuleSpec(
        "lang-painless",
        "org.opensearch.plugin:lang-painless:{version}:jar",
        "org.opensearch.painless.PainlessPlugin",
        "An easy, safe and fast scripting language for OpenSearch",
        policy=(
            "grant {\n"
            "  // needed to generate runtime classes\n"
            '  permission java.lang.RuntimePermission "createClassLoader";\n'
            "  // needed to find the class loader to load allowlisted classes from\n"
            '  permission java.lang.RuntimePermission "getClassLoader";\n'
            "};\n"
        ),
    ),
    ModuleSpec(
        "ingest-common",
        "org.opensearch.plugin:ingest-common:{version}:jar",
        "org.opensearch.ingest.common.IngestCommonPlugin",
        "Module for ingest processors that do not require additional security permissions or have large "
        "dependencies and resources",
        extends="lang-painless",
    ),
)
#: What ml-commons needs on a local single node to serve milco-os as a remote model: run models on this (data)
#: node, call a connector on the loopback address, and not refuse work because the host (not the node) is
#: short of memory.
ML_COMMONS_SETTINGS = (
    "# ml-commons: remote models on this data node, connectors to milco-os serve on the loopback address.\n"
    "plugins.ml_commons.only_run_on_ml_node: false\n"
    "plugins.ml_commons.connector.private_ip_enabled: true\n"
    'plugins.ml_commons.trusted_connector_endpoints_regex: ["^https?://(127\\\\.0\\\\.0\\\\.1|localhost)(:[0-9]+)?/.*$"]\n'
    "plugins.ml_commons.native_memory_threshold: 100\n"
)


def plugin_closure(names: list[str] | tuple[str, ...]) -> list[str]:
    """The plugins to install for ``names``: each after the plugins it needs, every one once."""
    order: list[str] = []

    def visit(name: str) -> None:
        if name not in PLUGINS:
            msg = f"--plugins {name}: unknown plugin; choose from {', '.join(sorted(PLUGINS))}"
            raise ConfigError(msg)
        for needed in PLUGINS[name].requires:
            visit(needed)
        if name not in order:
            order.append(name)

    for name in names:
        visit(name)
    return order


def required_java(version: str) -> int:
    """Minimum JDK major version for an OpenSearch version (3.x needs 21, 2.x needs 11)."""
    major = int(version.split(".")[0])
    return 21 if major >= 3 else 11


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


def find_java_home(min_major: int) -> Path:
    """A JDK home with ``java`` >= ``min_major``.

    Order: OPENSEARCH_JAVA_HOME, JAVA_HOME, ``java`` on PATH, then the newest suitable JDK under
    /usr/lib/jvm. The first suitable one wins.
    """
    preferred: list[Path] = [Path(os.environ[v]) for v in ("OPENSEARCH_JAVA_HOME", "JAVA_HOME") if os.environ.get(v)]
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
        f"OpenSearch needs Java {min_major} or newer; found: {found}. Install a JDK "
        f"(e.g. apt-get install openjdk-17-jdk-headless) or set OPENSEARCH_JAVA_HOME."
    )
    raise ClusterError(msg)


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def http_json(
    url: str, timeout: float = 5.0, context: ssl.SSLContext | None = None, headers: dict | None = None
) -> dict:
    import urllib.request

    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=timeout, context=context) as resp:  # noqa: S310 (loopback URL)
        return json.loads(resp.read().decode("utf-8"))


#: Nodes this process started. Holding the Popen objects keeps Python from warning that a child is
#: "still running" when they are garbage-collected, and lets us reap them when they exit.
_STARTED: dict[int, Any] = {}  # pid -> subprocess.Popen


def _pid_alive(pid: int) -> bool:
    proc = _STARTED.get(pid)
    if proc is not None:
        if proc.poll() is None:
            return True
        del _STARTED[pid]
        return False
    try:
        os.waitpid(pid, os.WNOHANG)  # reap it if it is an exited child we have no Popen for
    except ChildProcessError:
        pass
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (FileNotFoundError, IndexError):
        return False


def _stop(pids: list[int], timeout: float) -> None:
    """SIGTERM every process in ``pids`` at once, then wait until all are gone (SIGKILL after ``timeout``)."""
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for pid in pids:
        while _pid_alive(pid):
            if time.monotonic() > deadline:
                log.warning("OpenSearch (pid %d) ignored SIGTERM for %.0fs; killing it", pid, timeout)
                os.kill(pid, signal.SIGKILL)
                deadline = time.monotonic() + 30
            time.sleep(0.2)


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def _maven(artifact: str, goal: list[str], dest: Path, cwd: str | None = None) -> None:
    """Run one Maven ``goal`` that downloads ``artifact`` (and maybe more) into ``dest``."""
    import subprocess

    mvn = shutil.which("mvn")
    if not mvn:
        msg = (
            f"Maven (mvn) is needed to download {artifact}; install it (apt-get install maven) "
            "or pass --archive with an OpenSearch zip or tarball"
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


def _extract(archive: Path, dest: Path) -> Path:
    """Unpack a zip or tarball into ``dest`` and return the directory holding ``bin/opensearch``."""
    import tarfile

    dest.mkdir(parents=True, exist_ok=True)
    name = archive.name
    if name.endswith(".zip"):
        _unzip(archive, dest)
    elif name.endswith((".tar.gz", ".tgz", ".tar")):
        with tarfile.open(archive) as tf:
            tf.extractall(dest, filter="data")
    else:
        msg = f"--archive {archive}: expected a .zip, .tar.gz or .tgz OpenSearch distribution"
        raise ClusterError(msg)
    homes = [p.parent.parent for p in dest.glob("*/bin/opensearch")] + [
        p.parent.parent for p in dest.glob("bin/opensearch")
    ]
    if not homes:
        msg = f"--archive {archive}: no bin/opensearch inside; is this an OpenSearch distribution?"
        raise ClusterError(msg)
    return homes[0]


def archive_version(home: Path) -> str:
    """The OpenSearch version of an unpacked distribution (from ``lib/opensearch-<v>.jar``)."""
    for jar in (home / "lib").glob("opensearch-*.jar"):
        m = re.fullmatch(r"opensearch-(\d+\.\d+\.\d+)\.jar", jar.name)
        if m:
            return m.group(1)
    msg = f"cannot tell the OpenSearch version of {home}: no lib/opensearch-<version>.jar"
    raise ClusterError(msg)


def _ensure_service_user() -> tuple[int, int]:
    import pwd
    import subprocess

    try:
        entry = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        cmd = ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_USER]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 and "already exists" not in proc.stderr:
            msg = f"cannot create the unprivileged user {SERVICE_USER!r} for OpenSearch: {proc.stderr.strip()}"
            raise ClusterError(msg) from None
        entry = pwd.getpwnam(SERVICE_USER)
    return entry.pw_uid, entry.pw_gid


def _chown_tree(path: Path, uid: int, gid: int) -> None:
    os.chown(path, uid, gid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)


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


# ------------------------------------------------------------------------------ security (cluster up --secure)
def security_plugin_version(version: str) -> str:
    """The security plugin release to install on OpenSearch ``version`` (plugins add a fourth number)."""
    return SECURITY_PLUGIN_FALLBACK.get(version, f"{version}.0")


def widen_descriptor(text: str, node_version: str) -> str:
    """A plugin descriptor that also accepts ``node_version`` when the plugin was built for an earlier patch
    release of the same minor version (OpenSearch otherwise refuses any plugin not built for it exactly)."""
    m = re.search(r"^opensearch\.version=(\S+)$", text, re.MULTILINE)
    if not m or m.group(1) == node_version:
        return text
    built = m.group(1)
    same_minor = built.split(".")[:2] == node_version.split(".")[:2]
    if not same_minor or tuple(map(int, built.split("."))) > tuple(map(int, node_version.split("."))):
        msg = f"the security plugin was built for OpenSearch {built}, which cannot run on {node_version}"
        raise ClusterError(msg)
    return text.replace(m.group(0), f'dependencies={{ opensearch: "~{built}" }}')


def _openssl(*args: str) -> None:
    import subprocess

    openssl = shutil.which("openssl")
    if not openssl:
        msg = "openssl is needed to generate the secure node's certificates; install it (apt-get install openssl)"
        raise ClusterError(msg)
    proc = subprocess.run([openssl, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        msg = f"openssl {args[0]} failed: {' '.join(proc.stderr.split())[:300]}"
        raise ClusterError(msg)


def _openssl_config(dn: dict[str, str], extensions: dict[str, str]) -> str:
    """An openssl config of our own, so the system's openssl.cnf defaults cannot add or clash with extensions."""
    lines = ["[req]", "distinguished_name = dn", "x509_extensions = ext", "prompt = no", "[dn]"]
    lines += [f"{k} = {v}" for k, v in dn.items()]
    lines += ["[ext]"] + [f"{k} = {v}" for k, v in extensions.items()]
    return "\n".join(lines) + "\n"


def _new_key(path: Path) -> None:
    # genpkey writes PKCS#8 ("BEGIN PRIVATE KEY"), the only PEM key format the security plugin reads.
    _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(path))
    os.chmod(path, 0o600)


def generate_certs(cert_dir: Path, days: int = 3650) -> Path:
    """A self-signed root CA plus, signed by it, the node's certificate (SAN localhost / 127.0.0.1 / ::1) and an
    admin client certificate, as PEM files in ``cert_dir``. Returns the CA certificate's path.

    Keys are mode 0600. Strict verifiers (Python 3.13+) want key usages and key identifiers: all are set."""
    import secrets
    import tempfile

    cert_dir.mkdir(parents=True, exist_ok=True)
    ca_key, ca = cert_dir / "root-ca-key.pem", cert_dir / CA_FILE
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        _new_key(ca_key)
        (work / "ca.cnf").write_text(
            _openssl_config(
                {"O": "milco-os", "CN": "milco-os local root CA"},
                {
                    "basicConstraints": "critical, CA:TRUE",
                    "keyUsage": "critical, keyCertSign, cRLSign",
                    "subjectKeyIdentifier": "hash",
                },
            ),
            encoding="utf-8",
        )
        _openssl("req", "-x509", "-new", "-config", str(work / "ca.cnf"), "-key", str(ca_key),
                 "-sha256", "-days", str(days), "-out", str(ca))
        leaves = {
            # (O, OU, CN) in this order print as NODE_DN / ADMIN_DN in RFC 2253 (most specific first).
            "node": ({"O": "milco-os", "OU": "node", "CN": "localhost"},
                     "serverAuth, clientAuth", "DNS:localhost, IP:127.0.0.1, IP:::1"),
            "admin": ({"O": "milco-os", "OU": "client", "CN": "admin"}, "clientAuth", None),
        }
        for name, (dn, usage, san) in leaves.items():
            ext = {
                "basicConstraints": "critical, CA:FALSE",
                "keyUsage": "critical, digitalSignature, keyEncipherment",
                "extendedKeyUsage": usage,
                "subjectKeyIdentifier": "hash",
                "authorityKeyIdentifier": "keyid",
            }
            if san:
                ext["subjectAltName"] = san
            cnf, csr, key = work / f"{name}.cnf", work / f"{name}.csr", cert_dir / f"{name}-key.pem"
            cnf.write_text(_openssl_config(dn, ext), encoding="utf-8")
            _new_key(key)
            _openssl("req", "-new", "-config", str(cnf), "-key", str(key), "-out", str(csr))
            _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
                     "-set_serial", str(secrets.randbits(63)), "-sha256", "-days", str(days),
                     "-extfile", str(cnf), "-extensions", "ext", "-out", str(cert_dir / f"{name}.pem"))
    return ca


def read_password(path: Path) -> str:
    """The password in ``path`` (surrounding whitespace stripped); the message never quotes it."""
    try:
        password = Path(path).read_text(encoding="utf-8").strip()
    except OSError as e:
        msg = f"admin password file {path}: cannot read it: {e.strerror}"
        raise ConfigError(msg) from None
    if not password:
        msg = f"admin password file {path}: the file is empty"
        raise ConfigError(msg)
    return password


def hash_password(home: Path, java_home: Path, password: str) -> str:
    """A bcrypt hash of ``password`` for internal_users.yml, made offline by the plugin's own Hasher (what its
    tools/hash.sh runs). The password goes through the environment, not the command line (visible in ps)."""
    import subprocess

    classpath = f"{home / 'plugins' / SECURITY_PLUGIN}/*:{home / 'lib'}/*"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "MILCO_OS_ADMIN_PASSWORD": password}
    cmd = [str(java_home / "bin" / "java"), "-cp", classpath, "org.opensearch.security.tools.Hasher",
           "-env", "MILCO_OS_ADMIN_PASSWORD"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        msg = f"cannot hash the admin password with the security plugin's Hasher: {type(e).__name__}"
        raise ClusterError(msg) from None
    hashes = re.findall(r"^\$2[aby]\$\d+\$\S{53}$", proc.stdout, re.MULTILINE)
    if proc.returncode != 0 or not hashes:
        msg = f"cannot hash the admin password with the security plugin's Hasher: {' '.join(proc.stderr.split())[:300]}"
        raise ClusterError(msg)
    return hashes[-1]


def internal_users_yml(password_hash: str) -> str:
    """The security plugin's user database: only ``admin`` (the plugin's demo users have well-known passwords)."""
    return (
        "# Written by milco-os (cluster up --secure). Read once, when the security index is first created.\n"
        "_meta:\n  type: \"internalusers\"\n  config_version: 2\n"
        f"{ADMIN_USER}:\n"
        f"  hash: \"{password_hash}\"\n"
        "  reserved: true\n"
        "  backend_roles: [\"admin\"]\n"  # the plugin's roles_mapping.yml maps it to all_access
        "  description: \"milco-os local admin\"\n"
    )


def security_settings() -> str:
    """The opensearch.yml lines of a secure node (certificate paths are relative to its config directory)."""
    return (
        "# Security plugin: TLS on HTTP and transport with the generated certificates, basic auth for admin.\n"
        "plugins.security.ssl.transport.pemcert_filepath: certs/node.pem\n"
        "plugins.security.ssl.transport.pemkey_filepath: certs/node-key.pem\n"
        f"plugins.security.ssl.transport.pemtrustedcas_filepath: certs/{CA_FILE}\n"
        "plugins.security.ssl.transport.enforce_hostname_verification: false\n"
        "plugins.security.ssl.http.enabled: true\n"
        "plugins.security.ssl.http.pemcert_filepath: certs/node.pem\n"
        "plugins.security.ssl.http.pemkey_filepath: certs/node-key.pem\n"
        f"plugins.security.ssl.http.pemtrustedcas_filepath: certs/{CA_FILE}\n"
        # Create the security index from config/opensearch-security/ on first start (no securityadmin.sh run).
        "plugins.security.allow_default_init_securityindex: true\n"
        f'plugins.security.authcz.admin_dn: ["{ADMIN_DN}"]\n'
        f'plugins.security.nodes_dn: ["{NODE_DN}"]\n'
        'plugins.security.restapi.roles_enabled: ["all_access", "security_rest_api_access"]\n'
        # No audit sink is configured: say so, rather than have the plugin log an error on every start.
        "plugins.security.audit.type: noop\n"
    )


@dataclass
class NodeInfo:
    """What ``up`` started; saved as ``nodes/<port>/node.json``."""

    version: str
    port: int
    pid: int
    url: str
    home: str
    node_dir: str
    user: str
    started_at: float
    # Secure nodes only (defaults keep node.json files written before these fields loadable).
    secure: bool = False
    ca_certs: str | None = None  # the CA certificate clients verify the node with
    password_file: str | None = None  # holds the admin password (the password itself is never stored here)
    plugins: list[str] = field(default_factory=list)  # as given to `up` and the plugins they need
    # The HTTP ports of every node of its cluster, the first one naming it ([port] for a single node; empty in
    # node.json files written before clusters existed, which were all single nodes).
    cluster_ports: list[int] = field(default_factory=list)
    transport_port: int | None = None  # a cluster member's fixed transport port (a single node's is a range)

    def members(self) -> list[int]:
        return list(self.cluster_ports) or [self.port]


def cluster_name(ports: list[int]) -> str:
    """The ``cluster.name`` of a local single node, or of the cluster of nodes on ``ports`` (first: its name)."""
    return "milco-os-local" if len(ports) <= 1 else f"milco-os-local-{ports[0]}"


def node_name(port: int) -> str:
    return f"milco-os-{port}"


def describe_membership(ports: list[int]) -> str:
    """``a single node`` or ``one of the 3-node cluster on port 9270 (ports 9270-9272)``."""
    if len(ports) <= 1:
        return "a single node"
    return f"one of the {len(ports)}-node cluster on port {ports[0]} (ports {ports[0]}-{ports[-1]})"


@dataclass(frozen=True)
class ClusterMembership:
    """Where a node of a multi-node local cluster finds the others: every member's HTTP and transport port."""

    http_ports: tuple[int, ...]
    transport_ports: tuple[int, ...]  # in the order of http_ports

    def transport_port(self, http_port: int) -> int:
        return self.transport_ports[self.http_ports.index(http_port)]

    def settings(self, http_port: int) -> str:
        """The opensearch.yml lines that make the node on ``http_port`` a member."""
        seeds = ", ".join(f'"127.0.0.1:{t}"' for t in self.transport_ports)
        managers = ", ".join(f'"{node_name(p)}"' for p in self.http_ports)
        return (
            # A fixed port (recorded in node.json), so the other members' seed lists stay right across restarts.
            f"transport.port: {self.transport_port(http_port)}\n"
            f"discovery.seed_hosts: [{seeds}]\n"
            # Used once, when the cluster first forms; every node keeps the default roles (cluster-manager-
            # eligible, data, ingest).
            f"cluster.initial_cluster_manager_nodes: [{managers}]\n"
        )


def free_transport_port(http_port: int, taken: set[int]) -> int:
    """A transport port for the node on ``http_port``: ``http_port`` + 1000 when free, else the next free one
    above it (skipping ``taken``), else one the operating system picks."""
    import socket

    start = http_port + 1000
    for candidate in range(start, min(start + 200, 65536)):
        if candidate not in taken and not port_in_use(candidate):
            return candidate
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalNode:
    """One local OpenSearch node, identified by its HTTP port: a single node, or a member of a
    :class:`LocalCluster`."""

    def __init__(self, cache_dir: Path, port: int = DEFAULT_PORT) -> None:
        if not 1 <= port <= 65535:
            msg = f"--port {port}: must be between 1 and 65535"
            raise ClusterError(msg)
        self.root = Path(cache_dir) / "opensearch"
        self.port = port
        self.node_dir = self.root / "nodes" / str(port)
        info = self.info()
        scheme = "https" if info and info.secure else "http"  # as the node was last started
        self.url = f"{scheme}://127.0.0.1:{port}"

    # ---------------------------------------------------------------- provisioning
    def install(self, version: str = OPENSEARCH_VERSION, archive: Path | None = None) -> tuple[Path, str]:
        """Make an unpacked, runnable distribution available; returns (home, version)."""
        if archive is not None:
            archive = Path(archive)
            if not archive.is_file():
                msg = f"--archive {archive}: no such file"
                raise ClusterError(msg)
            staging = self.root / "dist" / f".unpack-{archive.name}"
            shutil.rmtree(staging, ignore_errors=True)
            home = _extract(archive, staging)
            version = archive_version(home)
            final = self.root / "dist" / f"opensearch-{version}-{archive.stem.split('.')[0]}"
            shutil.rmtree(final, ignore_errors=True)
            home.rename(final)
            shutil.rmtree(staging, ignore_errors=True)
            home = final
        else:
            home = self.root / "dist" / f"opensearch-{version}"
            if not (home / _READY_MARK).exists():
                archives = self.root / "archives"
                zip_path = archives / f"opensearch-{version}.zip"
                if not zip_path.exists():
                    _maven_copy(DISTRIBUTION_ARTIFACT.format(version=version), archives)
                staging = self.root / "dist" / f".unpack-{version}"
                shutil.rmtree(staging, ignore_errors=True)
                unpacked = _extract(zip_path, staging)
                shutil.rmtree(home, ignore_errors=True)
                unpacked.rename(home)
                shutil.rmtree(staging, ignore_errors=True)
        for spec in EXTRA_MODULES:
            self._add_module(home, archive_version(home), spec)
        (home / _READY_MARK).touch()
        return home, archive_version(home)

    def install_secure(self, version: str = OPENSEARCH_VERSION, archive: Path | None = None) -> tuple[Path, str]:
        """Like ``install``, plus the security plugin, in a copy of its own (``<home>-secure``): the plain
        distribution must stay free of it, since the plugin refuses to start without TLS configured."""
        base, version = self.install(version, archive)

        def add_security(staging: Path) -> None:
            plugin = staging / "plugins" / SECURITY_PLUGIN
            if (plugin / "plugin-descriptor.properties").exists():  # the official tarball already has it
                return
            plugin_version = security_plugin_version(version)
            self._unzip_plugin(SECURITY_PLUGIN_ARTIFACT.format(version=plugin_version), plugin,
                               f"the security plugin {plugin_version} for OpenSearch {version}")
            descriptor = plugin / "plugin-descriptor.properties"
            descriptor.write_text(widen_descriptor(descriptor.read_text(encoding="utf-8"), version), encoding="utf-8")

        return self._derived(base, "-secure", archive, add_security), version

    def install_plugins(
        self, plugins: list[str], version: str = OPENSEARCH_VERSION, archive: Path | None = None
    ) -> tuple[Path, str]:
        """Like ``install``, plus ``plugins`` and the plugins they need, in a copy of its own
        (``<home>-with-<plugins>``), so the plain distribution stays the small default."""
        names = plugin_closure(plugins)
        base, version = self.install(version, archive)

        def add_plugins(staging: Path) -> None:
            for module in PLUGIN_MODULES:
                self._add_module_with_dependencies(staging, version, module)
            for name in names:
                folder = staging / "plugins" / PLUGINS[name].folder
                if not (folder / "plugin-descriptor.properties").exists():  # the official tarball has them all
                    self._unzip_plugin(PLUGINS[name].artifact.format(version=version), folder,
                                       f"plugin {name} {version}.0 (for OpenSearch {version})")

        # Not "+": OpenSearch 3.x reads plugin policy files through URLs, where a "+" in the path means a space.
        return self._derived(base, "-with-" + "_".join(sorted(names)), archive, add_plugins), version

    def _derived(self, base: Path, suffix: str, archive: Path | None, build: Callable[[Path], None]) -> Path:
        """``<base><suffix>``: a copy of the distribution ``base`` that ``build`` adds to, made once (an
        --archive is unpacked anew every time, and so is its copy)."""
        home = base.with_name(base.name + suffix)
        if (home / _READY_MARK).exists() and archive is None:
            return home
        staging = base.with_name(f".stage-{home.name}")
        shutil.rmtree(staging, ignore_errors=True)
        # Hard links: the copy costs no space and is fast (both are read-only at run time).
        shutil.copytree(base, staging, symlinks=True, copy_function=_link_or_copy)
        (staging / _READY_MARK).unlink(missing_ok=True)
        build(staging)
        shutil.rmtree(home, ignore_errors=True)
        staging.rename(home)
        (home / _READY_MARK).touch()
        return home

    def _unzip_plugin(self, artifact: str, folder: Path, what: str) -> None:
        """The plugin zip ``artifact`` (Maven coordinates, downloaded once into archives/) unpacked into ``folder``."""
        archives = self.root / "archives"
        _group, artifact_id, plugin_version = artifact.split(":")[:3]
        zip_path = archives / f"{artifact_id}-{plugin_version}.zip"
        if not zip_path.exists():
            try:
                _maven_copy(artifact, archives)
            except ClusterError as e:
                msg = (f"{what} is not on Maven Central; use an OpenSearch version it has, or --archive with the "
                       f"official tarball ({e})")
                raise ClusterError(msg) from None
        _unzip(zip_path, folder)

    def _add_module_with_dependencies(self, home: Path, version: str, spec: ModuleSpec) -> None:
        """A module from its Maven jar and that jar's runtime dependencies, a descriptor and its policy."""
        module = home / "modules" / spec.name
        if (module / "plugin-descriptor.properties").exists():
            return
        jars = self.root / "archives" / f"{spec.name}-{version}"
        if not (jars / _READY_MARK).exists():
            _maven_copy_with_dependencies(spec.artifact.format(version=version), jars)
            (jars / _READY_MARK).touch()
        module.mkdir(parents=True, exist_ok=True)
        for jar in jars.glob("*.jar"):
            shutil.copy2(jar, module / jar.name)
        if spec.policy:
            (module / "plugin-security.policy").write_text(spec.policy, encoding="utf-8")
        classname = plugin_class(spec, jars / spec.jar_name(version))
        descriptor = plugin_descriptor(spec, version, classname)
        (module / "plugin-descriptor.properties").write_text(descriptor, encoding="utf-8")

    def _add_module(self, home: Path, version: str, spec: ModuleSpec) -> None:
        module = home / "modules" / spec.name
        if module.is_dir() and any(module.glob("*.jar")):
            return
        archives = self.root / "archives"
        jar = archives / spec.jar_name(version)
        if not jar.exists():
            _maven_copy(spec.artifact.format(version=version), archives)
        module.mkdir(parents=True, exist_ok=True)
        shutil.copy2(jar, module / jar.name)
        descriptor = plugin_descriptor(spec, version, plugin_class(spec, jar))
        (module / "plugin-descriptor.properties").write_text(descriptor, encoding="utf-8")

    def _write_config(
        self, home: Path, heap: str, secure: bool = False, plugins: tuple[str, ...] = (),
        membership: ClusterMembership | None = None,
    ) -> Path:
        """The node's config directory: the distribution's config with our ``opensearch.yml`` (a single node, or,
        with ``membership``, a member of a multi-node cluster) and ``jvm.options`` pointed at our directories."""
        conf = self.node_dir / "config"
        conf.mkdir(parents=True, exist_ok=True)
        for item in (home / "config").iterdir():
            if item.name == "opensearch.yml":
                continue
            target = conf / item.name
            if item.is_dir():
                shutil.copytree(item, target, dirs_exist_ok=True)
            else:
                shutil.copy2(item, target)
        # The stock jvm.options writes GC logs and heap dumps relative to the distribution directory,
        # which the (unprivileged) node cannot write to: point them at this node's own directories.
        jvm_options = conf / "jvm.options"
        logs, data = self.node_dir / "logs", self.node_dir / "data"
        text = jvm_options.read_text(encoding="utf-8")
        text = text.replace("file=logs/", f"file={logs}/").replace("ErrorFile=logs/", f"ErrorFile={logs}/")
        text = text.replace("HeapDumpPath=data", f"HeapDumpPath={data}")
        jvm_options.write_text(text, encoding="utf-8")
        if membership is None:
            # A range, so two local nodes never fight over one transport port.
            discovery = "transport.port: 9300-9399\ndiscovery.type: single-node\n"
        else:
            discovery = membership.settings(self.port)
        (conf / "opensearch.yml").write_text(
            "# Written by milco-os (cluster up); rewritten on every start.\n"
            f"cluster.name: {cluster_name(list(membership.http_ports) if membership else [self.port])}\n"
            f"node.name: {node_name(self.port)}\n"
            "network.host: 127.0.0.1\n"
            f"http.port: {self.port}\n"
            + discovery
            + f"path.data: {self.node_dir / 'data'}\n"
            f"path.logs: {self.node_dir / 'logs'}\n"
            # A laptop's disk is often > 90% full; watermarks would then refuse shard allocation.
            "cluster.routing.allocation.disk.threshold_enabled: false\n"
            # Expanded queries are long disjunctions (one clause per query term and view).
            "indices.query.bool.max_clause_count: 8192\n"
            + (security_settings() if secure else "")
            + (ML_COMMONS_SETTINGS if "ml-commons" in plugins else ""),
            encoding="utf-8",
        )
        (conf / "heap").write_text(heap, encoding="utf-8")
        return conf

    @property
    def cert_dir(self) -> Path:
        return self.node_dir / "certs"

    def _admin_password_file(self, given: Path | None) -> Path:
        """The file holding the admin password: ``given``, or one generated on first use (mode 0600)."""
        import secrets

        if given is not None:
            read_password(given)  # fail now, with a clear message, if it is unreadable or empty
            return Path(given).resolve()
        path = self.node_dir / "admin-password"
        if not path.exists():
            self.node_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(secrets.token_urlsafe(24) + "\n")
        return path

    def _write_security(self, home: Path, conf: Path, java_home: Path, password_file: Path) -> Path:
        """Certificates (generated once, kept across restarts so clients keep trusting the same CA) and the
        security plugin's configuration. Returns the CA certificate's path."""
        ca = self.cert_dir / CA_FILE
        if not all((self.cert_dir / name).exists() for name in (CA_FILE, "node.pem", "node-key.pem", "admin.pem")):
            ca = generate_certs(self.cert_dir)
        # The node reads only its own certificate and key; the CA key and the admin key stay in certs/.
        (conf / "certs").mkdir(exist_ok=True)
        for name in (CA_FILE, "node.pem", "node-key.pem"):
            shutil.copy2(self.cert_dir / name, conf / "certs" / name)
        security_conf = conf / "opensearch-security"
        security_conf.mkdir(exist_ok=True)
        for item in (home / "plugins" / SECURITY_PLUGIN / "config").glob("*.yml"):
            shutil.copy2(item, security_conf / item.name)
        password_hash = hash_password(home, java_home, read_password(password_file))
        (security_conf / "internal_users.yml").write_text(internal_users_yml(password_hash), encoding="utf-8")
        # The plugin warns about every config file other users could read; keep them private to the node.
        for root, _dirs, files in os.walk(conf):
            os.chmod(root, 0o700)
            for name in files:
                os.chmod(os.path.join(root, name), 0o600)
        return ca

    def _auth(self) -> tuple[ssl.SSLContext | None, dict]:
        """TLS context and headers for talking to this node as it was started (plain: none)."""
        import base64
        import ssl

        info = self.info()
        if info is None or not info.secure:
            return None, {}
        context = ssl.create_default_context(cafile=info.ca_certs)
        token = base64.b64encode(f"{ADMIN_USER}:{read_password(Path(info.password_file or ''))}".encode()).decode()
        return context, {"Authorization": f"Basic {token}"}

    def _get(self, path: str, timeout: float) -> dict:
        context, headers = self._auth()
        return http_json(self.url + path, timeout=timeout, context=context, headers=headers)

    # ---------------------------------------------------------------- lifecycle
    def info(self) -> NodeInfo | None:
        path = self.node_dir / "node.json"
        if not path.exists():
            return None
        try:
            return NodeInfo(**json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, TypeError):
            return None

    def has_data(self) -> bool:
        data = self.node_dir / "data"
        return data.is_dir() and any(data.iterdir())

    def check_membership(self, ports: list[int], fresh: bool) -> None:
        """Refuse to start this node as one of ``ports`` (``[port]``: a single node) when it runs as something
        else, or when its data belongs to something else (unless ``fresh`` wipes it): a single node's data
        cannot join a cluster, nor a cluster member's data start alone or in a cluster of another size."""
        info = self.info()
        if info is None or info.members() == ports:
            return
        was = describe_membership(info.members())
        wanted = describe_membership(ports)
        first = ports[0]
        again = f"--port {first}" + (f" --nodes {len(ports)}" if len(ports) > 1 else "")
        if self.running_pid() is not None:
            stop = f"milco-os cluster down --port {info.members()[0]}"
            msg = (f"the node on port {self.port} is running as {was}, not as {wanted}; stop it first ({stop}), "
                   f"then run cluster up {again} again")
            raise ClusterError(msg)
        if self.has_data() and not fresh:
            msg = (f"the node on port {self.port} holds the data of {was}, which cannot start as {wanted}; "
                   f"start it as before, or add --fresh to wipe its data (cluster up {again} --fresh)")
            raise ClusterError(msg)

    def running_pid(self) -> int | None:
        """The pid of this node's OpenSearch process, if it is alive (and really ours)."""
        info = self.info()
        if info is None or not _pid_alive(info.pid):
            return None
        cmd = _cmdline(info.pid)
        if _MAIN_CLASS not in cmd or str(self.node_dir / "config") not in cmd:
            return None  # the pid was reused by an unrelated process
        return info.pid

    def health(self, timeout: float = 5.0) -> dict | None:
        import urllib.error

        try:
            return self._get("/_cluster/health", timeout=timeout)
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def up(
        self,
        version: str = OPENSEARCH_VERSION,
        archive: Path | None = None,
        heap: str = DEFAULT_HEAP,
        fresh: bool = False,
        timeout: float = 180.0,
        secure: bool = False,
        admin_password_file: Path | None = None,
        plugins: tuple[str, ...] = (),
    ) -> NodeInfo:
        """Start the node (provisioning it first) and wait until it is healthy.

        ``secure``: with the security plugin, TLS (certificates generated under the node directory) and basic
        auth for ``admin``, whose password is read from ``admin_password_file`` (generated when None).
        ``plugins``: names from :data:`PLUGINS`, installed with the plugins they need."""
        if not re.fullmatch(r"\d+[mMgG]", heap):
            msg = f"--heap {heap!r}: expected a size such as 512m or 2g"
            raise ClusterError(msg)
        if admin_password_file is not None and not secure:
            msg = "--admin-password-file is for a secure node; add --secure"
            raise ConfigError(msg)
        wanted = plugin_closure(plugins)
        if wanted and secure:
            msg = "--plugins with --secure: not supported yet (the security plugin needs its own ml-commons roles)"
            raise ConfigError(msg)
        self.check_membership([self.port], fresh)
        if self.running_pid() is not None:
            if fresh:
                msg = f"--fresh: the node on port {self.port} is running; stop it first (milco-os cluster down)"
                raise ClusterError(msg)
            info = self.info()
            assert info is not None
            if info.secure != secure:
                now = "with" if info.secure else "without"
                msg = (
                    f"the node on port {self.port} is running {now} security; stop it first "
                    f"(milco-os cluster down --port {self.port})"
                )
                raise ClusterError(msg)
            if sorted(info.plugins) != sorted(wanted):
                now = ", ".join(info.plugins) or "no plugins"
                msg = (
                    f"the node on port {self.port} is running with {now}; stop it first "
                    f"(milco-os cluster down --port {self.port}) to start it with other plugins"
                )
                raise ClusterError(msg)
            self._wait_healthy(info.pid, timeout)
            return info
        if port_in_use(self.port):
            msg = (
                f"port {self.port} is already in use by another process (not a milco-os node); "
                "stop it or choose another port with --port"
            )
            raise ClusterError(msg)
        if secure:
            home, version = self.install_secure(version, archive)
        elif wanted:
            home, version = self.install_plugins(wanted, version, archive)
        else:
            home, version = self.install(version, archive)
        java_home = find_java_home(required_java(version))
        if fresh:
            for sub in ("data", "logs"):
                shutil.rmtree(self.node_dir / sub, ignore_errors=True)
        conf = self._write_config(home, heap, secure, tuple(wanted))
        ca_certs = password_file = None
        if secure:
            password_file = self._admin_password_file(admin_password_file)
            ca_certs = self._write_security(home, conf, java_home, password_file)
        info = self._spawn(home, version, java_home, heap, conf, secure=secure, ca_certs=ca_certs,
                           password_file=password_file, plugins=wanted)
        self._wait_healthy(info.pid, timeout)
        return info

    def _spawn(
        self, home: Path, version: str, java_home: Path, heap: str, conf: Path, *, secure: bool = False,
        ca_certs: Path | None = None, password_file: Path | None = None, plugins: list[str] | None = None,
        membership: ClusterMembership | None = None,
    ) -> NodeInfo:
        """Start the configured node's process in the background (not waiting for it) and record it in
        ``node.json``."""
        import subprocess

        for sub in ("data", "logs", "tmp"):
            (self.node_dir / sub).mkdir(parents=True, exist_ok=True)
        user_kwargs: dict = {}
        user = os.environ.get("USER") or str(os.geteuid())
        if os.geteuid() == 0:
            uid, gid = _ensure_service_user()
            _chown_tree(self.node_dir, uid, gid)
            # The CA key, the admin key and the admin password are the user's, not the node's.
            for path in (self.cert_dir, self.node_dir / "admin-password"):
                if path.exists():
                    _chown_tree(path, os.geteuid(), os.getegid())
            user_kwargs = {"user": uid, "group": gid, "extra_groups": []}
            user = SERVICE_USER
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "OPENSEARCH_PATH_CONF": str(conf),
            "OPENSEARCH_JAVA_HOME": str(java_home),
            "OPENSEARCH_JAVA_OPTS": f"-Xms{heap} -Xmx{heap}",
            "OPENSEARCH_TMPDIR": str(self.node_dir / "tmp"),
        }
        console = open(self.node_dir / "logs" / "console.log", "ab")  # noqa: SIM115 (handed to the child)
        try:
            proc = subprocess.Popen(
                [str(home / "bin" / "opensearch")],
                cwd=self.node_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # outlives `milco-os cluster up`
                **user_kwargs,
            )
        finally:
            console.close()
        _STARTED[proc.pid] = proc
        self.url = f"{'https' if secure else 'http'}://127.0.0.1:{self.port}"
        info = NodeInfo(
            version=version,
            port=self.port,
            pid=proc.pid,
            url=self.url,
            home=str(home),
            node_dir=str(self.node_dir),
            user=user,
            started_at=time.time(),
            secure=secure,
            ca_certs=str(ca_certs) if ca_certs else None,
            password_file=str(password_file) if password_file else None,
            plugins=list(plugins or []),
            cluster_ports=list(membership.http_ports) if membership else [self.port],
            transport_port=membership.transport_port(self.port) if membership else None,
        )
        (self.node_dir / "node.json").write_text(json.dumps(asdict(info), indent=2), encoding="utf-8")
        return info

    def _wait_healthy(self, pid: int, timeout: float) -> None:
        import urllib.error

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _pid_alive(pid):
                msg = f"OpenSearch on port {self.port} exited during start-up. Last log lines:\n{self.log_tail()}"
                raise ClusterError(msg)
            try:
                health = self._get("/_cluster/health", timeout=2.0)
            except urllib.error.HTTPError as e:
                # A secure node answers 503 until its security index exists, then 401 only for a wrong
                # password: its security index was made, on an earlier start, with another one.
                if e.code == 401:
                    msg = (
                        f"OpenSearch on port {self.port} refused the admin password (HTTP 401): its security index "
                        "was created with another password. Use that password file, or --fresh to wipe the "
                        f"node's data and start over (it is still running as pid {pid}; `milco-os cluster down "
                        f"--port {self.port}` stops it)"
                    )
                    raise ClusterError(msg) from None
                health = None
            except (urllib.error.URLError, OSError, ValueError):
                health = None
            if health and health.get("status") in ("green", "yellow"):
                return
            time.sleep(0.5)
        msg = (
            f"OpenSearch on port {self.port} did not become healthy within {timeout:.0f}s "
            f"(it is still running as pid {pid}; `milco-os cluster down --port {self.port}` stops it). "
            f"Last log lines:\n{self.log_tail()}"
        )
        raise ClusterError(msg)

    def log_tail(self, lines: int = 25) -> str:
        logs = self.node_dir / "logs"
        info = self.info()
        name = cluster_name(info.members() if info else [self.port])
        candidates = [p for p in (logs / f"{name}.log", logs / "console.log") if p.exists() and p.stat().st_size > 0]
        if not candidates:
            return "(no log output)"
        # The newest: a JVM that fails before OpenSearch logs anything writes only to console.log, and the
        # OpenSearch log may then be an earlier run's.
        path = max(candidates, key=lambda p: p.stat().st_mtime)
        text = path.read_text(encoding="utf-8", errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def down(self, timeout: float = 60.0) -> bool:
        """Stop the node and wait until its process is gone. Returns False if it was not running."""
        pid = self.running_pid()
        if pid is None:
            return False
        _stop([pid], timeout)
        return True

    def status(self) -> dict:
        """``{"running": bool, "url", "version", "health", "pid", "port", "secure", "ca_certs", "password_file",
        "plugins"}``; ``health`` is the cluster's (green, yellow, red), or why there is none: unreachable,
        unauthorized (a secure node refused the password in ``password_file``) or the HTTP status it answered."""
        import urllib.error

        pid = self.running_pid()
        info = self.info()
        result: dict = {"running": pid is not None, "url": self.url, "pid": pid, "port": self.port}
        result["secure"] = bool(info and info.secure)
        result["ca_certs"] = info.ca_certs if info else None
        result["password_file"] = info.password_file if info else None
        if pid is None:
            return result
        result["version"] = info.version if info else None
        try:
            root = self._get("/", timeout=5.0)
            result["version"] = root.get("version", {}).get("number", result["version"])
        except urllib.error.HTTPError as e:  # it answered: reachable, but refusing (401: not the admin password)
            result["health"] = "unauthorized" if e.code == 401 else f"HTTP {e.code}"
            return result
        except (urllib.error.URLError, OSError, ValueError):
            result["health"] = "unreachable"
            return result
        health = self.health()
        result["health"] = health.get("status") if health else "unreachable"
        try:  # what the node really loaded, not what node.json asked for
            result["plugins"] = sorted({p["component"] for p in self._get("/_cat/plugins?format=json", timeout=5.0)})
        except (urllib.error.URLError, OSError, ValueError, KeyError, TypeError):
            result["plugins"] = None
        return result


class LocalCluster:
    """N local OpenSearch nodes forming one cluster: HTTP ports ``port`` .. ``port`` + N - 1, named after the
    first. With N = 1 it is the single node :class:`LocalNode` runs."""

    def __init__(self, cache_dir: Path, port: int = DEFAULT_PORT, nodes: int = 1) -> None:
        if nodes < 1:
            msg = f"--nodes {nodes}: must be at least 1"
            raise ConfigError(msg)
        if port + nodes - 1 > 65535:
            msg = f"--port {port} --nodes {nodes}: the last node's port, {port + nodes - 1}, is above 65535"
            raise ClusterError(msg)
        self.cache_dir = Path(cache_dir)
        self.port = port
        self.ports = list(range(port, port + nodes))
        self.members = [LocalNode(cache_dir, p) for p in self.ports]

    @classmethod
    def of(cls, cache_dir: Path, port: int) -> LocalCluster:
        """The cluster the node on ``port`` was last started in (as its node.json records), or that node alone."""
        info = LocalNode(cache_dir, port).info()
        ports = info.members() if info else [port]
        return cls(cache_dir, ports[0], len(ports))

    @property
    def name(self) -> str:
        return cluster_name(self.ports)

    @property
    def urls(self) -> list[str]:
        return [member.url for member in self.members]

    def up(
        self,
        version: str = OPENSEARCH_VERSION,
        archive: Path | None = None,
        heap: str = DEFAULT_HEAP,
        fresh: bool = False,
        timeout: float = 180.0,
        secure: bool = False,
        admin_password_file: Path | None = None,
        plugins: tuple[str, ...] = (),
    ) -> list[NodeInfo]:
        """Start the nodes that are not running (provisioning first) and wait until the cluster is healthy
        with every node joined. Nodes already running are kept, so running it again after a node died
        brings that node back, with its transport port and data."""
        if len(self.members) == 1:
            return [self.members[0].up(version=version, archive=archive, heap=heap, fresh=fresh, timeout=timeout,
                                       secure=secure, admin_password_file=admin_password_file, plugins=plugins)]
        n = len(self.members)
        if not re.fullmatch(r"\d+[mMgG]", heap):
            msg = f"--heap {heap!r}: expected a size such as 512m or 2g"
            raise ClusterError(msg)
        for flag, given in (("--secure", secure or admin_password_file is not None), ("--plugins", bool(plugins))):
            if given:
                msg = f"--nodes {n} with {flag}: not supported yet (a single node only)"
                raise ConfigError(msg)
        for member in self.members:
            member.check_membership(self.ports, fresh)
        running = {m.port: pid for m in self.members if (pid := m.running_pid()) is not None}
        if fresh and running:
            msg = (f"--fresh: nodes of the cluster on port {self.port} are running (ports "
                   f"{', '.join(map(str, running))}); stop them first (milco-os cluster down --port {self.port})")
            raise ClusterError(msg)
        missing = [m for m in self.members if m.port not in running]
        if missing:
            for member in missing:
                if port_in_use(member.port):
                    msg = (f"port {member.port} is already in use by another process (not a milco-os node); "
                           f"stop it or choose other ports with --port (the cluster uses {self.ports[0]}-"
                           f"{self.ports[-1]})")
                    raise ClusterError(msg)
            home, version = self.members[0].install(version, archive)
            for member in self.members:
                info = member.info()
                if member.port in running and info is not None and info.version != version:
                    msg = (f"the cluster on port {self.port} runs OpenSearch {info.version}; start its missing "
                           f"nodes with --version {info.version}")
                    raise ClusterError(msg)
            java_home = find_java_home(required_java(version))
            membership = self._membership(set(running))
            if fresh:
                for member in self.members:
                    for sub in ("data", "logs"):
                        shutil.rmtree(member.node_dir / sub, ignore_errors=True)
            started = {}
            for member in missing:
                conf = member._write_config(home, heap, membership=membership)
                started[member.port] = member._spawn(home, version, java_home, heap, conf, membership=membership).pid
            running.update(started)
        self._wait_formed(running, timeout)
        infos = [m.info() for m in self.members]
        assert all(infos)
        return infos  # type: ignore[return-value]

    def _membership(self, running: set[int]) -> ClusterMembership:
        """Every member's transport port: the recorded one (a running node's, or one free to reuse), else a
        new free one."""
        recorded: dict[int, int | None] = {}
        for member in self.members:
            info = member.info()
            same = info is not None and info.members() == self.ports
            recorded[member.port] = info.transport_port if same and info is not None else None
        taken = set(self.ports) | {t for t in recorded.values() if t is not None}
        chosen = []
        for member in self.members:
            port = recorded[member.port]
            if port is not None and member.port not in running and port_in_use(port):
                log.warning("the recorded transport port %d of the node on port %d is in use; choosing another",
                            port, member.port)
                port = None
            if port is None:
                port = free_transport_port(member.port, taken)
                taken.add(port)
            chosen.append(port)
        return ClusterMembership(tuple(self.ports), tuple(chosen))

    def health(self, timeout: float = 5.0) -> dict | None:
        """``/_cluster/health`` from the first node that answers."""
        for member in self.members:
            health = member.health(timeout=timeout)
            if health is not None:
                return health
        return None

    def joined(self, timeout: float = 2.0) -> set[int] | None:
        """The HTTP ports of the members in the cluster (``_cat/nodes``), or None when no node answers."""
        import urllib.error

        names = {node_name(p): p for p in self.ports}
        for member in self.members:
            try:
                rows: Any = member._get("/_cat/nodes?format=json&h=name", timeout=timeout)
            except (urllib.error.URLError, OSError, ValueError):
                continue
            return {names[row["name"]] for row in rows if row.get("name") in names}
        return None

    def _wait_formed(self, pids: dict[int, int], timeout: float) -> None:
        """Wait until every member has joined and the cluster is green or yellow; a node that exits, or a
        cluster still incomplete after ``timeout`` seconds, is a ClusterError with that node's log tail."""
        n = len(self.members)
        by_port = {m.port: m for m in self.members}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for port, pid in pids.items():
                if not _pid_alive(pid):
                    others = [p for p, other in pids.items() if p != port and _pid_alive(other)]
                    still = (f" (the nodes on ports {', '.join(map(str, others))} are still running: `milco-os "
                             f"cluster down --port {self.port}` stops them)") if others else ""
                    msg = (f"OpenSearch on port {port} (a node of the cluster on port {self.port}) exited during "
                           f"start-up{still}. Last log lines:\n{by_port[port].log_tail()}")
                    raise ClusterError(msg)
            health = self.health(timeout=2.0)
            if health and health.get("number_of_nodes") == n and health.get("status") in ("green", "yellow"):
                return
            time.sleep(0.5)
        joined = self.joined() or set()
        absent = [p for p in self.ports if p not in joined]
        blamed = by_port[absent[0]] if absent else self.members[0]
        which = f"nodes on ports {', '.join(map(str, absent))} did not join" if absent else "it is not green or yellow"
        msg = (
            f"the cluster on port {self.port} did not become healthy with {n} nodes within {timeout:.0f}s ({which}; "
            f"the nodes are still running: `milco-os cluster down --port {self.port}` stops them). "
            f"Last log lines of the node on port {blamed.port}:\n{blamed.log_tail()}"
        )
        raise ClusterError(msg)

    def down(self, timeout: float = 60.0) -> list[int]:
        """Stop every running node of the cluster at once and wait until all have exited; returns their ports."""
        running = {m.port: pid for m in self.members if (pid := m.running_pid()) is not None}
        if running:
            _stop(list(running.values()), timeout)
        return list(running)

    def status(self) -> dict:
        """The first running node's :meth:`LocalNode.status` for the cluster, plus ``nodes`` (port, url, pid,
        running, transport_port of each member), ``urls``, ``number_of_nodes`` (joined, as the cluster says),
        ``cluster_ports`` and ``healthy``: every node running and joined, the cluster green or yellow."""
        nodes = []
        for member in self.members:
            pid = member.running_pid()
            info = member.info()
            nodes.append({"port": member.port, "url": member.url, "pid": pid, "running": pid is not None,
                          "transport_port": info.transport_port if info else None})
        first = next((m for m, node in zip(self.members, nodes, strict=True) if node["running"]), self.members[0])
        result = first.status()
        health = self.health() if result["running"] else None
        result["cluster_ports"] = list(self.ports)
        result["urls"] = self.urls
        result["number_of_nodes"] = health.get("number_of_nodes") if health else None
        result["nodes"] = nodes
        result["healthy"] = (
            all(node["running"] for node in nodes)
            and result.get("health") in ("green", "yellow")
            and result["number_of_nodes"] == len(nodes)
        )
        return result
