"""LibreOffice help pages: parsing, the fixed split, training pairs that never touch held-out pages, and
the evaluation sets' qrels."""

from __future__ import annotations

from pathlib import Path

import pytest

from milco_os.datasets import libreoffice as lo
from milco_os.errors import DataError

PAGE = """<!DOCTYPE html><html><head><title>Changing Page Orientation (Landscape or Portrait)</title>
<script>var x = "<p id='no'>not text</p>";</script></head><body>
<h1 id="hd_1">Changing <span class="emph">Page</span> Orientation</h1>
<p id="par_1" class="paragraph">Choose   <span>Format - Page</span>.</p>
<p>no id, not kept</p>
<p id="par_2"></p>
<div class="note"><p id="par_3">A note.</p></div>
</body></html>"""


def page(path: str, lang: str, title: str, paragraphs: dict[str, str]) -> lo.Page:
    return lo.Page(path=path, lang=lang, title=title, paragraphs=paragraphs)


def paths_in(split: str, n: int) -> list[str]:
    found = [f"text/p{i}.html" for i in range(400) if lo.split_of(f"text/p{i}.html") == split]
    return found[:n]


def test_parse_keeps_headings_and_paragraphs_with_ids() -> None:
    parsed = lo.parse_page(PAGE, "swriter/guide/x.html", "en-us")
    assert parsed.title == "Changing Page Orientation"  # the visible heading, not <title>
    assert parsed.paragraphs == {
        "hd_1": "Changing Page Orientation", "par_1": "Choose Format - Page.", "par_3": "A note."
    }
    no_h1 = lo.parse_page(PAGE.replace("<h1", "<h2").replace("</h1>", "</h2>"), "x.html", "en-us")
    assert no_h1.title == "Changing Page Orientation (Landscape or Portrait)"


def test_split_is_fixed_and_roughly_80_10_10() -> None:
    paths = [f"text/shared/{i}.html" for i in range(5000)]
    splits = [lo.split_of(p) for p in paths]
    assert splits == [lo.split_of(p) for p in paths]
    share = {s: splits.count(s) / len(splits) for s in lo.SPLITS}
    assert 0.77 < share["train"] < 0.83 and 0.08 < share["dev"] < 0.12 and 0.08 < share["test"] < 0.12


def corpus() -> dict[str, dict[str, lo.Page]]:
    train, test = paths_in("train", 3), paths_in("test", 2)
    pages: dict[str, dict[str, lo.Page]] = {"en-us": {}, "de": {}, "ja": {}}
    for i, path in enumerate(train + test):
        pages["en-us"][path] = page(path, "en-us", f"Title {i}", {"a": f"English paragraph {i} text", "b": "Same"})
        pages["de"][path] = page(path, "de", f"Titel {i}", {"a": f"Deutscher Absatz {i} Text", "b": "Same"})
        ja_title = f"Title {i}" if i == 0 else f"タイトル {i}"
        pages["ja"][path] = page(path, "ja", ja_title, {"a": f"日本語の段落 {i}です"})
    return pages


def test_training_pairs_come_from_train_pages_only() -> None:
    pages = corpus()
    pairs = lo.bitext_pairs(pages, ["de", "ja"], "train")
    assert len(pairs) == 6  # 3 train pages x 2 languages; "Same" (untranslated) is skipped
    train_texts = {p.paragraphs["a"] for lang in pages.values() for path, p in lang.items()
                   if lo.split_of(path) == "train"}
    assert all(x in train_texts and en in train_texts for x, en in pairs)


def test_clir_and_mlir_qrels_point_at_the_same_path() -> None:
    pages = corpus()
    clir = lo.clir_eval(pages, "test", ["de", "ja"])
    assert {d["lang"] for d in clir.corpus} == {"en-us"} and len(clir.corpus) == 5
    assert len(clir.queries) == 4 and all(q["lang"] in ("de", "ja") for q in clir.queries)
    for q in clir.queries:
        (doc_id,) = clir.qrels[q["id"]]
        assert lo.split_of(doc_id) == "test" and q["id"].endswith(doc_id)
    mlir = lo.mlir_eval(pages, "test", ["de", "ja"], seed=1)
    assert len(mlir.corpus) == 5 and len({d["id"] for d in mlir.corpus}) == 5
    assert len(mlir.queries) == 6  # 2 test pages x 3 languages, English included
    assert mlir.corpus == lo.mlir_eval(pages, "test", ["de", "ja"], seed=1).corpus


def test_eval_set_round_trip_and_errors(tmp_path: Path) -> None:
    evalset = lo.clir_eval(corpus(), "test", ["de"])
    lo.write_eval_set(evalset, tmp_path / "set")
    assert lo.read_eval_set(tmp_path / "set") == evalset
    with pytest.raises(DataError, match="not a complete evaluation set"):
        lo.read_eval_set(tmp_path / "missing")
    with pytest.raises(DataError, match="language 'xx'"):
        lo.fetch_help(["xx"], tmp_path)


def test_page_text_is_cut_on_a_word_boundary() -> None:
    p = page("x.html", "en-us", "Title", {"a": "word " * 300})
    text = lo.page_text(p, max_chars=100)
    assert text.startswith("Title word") and len(text) <= 100 and text.endswith("word")
    assert lo.help_dir_name("en-us") == "en-US" and lo.help_dir_name("de") == "de"
