"""Plugins ``cluster up --plugins`` installs (from Maven Central), the modules they need, and the settings
ml-commons needs to call ``milco-os serve``."""

from __future__ import annotations

from dataclasses import dataclass

from milco_os.errors import ConfigError
from milco_os.localnode.distribution import ModuleSpec


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
