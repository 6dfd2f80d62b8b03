"""The README's main job: local OpenSearch + default model + multilingual sample + cross-lingual searches."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from milco_os.settings import Settings

TEXT_FIELDS = ["title", "text"]


def sample_documents() -> list[dict[str, Any]]:
    text = resources.files("milco_os.data").joinpath("demo_documents.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def sample_queries() -> list[dict[str, Any]]:
    return json.loads(resources.files("milco_os.data").joinpath("demo_queries.json").read_text(encoding="utf-8"))


def run_demo(
    settings: Settings, *, port: int, index: str, console: Console, size: int = 4, start_node: bool = True
) -> dict[str, Any]:
    """Run the demo end to end; returns a summary (also printed).

    With ``start_node`` the local node on ``port`` is started (or found running); otherwise the demo
    uses whatever OpenSearch ``settings.opensearch_url`` points at.
    """
    from milco_os.models.loading import load_encoder
    from milco_os.opensearch.client import make_client
    from milco_os.opensearch.indices import create_index
    from milco_os.opensearch.ingest import ingest
    from milco_os.opensearch.local import LocalNode
    from milco_os.opensearch.search import SearchOptions, search

    if start_node:
        with console.status(f"starting the local OpenSearch node on port {port} ..."):
            LocalNode(settings.cache_dir, port).up()
    client = make_client(settings)
    os_version = client.info()["version"]["number"]
    console.print(f"OpenSearch {os_version} at {settings.opensearch_url}", highlight=False)
    with console.status(f"loading model {settings.model!r} ..."):
        encoder = load_encoder(settings.model, settings.cache_dir)
    info = encoder.info
    echo = "with" if info.echo_vocab is not None else "without"
    console.print(f"model {info.name} ({info.family}, {echo} echo view, {info.fingerprint})", highlight=False)

    if client.indices.exists(index=index):
        client.indices.delete(index=index)
    create_index(client, index, info, text_fields=TEXT_FIELDS, replicas=0)
    docs = sample_documents()
    languages = sorted({d["lang"] for d in docs})
    with Progress(
        TextColumn("indexing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as progress:
        task = progress.add_task("ingest", total=len(docs))
        report = ingest(
            client, index, docs, encoder, refresh=True, on_progress=lambda n: progress.advance(task, n)
        )
    console.print(
        f"indexed {report.indexed} documents in {len(languages)} languages ({', '.join(languages)}); "
        f"{report.failed} failed",
        highlight=False,
    )

    on_topic = 0
    queries = sample_queries()
    for q in queries:
        result = search(client, index, q["text"], encoder, SearchOptions(size=size, explain=True))
        table = Table(title=f"[{q['lang']}] {q['text']}", title_justify="left", show_lines=False)
        table.add_column("#", justify="right")
        table.add_column("score", justify="right")
        table.add_column("doc")
        table.add_column("title")
        table.add_column("top matched terms: contribution (* = echo view)")
        for rank, hit in enumerate(result.hits, 1):
            terms = ", ".join(f"{t.term}{'*' if t.view == 'echo' else ''} {t.contribution:.2f}" for t in hit.terms[:4])
            table.add_row(str(rank), f"{hit.score:.2f}", hit.id, hit.source.get("title", ""), terms)
        console.print(table)
        if result.hits and result.hits[0].source.get("topic") == q["topic"]:
            on_topic += 1
    summary = {
        "opensearch": os_version,
        "model": info.name,
        "documents": report.indexed,
        "queries": len(queries),
        "top1_on_topic": on_topic,
    }
    console.print(
        f"top hit on the query's topic for {on_topic} of {len(queries)} queries "
        "(* marks echo-view terms)."
        + (f" The node keeps running at {settings.opensearch_url}; stop it with `milco-os cluster down --port {port}`."
           if start_node else ""),
        highlight=False,
    )
    return summary
