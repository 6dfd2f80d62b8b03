"""``milco-os ingest``, ``reindex``, ``delete`` and ``upgrade``: the long jobs that write an index (resumable from a
checkpoint, failed documents kept in a dead-letter file, optionally encoded on Ray)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from milco_os.cli_encode import QuantizeOpt, RuntimeOpt, following_index, ray_job
from milco_os.cli_index import IndexOpt, confirm, connect, size_text
from milco_os.cli_support import (
    ProgressBar,
    checked_index_name,
    err,
    handle_errors,
    out,
    with_index_spec,
    with_ray_options,
    with_settings,
)
from milco_os.errors import ConfigError, IngestError

DeadLetterOpt = Annotated[
    Path | None,
    typer.Option("--dead-letter", help="Where failed documents go (default: <input>.failed.jsonl; an existing one is "
                                       "rotated to .1)."),
]
MaxRetriesOpt = Annotated[
    int, typer.Option("--max-retries", min=0, help="Retries of failed writes (429, 5xx, unreachable) before giving up.")
]



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
    refresh: Annotated[bool, typer.Option("--refresh/--no-refresh",
                                          help="Refresh the index at the end, so the documents are searchable "
                                               "when the command returns (--no-refresh: at the index's next "
                                               "refresh).")] = True,
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
                             max_chars=max_chars, progress=bar, ray=ray, refresh=refresh)
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
