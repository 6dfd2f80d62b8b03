"""The engines a local node can run, OpenSearch (the default) and Elasticsearch: what differs between them, in one
small spec per engine that :class:`~milco_os.localnode.node.LocalNode` and the provisioning read. Everything else
(the node directory, the service user, certificates, start, health, stop) is shared.

Elasticsearch runs Maven Central's integration-test zip like OpenSearch, which holds only the transport, x-pack
core and x-pack security modules (checked for 8.19.21). Maven Central serves no ``analysis-common`` jar for it
(neither ``org.elasticsearch.plugin`` nor ``org.elasticsearch.module``; Elastic publishes that module nowhere), so
such a node has no language analyzers (the BM25 side uses the ``standard`` analyzer there) and cannot create its
``.security`` index, whose mapping uses that module's ``pattern_capture`` filter: a secure node takes basic auth,
but API keys, kept in that index, cannot be created (an official distribution, given with ``--archive``, has the
module; not tried here). It has no
``mapper-extras`` either; milco-os uses the core ``sparse_vector`` field on Elasticsearch. ``GET /`` answers 405
on it, so health is ``GET /_cluster/health`` and the version ``GET /_nodes/_local`` (on both engines).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from milco_os.errors import ConfigError
from milco_os.localnode.distribution import (
    DISTRIBUTION_ARTIFACT,
    EXTRA_MODULES,
    OPENSEARCH_JAVA,
    OPENSEARCH_VERSION,
    ModuleSpec,
    required_java,
)
from milco_os.localnode.security import (
    ADMIN_USER,
    elasticsearch_security_settings,
    security_settings,
    write_bootstrap_password,
    write_internal_users,
)

#: The Elasticsearch version milco-os pins: the newest release Maven Central has an integration-test zip of (no
#: 9.x there). It runs on Java 17+.
ELASTICSEARCH_VERSION = "8.19.21"


@dataclass(frozen=True)
class EngineSpec:
    """What one engine's local node needs to know that the other's does not."""

    name: str  # as --engine and node.json spell it; also the cache subdirectory
    title: str  # in messages
    default_version: str
    default_port: int  # HTTP
    #: A single node's transport ports: a range, so two local nodes never fight over one port. The engines' ranges
    #: differ, so both run side by side.
    transport_ports: str
    distribution_artifact: str  # Maven coordinates with a {version} placeholder
    binary: str  # bin/<binary> starts it; lib/<binary>-<version>.jar tells its version; dist/<binary>-<version>/
    config_file: str  # in the config directory
    env_prefix: str  # <prefix>_PATH_CONF, _JAVA_HOME, _JAVA_OPTS, _TMPDIR tell bin/<binary> where things are
    main_class: str  # on the command line of the process bin/<binary> becomes (the pid node.json records)
    #: (major version, Java it needs), newest first: the first entry the version reaches applies.
    java: tuple[tuple[int, int], ...]
    extra_modules: tuple[ModuleSpec, ...]  # added from Maven Central when the distribution lacks them
    settings: str  # config lines every node of this engine gets
    plain_settings: str  # config lines of a node without security
    security_settings: Callable[[], str]  # config lines of a secure node (TLS with certs/ and basic auth)
    #: Writes the basic-auth user (``admin_user``) with the given password into a secure node's config:
    #: ``(home, conf, java_home, password)``.
    write_auth: Callable[[Path, Path, Path, str], None]
    admin_user: str
    security_bundled: bool  # the distribution carries its security; else a copy with the plugin is made
    takes_plugins: bool  # --plugins (OpenSearch plugins from Maven Central)
    multi_node: bool  # --nodes N
    #: Config lines for modules only some distributions have (module directory, lines): these engines refuse to
    #: start with a setting no loaded module defines.
    module_settings: tuple[tuple[str, str], ...] = ()

    def required_java(self, version: str) -> int:
        """Minimum JDK major version for ``version`` of this engine."""
        return required_java(version, self.java)

    def node_settings(self, home: Path, secure: bool) -> str:
        """This engine's own config lines for a node of the distribution ``home``."""
        lines = self.settings + (self.security_settings() if secure else self.plain_settings)
        return lines + "".join(text for module, text in self.module_settings if (home / "modules" / module).is_dir())


OPENSEARCH = EngineSpec(
    name="opensearch",
    title="OpenSearch",
    default_version=OPENSEARCH_VERSION,
    default_port=9200,
    transport_ports="9300-9399",
    distribution_artifact=DISTRIBUTION_ARTIFACT,
    binary="opensearch",
    config_file="opensearch.yml",
    env_prefix="OPENSEARCH",
    main_class="org.opensearch.bootstrap.OpenSearch",
    java=OPENSEARCH_JAVA,
    extra_modules=EXTRA_MODULES,
    # Expanded queries are long disjunctions (one clause per query term and view).
    settings="indices.query.bool.max_clause_count: 8192\n",
    plain_settings="",
    security_settings=security_settings,
    write_auth=write_internal_users,
    admin_user=ADMIN_USER,
    security_bundled=False,
    takes_plugins=True,
    multi_node=True,
)

ELASTICSEARCH = EngineSpec(
    name="elasticsearch",
    title="Elasticsearch",
    default_version=ELASTICSEARCH_VERSION,
    default_port=9400,
    transport_ports="9500-9599",
    distribution_artifact="org.elasticsearch.distribution.integ-test-zip:elasticsearch:{version}:zip",
    binary="elasticsearch",
    config_file="elasticsearch.yml",
    env_prefix="ES",
    # bin/elasticsearch execs a launcher JVM, which starts the server JVM (org.elasticsearch.bootstrap.
    # Elasticsearch) as its child and stops it on SIGTERM.
    main_class="org.elasticsearch.launcher.CliToolLauncher",
    java=((9, 21), (0, 17)),
    extra_modules=(),
    # Machine learning starts a native controller and reserves memory (its setting is x-pack core's, known even
    # where the ml module is absent). Elasticsearch 8 sizes the boolean clause limit by itself (its setting is
    # deprecated).
    settings="xpack.ml.enabled: false\n",
    # Explicit, which also keeps a first start from auto-configuring security (generated certificates, an
    # enrollment token and a random password).
    plain_settings="xpack.security.enabled: false\n",
    security_settings=elasticsearch_security_settings,
    write_auth=write_bootstrap_password,
    admin_user="elastic",
    security_bundled=True,
    takes_plugins=False,
    multi_node=False,
    # An official distribution's geoip module downloads databases from the internet on start.
    module_settings=(("ingest-geoip", "ingest.geoip.downloader.enabled: false\n"),),
)

ENGINES = {spec.name: spec for spec in (OPENSEARCH, ELASTICSEARCH)}


def engine_spec(engine: str | EngineSpec) -> EngineSpec:
    """The spec of ``engine`` (a name from :data:`ENGINES`, or a spec, returned as it is)."""
    if isinstance(engine, EngineSpec):
        return engine
    spec = ENGINES.get(engine)
    if spec is None:
        msg = f"--engine {engine!r}: expected one of {', '.join(ENGINES)}"
        raise ConfigError(msg)
    return spec
