"""The README's main job, end to end against the real node with the default model and real help pages."""

from __future__ import annotations

import io

from rich.console import Console

from milco_os.datasets.libreoffice import split_of
from milco_os.demo import HELP_LANGUAGES, help_queries, language_blind_expectation, run_demo
from milco_os.opensearch.indices import index_info
from milco_os.settings import DEFAULT_MODEL


def test_demo_indexes_help_pages_and_finds_them_across_languages(settings, client, index_name: str) -> None:
    console = Console(file=io.StringIO(), width=200)
    demo_settings = settings.model_copy(update={"model": DEFAULT_MODEL})
    summary = run_demo(demo_settings, port=0, index=index_name, console=console, start_node=False,
                       pages_per_language=20)
    printed = console.file.getvalue()

    queries = help_queries()
    # 20 pages per language, plus the pages the queries look for (when not drawn already).
    assert 20 * len(HELP_LANGUAGES) <= summary["documents"] <= 20 * len(HELP_LANGUAGES) + len(queries)
    assert client.count(index=index_name)["count"] == summary["documents"]
    assert summary["opensearch"] == client.info()["version"]["number"]
    meta = index_info(client, index_name)["meta"]  # built as the demo's IndexSpec says
    assert meta["document_pruning"] == {"pivot": "top_k:40", "echo": "top_k:40"}
    assert meta["fields"]["text"] == ["title", "text"]
    settings_ = client.indices.get_settings(index=index_name)[index_name]["settings"]["index"]
    assert settings_["number_of_replicas"] == "0"
    assert summary["queries"] == len(queries)
    for q in queries:
        assert q["text"] in printed  # every query prints its table of hits and matched terms
    # Each query's page is indexed in another language than the query's: finding it is cross-lingual.
    # milco-mini is small (docs/evaluation.md); on this 120-page sample most pages are still found.
    assert summary["found"] >= 3
    assert 0 <= summary["top1_found"] <= summary["found"]
    # Its grounded pivot reaches pages in other languages than the query's (the echo view cannot).
    assert 0 < summary["hits_in_another_language"] <= summary["hits_shown"] == 4 * len(queries)
    # The reference point printed beside it: what a ranking blind to language would give (~5/6 of the hits).
    assert sum(summary["documents_per_language"].values()) == summary["documents"]
    expected = language_blind_expectation(((q["lang"], 4) for q in queries), summary["documents_per_language"])
    assert summary["hits_in_another_language_expected"] == expected
    assert f"a ranking blind to language would give about {expected:.1f}" in printed
    assert summary["languages"] == sorted(HELP_LANGUAGES) and summary["size"] == 4
    # Every page a query looks for is held out from training; the report records each query's outcome.
    assert [(q["path"], q["split"]) for q in summary["per_query"]] == [
        (q["path"], split_of(q["path"])) for q in queries]
    assert all(q["split"] in ("dev", "test") and len(q["hit_languages"]) == 4 for q in summary["per_query"])
    assert sum(q["rank"] is not None for q in summary["per_query"]) == summary["found"]


def test_demo_with_passages_indexes_whole_pages_and_shows_each_hits_best_passage(settings, client,  # noqa: ANN001
                                                                                 index_name: str) -> None:
    from milco_os.layout import read_layout

    console = Console(file=io.StringIO(), width=250)
    demo_settings = settings.model_copy(update={"model": DEFAULT_MODEL})
    summary = run_demo(demo_settings, port=0, index=index_name, console=console, start_node=False,
                       pages_per_language=2, passages=True)
    printed = console.file.getvalue()
    info = index_info(client, index_name)
    assert summary["units"] == "passages" and read_layout(info["meta"], index_name).passages is not None
    assert info["documents"] == summary["documents"] and info["passages"] > summary["documents"]  # whole pages
    assert "best passage" in printed and summary["hits_shown"] == 4 * len(help_queries())


def test_the_demo_finds_the_same_pages_on_elasticsearch_as_on_opensearch(settings, client, elasticsearch_url: str,
                                                                         index_name: str) -> None:
    """The same model, pages and queries on both engines: every query's page at the same rank, the same hits."""
    from milco_os.opensearch.client import make_client
    from milco_os.settings import Settings

    on_elasticsearch = Settings(opensearch_url=elasticsearch_url, cache_dir=settings.cache_dir,
                                engine="elasticsearch")
    elastic = make_client(on_elasticsearch)
    summaries = {}
    try:
        for engine, engine_settings in (("opensearch", settings), ("elasticsearch", on_elasticsearch)):
            console = Console(file=io.StringIO(), width=200)
            summaries[engine] = run_demo(engine_settings.model_copy(update={"model": DEFAULT_MODEL}), port=0,
                                         index=index_name, console=console, start_node=False, pages_per_language=20)
            assert summaries[engine]["engine"] == engine
    finally:
        elastic.indices.delete(index=index_name, ignore_unavailable=True)
    opensearch, elasticsearch = summaries["opensearch"], summaries["elasticsearch"]
    assert elasticsearch["documents"] == opensearch["documents"] and elasticsearch["found"] == opensearch["found"]
    for os_query, es_query in zip(opensearch["per_query"], elasticsearch["per_query"], strict=True):
        assert (es_query["text"], es_query["rank"], es_query["hit_languages"]) == (
            os_query["text"], os_query["rank"], os_query["hit_languages"])
