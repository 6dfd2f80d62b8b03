"""The ``milco-os`` command line: thin commands over the library (``milco_os.opensearch`` does the IO and
owns the long jobs). This module assembles the app; the commands live with their concern: :mod:`milco_os.cli_encode`
(encode, export-onnx, loading a model), :mod:`milco_os.cli_index` (index ...), :mod:`milco_os.cli_jobs` (ingest,
reindex, delete, upgrade), :mod:`milco_os.cli_search`, :mod:`milco_os.cli_service` (serve, ml-commons),
:mod:`milco_os.cli_eval` (eval, demo) and :mod:`milco_os.cli_admin` (cluster, models, train). Options shared by
several commands live in :mod:`milco_os.cli_support`. Heavy imports happen inside commands."""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer
from rich.markup import escape

from milco_os import cli_encode, cli_eval, cli_jobs, cli_search, cli_service
from milco_os.cli_admin import cluster_app, models_app, train_app
from milco_os.cli_index import index_app
from milco_os.cli_support import err, one_line, out
from milco_os.quiet import quiet_third_party

app = typer.Typer(
    name="milco-os",
    help="Multilingual learned sparse retrieval on OpenSearch: encode, index and search in any language.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def main_callback(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details to stderr.")] = False,
) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    quiet_third_party()  # known notices of libraries milco-os imports, each dropped precisely (milco_os.quiet)
    # The engines' clients log every failed request (opensearch-py with a traceback) at WARNING; milco-os reports
    # failures itself, once, as a clear message.
    for client_logger in ("opensearch", "elastic_transport"):
        logging.getLogger(client_logger).setLevel(logging.INFO if verbose else logging.CRITICAL)


@app.command()
def version() -> None:
    """Print the milco-os version and the pinned OpenSearch version."""
    from milco_os import __version__
    from milco_os.localnode import OPENSEARCH_VERSION

    out.print(f"milco-os {__version__} (OpenSearch {OPENSEARCH_VERSION})")


#: The top-level commands, in the order --help lists them (after ``version``); the command groups follow.
COMMANDS = [
    ("encode", cli_encode.encode),
    ("export-onnx", cli_encode.export_onnx_command),
    ("ingest", cli_jobs.ingest),
    ("search", cli_search.search),
    ("reindex", cli_jobs.reindex),
    ("delete", cli_jobs.delete),
    ("upgrade", cli_jobs.upgrade),
    ("demo", cli_eval.demo),
    ("serve", cli_service.serve),
    ("eval", cli_eval.eval_command),
]
for _name, _command in COMMANDS:
    app.command(_name)(_command)
app.add_typer(cluster_app, name="cluster")
app.add_typer(models_app, name="models")
app.add_typer(models_app, name="model", hidden=True)  # `milco-os model build` reads naturally too
app.add_typer(train_app, name="train")
app.add_typer(index_app, name="index")
app.add_typer(cli_service.ml_app, name="ml-commons")


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

