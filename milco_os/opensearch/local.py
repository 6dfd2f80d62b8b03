"""A local single-node OpenSearch without Docker: provision, start, stop, status.

The distribution is Maven Central's integration-test zip (no bundled JDK; only the transport module).
``rank_features`` lives in the ``mapper-extras`` module and the language analyzers (``german``, ``cjk``,
...) in the ``analysis-common`` module, which that zip both lacks, so provisioning adds them from Maven
Central's ``mapper-extras-client`` and ``analysis-common`` jars. A user-given archive (``--archive``,
e.g. the official tarball) is used as it is (it already has both modules).

Layout under ``<cache>/opensearch/``::

    archives/                     downloaded zips and jars
    dist/opensearch-<version>/    unpacked distribution (read-only at run time)
    nodes/<port>/                 config/, data/, logs/, tmp/, node.json (what `up` started)

OpenSearch refuses to run as root; when milco-os runs as root it starts the node as the unprivileged
system user ``milco-os`` (created on first use).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

from milco_os.errors import ClusterError

log = logging.getLogger(__name__)

#: The OpenSearch version milco-os pins: the newest 2.x on Maven Central that runs on JDK 11+.
#: docker-compose.yml pins the same image tag (a unit test keeps them equal).
OPENSEARCH_VERSION = "2.19.6"
DISTRIBUTION_ARTIFACT = "org.opensearch.distribution.integ-test-zip:opensearch:{version}:zip"
MAPPER_EXTRAS_ARTIFACT = "org.opensearch.plugin:mapper-extras-client:{version}:jar"


@dataclass(frozen=True)
class ModuleSpec:
    """A module the integration-test zip lacks: one jar from Maven Central plus a written descriptor."""

    name: str
    artifact: str  # Maven coordinates with a {version} placeholder
    classname: str
    description: str

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


def required_java(version: str) -> int:
    """Minimum JDK major version for an OpenSearch version (3.x needs 21, 2.x needs 11)."""
    major = int(version.split(".")[0])
    return 21 if major >= 3 else 11


def java_major(java: Path) -> int | None:
    """Major version of a ``java`` binary, or None if it does not run."""
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
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def http_json(url: str, timeout: float = 5.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (loopback URL we built)
        return json.loads(resp.read().decode("utf-8"))


#: Nodes this process started. Holding the Popen objects keeps Python from warning that a child is
#: "still running" when they are garbage-collected, and lets us reap them when they exit.
_STARTED: dict[int, subprocess.Popen] = {}


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


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def _maven_copy(artifact: str, dest: Path) -> None:
    mvn = shutil.which("mvn")
    if not mvn:
        msg = (
            f"Maven (mvn) is needed to download {artifact}; install it (apt-get install maven) "
            "or pass --archive with an OpenSearch zip or tarball"
        )
        raise ClusterError(msg)
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [mvn, "-q", "-B", "dependency:copy", f"-Dartifact={artifact}", f"-DoutputDirectory={dest}"]
    log.info("fetching %s with Maven", artifact)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-8:])
        msg = f"Maven could not fetch {artifact} (is the version right?):\n{tail}"
        raise ClusterError(msg)


def _extract(archive: Path, dest: Path) -> Path:
    """Unpack a zip or tarball into ``dest`` and return the directory holding ``bin/opensearch``."""
    dest.mkdir(parents=True, exist_ok=True)
    name = archive.name
    if name.endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                target = zf.extract(info, dest)
                mode = (info.external_attr >> 16) & 0o777
                if mode:  # zipfile drops permission bits; bin/opensearch must stay executable
                    os.chmod(target, mode)
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


def plugin_descriptor(spec: ModuleSpec, version: str) -> str:
    """``plugin-descriptor.properties`` for a module added from its jar."""
    java_version = "21" if required_java(version) >= 21 else "11"
    return (
        f"description={spec.description}\n"
        f"version={version}\nname={spec.name}\n"
        f"classname={spec.classname}\n"
        f"java.version={java_version}\nopensearch.version={version}\n"
        "custom.foldername=\nextended.plugins=\nhas.native.controller=false\n"
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


class LocalNode:
    """One local single-node OpenSearch, identified by its HTTP port."""

    def __init__(self, cache_dir: Path, port: int = DEFAULT_PORT) -> None:
        if not 1 <= port <= 65535:
            msg = f"--port {port}: must be between 1 and 65535"
            raise ClusterError(msg)
        self.root = Path(cache_dir) / "opensearch"
        self.port = port
        self.node_dir = self.root / "nodes" / str(port)
        self.url = f"http://127.0.0.1:{port}"

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
        (module / "plugin-descriptor.properties").write_text(plugin_descriptor(spec, version), encoding="utf-8")

    def _write_config(self, home: Path, heap: str) -> Path:
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
        (conf / "opensearch.yml").write_text(
            "# Written by milco-os (cluster up); rewritten on every start.\n"
            "cluster.name: milco-os-local\n"
            f"node.name: milco-os-{self.port}\n"
            "network.host: 127.0.0.1\n"
            f"http.port: {self.port}\n"
            # A range, so two local nodes never fight over one transport port.
            "transport.port: 9300-9399\n"
            "discovery.type: single-node\n"
            f"path.data: {self.node_dir / 'data'}\n"
            f"path.logs: {self.node_dir / 'logs'}\n"
            # A laptop's disk is often > 90% full; watermarks would then refuse shard allocation.
            "cluster.routing.allocation.disk.threshold_enabled: false\n"
            # Expanded queries are long disjunctions (one clause per query term and view).
            "indices.query.bool.max_clause_count: 8192\n",
            encoding="utf-8",
        )
        (conf / "heap").write_text(heap, encoding="utf-8")
        return conf

    # ---------------------------------------------------------------- lifecycle
    def info(self) -> NodeInfo | None:
        path = self.node_dir / "node.json"
        if not path.exists():
            return None
        try:
            return NodeInfo(**json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, TypeError):
            return None

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
        try:
            return http_json(f"{self.url}/_cluster/health", timeout=timeout)
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def up(
        self,
        version: str = OPENSEARCH_VERSION,
        archive: Path | None = None,
        heap: str = DEFAULT_HEAP,
        fresh: bool = False,
        timeout: float = 180.0,
    ) -> NodeInfo:
        """Start the node (provisioning it first) and wait until it is healthy."""
        if not re.fullmatch(r"\d+[mMgG]", heap):
            msg = f"--heap {heap!r}: expected a size such as 512m or 2g"
            raise ClusterError(msg)
        if self.running_pid() is not None:
            if fresh:
                msg = f"--fresh: the node on port {self.port} is running; stop it first (milco-os cluster down)"
                raise ClusterError(msg)
            info = self.info()
            assert info is not None
            self._wait_healthy(info.pid, timeout)
            return info
        if port_in_use(self.port):
            msg = (
                f"port {self.port} is already in use by another process (not a milco-os node); "
                "stop it or choose another port with --port"
            )
            raise ClusterError(msg)
        home, version = self.install(version, archive)
        java_home = find_java_home(required_java(version))
        if fresh:
            for sub in ("data", "logs"):
                shutil.rmtree(self.node_dir / sub, ignore_errors=True)
        conf = self._write_config(home, heap)
        for sub in ("data", "logs", "tmp"):
            (self.node_dir / sub).mkdir(parents=True, exist_ok=True)

        user_kwargs: dict = {}
        user = os.environ.get("USER") or str(os.geteuid())
        if os.geteuid() == 0:
            uid, gid = _ensure_service_user()
            _chown_tree(self.node_dir, uid, gid)
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
        info = NodeInfo(
            version=version,
            port=self.port,
            pid=proc.pid,
            url=self.url,
            home=str(home),
            node_dir=str(self.node_dir),
            user=user,
            started_at=time.time(),
        )
        (self.node_dir / "node.json").write_text(json.dumps(asdict(info), indent=2), encoding="utf-8")
        self._wait_healthy(proc.pid, timeout)
        return info

    def _wait_healthy(self, pid: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _pid_alive(pid):
                msg = f"OpenSearch on port {self.port} exited during start-up. Last log lines:\n{self.log_tail()}"
                raise ClusterError(msg)
            health = self.health(timeout=2.0)
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
        candidates = [logs / "milco-os-local.log", logs / "console.log"]
        for path in candidates:
            if path.exists() and path.stat().st_size > 0:
                text = path.read_text(encoding="utf-8", errors="replace").splitlines()
                return "\n".join(text[-lines:])
        return "(no log output)"

    def down(self, timeout: float = 60.0) -> bool:
        """Stop the node and wait until its process is gone. Returns False if it was not running."""
        pid = self.running_pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _pid_alive(pid):
            if time.monotonic() > deadline:
                log.warning("OpenSearch (pid %d) ignored SIGTERM for %.0fs; killing it", pid, timeout)
                os.kill(pid, signal.SIGKILL)
                deadline = time.monotonic() + 30
            time.sleep(0.2)
        return True

    def status(self) -> dict:
        """``{"running": bool, "url", "version", "health", "pid"}``."""
        pid = self.running_pid()
        info = self.info()
        result: dict = {"running": pid is not None, "url": self.url, "pid": pid, "port": self.port}
        if pid is None:
            return result
        result["version"] = info.version if info else None
        try:
            root = http_json(self.url + "/", timeout=5.0)
            result["version"] = root.get("version", {}).get("number", result["version"])
        except (urllib.error.URLError, OSError, ValueError):
            result["health"] = "unreachable"
            return result
        health = self.health()
        result["health"] = health.get("status") if health else "unreachable"
        return result
