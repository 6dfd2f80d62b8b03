"""The ``milco-os`` command line: thin commands over the library (``milco_os.opensearch`` does the IO and
owns the long jobs). Options shared by several commands live in :mod:`milco_os.cli_support`; the local
node, models and training commands in :mod:`milco_os.cli_admin`. Heavy imports happen inside commands."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from milco_os.cli_admin import cluster_app, models_app, train_app
from milco_os.cli_support import (
    ProgressBar,
    checked,
    checked_index_name,
    err,
    handle_errors,
    one_line,
    out,
    read_stdin_lines,
    task_progress,
    typed_queries,
    with_index_spec,
    with_ray_options,
    with_search_options,
    with_settings,
)
from milco_os.errors import ConfigError, IngestError
from milco_os.localnode import DEFAULT_PORT
from milco_os.specs import DEFAULT_ALPHA, DEFAULT_DENSE_WEIGHT, DEFAULT_FUSION

app = typer.Typer(
    name="milco-os",
    help="Multilingual learned sparse retrieval on OpenSearch: encode, index and search in any language.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(cluster_app, name="cluster")
app.add_typer(models_app, name="models")
app.add_typer(models_app, name="model", hidden=True)  # `milco-os model build` reads naturally too
app.add_typer(train_app, name="train")
index_app = typer.Typer(help="Create and inspect milco-os indices.", no_args_is_help=True)
app.add_typer(index_app, name="index")
ml_app = typer.Typer(
    help="Let OpenSearch itself call milco-os: ml-commons remote models behind neural-search's sparse_encoding "
         "processor and neural_sparse query (needs `milco-os serve` and the plugins).",
    no_args_is_help=True,
)
app.add_typer(ml_app, name="ml-commons")

IndexOpt = Annotated[str, typer.Option("--index", help="Index (or alias) name.")]
RuntimeOpt = Annotated[str, typer.Option("--runtime", help="torch, or onnx (exported once into the cache).")]
QuantizeOpt = Annotated[str | None, typer.Option("--quantize", help="With --runtime onnx: int8 or fp16 instead of fp32.")]
DeadLetterOpt = Annotated[
    Path | None,
    typer.Option("--dead-letter", help="Where failed documents go (default: <input>.failed.jsonl; an existing one is "
                                       "rotated to .1)."),
]
MaxRetriesOpt = Annotated[
    int, typer.Option("--max-retries", min=0, help="Retries of failed writes (429, 5xx, unreachable) before giving up.")
]


@app.callback()
def main_callback(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details to stderr.")] = False,
) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # opensearch-py logs every failed request (with a traceback) at WARNING; milco-os reports failures
    # itself, once, as a clear message.
    logging.getLogger("opensearch").setLevel(logging.INFO if verbose else logging.CRITICAL)


@app.command()
def version() -> None:
    """Print the milco-os version and the pinned OpenSearch version."""
    from milco_os import __version__
    from milco_os.localnode import OPENSEARCH_VERSION

    out.print(f"milco-os {__version__} (OpenSearch {OPENSEARCH_VERSION})")


def load_model(settings: Any, **kwargs: Any) -> Any:
    from milco_os.loading import load_encoder

    with err.status(f"loading model {settings.model} ..."):
        return load_encoder(settings.model, settings.cache_dir, **kwargs)


def following_index(settings: Any, client: Any, index: str, record: dict[str, Any] | None = None) -> Any:
    """``settings`` with the model to encode for INDEX (its ``record``, read here when not given): a bare built-in
    name (the default milco-mini) follows the index to the shipped version that built it, and says so on stderr.
    A missing or foreign index leaves them as they are (the command reports it where it reads the index)."""
    from milco_os.errors import IndexNotFound, ModelMismatch
    from milco_os.loading import model_for_index, pinned
    from milco_os.opensearch.indices import index_record

    try:
        built_with = (record or index_record(client, index)).get("model", {}).get("name")
    except (IndexNotFound, ModelMismatch):
        return settings
    chosen = model_for_index(settings.model, built_with)
    if chosen == settings.model or chosen == (newest := pinned(settings.model)):
        return settings
    err.print(f"index {index!r} was built with {chosen}: encoding with it ({settings.model} is now {newest}; "
              f"`milco-os upgrade {index}` re-encodes the index with it)", highlight=False, markup=False)
    return settings.model_copy(update={"model": chosen})


def ray_job(ray_options: Any, settings: Any, runtime: str, quantize: str | None) -> tuple[Any, Any]:
    """(the Ray job, None) with --ray: the actors load the model; else (None, the model loaded here)."""
    if ray_options is None:
        return None, load_model(settings, runtime=runtime, quantize=quantize)
    from milco_os.opensearch.ray_pool import RayJob

    return RayJob(ray_options, settings, runtime, quantize), None


def connect(settings: Any) -> Any:
    from milco_os.opensearch.client import connect as connect_client

    return connect_client(settings)


# ------------------------------------------------------------------------------------------ encode
@app.command()
@handle_errors
@with_settings(model=True)
def encode(
    texts: Annotated[list[str], typer.Argument(help="Texts to encode; '-' reads one text per line from stdin.")],
    kind: Annotated[str, typer.Option("--kind", help="query or document (sets the max length).")] = "document",
    runtime: RuntimeOpt = "torch",
    quantize: QuantizeOpt = None,
    doc_prune: Annotated[str, typer.Option("--doc-prune", help="With --kind document: pruning PIVOT[,ECHO].")] = "none",
    query_prune: Annotated[str, typer.Option("--query-prune", help="With --kind query: pruning PIVOT[,ECHO].")] = "none",
    index_keys: Annotated[bool, typer.Option(
        "--index-keys", help="Print terms as the index stores them ('.' escaped as %2E) instead of as the "
                             "vocabulary spells them.")] = False,
    settings: Any = None,
) -> None:
    """Print one JSON object per text: {"pivot": {term: weight}, "echo": {piece: weight}}, largest first.

    Terms are display keys (vocabulary entries, weights to 4 digits). To send vectors to OpenSearch yourself,
    use --index-keys, and weight the views as search does (alpha, 1 - alpha): `milco-os search --print-query
    neural_sparse` prints the whole query."""
    from milco_os.keys import encode_key
    from milco_os.pruning import Pruning

    if kind not in ("query", "document"):
        raise ConfigError(f"--kind {kind!r}: expected query or document")
    option, rule, other, unused = (("--query-prune", query_prune, "--doc-prune", doc_prune) if kind == "query"
                                   else ("--doc-prune", doc_prune, "--query-prune", query_prune))
    if unused != "none":
        raise ConfigError(f"{other}: does not apply to --kind {kind}; use {option}")
    pruning = checked(option, lambda: Pruning.parse(rule))
    if pruning.needs_stats:
        raise ConfigError(f"{option} {rule}: selective pruning needs an index's document frequencies; use search")
    texts = read_stdin_lines() if texts == ["-"] else texts
    encoder = load_model(settings, runtime=runtime, quantize=quantize)
    for result in (encoder.encode_queries if kind == "query" else encoder.encode_documents)(texts):
        pruned = pruning.apply(result)
        record = {view: {encode_key(t) if index_keys else t: float(f"{w:.4g}")
                          for t, w in getattr(pruned, view).to_terms().items()}
                  for view in ("pivot", "echo")}
        sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")


@app.command("export-onnx")
@handle_errors
@with_settings(model=True)
def export_onnx_command(
    out_dir: Annotated[Path, typer.Option("--out", help="Directory to write the ONNX model into.")],
    quantize: QuantizeOpt = None,
    settings: Any = None,
) -> None:
    """Export a model to ONNX (dynamic batch and sequence axes), optionally quantised to int8 or fp16."""
    from milco_os.runtime.export import export_onnx

    encoder = load_model(settings)
    with err.status("exporting ..."):
        path = export_onnx(encoder, out_dir, quantize=quantize)  # type: ignore[arg-type]
    out.print(str(path), highlight=False)


# ------------------------------------------------------------------------------------------ index
@index_app.command("create")
@handle_errors
@with_index_spec
@with_settings(model=True, opensearch=True)
def index_create(
    name: Annotated[str, typer.Argument(help="Index name.")], settings: Any = None, spec: Any = None
) -> None:
    """Create an index for the model: text fields, rank_features fields and the _meta contract."""
    from milco_os.opensearch.indices import create_index

    checked_index_name("NAME", name)
    client = connect(settings)
    info = load_model(settings).info
    create_index(client, name, info, spec)
    out.print(f"created index {name!r} for model {info.name} ({info.fingerprint})", highlight=False)


@index_app.command("info")
@handle_errors
@with_settings(opensearch=True)
def index_info_command(name: Annotated[str, typer.Argument(help="Index or alias name.")], settings: Any = None) -> None:
    """Print the index's milco-os _meta, document count and size as JSON."""
    from milco_os.opensearch.indices import index_info

    out.print_json(json.dumps(index_info(connect(settings), name)))


@index_app.command("list")
@handle_errors
@with_settings(opensearch=True)
def index_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object per index (for scripts).")] = False,
    settings: Any = None,
) -> None:
    """List the milco-os indices: aliases, the model that built each, layout, documents and size."""
    from milco_os.opensearch.indices import list_indices

    rows = list_indices(connect(settings))
    if as_json:
        for row in rows:
            sys.stdout.write(json.dumps(row) + "\n")
        return
    if not rows:
        err.print("no milco-os indices (create one with `milco-os index create NAME`)", highlight=False)
        return
    # Plain columns, never cut to the terminal's width: names are what scripts and people copy from here.
    cells = [("index", "aliases", "model", "layout", "documents", "size")]
    cells += [(row["index"], ", ".join(row["aliases"]) or "-", str(row["model"]), row["layout"],
               f"{row['documents']:,}", size_text(row["size_bytes"])) for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(cells[0]))]
    for line in cells:
        padded = [value.rjust(w) if i >= 4 else value.ljust(w)  # numbers right-aligned
                  for i, (value, w) in enumerate(zip(line, widths, strict=True))]
        out.print("  ".join(padded).rstrip(), highlight=False, markup=False)


def size_text(n_bytes: int) -> str:
    """``1.4 MiB``: sizes as people read them."""
    size = float(n_bytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    return f"{size:,.1f} GiB"  # pragma: no cover (the loop returns)


@index_app.command("delete")
@handle_errors
@with_settings(opensearch=True)
def index_delete(
    name: Annotated[str, typer.Argument(help="Index name (not an alias).")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Delete without asking (needed where there is no terminal).")
                   ] = False,
    with_aliases: Annotated[bool, typer.Option(
        "--with-aliases", help="Delete it even when aliases point at it (they go with it).")] = False,
    settings: Any = None,
) -> None:
    """Delete a milco-os index and its documents (asks first on a terminal; never an alias or a foreign index)."""
    from milco_os.opensearch.indices import delete_milco_index, document_count, index_record

    checked_index_name("NAME", name)
    client = connect(settings)
    confirm(f"delete index {name!r} and its {document_count(client, name):,} documents?", yes,
            lambda: index_record(client, name))
    aliases = delete_milco_index(client, name, with_aliases=with_aliases)
    out.print(f"deleted index {name!r}" + (f" and its aliases {', '.join(aliases)}" if aliases else ""),
              highlight=False)


def confirm(question: str, yes: bool, check: Any = None) -> None:
    """Go on only when told: --yes, or the answer on a terminal (``check()`` first, so a refusal comes before the
    question). Without a terminal and without --yes: a one-line error."""
    if yes:
        return
    if check is not None:
        check()
    if not sys.stdin.isatty():
        raise ConfigError(f"{question.rstrip('?')}: not without --yes (no terminal to ask on)")
    if not typer.confirm(question, default=False, err=True):
        raise typer.Exit(1)


# ------------------------------------------------------------------------------------------ ingest
@app.command()
@handle_errors
@with_ray_options
@with_settings(model=True, opensearch=True)
def ingest(
    file: Annotated[str, typer.Argument(help="JSONL file (one document per line: id, text fields, metadata) or '-'.")],
    index: IndexOpt,
    dead_letter: DeadLetterOpt = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted ingest of this file.")] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Documents encoded together.")] = 32,
    bulk_docs: Annotated[int, typer.Option("--bulk-docs", min=1, help="Max documents per bulk request.")] = 500,
    bulk_mb: Annotated[float, typer.Option("--bulk-mb", min=0.01, help="Max megabytes per bulk request.")] = 8.0,
    max_retries: MaxRetriesOpt = 5,
    max_chars: Annotated[int, typer.Option("--max-chars", min=1, help="Longest text per document, in characters; "
                                                                      "longer ones fail (split them).")] = 200_000,
    runtime: RuntimeOpt = "torch",
    quantize: QuantizeOpt = None,
    settings: Any = None,
    ray_options: Any = None,
) -> None:
    """Encode documents and index them; failed documents are reported and kept in a dead-letter file.

    A file ingest writes a checkpoint after every acknowledged batch. If OpenSearch stays unreachable after
    the retries, the job stops and --resume continues after the last acknowledged batch (also after a kill;
    writes are by id, so nothing is duplicated). The checkpoint is removed only when every document is in.
    A dead-letter file can be ingested again as it is.

    With --ray, encoder actors on a Ray cluster encode and write the batches; this process reads the file
    and keeps the checkpoint and the dead-letter file as above (docs/scaling-out.md). Documents carry their
    position in the file as an external version there, so an id repeated in the file ends with its last line
    whichever actor writes first; an older line written after a newer one is counted as superseded.
    """
    from milco_os.opensearch.bulk import BulkConfig
    from milco_os.opensearch.ingest import ingest_file

    checked_index_name("--index", index)
    path = None if file == "-" else Path(file)
    if path is not None and not path.is_file():  # before the model loads; ingest_file checks it too
        raise ConfigError(f"{file}: no such file")
    client = connect(settings)
    ray, encoder = ray_job(ray_options, following_index(settings, client, index), runtime, quantize)
    config = BulkConfig(encode_batch=batch_size, max_docs=bulk_docs, max_bytes=int(bulk_mb * 1024 * 1024),
                        max_retries=max_retries)
    with ProgressBar("ingest") as bar:
        result = ingest_file(client, index, encoder, path, resume=resume, dead_letter=dead_letter, config=config,
                             max_chars=max_chars, progress=bar, ray=ray)
    report = result.report
    superseded = f", superseded {report.superseded}" if report.superseded else ""
    out.print(f"indexed {report.indexed}, failed {report.failed}{superseded}, retried {report.retried}, "
              f"{report.elapsed_s:.1f}s ({report.docs_per_s:,.0f} docs/s)", highlight=False)
    if result.failed_total:
        for doc_id, reason in report.failures[:5]:
            err.print(f"  {doc_id}: {reason}", highlight=False, markup=False, soft_wrap=True)
        kept = f"; the checkpoint {result.checkpoint} records the run" if result.checkpoint else ""
        raise IngestError(f"{result.failed_total} documents failed; they are in {result.dead_letter} "
                          f"(fix them, then ingest that file){kept}", report.failures)


# ------------------------------------------------------------------------------------------ search
@app.command()
@handle_errors
@with_search_options
@with_settings(model=True, opensearch=True)
def search(
    query: Annotated[str | None, typer.Argument(
        help="Query text, any language. Without it, queries are read one per line (the model is loaded once).")] = None,
    *,
    index: IndexOpt,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object per query (for scripts).")] = False,
    top_terms: Annotated[int, typer.Option("--top-terms", min=1, help="Terms shown per hit with --explain.")] = 8,
    print_query: Annotated[str | None, typer.Option(
        "--print-query", metavar="FORM",
        help="Print the search body instead of searching: rank_feature (what search sends), neural_sparse "
             "(query_tokens, keys as the index stores them, alpha applied) or model (neural_sparse with the "
             "index's ml-commons models; OpenSearch encodes). Where search fuses lists (--hybrid-norm, an index "
             "with a dense view): a neural-search hybrid query and a temporary search pipeline that fuses as "
             "search does.")] = None,
    settings: Any = None,
    options: Any = None,
) -> None:
    """Search an index with queries in any language; --explain shows which terms matched and how much."""
    from milco_os.opensearch.indices import index_record
    from milco_os.opensearch.search import query_request, term_stats
    from milco_os.opensearch.search import search as run_search

    checked_index_name("--index", index)
    client = connect(settings)
    # Read once for all queries: the document frequencies `--query-prune selective:R` prunes by.
    record = index_record(client, index)
    stats = term_stats(client, index, record, options)
    settings = following_index(settings, client, index, record)
    if print_query is not None:
        encoder = None if print_query == "model" else load_model(settings)
        for text in [query] if query is not None else typed_queries():
            body = query_request(client, index, text, encoder, options, form=print_query, stats=stats)
            sys.stdout.write(json.dumps(body, ensure_ascii=False) + "\n")
        return
    encoder = load_model(settings)
    for text in [query] if query is not None else typed_queries():
        result = run_search(client, index, text, encoder, options, stats=stats)
        if as_json:
            sys.stdout.write(json.dumps(result.to_dict(top_terms if options.explain else None), ensure_ascii=False)
                             + "\n")
            sys.stdout.flush()
        else:
            print_hits(result, options.explain, top_terms)


def _listed(name: str, hit: Any) -> str:
    """Where a fused hit stood in one list: ``dense #1 (cos 0.871)``, ``sparse #3 (12.31)``, ``bm25 -``."""
    listed = hit.lists.get(name)
    if listed is None:
        return f"{name} -"
    if name == "dense":
        return f"dense #{listed.rank} (cos {hit.dense_similarity:.3f})"
    return f"{name} #{listed.rank} ({listed.score:.4g})"


def _passage_line(passage: Any, width: int = 160) -> str:
    """``passage 1,204-1,910 (dense): 'text…'``: the passage that scored a hit, its text on one line, cut."""
    span, _, text = passage.excerpt(width).partition(" ")
    origin = "" if passage.list == "sparse" else f" ({passage.list})"
    return f"passage {span}{origin}: [italic]{escape(repr(text))}[/]"


def print_hits(result: Any, explain: bool, top_terms: int) -> None:
    from rich.table import Table

    for rank, hit in enumerate(result.hits, 1):
        title = hit.source.get("title") or next((v for v in hit.source.values() if isinstance(v, str)), "")
        out.print(f"[bold]{rank}. {escape(hit.id)}[/]  score {hit.score:.4f}  {escape(str(title)[:100])}",
                  highlight=False)
        if hit.passage is not None:
            out.print(f"   {_passage_line(hit.passage)}", highlight=False)
        if explain and hit.lists:
            out.print("   " + "  ".join(_listed(name, hit) for name in result.lists), highlight=False)
        if explain and hit.terms:
            table = Table(show_header=True, box=None, padding=(0, 2))
            for col in ("view", "term", "query w", "doc w", "contribution", "share"):
                table.add_column(col, justify="right" if col not in ("view", "term") else "left")
            for t in hit.terms[:top_terms]:
                share = t.contribution / hit.sparse_score if hit.sparse_score else 0.0
                table.add_row(t.view, escape(t.term), f"{t.query_weight:.3f}", f"{t.document_weight:.3f}",
                              f"{t.contribution:.3f}", f"{share:.0%}")
            out.print(table)
    out.print(f"{len(result.hits)} hits in {result.took_ms} ms" if result.hits else "no hits", highlight=False)


# ------------------------------------------------------------------------------------------ reindex
@app.command()
@handle_errors
@with_index_spec
@with_ray_options
@with_settings(model=True, opensearch=True)
def reindex(
    source: Annotated[str, typer.Option("--source", help="Index to read.")],
    dest: Annotated[str, typer.Option("--dest", help="Index to write (created with the model's mapping).")],
    slices: Annotated[int, typer.Option("--slices", min=1, help="Parallel point-in-time slices.")] = 1,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted reindex from its checkpoint.")] = False,
    alias: Annotated[str | None, typer.Option("--alias", help="Point this alias at DEST when done (atomic).")] = None,
    page_size: Annotated[int, typer.Option("--page-size", min=1, help="Documents read per page and slice.")] = 64,
    checkpoint: Annotated[Path | None, typer.Option("--checkpoint", help="Checkpoint file (default: in the cache).")] = None,
    dead_letter: DeadLetterOpt = None,
    max_retries: MaxRetriesOpt = 5,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Documents encoded together.")] = 32,
    runtime: RuntimeOpt = "torch",
    quantize: QuantizeOpt = None,
    settings: Any = None,
    ray_options: Any = None,
    spec: Any = None,
) -> None:
    """Re-encode an existing index into a new milco-os index (resumable; verifies counts; optional alias swap).
    DEST is created with the index options (--text-field, --doc-prune, ...); --resume checks they match DEST.
    With --ray, encoder actors on a Ray cluster encode and write; this process reads SRC and checkpoints."""
    from milco_os.opensearch.bulk import BulkConfig
    from milco_os.opensearch.reindex import default_checkpoint_path
    from milco_os.opensearch.reindex import reindex as run_reindex

    for option, name in (("--source", source), ("--dest", dest), ("--alias", alias)):
        checked_index_name(option, name)
    client = connect(settings)
    # A resumed job goes on with the model that created DEST (a new one is created with the newest).
    ray, encoder = ray_job(ray_options, following_index(settings, client, dest) if resume else settings, runtime,
                           quantize)
    dead = dead_letter or Path(f"{dest}.failed.jsonl")
    with ProgressBar("reindex") as bar:
        report = run_reindex(
            client, source, dest, encoder, spec=spec, slices=slices, resume=resume, alias=alias, page_size=page_size,
            checkpoint_path=checkpoint or default_checkpoint_path(settings.cache_dir, source, dest),
            config=BulkConfig(encode_batch=batch_size, max_retries=max_retries), dead_letter=dead, progress=bar,
            ray=ray,
        )
    out.print(f"{source} -> {dest}: {report.dest_count} of {report.source_count} documents, failed "
              f"{report.ingest.failed}, retried {report.ingest.retried}, {report.ingest.elapsed_s:.1f}s"
              + (f"; alias {alias} -> {dest}" if report.alias else ""), highlight=False)
    if not report.verified:
        raise IngestError(
            f"reindex incomplete: {dest} holds {report.dest_count} of {report.source_count} documents; "
            f"{report.failed_total} failed (see {dead}); fix them (ingest that file into {dest}), then run again "
            f"with --resume to verify{' and move the alias' if alias else ''}", report.ingest.failures)


@app.command()
@handle_errors
@with_settings(opensearch=True)
def delete(
    ids: Annotated[list[str] | None, typer.Argument(help="Ids of the documents to delete.")] = None,
    *,
    index: IndexOpt,
    ids_file: Annotated[str | None, typer.Option(
        "--ids-file", help="JSONL of ids ('-': stdin): per line an id, or an object with an \"id\" (an ingest file "
                           "or a dead-letter file works as it is).")] = None,
    dead_letter: Annotated[Path | None, typer.Option(
        "--dead-letter", help="Where ids that could not be deleted go (default: <index>.delete-failed.jsonl; an "
                              "existing one is rotated to .1).")] = None,
    max_retries: MaxRetriesOpt = 5,
    settings: Any = None,
) -> None:
    """Delete documents by id from a milco-os index (or an alias of one); ids the index does not hold are reported,
    ids that could not be deleted are kept in a dead-letter file that --ids-file reads again."""
    from milco_os.opensearch.bulk import BulkConfig
    from milco_os.opensearch.delete import delete_documents, read_ids

    checked_index_name("--index", index)
    if bool(ids) == (ids_file is not None):
        raise ConfigError("IDS / --ids-file: give ids, or --ids-file, not both")
    wanted = list(ids) if ids else list(read_ids(None if ids_file == "-" else Path(ids_file or "")))
    if not wanted:
        raise ConfigError(f"--ids-file {ids_file}: holds no ids")
    dead = dead_letter or Path(f"{index}.delete-failed.jsonl")
    with ProgressBar("delete") as bar:
        report = delete_documents(connect(settings), index, wanted, config=BulkConfig(max_retries=max_retries),
                                  dead_letter=dead, progress=bar if len(wanted) > 10_000 else None)
    out.print(f"deleted {len(report.deleted)}, not found {len(report.not_found)}, failed {len(report.failed)}, "
              f"retried {report.retried}", highlight=False)
    if report.not_found:
        shown = ", ".join(report.not_found[:5]) + (" ..." if len(report.not_found) > 5 else "")
        err.print(f"not in {index}: {shown}", highlight=False, markup=False, soft_wrap=True)
    if report.failed:
        for doc_id, reason in report.failed[:5]:
            err.print(f"  {doc_id}: {reason}", highlight=False, markup=False, soft_wrap=True)
        raise IngestError(f"{len(report.failed)} documents were not deleted; their ids are in {dead} "
                          f"(run again with --ids-file {dead})", report.failed)


@app.command()
@handle_errors
@with_ray_options
@with_settings(model=True, opensearch=True)
def upgrade(
    name: Annotated[str, typer.Argument(help="The alias (or index) searches use.")],
    dest: Annotated[str | None, typer.Option("--dest", help="The new index (default: NAME-<model>, e.g. "
                                                            "docs-milco-mini-2).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted upgrade from its checkpoint.")
                      ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="NAME is an index, not an alias: replace it by an alias "
                                                          "of the new index without asking.")] = False,
    slices: Annotated[int, typer.Option("--slices", min=1, help="Parallel point-in-time slices.")] = 1,
    dead_letter: DeadLetterOpt = None,
    max_retries: MaxRetriesOpt = 5,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Documents encoded together.")] = 32,
    runtime: RuntimeOpt = "torch",
    quantize: QuantizeOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print what changed as JSON.")] = False,
    settings: Any = None,
    ray_options: Any = None,
) -> None:
    """Re-encode an index with the newest version of its model (or --model) into a new index with the same options,
    then point NAME at it: an alias moves (the old index is kept); an index named NAME is replaced by an alias of
    the new one. Resumable (--resume), verified by count; reports documents, size and model before and after."""
    from milco_os.loading import assembled_sources, resolve_model
    from milco_os.models.layouts import fingerprint
    from milco_os.opensearch.bulk import BulkConfig
    from milco_os.opensearch.indices import index_record
    from milco_os.opensearch.upgrade import plan_upgrade
    from milco_os.opensearch.upgrade import upgrade as run_upgrade

    checked_index_name("NAME", name)
    checked_index_name("--dest", dest)
    client = connect(settings)
    built = index_record(client, name)["model"]
    # The index's own model, newest version, unless another is named (--model, MILCO_OS_MODEL).
    own = built.get("name", "").partition("@")[0]
    model = settings.model if "model" in settings.model_fields_set or own not in assembled_sources() else own
    path, given_name = resolve_model(model, settings.cache_dir)
    if not resume and fingerprint(path) == built.get("fingerprint"):
        out.print(f"{name} already uses {built.get('name')}; nothing to do", highlight=False)
        return
    plan = plan_upgrade(client, name, given_name or path.name, dest)
    if not plan.is_alias:
        confirm(f"{name!r} is an index: once {plan.dest} holds its documents, {name!r} is deleted and becomes an "
                f"alias of {plan.dest}; go on?", yes)
    ray, encoder = ray_job(ray_options, settings.model_copy(update={"model": model}), runtime, quantize)
    with ProgressBar("upgrade") as bar:
        report = run_upgrade(client, plan, encoder, cache_dir=settings.cache_dir, resume=resume, slices=slices,
                             config=BulkConfig(encode_batch=batch_size, max_retries=max_retries),
                             dead_letter=dead_letter or Path(f"{plan.dest}.failed.jsonl"), progress=bar, ray=ray)
    summary = report.to_dict()
    before, after = summary["before"], summary["after"]
    if as_json:
        sys.stdout.write(json.dumps(summary) + "\n")
    else:
        out.print(f"{name}: {before['model']} -> {after['model']}; documents {before['documents']:,} -> "
                  f"{after['documents']:,}; size {size_text(before['size_bytes'])} -> {size_text(after['size_bytes'])}",
                  highlight=False)
        if report.moved:
            kept = (f"; the old index {plan.source} is kept (`milco-os index delete {plan.source}` drops it)"
                    if plan.is_alias else f"; the old index {plan.source} was replaced")
            out.print(f"{name} -> {plan.dest}{kept}", highlight=False)
    if not report.moved:
        raise IngestError(
            f"upgrade incomplete: {plan.dest} holds {after['documents']} of {before['documents']} documents; "
            f"{report.reindex.failed_total} failed; fix them, then run again with --resume to verify and move "
            f"{name}", report.reindex.ingest.failures)


# ------------------------------------------------------------------------------------------ demo, serve, eval
@app.command()
@handle_errors
@with_settings(model=True)
def demo(
    port: Annotated[int, typer.Option("--port", help="HTTP port of the local node (127.0.0.1).")] = DEFAULT_PORT,
    index: Annotated[str, typer.Option("--index", help="Index to (re)create for the demo.")] = "milco-demo",
    pages_per_language: Annotated[int, typer.Option(
        "--pages-per-language", min=1, help="LibreOffice help pages indexed per language.")] = 300,
    report: Annotated[Path | None, typer.Option("--report", help="Also write the summary (counts, per-query ranks and hit languages) as JSON to this file, e.g. reports/demo.json.")] = None,
    passages: Annotated[bool, typer.Option("--passages", help="Index whole pages with passages (docs/passages.md) and show each hit's best passage; encoding whole pages takes several times longer.")] = False,
    settings: Any = None,
) -> None:
    """Start the local node, index LibreOffice help pages in 6 languages with the default model, run cross-lingual searches.

    Each example query looks for a page held out from training, indexed in another language than the query's."""
    from milco_os.demo import run_demo, write_report

    local = settings.model_copy(update={"opensearch_url": f"http://127.0.0.1:{port}"})
    summary = run_demo(local, port=port, index=index, console=out, pages_per_language=pages_per_language,
                       passages=passages)
    if report is not None:
        out.print(f"report: {write_report(summary, report)}", highlight=False, markup=False)


# ------------------------------------------------------------------------------------------ ml-commons
@ml_app.command("register")
@handle_errors
@with_settings(opensearch=True)
def ml_register(
    index: IndexOpt,
    service_url: Annotated[str, typer.Option(
        "--service-url", help="Where OpenSearch reaches `milco-os serve` (its key: MILCO_OS_SERVICE_API_KEY[_FILE]).")
    ] = "http://127.0.0.1:8080",
    query_prune: Annotated[str, typer.Option("--query-prune", help="Query pruning of the query models, PIVOT[,ECHO].")
                           ] = "none",
    two_phase: Annotated[bool, typer.Option(
        "--two-phase", help="Add neural_sparse_two_phase_processor to the search pipeline (split by weight: 0.2 of "
                            "the best, window 5 x size; search --two-phase splits by value).")
    ] = False,
    configure_cluster: Annotated[bool, typer.Option(
        "--configure-cluster", help="Set the ml-commons cluster settings the connector needs (trusted endpoint, "
                                    "private address, models on data nodes) instead of refusing.")] = False,
    name: Annotated[str | None, typer.Option(
        "--name", help="Name of the ingest and search pipelines (default: milco-os-INDEX).")] = None,
    batch_size: Annotated[int, typer.Option(
        "--batch-size", min=1, help="Documents of a bulk request the ingest pipeline sends to the service together "
                                    "(as ingest --batch-size).")] = 32,
    settings: Any = None,
) -> None:
    """Create connectors and remote models to `milco-os serve` for INDEX (per view, for documents and queries),
    an ingest pipeline (sparse_encoding per view, pruned as the index's _meta says) and a search pipeline; check
    the path once; record the ids in the index's _meta and print them as JSON."""
    from milco_os.opensearch.mlcommons import register
    from milco_os.pruning import Pruning
    from milco_os.specs import PLUGIN_TWO_PHASE

    checked_index_name("--index", index)
    pruning = checked("--query-prune", lambda: Pruning.parse(query_prune))
    key = settings.service_api_key.get_secret_value() if settings.service_api_key else None
    client = connect(settings)
    with err.status("registering ...") as status:
        reg = register(
            client, index, service_url=service_url, service_key=key, query_pruning=pruning,
            two_phase=PLUGIN_TWO_PHASE if two_phase else None, configure_cluster=configure_cluster, name=name,
            batch_size=batch_size,
            on_step=lambda msg: status.update(f"{msg} ..."),
        )
    if reg["cluster_settings_set"]:
        err.print(f"set cluster settings: {', '.join(reg['cluster_settings_set'])}", highlight=False)
    err.print(
        f"index {index}: POST /{index}/_bulk?pipeline={reg['ingest_pipeline']} encodes documents through "
        f"milco-os serve; search with ?search_pipeline={reg['search_pipeline']} "
        f"(milco-os search --print-query model shows the query)", highlight=False, soft_wrap=True,
    )
    sys.stdout.write(json.dumps(reg) + "\n")


@ml_app.command("unregister")
@handle_errors
@with_settings(opensearch=True)
def ml_unregister(index: IndexOpt, settings: Any = None) -> None:
    """Remove the pipelines, models, connectors and model group `register` made for INDEX."""
    from milco_os.opensearch.mlcommons import unregister

    checked_index_name("--index", index)
    removed = unregister(connect(settings), index)
    out.print(f"removed {len(removed)} objects: {', '.join(removed)}", highlight=False, soft_wrap=True)


@app.command()
@handle_errors
@with_settings(model=True, opensearch=True)
def serve(
    host: Annotated[str, typer.Option("--host", help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8080,
    settings: Any = None,
) -> None:
    """Run the HTTP service: /v1/encode, /v1/neural-sparse (ml-commons connectors), /v1/indices/{name}/documents
    and /search, /healthz, /readyz; docs at /docs.

    Set MILCO_OS_SERVICE_API_KEY (or _FILE) to require `Authorization: Bearer <key>` on /v1 routes.
    """
    import uvicorn

    from milco_os.service.app import create_app

    key = settings.service_api_key.get_secret_value() if settings.service_api_key else None
    uvicorn.run(create_app(settings, service_api_key=key), host=host, port=port, log_level="info")


@app.command("eval")
@handle_errors
@with_settings(opensearch=True)
def eval_command(
    dataset: Annotated[str, typer.Option("--dataset", help="libreoffice-clir or libreoffice-mlir (page titles as queries), libreoffice-keywords-clir or libreoffice-keywords-mlir (the help's own index entries as queries), libreoffice-en (English titles -> English pages of the split).")],
    split: Annotated[str, typer.Option("--split", help="dev (where choices are made) or test (report a choice once).")] = "dev",
    languages: Annotated[str | None, typer.Option("--languages", help="Comma-separated language codes (default: the dataset's defaults).")] = None,
    systems: Annotated[str, typer.Option("--systems", help="Comma-separated: bm25, dense (multilingual-e5-small), sparse, fused (sparse + the model's dense view, fused), dense-view (the model's dense view alone).")] = "bm25,dense,sparse",
    models: Annotated[list[str] | None, typer.Option("--model", help="Model(s) for the sparse system: built-in name, directory or hub id (repeatable; default: MILCO_OS_MODEL).")] = None,
    doc_prune: Annotated[list[str] | None, typer.Option("--doc-prune", help="Document pruning PIVOT[,ECHO] for the sparse system, e.g. mass:0.9 or top_k:128 (repeatable).")] = None,
    alpha: Annotated[list[float] | None, typer.Option("--alpha", min=0, max=1, help=f"Weight of the pivot view in sparse search (1.0: pivot only; repeatable). [default: {DEFAULT_ALPHA:g}]")] = None,
    fusion: Annotated[list[str] | None, typer.Option("--fusion", help=f"For the fused system: NORM:WEIGHT, the normalisation (minmax or rrf) and the dense list's weight (repeatable). [default: {DEFAULT_FUSION}:{DEFAULT_DENSE_WEIGHT:g}]")] = None,
    units: Annotated[str, typer.Option("--units", help="What the model's systems index per document: merged (one vector), passages (each passage, a document scores as its best), or merged,passages (both, side by side).")] = "merged",
    out_dir: Annotated[Path | None, typer.Option("--out", help="Report directory (default: results/eval/<dataset>-<split>/).")] = None,
    max_queries: Annotated[int | None, typer.Option("--max-queries", min=1, help="Evaluate at most this many queries (spread over the languages).")] = None,
    keep_indices: Annotated[bool, typer.Option("--keep-indices", help="Keep the evaluation indices instead of deleting them.")] = False,
    whole_pages: Annotated[bool, typer.Option("--whole-pages", help="Index whole help pages (default: each page's first 600 characters).")] = False,
    device: Annotated[str | None, typer.Option("--device", help="Torch device for the dense system (default: cuda if available).")] = None,
    settings: Any = None,
) -> None:
    """Measure retrieval quality through OpenSearch: nDCG@10, MRR@10, Recall@100 overall and per language.

    Writes report.json, per_query.json and an nDCG@10 chart (PNG) into --out.
    """
    from milco_os.evaluation import runner
    from milco_os.evaluation.report import build_report, eval_tables, write_report

    runner.check_dataset(dataset, split)
    specs = runner.plan_systems(systems.split(","), models=models or [], doc_prunes=doc_prune or [], alpha=alpha or [DEFAULT_ALPHA],
                         default_model=settings.model, fusions=fusion or [], units=units.split(","))
    client = connect(settings) if any(s.kind != "dense" for s in specs) else None
    with err.status(f"preparing {dataset} ({split}) ..."):
        evalset, langs = runner.load_eval_set(dataset, split, runner.parse_languages(languages), settings.cache_dir, whole_pages)
    subset, skipped = runner.judged_queries(evalset, max_queries)
    if not subset.queries:
        raise ConfigError(f"{dataset} ({split}, {','.join(langs)}) has no judged queries to evaluate")
    err.print(f"{len(subset.queries)} queries, {len(subset.corpus)} documents, systems: "
              f"{', '.join(s.name for s in specs)}", highlight=False, markup=False)
    display, progress = task_progress()
    with display:
        results = runner.run_systems(client, subset, specs, cache_dir=settings.cache_dir, keep_indices=keep_indices,
                              progress=progress, device=device)
    report, per_query = build_report(
        subset, results, dataset=dataset, split=split, languages=langs, opensearch=runner.opensearch_info(client),
        extra={"max_queries": max_queries, "unjudged_queries_skipped": skipped, "whole_pages": whole_pages})
    paths = write_report(report, per_query, out_dir or Path("results") / "eval" / f"{dataset}-{split}")
    for table in eval_tables(report):
        out.print(table)
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
