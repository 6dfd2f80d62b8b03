"""No dev/test title or heading reaches training: the leak rule (equal, or contained on word boundaries),
its use by every training-data builder (bitext, gettext, retrieval pairs, SAP pairs, SCT queries), and the
heading ids it needs from the parser and the page cache."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from milco_os.datasets import libreoffice as lo


def paths_in(split: str, n: int) -> list[str]:
    found = [f"text/leak{i}.html" for i in range(500) if lo.split_of(f"text/leak{i}.html") == split]
    return found[:n]


TRAIN, DEV, TEST = paths_in("train", 4), paths_in("dev", 1), paths_in("test", 1)


def test_words_ignore_case_punctuation_and_spacing_and_keep_marks_inside_words() -> None:
    assert lo.words("  Changing\n Page-ORIENTATION: ") == ["changing", "page", "orientation"]
    assert lo.words("हिन्दी सहायता") == ["हिन्दी", "सहायता"]  # vowel signs and virama do not split a word
    assert lo.words("表の挿入") == ["表", "の", "挿", "入"]  # unspaced scripts: one word per letter
    assert lo.words("ＬｉｂｒｅＯｆｆｉｃｅ") == ["libreoffice"]  # NFKC


def test_leaks_are_equal_or_contained_on_word_boundaries() -> None:
    held = lo.HeldOut(["Changing Page Orientation", "Toolbars", "Example", "ページの向きを変更", "表"],
                      headings=["Return value", "To insert a symbol"])
    assert len(held) == 7
    # Contained, whole words, any case or punctuation around them.
    assert held.leaks("See also: changing page orientation.")
    assert held.leaks("Changing Page Orientation")
    assert held.leaks("ここでページの向きを変更します")
    # Not on word boundaries, or only part of the string: kept.
    assert not held.leaks("Changing Page Orientations")
    assert not held.leaks("Exchanging Page Orientation")
    assert not held.leaks("Changing the page orientation")
    # A title shorter than MIN_CONTAINED_WORDS, and a heading of any length, leak only by equality.
    assert held.leaks("Toolbars") and held.leaks("toolbars:") and held.leaks("Example")
    assert not held.leaks("Customize the toolbars") and not held.leaks("For example, type 1")
    assert held.leaks("表") and not held.leaks("表を挿入")
    assert held.leaks("Return Value:") and held.leaks("To insert a symbol")
    assert not held.leaks("The return value of the function") and not held.leaks("How to insert a symbol")
    assert held.match(lo.words("See changing page orientation")) == ("changing", "page", "orientation")
    assert held.match(lo.words("nothing here")) is None
    # The threshold is a parameter: from one word on, "Toolbars" leaks wherever it occurs.
    assert lo.HeldOut(["Toolbars"], min_words=1).leaks("Customize the toolbars")


def test_keep_drops_pairs_with_a_leaking_side_and_counts_them() -> None:
    held = lo.HeldOut(["Changing Page Orientation"])
    pairs = [("Ändern der Seitenausrichtung", "Changing page orientation"), ("Hallo Welt", "Hello world"),
             ("Siehe Changing Page Orientation", "See the orientation")]
    assert held.keep(pairs, "bitext") == [("Hallo Welt", "Hello world")]
    assert held.keep(pairs[:2], "bitext") == [("Hallo Welt", "Hello world")]
    assert held.dropped["bitext"] == 3 and held.dropped["gettext"] == 0


def pages_with_a_leak() -> dict[str, dict[str, lo.Page]]:
    """A test page with a title and a second heading; train pages that quote them, and one that does not."""
    test, dev = TEST[0], DEV[0]
    english = {
        test: lo.Page(test, "en-us", "Inserting Special Characters", {
            "h1": "Inserting Special Characters", "p1": "Some text about characters here.",
            "h2": "To insert a symbol", "p2": "Choose Insert - Special Character.",
        }, heading_ids=["h1", "h2"]),
        dev: lo.Page(dev, "en-us", "Toolbars", {"h1": "Toolbars", "p1": "The toolbars of the window."},
                     heading_ids=["h1"]),
        TRAIN[0]: lo.Page(TRAIN[0], "en-us", "Fonts", {
            "h1": "Fonts", "p1": "See Inserting Special Characters for more symbols.",
            "p2": "Fonts can be changed from the sidebar.",
        }, heading_ids=["h1"]),
        TRAIN[1]: lo.Page(TRAIN[1], "en-us", "Symbols", {
            "h2": "To insert a symbol",  # the test page's heading
            "p1": "How to insert a symbol: click the Omega icon.",  # contains it: headings leak only if equal
            "p2": "Symbols come from the installed fonts too.",
        }, heading_ids=["h2"]),
        TRAIN[2]: lo.Page(TRAIN[2], "en-us", "Toolbars", {"p1": "Customize the toolbars of this module."}),
        TRAIN[3]: lo.Page(TRAIN[3], "en-us", "Inserting Special Characters in Calc", {"p1": "In Calc as well."}),
    }
    german = {
        test: lo.Page(test, "de", "Sonderzeichen einfügen", {
            "h1": "Sonderzeichen einfügen", "p1": "Etwas Text über Zeichen hier.",
            "h2": "So fügen Sie ein Symbol ein", "p2": "Wählen Sie Einfügen - Sonderzeichen.",
        }, heading_ids=["h1", "h2"]),
        dev: lo.Page(dev, "de", "Symbolleisten", {"h1": "Symbolleisten", "p1": "Die Symbolleisten des Fensters."},
                     heading_ids=["h1"]),
        TRAIN[0]: lo.Page(TRAIN[0], "de", "Schriftarten", {
            "h1": "Schriftarten", "p1": "Siehe Sonderzeichen einfügen für weitere Symbole.",
            "p2": "Schriftarten lassen sich in der Seitenleiste ändern.",
        }, heading_ids=["h1"]),
        TRAIN[1]: lo.Page(TRAIN[1], "de", "Symbole", {
            "h2": "So fügen Sie ein Symbol ein",
            "p1": "Wie man ein Symbol einfügt: auf das Omega-Symbol klicken.",
            "p2": "Symbole stammen auch aus den installierten Schriftarten.",
        }),
        TRAIN[2]: lo.Page(TRAIN[2], "de", "Symbolleisten", {"p1": "Passen Sie die Symbolleisten dieses Moduls an."}),
        TRAIN[3]: lo.Page(TRAIN[3], "de", "Sonderzeichen in Calc einfügen", {"p1": "Auch in Calc."}),
    }
    return {"en-us": english, "de": german}


def test_held_out_strings_are_titles_and_headings_of_dev_and_test_pages_in_every_language() -> None:
    held = lo.HeldOut.of_pages(pages_with_a_leak())
    assert held.exact == {tuple(lo.words(s)) for s in (
        "Inserting Special Characters", "To insert a symbol", "Toolbars",
        "Sonderzeichen einfügen", "So fügen Sie ein Symbol ein", "Symbolleisten",
    )}
    assert held.leaks("Siehe Sonderzeichen einfügen") and not held.leaks("Siehe So fügen Sie ein Symbol ein")
    assert not held.leaks("Fonts can be changed from the sidebar.")  # a train page's text is no held-out string


def test_bitext_train_pairs_drop_paragraphs_that_quote_a_held_out_title_or_heading() -> None:
    pages = pages_with_a_leak()
    held = lo.HeldOut.of_pages(pages)
    pairs = lo.bitext_pairs(pages, ["de"], "train", held_out=held)
    assert sorted(pairs) == sorted([
        ("Schriftarten lassen sich in der Seitenleiste ändern.", "Fonts can be changed from the sidebar."),
        ("Wie man ein Symbol einfügt: auf das Omega-Symbol klicken.", "How to insert a symbol: click the Omega icon."),
        ("Symbole stammen auch aus den installierten Schriftarten.", "Symbols come from the installed fonts too."),
        ("Passen Sie die Symbolleisten dieses Moduls an.", "Customize the toolbars of this module."),
        ("Auch in Calc.", "In Calc as well."),
    ])
    # Dropped: "See Inserting Special Characters ..." quotes the test page's title, "To insert a symbol" is
    # its heading. (The heading "Fonts" is too short for a pair: min_chars.)
    assert held.dropped["bitext"] == 2
    assert lo.bitext_pairs(pages, ["de"], "train") == pairs  # held-out strings of the pages by default
    # Pairs of held-out pages themselves (the gates' dev data) are not filtered.
    assert ("Die Symbolleisten des Fensters.", "The toolbars of the window.") in lo.bitext_pairs(pages, ["de"], "dev")


def test_retrieval_pairs_drop_train_titles_that_are_evaluation_queries() -> None:
    pages = pages_with_a_leak()
    held = lo.HeldOut.of_pages(pages)
    queries = {p.query for p in lo.retrieval_pairs(pages, ["en-us", "de"], "train", held_out=held)}
    # "Toolbars"/"Symbolleisten" equal a dev title; the Calc page's English title contains a test title.
    assert queries == {"Fonts", "Schriftarten", "Symbols", "Symbole", "Sonderzeichen in Calc einfügen"}
    assert held.dropped["retrieval"] == 3


def test_gettext_pairs_drop_strings_that_contain_a_held_out_title(tmp_path: Path) -> None:
    from tests.unit.test_libreoffice_parse import write_mo

    write_mo(tmp_path / "locale/de/LC_MESSAGES/app.mo", {
        "Insert Special Character": "Sonderzeichen einfügen",  # the German test title
        "~Inserting Special Characters...": "~Sonderzeichen...",  # contains the English one (menu markup)
        "Toolbars": "Leisten",  # a dev title
        "Show Toolbars": "Leisten anzeigen",  # a single word leaks only by equality
        "Insert a symbol": "Ein Symbol einfügen",
    })
    held = lo.HeldOut.of_pages(pages_with_a_leak())
    pairs = lo.gettext_pairs(["de"], pages_with_a_leak(), locale_dir=tmp_path / "locale", held_out=held)
    assert sorted(pairs) == [("Ein Symbol einfügen", "Insert a symbol"), ("Leisten anzeigen", "Show Toolbars")]
    assert held.dropped["gettext"] == 3


def test_sap_pairs_and_sct_queries_drop_leaks_and_count_them(monkeypatch: pytest.MonkeyPatch, tmp_path: Path
                                                           ) -> None:
    from milco_os.training import pipeline
    from milco_os.training.config import SapConfig, SctConfig

    pages = pages_with_a_leak()
    monkeypatch.setattr(pipeline, "_pages", lambda langs, cache: {lang: pages[lang] for lang in langs})
    monkeypatch.setattr(lo, "gettext_pairs", lambda langs, pp, held_out: held_out.keep(
        [("Sonderzeichen einfügen", "Insert Special Character"), ("Öffnen", "Open")], "gettext"))
    sap = SapConfig(languages=["de"], output=tmp_path / "sap", max_pairs=100, gettext_share=0.5)
    pairs, dropped = pipeline.sap_pairs(sap, tmp_path)
    assert dropped == {"bitext": 2, "gettext": 1}
    assert len(pairs) == 6 and ("Öffnen", "Open") in pairs
    held = lo.HeldOut.of_pages(pages)
    assert not any(held.leaks(x) or held.leaks(en) for x, en in pairs)

    sct = SctConfig(languages=["de"], doc_languages=["en-us", "de"], output=tmp_path / "sct")
    data = pipeline.sct_data(sct, tmp_path)
    queries, passages, positives = data.queries, data.passages, data.positives
    assert sorted(queries) == ["Fonts", "Schriftarten", "Sonderzeichen in Calc einfügen", "Symbole", "Symbols"]
    assert data.dropped_as_leaks == 3
    assert len(positives) == len(queries) and all(0 <= i < len(passages) for i in positives)
    # Each passage's grounding input is its page in English: an English passage is its own, a German one is not.
    assert len(data.english_passages) == len(passages)
    english_rows = [i for i, page in enumerate(data.doc_pages) if (data.doc_pages[:i] == page).sum() == 0]
    for i, page in enumerate(data.doc_pages):
        first = english_rows[[data.doc_pages[r] for r in english_rows].index(page)]
        assert data.english_passages[i] == passages[first]
    # The splade teacher reads each query's page title in English: a German title's English counterpart.
    english = dict(zip(queries, data.english_titles, strict=True))
    assert english["Schriftarten"] == "Fonts" and english["Fonts"] == "Fonts"
    # A keyword reads the English title of the page it points at.
    monkeypatch.setattr(pipeline, "train_keywords", lambda langs, cache: [("Zeichensatz, ändern", TRAIN[0])])
    with_keywords = pipeline.sct_data(sct.model_copy(update={"query_sources": ["titles", "keywords"]}), tmp_path)
    english = dict(zip(with_keywords.queries, with_keywords.english_titles, strict=True))
    assert english["Zeichensatz, ändern"] == "Fonts" and len(english) == len(queries) + 1


H1_H2 = """<html><head><title>T</title></head><body><h1 id="hd_1">Page title</h1><p id="p1">Text.</p>
<h3 id="hd_3">A heading</h3><p id="p2">More.</p></body></html>"""


def test_parser_records_heading_ids_and_the_page_cache_keeps_them(tmp_path: Path) -> None:
    page = lo.parse_page(H1_H2, "x.html", "en-us")
    assert page.heading_ids == ["hd_1", "hd_3"] and page.headings() == ["Page title", "A heading"]
    text = tmp_path / "usr/share/libreoffice/help/en-US/text"
    text.mkdir(parents=True)
    (text / "x.html").write_text(H1_H2, encoding="utf-8")
    cache = tmp_path / "pages-en-us.json.gz"
    # A cache written before heading ids were recorded (a bare list of pages) is parsed again ...
    old = [{"path": "x.html", "lang": "en-us", "title": "Old", "paragraphs": {"hd_1": "Old"}}]
    cache.write_bytes(gzip.compress(json.dumps(old).encode("utf-8")))
    assert lo.load_pages(tmp_path, "en-us")["x.html"] == page
    # ... and rewritten in the current format, which a second load reads back unchanged.
    assert json.loads(gzip.decompress(cache.read_bytes()))["version"] == lo._PAGE_CACHE_VERSION
    (text / "x.html").write_text(H1_H2.replace("Page title", "Changed"), encoding="utf-8")
    assert lo.load_pages(tmp_path, "en-us")["x.html"] == page
