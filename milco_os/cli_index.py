"""``milco-os index`` (create, info, list, delete), and what the commands that work on an index share: ``--index``,
the connection, a question before a destructive step, sizes as people read them."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from milco_os.cli_encode import load_model
from milco_os.cli_support import (
    checked_index_name,
    err,
    handle_errors,
    out,
    with_index_spec,
    with_settings,
)
from milco_os.errors import ConfigError

index_app = typer.Typer(help="Create and inspect milco-os indices.", no_args_is_help=True)

IndexOpt = Annotated[str, typer.Option("--index", help="Index (or alias) name.")]


def connect(settings: Any) -> Any:
    from milco_os.opensearch.client import connect as connect_client

    return connect_client(settings)


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
