"""Passages on a real node: long multi-topic documents stored passage by passage, a document scored by its best
passage (exactly that passage's dot product), the passage returned with its matched terms, and the documents a
passage layout must take or refuse."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from milco_os.opensearch.indices import create_index, index_info, index_record
from milco_os.opensearch.ingest import MAX_DOCUMENT_CHARS, Ingester, ingest
from milco_os.opensearch.search import search
from milco_os.opensearch.stats import IndexTermStats
from milco_os.pruning import Pruning
from milco_os.specs import IndexSpec, SearchOptions, TwoPhase, alpha_for_model

PRECISION = 0.01  # Lucene keeps 9 significant bits of each stored feature value

# Each topic runs well past one window (254 tokens), so a manual holds several passages, each mostly one topic.
TOPICS = {
    "tables": "To insert a table in a text document, choose Table - Insert Table and set the rows and columns. "
              "Table borders, column widths and cell colours are set in the table properties dialog. ",
    "charts": "To insert a chart, choose Insert - Chart; the chart wizard picks bar, line or pie charts. "
              "A chart reads its data range from the spreadsheet and redraws when the numbers change. ",
    "printing": "To print a document, choose File - Print and pick the printer and the number of copies. "
                "A PDF file is made with File - Export as PDF, which keeps the fonts and the page layout. ",
}

KEYWORDS = {"tables": "table", "charts": "chart", "printing": "print"}


def manual(*topics: str, repeat: int = 8) -> str:
    return "\n".join(TOPICS[t] * repeat for t in topics)


DOCS = [
    {"id": "office", "title": "Office manual", "text": manual("tables", "charts", "printing")},
    {"id": "sheets", "title": "Spreadsheet manual", "text": manual("charts", "tables")},
    {"id": "garden", "title": "Garden notes", "text": "Roses need sun and water. Prune them in spring. " * 30},
]


@pytest.fixture(scope="module")
def milco_mini(cache_dir: Path):  # noqa: ANN201
    from milco_os.loading import load_encoder

    return load_encoder("milco-mini", cache_dir)


@pytest.fixture
def passages_index(engine_client, milco_mini, engine_index: str) -> str:  # noqa: ANN001
    """An index with passages (and a dense view) on the engine under test."""
    spec = IndexSpec(text_fields=("title", "text"), replicas=0, passages=True, dense=True)
    create_index(engine_client, engine_index, milco_mini.info, spec)
    report = ingest(engine_client, engine_index, DOCS, milco_mini, refresh=True)
    assert report.indexed == len(DOCS) and report.failed == 0
    return engine_index


def test_the_passage_returned_holds_the_querys_topic_and_scores_the_document_exactly(
    engine_client, milco_mini, passages_index: str,  # noqa: ANN001
) -> None:
    options = SearchOptions(size=3, dense_weight=0, explain=True)
    for query, topic, doc_id in (("Wie drucke ich ein PDF?", "printing", "office"),
                                 ("insérer un tableau", "tables", None)):
        result = search(engine_client, passages_index, query, milco_mini, options)
        top = result.hits[0]
        assert doc_id is None or top.id == doc_id
        passage = top.passage
        assert passage is not None and passage.list == "sparse"
        text = "\n".join(d for d in (next(x for x in DOCS if x["id"] == top.id)["title"],
                                     next(x for x in DOCS if x["id"] == top.id)["text"]))
        assert passage.text == text[passage.start:passage.end]
        words = {t: passage.text.lower().count(keyword) for t, keyword in KEYWORDS.items()}
        assert max(words, key=words.get) == topic, (query, words)
        # The document's score is its best passage's exact dot product, computed here from the same encoder.
        q, alpha = result.query, alpha_for_model(milco_mini.info.name)  # α not given: the index's model's
        best = max(alpha * q.pivot.dot(p.encoded.pivot) + (1 - alpha) * q.echo.dot(p.encoded.echo)
                   for p in milco_mini.encode_passages([text])[0])
        assert top.score == pytest.approx(best, rel=PRECISION)
        assert passage.score == pytest.approx(top.score)
        # Explain: the passage's matched terms add up to its score.
        assert top.terms and sum(t.contribution for t in top.terms) == pytest.approx(top.score, rel=PRECISION)


def test_sum_and_avg_combine_the_passages_and_two_phase_keeps_the_best_passages_score(
    engine_client, milco_mini, passages_index: str,  # noqa: ANN001
) -> None:
    query = "chart data range"
    scores = {mode: {h.id: h.score for h in search(engine_client, passages_index, query, milco_mini,
                                                   SearchOptions(dense_weight=0, passage_score=mode)).hits}
              for mode in ("max", "sum", "avg")}
    assert scores["sum"]["office"] > scores["max"]["office"] >= scores["avg"]["office"] > 0
    two_phase = search(engine_client, passages_index, query, milco_mini,
                       SearchOptions(dense_weight=0, two_phase=TwoPhase(split="weight"))).hits
    assert {h.id: h.score for h in two_phase} == pytest.approx(scores["max"], rel=PRECISION)


def test_selective_pruning_counts_passages(engine_client, milco_mini, passages_index: str) -> None:  # noqa: ANN001
    stats = IndexTermStats(engine_client, passages_index, index_record(engine_client, passages_index))
    info = index_info(engine_client, passages_index)
    assert info["documents"] == len(DOCS) and stats.n_docs == info["passages"] > len(DOCS)
    chart = milco_mini.encode_queries(["chart"])[0].pivot
    df = dict(zip((chart.vocab.tokens[i] for i in chart.ids), stats.doc_freq("pivot", chart), strict=True))
    assert len(DOCS) < df["chart"] <= stats.n_docs  # more passages than documents hold it
    pruned = search(engine_client, passages_index, "chart", milco_mini,
                    SearchOptions(dense_weight=0, query_pruning=Pruning.parse("selective:0.2")))
    assert "chart" in pruned.query.pivot.to_terms() and len(pruned.query.pivot) < len(chart)
    assert {h.id for h in pruned.hits[:2]} == {"office", "sheets"}


def test_fused_search_brings_a_passage_from_either_list(engine_client,  # noqa: ANN001
                                                        milco_mini, passages_index: str) -> None:
    result = search(engine_client, passages_index, "Rosen im Frühling schneiden", milco_mini, SearchOptions(size=3))
    assert result.lists == ("sparse", "dense")
    garden = next(h for h in result.hits if h.id == "garden")
    assert garden.passage is not None and "Roses" in garden.passage.text
    assert all(h.passage is not None for h in result.hits)


def test_documents_a_passage_layout_takes_or_refuses(engine_client,  # noqa: ANN001
                                                     milco_mini, engine_index: str, tmp_path: Path) -> None:
    create_index(engine_client, engine_index, milco_mini.info, IndexSpec(replicas=0, passages=True))
    docs = [
        {"id": "empty", "text": ""},
        {"id": "one-paragraph", "text": "word " * 20_000},  # 100k characters, no break: windows of tokens
        {"id": "tiny-paragraphs", "text": "\n".join(f"Line {i}." for i in range(3000))},
        {"id": "too-long", "text": "x" * (MAX_DOCUMENT_CHARS + 1)},
    ]
    dead = tmp_path / "dead.jsonl"
    report = Ingester(engine_client, engine_index, milco_mini, dead_letter=dead).run(docs, refresh=True)
    assert report.indexed == 2 and report.failed == 2
    failed = [json.loads(line) for line in dead.read_text().splitlines()]
    assert {f["id"]: f["reason"].split(":")[0] for f in failed} == {"empty": "no text in any of the fields ['text']",
                                                                     "too-long": "text fields ['text']"}
    for doc_id in ("one-paragraph", "tiny-paragraphs"):
        source = engine_client.get(index=engine_index, id=doc_id, _source_includes="milco_passages.end")
        ends = [p["end"] for p in source["_source"]["milco_passages"]]
        assert 1 < len(ends) <= milco_mini.max_windows and ends[-1] == len(next(
            d for d in docs if d["id"] == doc_id)["text"].rstrip())


def test_the_cli_shows_the_passage_and_json_carries_its_span(engine_settings,  # noqa: ANN001
                                                             passages_index: str) -> None:
    env = {**os.environ, "MILCO_OS_OPENSEARCH_URL": engine_settings.opensearch_url,
           "MILCO_OS_CACHE_DIR": str(engine_settings.cache_dir), "MILCO_OS_MODEL": "milco-mini"}
    cli = [sys.executable, "-m", "milco_os.cli", "search", "--index", passages_index, "--dense", "0"]
    table = subprocess.run([*cli, "print to PDF"], capture_output=True, text=True, env=env, timeout=300)
    assert table.returncode == 0, table.stderr
    assert "PDF" in table.stdout.split("passage ", 1)[1].splitlines()[0]
    out = subprocess.run([*cli, "--json", "--explain", "print to PDF"], capture_output=True, text=True, env=env,
                         timeout=300)
    hit = json.loads(out.stdout)["hits"][0]
    assert hit["passage"]["end"] > hit["passage"]["start"] and hit["terms"]


def test_reindex_into_passages_and_back_to_merged(engine_client,  # noqa: ANN001
                                                  milco_mini, passages_index: str, tmp_path: Path) -> None:
    from milco_os.opensearch.reindex import reindex

    merged, again = passages_index + "-merged", passages_index + "-again"
    try:
        out = reindex(engine_client, passages_index, merged, milco_mini, checkpoint_path=tmp_path / "out.json",
                      spec=IndexSpec(text_fields=("title", "text"), replicas=0))
        into = reindex(engine_client, merged, again, milco_mini, checkpoint_path=tmp_path / "into.json",
                       spec=IndexSpec(text_fields=("title", "text"), replicas=0, passages=True))
        assert out.verified and into.verified and out.dest_count == into.dest_count == len(DOCS)
        flat = engine_client.get(index=merged, id="office")["_source"]
        assert "milco_passages" not in flat and "print" in flat["milco_pivot"]  # the source's passages stay behind
        nested = engine_client.get(index=again, id="office")["_source"]
        assert "milco_pivot" not in nested and len(nested["milco_passages"]) > 3
        hit = search(engine_client, again, "Wie drucke ich ein PDF?", milco_mini, SearchOptions(size=1)).hits[0]
        assert hit.id == "office" and "print" in hit.passage.text.lower()
    finally:
        engine_client.indices.delete(index=f"{merged},{again}", ignore_unavailable=True)


def test_the_service_returns_the_passage_and_ml_commons_refuses_passages(
    engine_settings, engine_client, passages_index: str,  # noqa: ANN001
) -> None:
    from fastapi.testclient import TestClient

    from milco_os.errors import ConfigError
    from milco_os.opensearch.mlcommons import register
    from milco_os.service.app import create_app

    milco = engine_settings.model_copy(update={"model": "milco-mini"})
    with TestClient(create_app(milco)) as http:
        found = http.post(f"/v1/indices/{passages_index}/search",
                          json={"query": "Wie drucke ich ein PDF?", "explain": True, "dense": 0})
        assert found.status_code == 200, found.text
        hit = found.json()["hits"][0]
        assert hit["id"] == "office" and "print" in hit["passage"]["text"].lower() and hit["terms"]
        bad = http.post(f"/v1/indices/{passages_index}/search", json={"query": "x", "passage_score": "median"})
        assert bad.status_code == 422 and "passage_score" in str(bad.json()["detail"])
        added = http.post(f"/v1/indices/{passages_index}/documents",
                          json=[{"id": "new", "text": manual("printing", repeat=3)}])
        assert added.status_code == 200 and added.json()["indexed"] == ["new"]
    with pytest.raises(ConfigError, match="stores passages|ml-commons is an OpenSearch plugin"):
        register(engine_client, passages_index, service_url="http://127.0.0.1:1")


def test_without_vectors_in_source_the_passages_terms_come_from_the_engines_explanation(
    engine_client, milco_mini, engine_index: str,  # noqa: ANN001
) -> None:
    spec = IndexSpec(text_fields=("title", "text"), replicas=0, passages=True, vectors_in_source=False)
    create_index(engine_client, engine_index, milco_mini.info, spec)
    ingest(engine_client, engine_index, DOCS[:1], milco_mini, refresh=True)
    stored = engine_client.get(index=engine_index, id="office")["_source"]["milco_passages"]
    assert stored and all(set(p) == {"start", "end"} for p in stored)  # the vectors are not kept in _source
    hit = search(engine_client, engine_index, "print to PDF", milco_mini, SearchOptions(explain=True)).hits[0]
    assert {t.view for t in hit.terms} <= {"pivot", "echo"} and "print" in {t.term for t in hit.terms}
    assert sum(t.contribution for t in hit.terms) == pytest.approx(hit.score, rel=PRECISION)


@pytest.mark.parametrize("passages", [False, True])
def test_the_eval_systems_search_either_layout(engine_client, milco_mini, passages: bool) -> None:  # noqa: ANN001
    from milco_os.evaluation.runner import SimpleEvalSet
    from milco_os.evaluation.systems import run_sparse

    corpus = [{"id": d["id"], "text": d["title"] + "\n" + d["text"], "lang": "en"} for d in DOCS]
    queries = [{"id": "q1", "text": "Rosen im Frühling schneiden", "lang": "de"},
               {"id": "q2", "text": "Wie drucke ich ein PDF?", "lang": "de"}]
    evalset = SimpleEvalSet("passages-eval", corpus, queries, {"q1": {"garden": 1}, "q2": {"office": 1}})
    for dense_only in (False, True):
        result = run_sparse(engine_client, evalset, milco_mini, name=f"p{int(passages)}{int(dense_only)}",
                            dense_only=dense_only, passages=passages)
        assert result.run["q1"][0] == "garden" and result.run["q2"][0] == "office", (dense_only, result.run)
        assert result.config["units"] == ("passages" if passages else "merged")
        assert result.stats["documents"] == len(DOCS) and ("passages" in result.stats) == passages
