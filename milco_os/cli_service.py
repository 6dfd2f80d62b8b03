"""``milco-os serve`` and ``ml-commons``: the HTTP service, and OpenSearch calling it through ml-commons remote
models."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from milco_os.cli_index import IndexOpt, connect
from milco_os.cli_support import (
    checked,
    checked_index_name,
    err,
    handle_errors,
    out,
    with_settings,
)

ml_app = typer.Typer(
    help="Let OpenSearch itself call milco-os: ml-commons remote models behind neural-search's sparse_encoding "
         "processor and neural_sparse query (needs `milco-os serve` and the plugins).",
    no_args_is_help=True,
)


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
