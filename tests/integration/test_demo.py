"""The README's main job, end to end against the real node with the real default-class model."""

from __future__ import annotations

import io

from rich.console import Console

from milco_os.demo import run_demo, sample_documents, sample_queries


def test_demo_indexes_the_sample_and_finds_on_topic_hits(settings, client, index_name: str) -> None:
    console = Console(file=io.StringIO(), width=200)
    summary = run_demo(settings, port=0, index=index_name, console=console, start_node=False)
    printed = console.file.getvalue()

    assert summary["documents"] == len(sample_documents())
    assert client.count(index=index_name)["count"] == len(sample_documents())
    assert summary["queries"] == len(sample_queries())
    # Every query prints a table of hits with matched terms.
    for q in sample_queries():
        assert q["text"] in printed
    # A weak English model still puts the right topic first for most queries (measured: 6 of 6).
    assert summary["top1_on_topic"] >= len(sample_queries()) - 2
