"""Names and ports of local clusters: a single node, or one of N nodes on consecutive ports that find each other
by their fixed transport ports."""

from __future__ import annotations

from dataclasses import dataclass

from milco_os.localnode.process import port_in_use


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
