"""One local OpenSearch node: its configuration, start, health, stop and status; what it started is recorded in
``nodes/<port>/node.json``."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from milco_os.errors import ClusterError, ConfigError
from milco_os.localnode.distribution import OPENSEARCH_VERSION, find_java_home, required_java
from milco_os.localnode.membership import ClusterMembership, cluster_name, describe_membership, node_name
from milco_os.localnode.plugins import ML_COMMONS_SETTINGS, plugin_closure
from milco_os.localnode.process import (
    _STARTED,
    MAIN_CLASS,
    SERVICE_USER,
    _chown_tree,
    _cmdline,
    _ensure_service_user,
    _pid_alive,
    _stop,
    http_json,
    port_in_use,
)
from milco_os.localnode.provision import Provisioner
from milco_os.localnode.security import (
    ADMIN_USER,
    CA_FILE,
    SECURITY_PLUGIN,
    generate_certs,
    hash_password,
    internal_users_yml,
    read_password,
    security_settings,
)

if TYPE_CHECKING:
    import ssl


DEFAULT_PORT = 9200
DEFAULT_HEAP = "1g"


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


class LocalNode(Provisioner):
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
        if MAIN_CLASS not in cmd or str(self.node_dir / "config") not in cmd:
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
