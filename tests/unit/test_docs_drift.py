"""Published numbers cannot drift: every generated section of README.md, BENCHMARKS.md and docs/*.md is exactly
what ``bench/report.py`` writes from the reports committed under ``reports/``."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def report():  # noqa: ANN201 (a module loaded from bench/)
    spec = importlib.util.spec_from_file_location("bench_report", ROOT / "bench" / "report.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_generated_section_matches_its_reports(report) -> None:  # noqa: ANN001
    assert report.drifted() == []


def test_the_docs_have_generated_sections_and_every_report_is_quoted(report) -> None:  # noqa: ANN001
    quoted = set()
    for doc in report.DOCS:
        quoted |= set(report.sections_of((ROOT / doc).read_text(encoding="utf-8")))
    for doc in ("README.md", "docs/evaluation.md", "docs/models.md", "BENCHMARKS.md"):
        assert report.sections_of((ROOT / doc).read_text(encoding="utf-8")), f"{doc} has no generated section"
    runs = {p.stem for p in (ROOT / "reports" / "eval").glob("*.json")}
    assert runs, "no evaluation report committed"
    read = {name.removeprefix("eval:") for name in quoted if name.startswith("eval:")} | report.eval_runs_read()
    assert runs - read == set(), "committed evaluation reports no doc quotes"
    assert read - runs == set(), "evaluation runs a doc quotes without a committed report"


def test_sections_without_a_kept_report_are_benchmarks_only_and_named(report) -> None:  # noqa: ANN001
    """Sections measured before reports/ existed stay as written, only in BENCHMARKS.md, only while their
    report is missing (a run that writes it brings the section under the generator)."""
    for doc in report.DOCS:
        if doc != "BENCHMARKS.md":
            names = report.sections_of((ROOT / doc).read_text(encoding="utf-8"))
            assert not set(names) & set(report.NOT_KEPT), doc


def test_a_changed_number_is_caught(report, tmp_path: Path) -> None:  # noqa: ANN001
    for doc in report.DOCS:
        (tmp_path / doc).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / doc, tmp_path / doc)
    assert report.drifted(tmp_path) == []
    doc = "docs/evaluation.md"
    section = next(name for name in report.sections_of((tmp_path / doc).read_text(encoding="utf-8"))
                   if name.startswith("eval:"))
    data = json.loads((ROOT / "reports" / "eval" / f"{section.removeprefix('eval:')}.json").read_text(encoding="utf-8"))
    ndcg = data["systems"][0]["metrics"]["overall"]["ndcg@10"]
    text = (tmp_path / doc).read_text(encoding="utf-8")
    body = next(m.group(0) for m in report.SECTION.finditer(text) if m.group(2) == section)
    old = f"| {ndcg:.3f} |"
    assert old in body
    changed = body.replace(old, f"| {min(ndcg + 0.1, 0.999):.3f} |", 1)
    (tmp_path / doc).write_text(text.replace(body, changed), encoding="utf-8")
    assert report.drifted(tmp_path) == [f"{doc}: {section}"]


def test_a_default_is_the_best_mean_among_choices_that_keep_the_language_balance(report) -> None:  # noqa: ANN001
    table = {0.2: {"a": 0.5, "b": 0.4}, 0.5: {"a": 0.45, "b": 0.4}, 1.0: {"a": 0.3, "b": 0.3}}
    assert report.balanced_choice(table, {0.2: 0.9, 0.5: 0.95, 1.0: 0.99}) == 0.2
    assert report.balanced_choice(table, {0.2: 0.6, 0.5: 0.8, 1.0: 0.99}) == 0.5  # 0.2 leans to the query's language
    assert report.balanced_choice(table, {0.2: 0.6, 0.5: 0.7}) == 0.5  # none balanced: the best balanced
    assert report.balanced_choice(table, {}) in table


def test_the_defaults_are_the_dev_choices(report) -> None:  # noqa: ANN001
    """Query pruning, α, the dense view's fusion and how passages score a document are chosen on the dev
    reports; the defaults are what they chose."""
    from milco_os.specs import DEFAULT_ALPHA, DEFAULT_QUERY_PRUNE, SearchOptions

    assert report.load("quality")["settings"]["split"] == "dev"
    assert DEFAULT_QUERY_PRUNE == report.dev_query_prune_choice()
    assert all(report.load_report(f"eval/{run}")["split"] == "dev" for run in report.ALPHA_RUNS)
    assert report.load_report(f"eval/{report.BALANCE_RUN}")["split"] == "dev"
    assert DEFAULT_ALPHA == report.dev_alpha_choice()
    from milco_os.specs import DEFAULT_DENSE_WEIGHT, DEFAULT_FUSION

    assert all(report.load_report(f"eval/dense-{base}-dev")["split"] == "dev" for base in report.DENSE_SETS)
    assert (DEFAULT_FUSION, DEFAULT_DENSE_WEIGHT) == report.dev_fusion_choice()
    from milco_os.specs import DEFAULT_PASSAGE_SCORE

    choice = report.load("passages-choice")
    assert all(run.endswith("-dev") for run in choice["runs"])
    assert SearchOptions().passage_score == DEFAULT_PASSAGE_SCORE == report.dev_passage_choice(choice)
