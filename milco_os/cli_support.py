"""What every ``milco-os`` command shares: the consoles, one-line errors, and options declared once.

Options that several commands take (connection, model, index layout, search knobs) are declared here once
and parsed once: :func:`injected` adds them to a command's signature and hands the command the one typed
object built from them (``Settings``, :class:`~milco_os.specs.IndexSpec`,
:class:`~milco_os.specs.SearchOptions`). Library errors say what is wrong; :func:`fix_for` adds how to fix
it in CLI terms. Nothing here imports numpy, torch or opensearch-py at import time.
"""

from __future__ import annotations

import functools
import inspect
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from milco_os.errors import ConfigError, MilcoError
from milco_os.specs import (
    ALPHA_DEFAULT_TEXT,
    DEFAULT_DENSE_WEIGHT,
    DEFAULT_FUSION,
    DEFAULT_PASSAGE_SCORE,
    DEFAULT_QUERY_PRUNE,
    DENSE_FIELD,
    ECHO_FIELD,
    PASSAGES_FIELD,
    PIVOT_FIELD,
)

# soft_wrap: a line stays one line when the output is not a terminal (scripts read it).
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
F = TypeVar("F", bound=Callable[..., Any])


def one_line(text: str) -> str:
    return " ".join(str(text).split())


# ------------------------------------------------------------------------------------------ errors
#: Settings fields -> the flag and environment variable that set them, for error messages.
SETTING_NAMES = {
    "opensearch_url": "--url / MILCO_OS_OPENSEARCH_URL",
    "engine": "--engine / MILCO_OS_ENGINE",
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


def fix_for(e: MilcoError) -> str:
    """The library's message, and how to fix it with milco-os's own commands and flags."""
    from milco_os.errors import IndexExists, IndexNotFound, ModelMismatch, OpenSearchUnavailable, WorkersLost
    from milco_os.opensearch.checkpoint import InterruptedJob, NothingToResume
    from milco_os.opensearch.client import ConnectionProblem

    text = str(e)
    if isinstance(e, IndexNotFound):
        return f"{text}; create it with `milco-os index create {e.index}`"
    if isinstance(e, IndexExists):
        return f"{text}; delete it first or choose another name"
    if isinstance(e, ModelMismatch):
        return (f"{text}; use --model {e.index_model}, or re-encode the index (`milco-os upgrade {e.index} --model "
                "MODEL`)") if e.index_model else (
            f"{text}; create milco-os indices with `milco-os index create`")
    if isinstance(e, InterruptedJob):
        return f"{text}; continue it with --resume, or delete the file to start over"
    if isinstance(e, NothingToResume):
        return f"--resume: {text}"
    if isinstance(e, ConnectionProblem):
        return f"{text}; {e.hint}"
    if isinstance(e, OpenSearchUnavailable):
        if e.checkpoint is not None:
            return (f"stopped, OpenSearch unavailable ({text}); progress is saved in {e.checkpoint}; once "
                    "OpenSearch is back, run the same command with --resume")
        if e.dead_letter is not None:
            return f"stopped, OpenSearch unavailable ({text}); documents that were not written are in {e.dead_letter}"
    if isinstance(e, WorkersLost) and e.checkpoint is not None:
        return f"stopped, {text}; progress is saved in {e.checkpoint}; run the same command with --resume"
    return text


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
            fail(fix_for(e))
        except ValidationError as e:
            fail(describe_validation_error(e, SETTING_NAMES))
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130) from None
        except Exception as e:  # noqa: BLE001 (one line instead of a traceback; -v shows the traceback)
            fail(describe_unexpected(e))

    return wrapper  # type: ignore[return-value]


def describe_unexpected(e: Exception) -> str:
    """One line for an error no command turned into a MilcoError (with -v, the traceback is logged)."""
    from milco_os.opensearch.client import describe_transport_error
    from milco_os.opensearch.engine import connection_error, error_engine, error_status, transport_error

    logging.getLogger("milco_os").info("details", exc_info=e)
    if isinstance(e, connection_error()):
        return f"{error_engine(e).label} unreachable ({type(e).__name__}); check --url / MILCO_OS_OPENSEARCH_URL and that it is up"
    if isinstance(e, transport_error()):
        return f"{error_engine(e).label} refused the request (HTTP {error_status(e)}): {describe_transport_error(e)}"
    return f"unexpected {type(e).__name__}: {e} (run with -v for the traceback)"


def fail(message: str) -> None:
    from milco_os.redact import redact_urls_in

    err.print(f"[bold red]error:[/] {escape(one_line(redact_urls_in(message)))}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


T = TypeVar("T")


def checked(option: str, make: Callable[[], T]) -> T:
    """``make()``, or a one-line ConfigError naming the option when it raises ValueError."""
    try:
        return make()
    except ValueError as e:  # json.JSONDecodeError too
        raise ConfigError(f"{option}: {e}") from None


def checked_index_name(option: str, name: str | None) -> str | None:
    from milco_os.opensearch.validation import check_index_name

    return None if name is None else checked(option, lambda: check_index_name(name))


# ------------------------------------------------------------------------------------------ shared options
def injected(name: str, params: list[inspect.Parameter], build: Callable[..., Any]) -> Callable[[F], F]:
    """Add ``params`` (typer options) to a command and pass the command ``name=build(**their values)``
    instead, so options that several commands share are declared once and parsed once."""
    names = [p.name for p in params]

    def decorate(fn: F) -> F:
        own = [p for p in inspect.signature(fn, eval_str=True).parameters.values() if p.name != name]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            values = {n: kwargs.pop(n) for n in names}
            return fn(*args, **kwargs, **{name: build(**values)})

        signature = inspect.Signature([*own, *params])
        wrapper.__signature__ = signature  # type: ignore[attr-defined]  (what typer reads)
        wrapper.__annotations__ = {p.name: p.annotation for p in signature.parameters.values()}
        return wrapper  # type: ignore[return-value]

    return decorate


def option(name: str, kind: Any, flag: str, help: str, panel: str, default: Any = None, **kw: Any) -> inspect.Parameter:  # noqa: A002
    """One typer option, as a keyword-only parameter that :func:`injected` can add to a command."""
    annotation = Annotated[kind, typer.Option(flag, help=help, rich_help_panel=panel, **kw)]
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)


MODEL_PANEL, CONNECTION_PANEL = "Model and cache", "Connection"
CACHE_DIR = option("cache_dir", Path | None, "--cache-dir", "Cache for downloads, models and local nodes "
                   "(env MILCO_OS_CACHE_DIR).", MODEL_PANEL)
MODEL = option("model", str | None, "--model", "Built-in model name, model directory or hub id "
               "(env MILCO_OS_MODEL).", MODEL_PANEL)
CONNECTION = [
    option("url", str | None, "--url", "OpenSearch or Elasticsearch URL(s), comma-separated "
           "(env MILCO_OS_OPENSEARCH_URL).", CONNECTION_PANEL),
    option("engine", str | None, "--engine", "The engine at the URL: opensearch, elasticsearch, or auto, which asks "
           "it (env MILCO_OS_ENGINE; default auto).", CONNECTION_PANEL),
    option("username", str | None, "--username", "Basic-auth user (env MILCO_OS_OPENSEARCH_USERNAME).",
           CONNECTION_PANEL),
    option("password_file", Path | None, "--password-file", "File holding the basic-auth password "
           "(env MILCO_OS_OPENSEARCH_PASSWORD(_FILE)).", CONNECTION_PANEL),
    option("api_key_file", Path | None, "--api-key-file", "File holding an API key "
           "(env MILCO_OS_OPENSEARCH_API_KEY(_FILE)).", CONNECTION_PANEL),
    option("ca_certs", Path | None, "--ca-certs", "CA bundle for TLS (env MILCO_OS_OPENSEARCH_CA_CERTS).",
           CONNECTION_PANEL),
    option("insecure", bool, "--insecure", "Do not verify TLS certificates (not for production).",
           CONNECTION_PANEL, False),
    option("timeout", float | None, "--timeout", "Request timeout in seconds (env MILCO_OS_OPENSEARCH_TIMEOUT).",
           CONNECTION_PANEL),
]


def build_settings(cache_dir: Path | None = None, model: str | None = None, url: str | None = None,
                   engine: str | None = None, username: str | None = None, password_file: Path | None = None, api_key_file: Path | None = None,
                   ca_certs: Path | None = None, insecure: bool = False, timeout: float | None = None) -> Any:
    """Settings from the environment, overridden by the flags that were given. Secrets come from files
    (flags) or the environment, never from the command line itself."""
    from milco_os.settings import Settings

    given = {
        "cache_dir": cache_dir, "model": model, "opensearch_url": url, "engine": engine, "opensearch_username": username,
        "opensearch_password_file": password_file, "opensearch_api_key_file": api_key_file,
        "opensearch_ca_certs": ca_certs, "opensearch_verify_certs": False if insecure else None,
        "opensearch_timeout": timeout,
    }
    return Settings(**{k: v for k, v in given.items() if v is not None})


def with_settings(*, model: bool = False, opensearch: bool = False) -> Callable[[F], F]:
    """The command gets ``settings``: --cache-dir, and --model and/or the OpenSearch connection flags."""
    params = [CACHE_DIR, *([MODEL] if model else []), *(CONNECTION if opensearch else [])]
    return injected("settings", params, build_settings)


DOC_PRUNE_HELP = ("Document pruning PIVOT[,ECHO] (one rule prunes both views): none, top_k:K, mass:P, "
                  "mass_percentile:P, max_ratio:R or abs_value:T.")
QUERY_PRUNE_HELP = ("Query pruning PIVOT[,ECHO] (one rule prunes both views), e.g. top_k:16, mass:0.3, or "
                    "selective:R (terms whose w*ln(1+N/df) is at least R of the best; needs the index); none: the "
                    "full query.")


#: Approximate indices ``--ann`` builds.
ANN_METHODS = ("seismic",)


def build_index_spec(text_field: list[str] | None, pivot_field: str, echo_field: str, doc_prune: str, bm25: bool,
                     vectors_in_source: bool, shards: int, replicas: int, dense: bool, passages: bool,
                     ann: str | None, ann_param: list[str] | None) -> Any:
    from milco_os.layout import Seismic
    from milco_os.pruning import Pruning
    from milco_os.specs import IndexSpec

    pruning = checked("--doc-prune", lambda: Pruning.parse(doc_prune))
    if ann is not None and ann not in ANN_METHODS:
        raise ConfigError(f"--ann {ann}: choose {', '.join(ANN_METHODS)}")
    if ann is None and ann_param:
        raise ConfigError(f"--ann-param {ann_param[0]}: sets the approximate index; add --ann seismic")
    seismic = checked("--ann-param", lambda: Seismic.parse(ann_param or [])) if ann == "seismic" else None
    return checked("--text-field/--pivot-field/--echo-field", lambda: IndexSpec(
        text_fields=tuple(text_field or ["text"]), pivot_field=pivot_field, echo_field=echo_field,
        doc_pruning=pruning, bm25=bm25, vectors_in_source=vectors_in_source, shards=shards, replicas=replicas,
        dense=dense, passages=passages, seismic=seismic,
    ))


INDEX_PANEL = "Index layout"
with_index_spec = injected("spec", [
    option("text_field", list[str] | None, "--text-field", "Text field(s) to encode (repeatable; default: text).",
           INDEX_PANEL),
    option("pivot_field", str, "--pivot-field", "rank_features field of the pivot view.", INDEX_PANEL, PIVOT_FIELD),
    option("echo_field", str, "--echo-field", "rank_features field of the echo view.", INDEX_PANEL, ECHO_FIELD),
    option("doc_prune", str, "--doc-prune", DOC_PRUNE_HELP, INDEX_PANEL, "none"),
    option("bm25", bool, "--bm25/--no-bm25", "Also index the text for BM25 (hybrid search).", INDEX_PANEL, True),
    option("vectors_in_source", bool, "--vectors-in-source/--no-vectors-in-source",
           "Keep the sparse vectors in _source.", INDEX_PANEL, True),
    option("shards", int, "--shards", "Primary shards.", INDEX_PANEL, 1, min=1),
    option("replicas", int, "--replicas", "Replicas of each shard.", INDEX_PANEL, 1, min=0),
    option("dense", bool, "--dense/--no-dense", f"Also store the model's dense view (a k-NN field, {DENSE_FIELD}; "
           "needs OpenSearch's k-NN plugin); search then fuses it with the sparse views.", INDEX_PANEL, False),
    option("passages", bool, "--passages/--no-passages", f"Store each document's passages (the encoder's windows) "
           f"as nested objects of {PASSAGES_FIELD}, each with its own views and character span, instead of one merged "
           "vector: a document scores as its best passage, which search shows with its matched terms.",
           INDEX_PANEL, False),
    option("ann", str | None, "--ann", "Approximate sparse retrieval: seismic stores the sparse views in "
           "neural-search's sparse_vector fields with a SEISMIC index (OpenSearch 3.3+ with neural-search; "
           "docs/seismic.md).", INDEX_PANEL),
    option("ann_param", list[str] | None, "--ann-param", "A SEISMIC build parameter NAME=VALUE (repeatable): "
           "n_postings, cluster_ratio, summary_prune_ratio, approximate_threshold, quantization_ceiling_ingest, "
           "quantization_ceiling_search.", INDEX_PANEL),
], build_index_spec)


def build_search_options(size: int, from_: int, alpha: float, query_prune: str, two_phase: bool,
                         hybrid: float | None, hybrid_norm: str | None, dense: float | None, filter_json: str | None,
                         passage_score: str, ann_param: list[str] | None, explain: bool) -> Any:
    import json

    from milco_os.layout import SeismicQuery
    from milco_os.opensearch.validation import check_filters
    from milco_os.pruning import Pruning
    from milco_os.settings import Settings
    from milco_os.specs import SearchOptions, TwoPhase

    pruning = checked("--query-prune", lambda: Pruning.parse(query_prune))
    allow_scripts = Settings().allow_script_filters
    filters = checked("--filter", lambda: check_filters([json.loads(filter_json)] if filter_json else [],
                                                        allow_scripts=allow_scripts))
    return checked("--hybrid/--hybrid-norm/--dense/--passage-score", lambda: SearchOptions(
        size=size, from_=from_, alpha=alpha, query_pruning=pruning, filters=filters,
        two_phase=TwoPhase() if two_phase else None, hybrid_weight=hybrid, hybrid_norm=hybrid_norm,
        dense_weight=dense, passage_score=passage_score, explain=explain,
        seismic=checked("--ann-param", lambda: SeismicQuery.parse(ann_param)) if ann_param else None,
    ))


SEARCH_PANEL = "Search"
with_search_options = injected("options", [
    option("size", int, "--size", "Hits to return.", SEARCH_PANEL, 10, min=1),
    option("from_", int, "--from", "Offset of the first hit.", SEARCH_PANEL, 0, min=0),
    option("alpha", float | None, "--alpha", f"Weight of the pivot view (echo: 1-alpha). Default: {ALPHA_DEFAULT_TEXT}.",
           SEARCH_PANEL, min=0, max=1),
    option("query_prune", str, "--query-prune", QUERY_PRUNE_HELP, SEARCH_PANEL, DEFAULT_QUERY_PRUNE),
    option("two_phase", bool, "--two-phase", "Selective terms first (value w*ln(1+N/df) >= 0.2 of the best), the rest "
           "in a rescore window of 10 x size: the full query's top 10 at half its postings.",
           SEARCH_PANEL, False),
    option("hybrid", float | None, "--hybrid", "Add BM25 on the text fields with this weight.", SEARCH_PANEL),
    option("hybrid_norm", str | None, "--hybrid-norm",
           "How result lists are fused, each normalised first: minmax or rrf (reciprocal ranks). With --hybrid: BM25 "
           "becomes a list of its own (without it, BM25 is added to the sparse sum); on an index with a dense view "
           f"the dense list joins too (default there: {DEFAULT_FUSION}).", SEARCH_PANEL),
    option("dense", float | None, "--dense", "On an index with a dense view: weight of its k-NN list in the fusion "
           f"(default {DEFAULT_DENSE_WEIGHT:g}); 0 searches the sparse views only.", SEARCH_PANEL, min=0),
    option("filter_json", str | None, "--filter", "An OpenSearch filter clause as JSON.", SEARCH_PANEL),
    option("passage_score", str, "--passage-score", "On an index with passages: a document scores as its best "
           "passage (max), or the sum or mean (avg) of its passages' scores.", SEARCH_PANEL, DEFAULT_PASSAGE_SCORE),
    option("ann_param", list[str] | None, "--ann-param", "On a SEISMIC index: a query parameter NAME=VALUE "
           "(repeatable): k (hits per view, default 100), top_n (query terms that pick clusters, default 10), "
           "heap_factor (above 1: more clusters, better recall; default 1).", SEARCH_PANEL),
    option("explain", bool, "--explain", "Show the matching terms of each hit (fused: also its rank in each list and "
           "the dense view's cosine).", SEARCH_PANEL, False),
], build_search_options)


def build_ray_options(ray: bool, ray_address: str | None, actors: int | None, num_cpus: float,
                      num_gpus: float) -> Any:
    import re

    from milco_os.opensearch.ray_pool import RayOptions

    if not ray:
        unused = [flag for flag, value, default in (("--ray-address", ray_address, None), ("--actors", actors, None),
                                                    ("--num-cpus", num_cpus, 1.0), ("--num-gpus", num_gpus, 0.0))
                  if value != default]
        if unused:
            raise ConfigError(f"{unused[0]}: sets the Ray encoder actors; add --ray")
        return None
    if ray_address is not None and ray_address != "auto" and not re.fullmatch(r"(ray://)?[\w.\-\[\]:]+:\d+",
                                                                             ray_address):
        raise ConfigError(f"--ray-address {ray_address}: expected auto, HOST:PORT or ray://HOST:PORT")
    return RayOptions(address=ray_address, actors=actors, num_cpus=num_cpus, num_gpus=num_gpus)


RAY_PANEL = "Scaling out on Ray (the ray extra)"
# --ray is a plain flag and the address an option of its own: an option whose value may be left out takes
# whatever follows it, the input file too (`ingest --index X --ray docs.jsonl`).
with_ray_options = injected("ray_options", [
    option("ray", bool, "--ray", "Encode and write on Ray actors: on a Ray started here, or on the cluster "
           "--ray-address names (without it, RAY_ADDRESS when set, as Ray itself does).", RAY_PANEL, False),
    option("ray_address", str | None, "--ray-address", "With --ray: join a running Ray cluster, auto (the one this "
           "machine belongs to: ray start), HOST:PORT, or ray://HOST:PORT through Ray Client.", RAY_PANEL,
           metavar="ADDRESS"),
    option("actors", int | None, "--actors", "Encoder actors (default: as many as the cluster's CPUs, or GPUs, "
           "allow).", RAY_PANEL, min=1),
    option("num_cpus", float, "--num-cpus", "CPUs per actor (also its encoder threads).", RAY_PANEL, 1.0, min=0.01),
    option("num_gpus", float, "--num-gpus", "GPUs per actor (the model then runs on CUDA).", RAY_PANEL, 0.0, min=0),
], build_ray_options)


# ------------------------------------------------------------------------------------------ input
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


def typed_queries() -> Iterator[str]:
    """Queries one per line from stdin until it ends (on a terminal, with a prompt)."""
    interactive = sys.stdin.isatty()
    if interactive:
        err.print("one query per line; Ctrl-D ends", highlight=False)
    while True:
        try:
            line = err.input("[bold]query>[/] ") if interactive else sys.stdin.readline()
        except EOFError:
            return
        if not interactive and not line:
            return
        if line.strip():
            yield line.strip()


# ------------------------------------------------------------------------------------------ progress
class ProgressBar:
    """A rich progress bar for a long job (:class:`milco_os.opensearch.ingest.JobProgress`), with docs/s."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.display: Any = None

    def start(self, total: int | None, completed: int) -> None:
        import time

        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        columns = [TextColumn(self.label), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
                   TextColumn("{task.fields[rate]} docs/s"), TimeElapsedColumn()]
        if total:
            columns.append(TimeRemainingColumn())
        self.display = Progress(*columns, console=err, transient=False)
        self.task = self.display.add_task(self.label, total=total, completed=completed, rate="-")
        self.started, self.done = time.monotonic(), 0
        self.display.start()

    def advance(self, n: int) -> None:
        import time

        self.done += n
        rate = self.done / max(time.monotonic() - self.started, 1e-9)
        self.display.update(self.task, advance=n, rate=f"{rate:,.0f}")

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.display is not None:
            self.display.stop()


def task_progress() -> tuple[Any, Callable[[str, int | None], Callable[[int], None]]]:
    """A rich display of several tasks and its ``progress(label, total) -> advance(n)`` hook (eval)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    display = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                       console=err, transient=False)

    def start(label: str, total: int | None) -> Callable[[int], None]:
        task = display.add_task(escape(label), total=total)
        return lambda n: display.update(task, advance=n)

    return display, start
