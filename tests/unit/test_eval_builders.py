"""Pure parts of the evaluation harness: analyzer choice, request bodies, planning, sampling, reports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from milco_os.cli import app
from milco_os.errors import ConfigError
from milco_os.evaluation.report import (
    build_report,
    chart_groups,
    eval_tables,
    markdown_table,
    read_report,
    write_report,
)
from milco_os.evaluation.runner import (
    SimpleEvalSet,
    check_dataset,
    check_languages,
    eval_set_dir,
    judged_queries,
    parse_languages,
    plan_systems,
)
from milco_os.evaluation.systems import SystemResult, eval_index_name, top_k_cosine
from milco_os.opensearch.bm25 import (
    analyzer_for,
    bm25_document,
    bm25_documents,
    bm25_index_body,
    bm25_query_body,
    language_field,
    resolve_analyzers,
)
from milco_os.pruning import Prune, Pruning


@pytest.mark.parametrize(
    ("lang", "analyzer"),
    [("de", "german"), ("fr", "french"), ("es", "spanish"), ("ru", "russian"), ("ja", "cjk"), ("zh-CN", "cjk"),
     ("zh_tw", "cjk"), ("ko", "cjk"), ("pt-BR", "brazilian"), ("pt", "portuguese"), ("de-CH", "german"),
     ("en", "english"), ("nb", "norwegian"), ("pl", "standard"), ("uk", "standard"), ("xx", "standard")],
)
def test_analyzer_for(lang: str, analyzer: str) -> None:
    assert analyzer_for(lang) == analyzer


def test_language_field_is_a_safe_name() -> None:
    assert language_field("zh-CN") == "text_zh_cn"
    assert language_field("de") == "text_de"


def test_resolve_analyzers_falls_back_with_a_reason() -> None:
    chosen, fallbacks = resolve_analyzers(["de", "ja", "pl", "de"], {"german": "failed to find analyzer [german]"})
    assert chosen == {"de": "standard", "ja": "cjk", "pl": "standard"}
    assert list(fallbacks) == ["de"] and "failed to find analyzer" in fallbacks["de"]
    assert resolve_analyzers(["de"])[0] == {"de": "german"}


def test_bm25_index_body_and_document() -> None:
    body = bm25_index_body({"de": "german", "zh-cn": "cjk"})
    props = body["mappings"]["properties"]
    assert props["text_de"] == {"type": "text", "analyzer": "german"}
    assert props["text_zh_cn"] == {"type": "text", "analyzer": "cjk"}
    assert props["lang"] == {"type": "keyword"}
    assert body["settings"]["index"]["number_of_replicas"] == 0
    assert bm25_document({"id": "1", "text": "Haus", "lang": "de"}) == {"lang": "de", "text_de": "Haus"}
    pairs = list(bm25_documents([{"id": 7, "text": "maison", "lang": "fr"}]))
    assert pairs == [("7", {"lang": "fr", "text_fr": "maison"})]  # ids become strings (OpenSearch _ids)


def test_bm25_query_body() -> None:
    body = bm25_query_body("Tabelle einfügen", ["fr", "de", "de"], size=100)
    assert body["size"] == 100 and body["_source"] is False
    mm = body["query"]["multi_match"]
    assert mm == {"query": "Tabelle einfügen", "fields": ["text_de", "text_fr"], "type": "best_fields"}


def test_eval_index_name_is_valid_and_unique() -> None:
    a, b = eval_index_name("LibreOffice CLIR/test", "sparse:My Model[top_k:5]"), eval_index_name("x", "bm25")
    assert a.startswith("eval-libreoffice-clir-test-sparse-my-model-top_k-5-")
    assert a == a.lower() and " " not in a and "/" not in a and ":" not in a
    assert eval_index_name("x", "bm25") != b


def test_top_k_cosine_orders_best_first() -> None:
    docs = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [0.8, 0.6]], dtype=np.float32)
    queries = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    assert top_k_cosine(queries, docs, 3).tolist() == [[0, 3, 2], [1, 2, 3]]
    assert top_k_cosine(queries, docs, 10).tolist() == [[0, 3, 2, 1], [1, 2, 3, 0]]
    assert top_k_cosine(queries, docs, 2, chunk=1).tolist() == [[0, 3], [1, 2]]


def test_plan_systems() -> None:
    specs = plan_systems(["bm25", "sparse"], default_model="splade-tiny")
    assert [(s.kind, s.name, s.model) for s in specs] == [("bm25", "bm25", None), ("sparse", "sparse", "splade-tiny")]
    specs = plan_systems(["sparse"], models=["/m/a", "b"], doc_prunes=["none", "top_k:64"], alpha=1.0)
    assert [s.name for s in specs] == ["sparse:a[none]", "sparse:a[top_k:64]", "sparse:b[none]", "sparse:b[top_k:64]"]
    assert specs[1].doc_pruning == Pruning(Prune("top_k", 64), Prune("top_k", 64))
    assert specs[0].doc_pruning == Pruning()
    assert all(s.alpha == 1.0 for s in specs)


def test_plan_systems_doc_prune_per_view() -> None:
    """``--doc-prune PIVOT,ECHO`` prunes the views apart; one rule prunes both; repeats collapse."""
    specs = plan_systems(["sparse"], doc_prunes=["top_k:64,none", "mass:0.9", "mass:0.9,mass:0.9"])
    assert [s.doc_pruning for s in specs] == [
        Pruning(Prune("top_k", 64), Prune()),
        Pruning(Prune("mass", 0.9), Prune("mass", 0.9)),
    ]
    assert [s.name for s in specs] == ["sparse[top_k:64,none]", "sparse[mass:0.9]"]
    assert specs[0].doc_pruning.to_meta() == {"pivot": "top_k:64", "echo": "none"}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"systems": ["bm25", "colbert"]}, "expected a comma-separated subset"),
        ({"systems": ["bm25", "bm25"]}, "named twice"),
        ({"systems": ["bm25"], "models": ["x"]}, "add sparse"),
        ({"systems": ["sparse"], "doc_prunes": ["mass:2"]}, "--doc-prune 'mass:2'"),
        ({"systems": ["sparse"], "doc_prunes": ["top_k:8,top_k:4,none"]}, "--doc-prune 'top_k:8,top_k:4,none'"),
        ({"systems": ["sparse"], "doc_prunes": ["top_k"]}, "--doc-prune 'top_k': invalid pruning"),
        ({"systems": ["sparse"], "alpha": 1.5}, "--alpha"),
    ],
)
def test_plan_systems_errors(kwargs: dict, match: str) -> None:
    systems = kwargs.pop("systems")
    with pytest.raises(ConfigError, match=match):
        plan_systems(systems, **kwargs)


def test_dataset_and_language_checks(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown; expected one of libreoffice-clir, libreoffice-mlir"):
        check_dataset("msmarco", "dev")
    with pytest.raises(ConfigError, match="--split"):
        check_dataset("libreoffice-clir", "train")
    with pytest.raises(ConfigError, match="unknown language.*xx"):
        check_languages(["de", "xx"], ["de", "fr"])
    check_languages(["DE"], ["de"])
    assert parse_languages("de, fr,de") == ["de", "fr"]
    with pytest.raises(ConfigError, match="at least one"):
        parse_languages(" , ")
    assert eval_set_dir(tmp_path, "libreoffice-clir", "dev", ["de", "fr"]).name == "libreoffice-clir-dev-de_fr"
    long_name = eval_set_dir(tmp_path, "libreoffice-mlir", "test", [f"l{i}" for i in range(30)]).name
    assert len(long_name) < 40


def _evalset() -> SimpleEvalSet:
    queries = [{"id": f"{lang}{i}", "text": f"q {lang} {i}", "lang": lang} for lang in ("de", "fr") for i in range(3)]
    queries.append({"id": "ja0", "text": "q ja", "lang": "ja"})
    queries.append({"id": "unjudged", "text": "nothing", "lang": "de"})
    qrels = {q["id"]: {f"d-{q['id']}": 1} for q in queries if q["id"] != "unjudged"}
    qrels["unjudged"] = {"d-x": 0}
    corpus = [{"id": f"d-{q['id']}", "text": q["text"], "lang": "en"} for q in queries]
    return SimpleEvalSet("tiny", corpus, queries, qrels)


def test_judged_queries_round_robin_over_languages() -> None:
    subset, skipped = judged_queries(_evalset())
    assert skipped == 1 and len(subset.queries) == 7 and "unjudged" not in subset.qrels
    subset, _ = judged_queries(_evalset(), max_queries=4)
    assert sorted(q["id"] for q in subset.queries) == ["de0", "de1", "fr0", "ja0"]
    assert set(subset.qrels) == {"de0", "de1", "fr0", "ja0"}
    assert len(subset.corpus) == 8  # the corpus is never cut


def test_report_json_chart_and_markdown(tmp_path: Path) -> None:
    evalset, _ = judged_queries(_evalset())
    perfect = {q["id"]: [f"d-{q['id']}"] for q in evalset.queries}
    results = [
        SystemResult("bm25", "bm25", perfect, {"analyzer": "language"}, {"index_s": 0.5, "search_s": 0.25}),
        SystemResult("sparse", "sparse", {}, {"model": {"name": "m", "fingerprint": "sha256:x"}, "alpha": 1.0,
                                              "document_pruning": {"pivot": "top_k:64", "echo": "top_k:64"}},
                     {"index_s": 1.0, "search_s": 2.0}, {"avg_document_terms": {"pivot": 60.4, "echo": 12.0},
                                                         "avg_query_terms": 17.6, "index_bytes": 2_500_000}),
    ]
    report, per_query = build_report(evalset, results, dataset="libreoffice-clir", split="dev", languages=["de", "fr"])
    bm25, sparse = report["systems"]
    assert bm25["metrics"]["overall"]["ndcg@10"] == 1.0 and bm25["metrics"]["overall"]["queries"] == 7
    assert sparse["metrics"]["overall"]["recall@100"] == 0.0
    assert report["counts"]["queries_per_language"] == {"de": 3, "fr": 3, "ja": 1}
    assert report["counts"]["judged_queries"] == 7 and report["counts"]["qrels"] == 7
    groups, values = chart_groups(report)
    assert groups == ["overall", "de", "fr", "ja"] and values["bm25"] == [1.0, 1.0, 1.0, 1.0]

    paths = write_report(report, per_query, tmp_path / "out")
    assert paths["chart"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert read_report(tmp_path / "out")["systems"][0]["name"] == "bm25"
    assert json.loads(paths["per_query"].read_text())["bm25"]["de0"]["mrr@10"] == 1.0

    table = markdown_table(report)
    assert "| bm25 (language analyzers) | 1.000 | 1.000 | 1.000 | - | - | - | 0.5 | 0.2 |" in table
    assert "sparse (m, α=1.0, prune top_k:64) | 0.000" in table and "| 60 / 12 | 18 | 2.50 | 1.0 | 2.0 |" in table
    assert "| system | de | fr | ja |" in table

    overall, per_lang = eval_tables(report)
    text = _render(overall, per_lang)
    assert "libreoffice-clir (dev): 7 queries, 8 documents" in text
    assert [c.header for c in overall.columns] == ["system", "ndcg@10", "mrr@10", "recall@100", "terms p/e",
                                                   "index s", "search s"]
    assert list(overall.columns[0].cells) == ["bm25", "sparse"]
    assert list(overall.columns[1].cells) == ["1.000", "0.000"]
    assert list(overall.columns[4].cells) == ["-", "60/12"]
    assert list(overall.columns[5].cells) == ["0.5", "1.0"] and list(overall.columns[6].cells) == ["0.2", "2.0"]
    assert [c.header for c in per_lang.columns] == ["language", "queries", "bm25", "sparse"]
    assert list(per_lang.columns[0].cells) == ["de", "fr", "ja"]
    assert list(per_lang.columns[1].cells) == ["3", "3", "1"]
    assert list(per_lang.columns[2].cells) == ["1.000", "1.000", "1.000"]


def _render(*tables: object) -> str:
    import io

    from rich.console import Console

    console = Console(file=io.StringIO(), width=200)
    for table in tables:
        console.print(table)
    return console.file.getvalue()


def test_eval_tables_escape_markup_and_mark_missing_languages() -> None:
    """System names such as ``sparse[top_k:32]`` are shown as they are (not read as rich markup); a language
    a system has no queries for shows "-"."""
    def system(name: str, per_language: dict) -> dict:
        return {"name": name, "stats": {}, "timing": {"index_s": 1.0, "search_s": 2.0},
                "metrics": {"overall": {"ndcg@10": 0.5}, "per_language": per_language}}

    report = {"dataset": "set[x]", "split": "test", "counts": {"judged_queries": 2, "documents": 3},
              "metrics": ["ndcg@10"],
              "systems": [system("sparse[top_k:32]", {"de": {"ndcg@10": 0.25, "queries": 2}}),
                          system("bm25", {"fr": {"ndcg@10": 0.75, "queries": 1}})]}
    overall, per_lang = eval_tables(report)
    text = _render(overall, per_lang)
    assert "sparse[top_k:32]" in text and "set[x] (test): 2 queries, 3 documents" in text
    assert list(per_lang.columns[0].cells) == ["de", "fr"]
    assert list(per_lang.columns[1].cells) == ["2", "1"]
    assert list(per_lang.columns[2].cells) == ["0.250", "-"] and list(per_lang.columns[3].cells) == ["-", "0.750"]


def test_eval_cli_rejects_a_bad_dataset() -> None:
    result = CliRunner().invoke(app, ["eval", "--dataset", "nope"])
    assert result.exit_code == 1
    assert "unknown; expected one of libreoffice-clir" in result.output


def test_eval_help_lists_options() -> None:
    result = CliRunner().invoke(app, ["eval", "--help"], terminal_width=200)
    assert result.exit_code == 0
    for word in ("--dataset", "--split", "--languages", "--systems", "--model", "--doc-prune", "--alpha", "--out",
                 "--max-queries", "--keep-indices", "--url"):
        assert word in result.output


def test_dense_system_on_a_tiny_random_model(tmp_path: Path) -> None:
    from milco_os.evaluation.systems import E5Encoder, run_dense
    from tests.unit.tiny_models import save_tiny_xlmr

    save_tiny_xlmr(tmp_path / "e5")
    encoder = E5Encoder(tmp_path / "e5", device="cpu", batch_size=2)
    texts = ["the heart attack", "green tea", "hot water and cold water for the dog", "sun"]
    vecs = encoder.encode(texts, "passage: ", 16)
    assert vecs.shape == (4, 24) and np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    single = np.stack([encoder.encode([t], "passage: ", 16)[0] for t in texts])
    assert np.allclose(vecs, single, atol=1e-5)  # batching by length keeps the input order
    assert not np.allclose(vecs[0], encoder.encode(texts[:1], "query: ", 16)[0])  # the prefix matters

    evalset, _ = judged_queries(_evalset())
    result = run_dense(evalset, tmp_path / "e5", size=3, device="cpu")
    assert set(result.run) == {q["id"] for q in evalset.queries}
    assert all(len(ids) == 3 and len(set(ids)) == 3 for ids in result.run.values())
    assert result.config["model"]["fingerprint"].startswith("sha256:") and result.config["device"] == "cpu"
    assert result.stats["dimensions"] == 24


def test_judged_queries_makes_ids_strings() -> None:
    evalset = SimpleEvalSet("ints", [{"id": 7, "text": "t", "lang": "en"}], [{"id": 1, "text": "q", "lang": "en"}],
                            {1: {7: 1}})  # type: ignore[dict-item]
    subset, skipped = judged_queries(evalset)
    assert skipped == 0 and subset.qrels == {"1": {"7": 1}}
    assert subset.queries[0]["id"] == "1" and subset.corpus[0]["id"] == "7"


# ------------------------------------------------------------------------------------------ libreoffice-en
def _paths_in(split: str, n: int) -> list[str]:
    from milco_os.datasets.libreoffice import split_of

    found = [p for p in (f"swriter/guide/page{i}.html" for i in range(500)) if split_of(p) == split]
    return found[:n]


def _english_pages() -> dict[str, dict]:
    from milco_os.datasets.libreoffice import Page

    test, dev = _paths_in("test", 4), _paths_in("dev", 1)
    pages = {
        test[0]: Page(test[0], "en-us", "Insert Table",
                      {"h": "Insert Table", "p1": "Choose Table - Insert to add rows."}),
        test[1]: Page(test[1], "en-us", "Page Orientation", {"p1": "Portrait or landscape.", "p2": "Format - Page."}),
        test[2]: Page(test[2], "en-us", "Only A Title", {"h": "Only A Title"}),  # no text besides the title
        test[3]: Page(test[3], "en-us", " ", {"p1": "A page without a title."}),
        dev[0]: Page(dev[0], "en-us", "Dev Page", {"p1": "Held out for dev."}),
    }
    return {"en-us": pages}


def test_libreoffice_en_queries_corpus_and_qrels() -> None:
    from milco_os.datasets.libreoffice import en_eval

    pages = _english_pages()
    test = _paths_in("test", 4)
    evalset = en_eval(pages, "test")
    assert evalset.name == "libreoffice-en-test"
    # The split's pages only; no title copied into the text; empty pages and untitled pages left out.
    assert [d["id"] for d in evalset.corpus] == sorted(test[:2])
    texts = {d["id"]: d["text"] for d in evalset.corpus}
    assert texts[test[0]] == "Choose Table - Insert to add rows."
    assert texts[test[1]] == "Portrait or landscape. Format - Page."
    assert {d["lang"] for d in evalset.corpus} == {"en-us"}
    assert {q["text"] for q in evalset.queries} == {"Insert Table", "Page Orientation"}
    assert all(q["text"] not in texts[q["id"].split(":", 1)[1]] for q in evalset.queries)
    assert evalset.qrels == {f"en-us:{p}": {p: 1} for p in test[:2]}
    dev = _paths_in("dev", 1)[0]
    assert en_eval(pages, "dev").corpus == [{"id": dev, "text": "Held out for dev.", "lang": "en-us"}]
    assert en_eval(pages, "test", max_chars=10).corpus[0]["text"] == "Choose"


def test_load_eval_set_builds_libreoffice_en_from_english_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from milco_os.datasets import libreoffice
    from milco_os.evaluation.runner import load_eval_set

    fetched: list[list[str]] = []
    monkeypatch.setattr(libreoffice, "fetch_help", lambda langs, cache: fetched.append(list(langs)) or tmp_path)
    monkeypatch.setattr(libreoffice, "load_pages", lambda root, lang: _english_pages()[lang])
    check_dataset("libreoffice-en", "test")
    evalset, langs = load_eval_set("libreoffice-en", "test", None, tmp_path)
    assert fetched == [["en-us"]] and langs == ["en-us"]
    assert len(evalset.corpus) == len(evalset.queries) == 2
    again, _ = load_eval_set("libreoffice-en", "test", ["en-us"], tmp_path)  # read back from the cache
    assert fetched == [["en-us"]] and again.qrels == evalset.qrels
    with pytest.raises(ConfigError, match="English only"):
        load_eval_set("libreoffice-en", "test", ["de"], tmp_path)
