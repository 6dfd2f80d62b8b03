"""The demo's example queries look for held-out pages; its language-blind reference point; its JSON report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from milco_os import demo
from milco_os.datasets import libreoffice as lo


def test_help_queries_look_for_held_out_pages_one_query_per_language() -> None:
    queries = demo.help_queries()
    assert [q["lang"] for q in queries] == demo.HELP_LANGUAGES
    for q in queries:
        # The models were trained on train pages only: a demo query must look for a page none has seen.
        assert lo.split_of(q["path"]) in ("dev", "test"), q
        assert q["text"].strip()
    assert len({q["path"] for q in queries}) == len(queries)


def test_language_blind_expectation() -> None:
    even = {lang: 300 for lang in demo.HELP_LANGUAGES}
    # 6 queries x 4 hits, 5 of 6 indexed documents in another language than each query: 20 of 24.
    assert demo.language_blind_expectation([(lang, 4) for lang in demo.HELP_LANGUAGES], even) == 20.0
    uneven = {"en-us": 30, "de": 10}  # an English query: 1/4 of documents elsewhere; a German one: 3/4
    assert demo.language_blind_expectation([("en-us", 4), ("de", 4)], uneven) == 4.0
    assert demo.language_blind_expectation([("fr", 3)], uneven) == 3.0  # no document in the query's language
    assert demo.language_blind_expectation([("en-us", 0)], uneven) == 0.0  # no hits shown
    assert demo.language_blind_expectation([("en-us", 4)], {}) == 0.0
    assert demo.language_blind_expectation([("de", 1)], {"de": 1, "fr": 2}) == 0.7  # rounded to 1 decimal


SUMMARY: dict[str, Any] = {
    "created_at": "2025-01-01T00:00:00Z", "opensearch": "3.0.0", "model": "milco-mini",
    "corpus": "libreoffice-help", "pages_per_language": 300, "documents": 1800,
    "documents_per_language": {"de": 300, "en-us": 300}, "languages": ["de", "en-us"],
    "document_pruning": "top_k:40", "query_prune": "selective:0.2", "size": 4, "queries": 1, "found": 1,
    "top1_found": 1, "hits_shown": 4, "hits_in_another_language": 2, "hits_in_another_language_expected": 2.0,
    "per_query": [{"text": "文書の文字数を数えるには", "lang": "ja", "path": "swriter/guide/words_count.html",
                   "split": "test", "rank": 1, "hit_languages": ["de", "ja", "ja", "en-us"]}],
}


def test_write_report_is_sorted_indented_json_with_a_trailing_newline(tmp_path: Path) -> None:
    path = demo.write_report(SUMMARY, tmp_path / "reports" / "demo.json")
    text = path.read_text(encoding="utf-8")
    assert text.endswith("}\n")
    assert json.loads(text) == SUMMARY
    assert text == json.dumps(SUMMARY, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    assert "文書の文字数を数えるには" in text  # readable, not \u-escaped


def test_demo_command_writes_the_summary_with_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from milco_os.cli import app

    calls: list[dict[str, Any]] = []

    def fake_run_demo(settings: Any, **kwargs: Any) -> dict[str, Any]:
        calls.append(kwargs)
        return SUMMARY

    monkeypatch.setattr(demo, "run_demo", fake_run_demo)
    out = tmp_path / "demo.json"
    result = CliRunner().invoke(app, ["demo", "--cache-dir", str(tmp_path), "--pages-per-language", "5",
                                      "--report", str(out)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert calls and calls[0]["pages_per_language"] == 5
    assert json.loads(out.read_text(encoding="utf-8")) == SUMMARY


def test_run_demo_summary_keys_are_documented() -> None:
    """The README generator reads these keys from reports/demo.json: run_demo's docstring names each."""
    doc = demo.run_demo.__doc__ or ""
    for key in ["created_at", "documents", "languages", "queries", "found", "top1_found", "hits_shown",
                "hits_in_another_language", "hits_in_another_language_expected", "model", "engine", "opensearch",
                "size",
                "pages_per_language", "query_prune", "per_query", "text", "lang", "path", "split", "rank",
                "hit_languages"]:
        assert f"``{key}``" in doc, key
