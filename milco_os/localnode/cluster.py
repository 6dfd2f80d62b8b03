"""A local cluster of N nodes on consecutive ports (``cluster up --nodes N``): started together, formed, stopped and
reported as one."""

from __future__ import annotations

import logging
import re
import shutil
import time
from pathlib import Path
from typing import Any

from milco_os.errors import ClusterError, ConfigError
from milco_os.localnode.distribution import find_java_home
from milco_os.localnode.engine import EngineSpec, engine_spec
from milco_os.localnode.membership import ClusterMembership, cluster_name, free_transport_port, node_name
from milco_os.localnode.node import DEFAULT_HEAP, LocalNode, NodeInfo
from milco_os.localnode.process import _pid_alive, _stop, port_in_use

log = logging.getLogger(__name__)


class LocalCluster:
    """N local OpenSearch nodes forming one cluster: HTTP ports ``port`` .. ``port`` + N - 1, named after the
    first. With N = 1 it is the single node :class:`LocalNode` runs, of either engine (Elasticsearch: a single
    node only)."""

    def __init__(
        self, cache_dir: Path, port: int | None = None, nodes: int = 1, engine: str | EngineSpec = "opensearch"
    ) -> None:
        spec = engine_spec(engine)
        port = spec.default_port if port is None else port
        if nodes < 1:
            msg = f"--nodes {nodes}: must be at least 1"
            raise ConfigError(msg)
        if nodes > 1 and not spec.multi_node:
            msg = f"--nodes {nodes} with --engine {spec.name}: not supported (a single {spec.title} node only)"
            raise ConfigError(msg)
        if port + nodes - 1 > 65535:
            msg = f"--port {port} --nodes {nodes}: the last node's port, {port + nodes - 1}, is above 65535"
            raise ClusterError(msg)
        self.cache_dir = Path(cache_dir)
        self.port = port
        self.ports = list(range(port, port + nodes))
        self.members = [LocalNode(cache_dir, p, spec) for p in self.ports]

    @classmethod
    def of(cls, cache_dir: Path, port: int | None = None, engine: str | None = None) -> LocalCluster:
        """The cluster the node on ``port`` was last started in (as its node.json records), or that node alone;
        the node is :meth:`LocalNode.find`'s (of ``engine``, or of the engine that runs, or ran last, there)."""
        node = LocalNode.find(cache_dir, port, engine)
        info = node.info()
        ports = info.members() if info else [node.port]
        return cls(cache_dir, ports[0], len(ports), node.engine)

    @property
    def name(self) -> str:
        return cluster_name(self.ports)

    @property
    def urls(self) -> list[str]:
        return [member.url for member in self.members]

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
            engine = self.members[0].engine
            java_home = find_java_home(engine.required_java(version), engine.title, engine.env_prefix)
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
