"""One local node, OpenSearch or Elasticsearch: its configuration, start, health, stop and status; what it started
is recorded in ``<cache>/<engine>/nodes/<port>/node.json``."""

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
from milco_os.localnode.distribution import find_java_home
from milco_os.localnode.engine import ENGINES, OPENSEARCH, EngineSpec, engine_spec
from milco_os.localnode.membership import ClusterMembership, cluster_name, describe_membership, node_name
from milco_os.localnode.plugins import ML_COMMONS_SETTINGS, plugin_closure
from milco_os.localnode.process import (
    _STARTED,
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
from milco_os.localnode.security import CA_FILE, generate_certs, read_password

if TYPE_CHECKING:
    import ssl


#: OpenSearch's default HTTP port (Elasticsearch's: ``ELASTICSEARCH.default_port``, 9400).
DEFAULT_PORT = OPENSEARCH.default_port
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
    engine: str = "opensearch"  # what runs there (node.json files written before engines existed: OpenSearch)

    def members(self) -> list[int]:
        return list(self.cluster_ports) or [self.port]


class LocalNode(Provisioner):
    """One local node of ``engine`` (a name from :data:`~milco_os.localnode.engine.ENGINES`, default OpenSearch),
    identified by its HTTP port (default: the engine's): a single node, or a member of a :class:`LocalCluster`."""

    def __init__(self, cache_dir: Path, port: int | None = None, engine: str | EngineSpec = "opensearch") -> None:
        self.engine = engine_spec(engine)
        port = self.engine.default_port if port is None else port
        if not 1 <= port <= 65535:
            msg = f"--port {port}: must be between 1 and 65535"
            raise ClusterError(msg)
        self.root = Path(cache_dir) / self.engine.name
        self.port = port
        self.node_dir = self.root / "nodes" / str(port)
        info = self.info()
        scheme = "https" if info and info.secure else "http"  # as the node was last started
        self.url = f"{scheme}://127.0.0.1:{port}"

    @classmethod
    def find(cls, cache_dir: Path, port: int | None = None, engine: str | None = None) -> LocalNode:
        """The node on ``port`` (default: the engine's default port; without an engine, OpenSearch's): of
        ``engine`` when given, else of the engine whose node there runs, else the one last started there (as
        their node.json files say), else OpenSearch's."""
        if engine is not None:
            return cls(cache_dir, port, engine)
        port = OPENSEARCH.default_port if port is None else port
        nodes = [cls(cache_dir, port, name) for name in ENGINES]
        running = [node for node in nodes if node.running_pid() is not None]
        if running:
            return running[0]
        recorded = [(info.started_at, i) for i, node in enumerate(nodes) if (info := node.info()) is not None]
        return nodes[max(recorded)[1]] if recorded else nodes[0]

    def _write_config(
        self, home: Path, heap: str, secure: bool = False, plugins: tuple[str, ...] = (),
        membership: ClusterMembership | None = None,
    ) -> Path:
        """The node's config directory: the distribution's config with our ``opensearch.yml`` or
        ``elasticsearch.yml`` (a single node, or, with ``membership``, a member of a multi-node cluster) and
        ``jvm.options`` pointed at our directories."""
        conf = self.node_dir / "config"
        conf.mkdir(parents=True, exist_ok=True)
        for item in (home / "config").iterdir():
            if item.name == self.engine.config_file:
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
            discovery = f"transport.port: {self.engine.transport_ports}\ndiscovery.type: single-node\n"
        else:
            discovery = membership.settings(self.port)
        (conf / self.engine.config_file).write_text(
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
            + self.engine.node_settings(home, secure)
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
        engine's user with the password (OpenSearch: the security plugin's configuration; Elasticsearch: the
        keystore). Returns the CA certificate's path."""
        ca = self.cert_dir / CA_FILE
        if not all((self.cert_dir / name).exists() for name in (CA_FILE, "node.pem", "node-key.pem", "admin.pem")):
            ca = generate_certs(self.cert_dir)
        # The node reads only its own certificate and key; the CA key and the admin key stay in certs/.
        (conf / "certs").mkdir(exist_ok=True)
        for name in (CA_FILE, "node.pem", "node-key.pem"):
            shutil.copy2(self.cert_dir / name, conf / "certs" / name)
        self.engine.write_auth(home, conf, java_home, read_password(password_file))
        # OpenSearch's plugin warns about every config file other users could read; keep them private to the node.
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
        password = read_password(Path(info.password_file or ""))
        token = base64.b64encode(f"{self.engine.admin_user}:{password}".encode()).decode()
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
        """The pid of this node's process (what bin/opensearch or bin/elasticsearch became), if it is alive (and
        really ours)."""
        info = self.info()
        if info is None or not _pid_alive(info.pid):
            return None
        cmd = _cmdline(info.pid)
        if self.engine.main_class not in cmd or str(self.node_dir / "config") not in cmd:
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
        version: str | None = None,
        archive: Path | None = None,
        heap: str = DEFAULT_HEAP,
        fresh: bool = False,
        timeout: float = 180.0,
        secure: bool = False,
        admin_password_file: Path | None = None,
        plugins: tuple[str, ...] = (),
    ) -> NodeInfo:
        """Start the node (provisioning it first) and wait until it is healthy.

        ``version``: of the engine (default: its pinned one). ``secure``: TLS (certificates generated under the
        node directory) and basic auth for the engine's superuser (OpenSearch's security plugin with ``admin``;
        Elasticsearch's x-pack security with ``elastic``), whose password is read from ``admin_password_file``
        (generated when None). ``plugins``: OpenSearch only, names from :data:`PLUGINS`, installed with the
        plugins they need."""
        if not re.fullmatch(r"\d+[mMgG]", heap):
            msg = f"--heap {heap!r}: expected a size such as 512m or 2g"
            raise ClusterError(msg)
        if admin_password_file is not None and not secure:
            msg = "--admin-password-file is for a secure node; add --secure"
            raise ConfigError(msg)
        if plugins and not self.engine.takes_plugins:
            msg = f"--plugins: OpenSearch plugins, which an {self.engine.title} node does not take"
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
            others = [spec.title for name, spec in ENGINES.items()
                      if name != self.engine.name and LocalNode(self.root.parent, self.port, name).running_pid()]
            if others:
                msg = (f"port {self.port} runs a milco-os {others[0]} node; stop it first (milco-os cluster down "
                       f"--port {self.port}) or choose another port with --port")
            else:
                msg = (f"port {self.port} is already in use by another process (not a milco-os node); "
                       "stop it or choose another port with --port")
            raise ClusterError(msg)
        if secure:
            home, version = self.install_secure(version, archive)
        elif wanted:
            home, version = self.install_plugins(wanted, version, archive)
        else:
            home, version = self.install(version, archive)
        java_home = find_java_home(self.engine.required_java(version), self.engine.title, self.engine.env_prefix)
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
        prefix = self.engine.env_prefix
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            f"{prefix}_PATH_CONF": str(conf),
            f"{prefix}_JAVA_HOME": str(java_home),
            f"{prefix}_JAVA_OPTS": f"-Xms{heap} -Xmx{heap}",
            f"{prefix}_TMPDIR": str(self.node_dir / "tmp"),
        }
        console = open(self.node_dir / "logs" / "console.log", "ab")  # noqa: SIM115 (handed to the child)
        try:
            proc = subprocess.Popen(
                [str(home / "bin" / self.engine.binary)],
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
            engine=self.engine.name,
        )
        (self.node_dir / "node.json").write_text(json.dumps(asdict(info), indent=2), encoding="utf-8")
        return info

    def _wait_healthy(self, pid: int, timeout: float) -> None:
        import urllib.error

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _pid_alive(pid):
                msg = (f"{self.engine.title} on port {self.port} exited during start-up. Last log lines:\n"
                       f"{self.log_tail()}")
                raise ClusterError(msg)
            try:
                health = self._get("/_cluster/health", timeout=2.0)
            except urllib.error.HTTPError as e:
                # A secure OpenSearch node answers 503 until its security index exists, then 401 only for a
                # wrong password: its security index was made, on an earlier start, with another one (an
                # Elasticsearch node's holds one once the password was changed through its API).
                if e.code == 401:
                    user = self.engine.admin_user
                    msg = (
                        f"{self.engine.title} on port {self.port} refused the {user} password (HTTP 401): its "
                        f"security index holds another password for {user}. Use that password file, or --fresh to "
                        f"wipe the node's data and start over (it is still running as pid {pid}; `milco-os cluster "
                        f"down --port {self.port}` stops it)"
                    )
                    raise ClusterError(msg) from None
                health = None
            except (urllib.error.URLError, OSError, ValueError):
                health = None
            if health and health.get("status") in ("green", "yellow"):
                return
            time.sleep(0.5)
        msg = (
            f"{self.engine.title} on port {self.port} did not become healthy within {timeout:.0f}s "
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
        # The newest: a JVM that fails before the engine logs anything writes only to console.log, and the
        # engine's log may then be an earlier run's.
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

    def version(self, timeout: float = 5.0) -> str | None:
        """The version the node reports (``GET /_nodes/_local``: Elasticsearch's integration-test zip answers
        ``GET /`` with 405); None when it reports none. Raises what the request raises."""
        nodes = self._get("/_nodes/_local?filter_path=nodes.*.version", timeout=timeout).get("nodes") or {}
        return next((node.get("version") for node in nodes.values()), None)

    def status(self) -> dict:
        """``{"running": bool, "engine", "url", "version", "health", "pid", "port", "secure", "ca_certs",
        "password_file", "plugins"}``; ``health`` is the cluster's (green, yellow, red), or why there is none:
        unreachable, unauthorized (a secure node refused the password in ``password_file``) or the HTTP status it
        answered."""
        import urllib.error

        pid = self.running_pid()
        info = self.info()
        result: dict = {"running": pid is not None, "engine": self.engine.name, "url": self.url, "pid": pid,
                        "port": self.port}
        result["secure"] = bool(info and info.secure)
        result["ca_certs"] = info.ca_certs if info else None
        result["password_file"] = info.password_file if info else None
        if pid is None:
            return result
        result["version"] = info.version if info else None
        try:
            result["version"] = self.version() or result["version"]
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
