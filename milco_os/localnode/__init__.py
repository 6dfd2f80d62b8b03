"""Local OpenSearch or Elasticsearch without Docker: one node, or (OpenSearch) a cluster of several on consecutive
ports; provision, start, stop, status. The engine is a parameter (``LocalNode(..., engine="elasticsearch")``,
``cluster up --engine elasticsearch``); what differs between the two is one
:class:`~milco_os.localnode.engine.EngineSpec` each, and everything below holds for both unless it says otherwise.

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

Elasticsearch (default 8.19.21, Java 17+) runs Maven Central's integration-test zip of it too, under
``<cache>/elasticsearch/`` with the same layout (``dist/elasticsearch-<version>/``, ``nodes/<port>/``). Its
default HTTP port is 9400 and a single node's transport ports are 9500-9599, so both engines run side by side;
node.json records the engine, so ``cluster status``/``down --port P`` know which runs there. Its config turns
x-pack security off (or on, with ``--secure``) and machine learning off (and, where the distribution has the
module, the GeoIP database downloader). The zip has no ``analysis-common`` module and Maven Central has no jar of
it (see :mod:`~milco_os.localnode.engine`): no language analyzers, and a secure node cannot make API keys. A
secure Elasticsearch node has TLS on HTTP and transport with certificates generated as for OpenSearch, and
basic auth for the built-in superuser ``elastic``, whose password (from the same kind of file) is the keystore's
``bootstrap.password``. ``--plugins`` and ``--nodes N`` are OpenSearch's only.

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

The package, by concern: :mod:`~milco_os.localnode.engine` (what differs between OpenSearch and Elasticsearch),
:mod:`~milco_os.localnode.distribution` (versions, Maven, unpacking, modules, Java),
:mod:`~milco_os.localnode.plugins`, :mod:`~milco_os.localnode.security`, :mod:`~milco_os.localnode.process`
(ports, the service user, start and stop), :mod:`~milco_os.localnode.membership` (cluster names and transport
ports), :mod:`~milco_os.localnode.provision` (the distributions a node runs from),
:mod:`~milco_os.localnode.node` (:class:`LocalNode`) and :mod:`~milco_os.localnode.cluster` (:class:`LocalCluster`).
The names other modules use are importable from the package itself.
"""

from __future__ import annotations

from milco_os.localnode.cluster import LocalCluster
from milco_os.localnode.distribution import (
    EXTRA_MODULES,
    OPENSEARCH_3_VERSION,
    OPENSEARCH_VERSION,
    ModuleSpec,
    _extract,
    archive_version,
    find_java_home,
    java_major,
    plugin_descriptor,
    required_java,
)
from milco_os.localnode.engine import ELASTICSEARCH, ELASTICSEARCH_VERSION, ENGINES, OPENSEARCH, EngineSpec, engine_spec
from milco_os.localnode.membership import ClusterMembership, cluster_name, free_transport_port, node_name
from milco_os.localnode.node import DEFAULT_HEAP, DEFAULT_PORT, LocalNode, NodeInfo
from milco_os.localnode.plugins import PLUGIN_MODULES, PLUGINS, PluginSpec, plugin_closure
from milco_os.localnode.process import _pid_alive
from milco_os.localnode.security import (
    ADMIN_DN,
    ADMIN_USER,
    NODE_DN,
    generate_certs,
    internal_users_yml,
    security_plugin_version,
    security_settings,
    widen_descriptor,
)

__all__ = [
    "ADMIN_DN",
    "ADMIN_USER",
    "DEFAULT_HEAP",
    "DEFAULT_PORT",
    "ELASTICSEARCH",
    "ELASTICSEARCH_VERSION",
    "ENGINES",
    "EXTRA_MODULES",
    "NODE_DN",
    "OPENSEARCH",
    "OPENSEARCH_3_VERSION",
    "OPENSEARCH_VERSION",
    "PLUGINS",
    "PLUGIN_MODULES",
    "ClusterMembership",
    "EngineSpec",
    "LocalCluster",
    "LocalNode",
    "ModuleSpec",
    "NodeInfo",
    "PluginSpec",
    "_extract",
    "_pid_alive",
    "archive_version",
    "cluster_name",
    "engine_spec",
    "find_java_home",
    "free_transport_port",
    "generate_certs",
    "internal_users_yml",
    "java_major",
    "node_name",
    "plugin_closure",
    "plugin_descriptor",
    "required_java",
    "security_plugin_version",
    "security_settings",
    "widen_descriptor",
]
