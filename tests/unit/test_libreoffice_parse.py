"""LibreOffice help data on tiny synthetic files: pages parsed from a help tree (ids, titles, the cache),
the fixed split, training pairs that never touch held-out pages (bitext, retrieval, gettext), the
evaluation sets' corpus/queries/qrels, and fetch_help against fake apt-get/dpkg-deb commands."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import struct
from pathlib import Path

import pytest

from milco_os.datasets import libreoffice as lo
from milco_os.errors import DataError

HELP = Path("usr/share/libreoffice/help")


def html(title: str, body: str) -> str:
    return (
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{title}</title>'
        '<script>var s = "<h1 id=\'js\'>not a heading</h1>";</script><style>p { color: red }</style></head>'
        f'<body><header><p dir="auto">LibreOffice 7.4 Help</p></header><div id="DisplayArea">{body}</div>'
        "</body></html>"
    )


EN_ORIENTATION = html(
    "Changing Page Orientation (Landscape or Portrait)",
    '<h1 id="par_idN106FF"><a name="x"></a>Changing Page   Orientation</h1>\n'
    '<p id="par_id6418042" class="paragraph">All page properties\n   are defined by <span class="emph">page'
    "</span> styles &amp; more.</p>"
    '<p id="par_img"><img src="media/a.png" alt="icon"></p>'  # pure markup: skipped
    '<p id="par_empty">   </p>'
    "<p>A paragraph without an id is not kept.</p>"
    '<h2 id="hd_id2">To change the orientation</h2>'
    '<div class="note"><p id="par_note">Nested in a note.</p></div>'
    '<table><tr><td><p id="par_cell">In a table cell.</p></td></tr></table>',
)
DE_ORIENTATION = html(
    "Ändern der Seitenausrichtung (Quer- oder Hochformat)",
    '<h1 id="par_idN106FF">Ändern der Seitenausrichtung</h1>'
    '<p id="par_id6418042">Alle Seiteneigenschaften werden über Seitenvorlagen festgelegt.</p>'
    '<h2 id="hd_id2">So ändern Sie die Ausrichtung</h2><p id="par_note">In einer Notiz.</p>',
)
# No <h1>: the <title> is the page's title.
EN_FUNCTION = html("AVERAGEIF function", '<h2 id="hd_1">AVERAGEIF function</h2><p id="par_1">Returns the mean.</p>')


def write_tree(root: Path, lang_dir: str, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / HELP / lang_dir / "text" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_load_pages_parses_a_help_tree(tmp_path: Path) -> None:
    write_tree(tmp_path, "en-US", {"swriter/guide/pageorientation.html": EN_ORIENTATION,
                                   "scalc/01/func_averageif.html": EN_FUNCTION})
    pages = lo.load_pages(tmp_path, "en-us")
    assert sorted(pages) == ["scalc/01/func_averageif.html", "swriter/guide/pageorientation.html"]
    page = pages["swriter/guide/pageorientation.html"]
    assert (page.path, page.lang) == ("swriter/guide/pageorientation.html", "en-us")
    assert page.title == "Changing Page Orientation"  # the visible heading
    assert page.paragraphs == {
        "par_idN106FF": "Changing Page Orientation",
        "par_id6418042": "All page properties are defined by page styles & more.",
        "hd_id2": "To change the orientation",
        "par_note": "Nested in a note.",
        "par_cell": "In a table cell.",
    }
    assert list(page.paragraphs) == ["par_idN106FF", "par_id6418042", "hd_id2", "par_note", "par_cell"]
    assert pages["scalc/01/func_averageif.html"].title == "AVERAGEIF function"  # <title> when there is no <h1>


def test_load_pages_caches_per_language(tmp_path: Path) -> None:
    write_tree(tmp_path, "de", {"swriter/guide/pageorientation.html": DE_ORIENTATION})
    first = lo.load_pages(tmp_path, "de")
    assert (tmp_path / "pages-de.json.gz").is_file()
    assert first["swriter/guide/pageorientation.html"].title == "Ändern der Seitenausrichtung"
    # A second load reads the cache, not the HTML ...
    write_tree(tmp_path, "de", {"swriter/guide/pageorientation.html": DE_ORIENTATION.replace("Ändern", "X")})
    assert lo.load_pages(tmp_path, "de") == first
    # ... until the language is unpacked again (its marker is newer than the cache).
    marker = tmp_path / ".complete-de"
    marker.write_text("x.deb\n", encoding="utf-8")
    cache_mtime = (tmp_path / "pages-de.json.gz").stat().st_mtime
    os.utime(marker, (cache_mtime + 10, cache_mtime + 10))
    assert lo.load_pages(tmp_path, "de")["swriter/guide/pageorientation.html"].title == "X der Seitenausrichtung"


def test_load_pages_of_a_language_not_fetched(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="fetch the language first"):
        lo.load_pages(tmp_path, "ja")


def test_split_is_fixed_disjoint_and_the_same_in_every_language() -> None:
    # Pinned: changing the hash would move pages between training and evaluation.
    assert lo.split_of("swriter/guide/pageorientation.html") == "dev"
    paths = [f"shared/01/{i:08d}.html" for i in range(3000)]
    by_split = {s: {p for p in paths if lo.split_of(p) == s} for s in lo.SPLITS}
    assert sum(len(v) for v in by_split.values()) == len(paths)
    assert not (by_split["train"] & by_split["test"]) and not (by_split["dev"] & by_split["test"])
    assert all(len(by_split[s]) > 200 for s in ("dev", "test"))
    # The split depends on the relative path only, never on the language.
    pages = corpus(["en-us", "de", "ja"])
    assert {(lang, p): lo.split_of(p) for lang, pp in pages.items() for p in pp} == {
        (lang, p): lo.split_of(p) for lang in pages for p in pages["en-us"]
    }


def paths_in(split: str, n: int) -> list[str]:
    found = [f"text/page{i}.html" for i in range(500) if lo.split_of(f"text/page{i}.html") == split]
    return found[:n]


TRAIN, DEV, TEST = paths_in("train", 4), paths_in("dev", 2), paths_in("test", 3)
UNTRANSLATED = {TRAIN[0], TEST[0]}  # their titles are the English ones in every language


def corpus(langs: list[str]) -> dict[str, dict[str, lo.Page]]:
    """Every text names its page, so a leak shows as a held-out page's name in a training pair."""
    pages: dict[str, dict[str, lo.Page]] = {lang: {} for lang in langs}
    for path in TRAIN + DEV + TEST:
        stem = path.rsplit("/", 1)[1].removesuffix(".html")
        for lang in langs:
            title = f"{stem} page title" if lang == "en-us" or path in UNTRANSLATED else f"{stem} page title in {lang}"
            paragraphs = {"hd": title, "p1": f"{stem} first paragraph in {lang}", "p2": "OK", "p3": "Untranslated text"}
            if lang == "en-us":
                paragraphs["p1"] = f"{stem} first paragraph in English"
            pages[lang][path] = lo.Page(path=path, lang=lang, title=title, paragraphs=paragraphs)
    return pages


def stem_of(text: str) -> str:
    return text.split(" ", 1)[0]


def train_stems() -> set[str]:
    return {stem_of(p.rsplit("/", 1)[1]).removesuffix(".html") for p in TRAIN}


@pytest.mark.parametrize("split", ["train", "dev", "test"])
def test_bitext_pairs_come_from_pages_of_the_split_only(split: str) -> None:
    pages = corpus(["en-us", "de", "ja"])
    pairs = lo.bitext_pairs(pages, ["en-us", "de", "ja"], split)
    wanted = {"train": TRAIN, "dev": DEV, "test": TEST}[split]
    stems = {p.rsplit("/", 1)[1].removesuffix(".html") for p in wanted}
    # Title and p1 of each page in de and ja; short p2, untranslated p3 and untranslated titles are skipped.
    assert len(pairs) == sum(2 if p in UNTRANSLATED else 4 for p in wanted)
    assert {stem_of(x) for x, _ in pairs} == stems and {stem_of(en) for _, en in pairs} == stems
    assert all(x != en for x, en in pairs)


def test_retrieval_pairs_never_use_held_out_pages() -> None:
    langs = ["en-us", "de", "fr", "ja"]
    pages = corpus(langs)
    pairs = lo.retrieval_pairs(pages, langs, "train")
    assert {stem_of(p.query) for p in pairs} == train_stems()
    assert {stem_of(p.positive) for p in pairs} == train_stems()
    assert {p.path for p in pairs} == set(TRAIN)
    for p in pairs:
        assert p.query == pages[p.query_lang][p.path].title
        assert p.positive == lo.page_text(pages[p.doc_lang][p.path])
    to_english = [p for p in pairs if p.doc_lang == "en-us"]
    across = [p for p in pairs if p.doc_lang != "en-us"]
    assert len(to_english) == len(TRAIN) * 4  # every language's title, English included -> English page
    assert len(across) == len(TRAIN) * 4  # and one other non-English language per (language, page)
    assert all(p.doc_lang not in ("en-us", p.query_lang) for p in across)
    assert pairs == lo.retrieval_pairs(pages, langs, "train")  # seeded
    assert {p.path for p in lo.retrieval_pairs(pages, langs, "test")} == set(TEST)
    # English and one other language: German titles have no second non-English language to go to.
    two = lo.retrieval_pairs(pages, ["en-us", "de"], "train")
    assert sorted({(p.query_lang, p.doc_lang) for p in two}) == [("de", "en-us"), ("en-us", "de"), ("en-us", "en-us")]


def write_mo(path: Path, messages: dict[str, str]) -> None:
    """A GNU .mo catalogue (the format msgfmt writes), without the optional hash table."""
    entries = {"": "Content-Type: text/plain; charset=UTF-8\nPlural-Forms: nplurals=2; plural=(n != 1);\n",
               **messages}
    keys = sorted(entries)
    ids = b"".join(k.encode() + b"\0" for k in keys)
    strs = b"".join(entries[k].encode() + b"\0" for k in keys)
    n = len(keys)
    ids_start = 7 * 4 + 16 * n
    strs_start = ids_start + len(ids)
    table_ids, table_strs, pos_i, pos_s = [], [], 0, 0
    for k in keys:
        ki, vs = k.encode(), entries[k].encode()
        table_ids += [len(ki), ids_start + pos_i]
        table_strs += [len(vs), strs_start + pos_s]
        pos_i += len(ki) + 1
        pos_s += len(vs) + 1
    header = struct.pack("<7I", 0x950412DE, 0, n, 7 * 4, 7 * 4 + 8 * n, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + struct.pack(f"<{4 * n}I", *table_ids, *table_strs) + ids + strs)


def test_gettext_pairs_skip_plurals_contexts_identical_and_held_out_titles(tmp_path: Path) -> None:
    pages = corpus(["en-us", "de"])
    held_out_title = pages["en-us"][TEST[0]].title
    de_held_out_title = pages["de"][DEV[0]].title
    train_title = pages["en-us"][TRAIN[0]].title
    write_mo(tmp_path / "locale/de/LC_MESSAGES/app.mo", {
        "Insert Table": "Tabelle einfügen",
        "file\0files": "Datei\0Dateien",  # plural
        "menu\x04Open": "Öffnen",  # context
        "OK": "OK",  # identical
        "ab": "xy",  # too short
        held_out_title: "Titel",  # an evaluation query's English title
        "Something else": de_held_out_title,  # an evaluation query itself
        train_title: "Trainingstitel",  # train titles may be used
    })
    write_mo(tmp_path / "locale/zh_CN/LC_MESSAGES/app.mo", {"Insert Table": "插入表格"})
    write_mo(tmp_path / "locale/fr/LC_MESSAGES/app.mo", {"Insert Table": "Insérer un tableau"})
    pairs = lo.gettext_pairs(["en-us", "de", "zh-cn"], pages, locale_dir=tmp_path / "locale")
    assert sorted(pairs) == sorted([
        ("Tabelle einfügen", "Insert Table"), ("Trainingstitel", train_title), ("插入表格", "Insert Table"),
    ])
    # Without pages nothing is held out.
    assert (de_held_out_title, "Something else") in lo.gettext_pairs(["de"], {}, locale_dir=tmp_path / "locale")


def test_clir_eval_queries_corpus_and_qrels() -> None:
    langs = ["en-us", "de", "ja"]
    pages = corpus(langs)
    for split, paths in (("dev", DEV), ("test", TEST)):
        evalset = lo.clir_eval(pages, split, langs)
        assert evalset.name == f"libreoffice-clir-{split}"
        # The corpus is every English page, of all splits.
        assert sorted(d["id"] for d in evalset.corpus) == sorted(TRAIN + DEV + TEST)
        assert {d["lang"] for d in evalset.corpus} == {"en-us"}
        assert all(d["text"] == lo.page_text(pages["en-us"][d["id"]]) for d in evalset.corpus)
        # Queries: titles of the split's pages in each non-English language; a title identical to the
        # English one is no cross-language query and is left out.
        translated = [p for p in paths if p not in UNTRANSLATED]
        assert len(translated) == len(paths) - (split == "test")
        assert sorted(q["id"] for q in evalset.queries) == sorted(f"{lang}:{p}" for lang in ("de", "ja")
                                                                  for p in translated)
        assert set(evalset.qrels) == {q["id"] for q in evalset.queries}
        for q in evalset.queries:
            path = q["id"].split(":", 1)[1]
            assert evalset.qrels[q["id"]] == {path: 1}
            assert q["text"] == pages[q["lang"]][path].title and q["text"] != pages["en-us"][path].title


def test_mlir_eval_draws_one_language_per_page() -> None:
    langs = ["de", "fr", "ja"]
    pages = corpus(["en-us", *langs])
    evalset = lo.mlir_eval(pages, "test", langs, seed=13)
    assert evalset.name == "libreoffice-mlir-test"
    assert sorted(d["id"] for d in evalset.corpus) == sorted(TRAIN + DEV + TEST)  # every page once
    assert {d["lang"] for d in evalset.corpus} <= {"en-us", *langs}
    for d in evalset.corpus:
        assert d["text"] == lo.page_text(pages[d["lang"]][d["id"]])
    # Queries in every language, English included; the relevant document is the page, whatever its language.
    assert sorted(q["id"] for q in evalset.queries) == sorted(f"{lang}:{p}" for lang in ["en-us", *langs]
                                                              for p in TEST)
    assert all(evalset.qrels[q["id"]] == {q["id"].split(":", 1)[1]: 1} for q in evalset.queries)
    assert lo.mlir_eval(pages, "test", langs, seed=13) == evalset
    other_seeds = [lo.mlir_eval(pages, "test", langs, seed=s).corpus for s in range(5)]
    assert any(c != evalset.corpus for c in other_seeds)


def test_eval_sets_round_trip_as_jsonl(tmp_path: Path) -> None:
    pages = corpus(["en-us", "de", "ja"])
    for evalset in (lo.clir_eval(pages, "dev", ["de", "ja"]), lo.mlir_eval(pages, "test", ["de", "ja"])):
        target = tmp_path / evalset.name
        lo.write_eval_set(evalset, target)
        assert sorted(f.name for f in target.iterdir()) == ["corpus.jsonl", "qrels.json", "queries.jsonl"]
        assert lo.read_eval_set(target) == evalset


def test_untranslated_share_and_page_text() -> None:
    pages = corpus(["en-us", "de"])
    assert lo.untranslated_share(pages, "de") == pytest.approx(len(UNTRANSLATED) / len(TRAIN + DEV + TEST))
    assert lo.untranslated_share(pages, "en-us") == 1.0
    long = lo.Page("x.html", "en-us", "Title", {"hd": "Title", "p": "word " * 1000})
    text = lo.page_text(long)
    assert text.startswith("Title word") and len(text) <= lo.DOC_CHARS and text.endswith("word")


# ------------------------------------------------------------------------------------------ fetch_help
FAKE_APT_GET = """#!/bin/sh
echo "apt-get $*" >> "$FAKE_LOG"
if [ "$1" = update ]; then touch "$FAKE_STATE/updated"; exit 0; fi
if [ "$1" = download ]; then
  if [ ! -e "$FAKE_STATE/updated" ] || [ "$2" = libreoffice-help-om ]; then
    echo "E: Unable to locate package $2" >&2; exit 100
  fi
  echo "deb of $2" > "$2_4%3a7.4.7-1_all.deb"; exit 0
fi
exit 1
"""
FAKE_DPKG_DEB = """#!/bin/sh
echo "dpkg-deb $*" >> "$FAKE_LOG"
lang=$(basename "$2" | sed -e 's/^libreoffice-help-//' -e 's/_.*//')
mkdir -p "$3/usr/share/libreoffice/help/$lang/text" && cp "$2" "$3/usr/share/libreoffice/help/$lang/text/"
"""


@pytest.fixture
def fake_apt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    bin_dir.mkdir()
    state.mkdir()
    for name, script in (("apt-get", FAKE_APT_GET), ("dpkg-deb", FAKE_DPKG_DEB)):
        (bin_dir / name).write_text(script, encoding="utf-8")
        (bin_dir / name).chmod((bin_dir / name).stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_LOG", str(tmp_path / "calls.log"))
    monkeypatch.setenv("FAKE_STATE", str(state))
    return tmp_path / "calls.log"


def test_fetch_help_updates_package_lists_once_and_is_idempotent(tmp_path: Path, fake_apt: Path) -> None:
    cache = tmp_path / "cache"
    root = lo.fetch_help(["en-us", "de"], cache)
    assert root == cache / "data" / "libreoffice-help"
    calls = fake_apt.read_text(encoding="utf-8").splitlines()
    assert calls == [
        "apt-get download libreoffice-help-en-us", "apt-get update -qq", "apt-get download libreoffice-help-en-us",
        f"dpkg-deb -x {cache}/data/debs/libreoffice-help-en-us_4%3a7.4.7-1_all.deb {root}",
        "apt-get download libreoffice-help-de",
        f"dpkg-deb -x {cache}/data/debs/libreoffice-help-de_4%3a7.4.7-1_all.deb {root}",
    ]
    assert (root / HELP / "de" / "text" / "libreoffice-help-de_4%3a7.4.7-1_all.deb").is_file()
    assert (root / ".complete-en-us").is_file() and (root / ".complete-de").is_file()
    manifest = (root / "manifest.json").read_text(encoding="utf-8")
    deb = cache / "data" / "debs" / "libreoffice-help-de_4%3a7.4.7-1_all.deb"
    assert json.loads(manifest)["de"] == {"deb": deb.name, "sha256": hashlib.sha256(deb.read_bytes()).hexdigest()}
    # Again: nothing to do.
    assert lo.fetch_help(["de", "en-us"], cache) == root
    assert fake_apt.read_text(encoding="utf-8").splitlines() == calls


def test_fetch_help_names_an_unavailable_package(tmp_path: Path, fake_apt: Path) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="libreoffice-help-om .*Unable to locate package"):
        lo.fetch_help(["de", "om"], cache)
    root = cache / "data" / "libreoffice-help"
    # The language before it is complete and in the manifest.
    assert (root / ".complete-de").is_file() and not (root / ".complete-om").exists()
    assert "de" in (root / "manifest.json").read_text(encoding="utf-8")
    assert fake_apt.read_text(encoding="utf-8").count("apt-get update") == 1
    with pytest.raises(DataError, match="language 'xx'"):
        lo.fetch_help(["xx"], cache)


def test_fetch_help_without_apt_get(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(DataError, match="apt-get not found"):
        lo.fetch_help(["de"], tmp_path / "cache")


# ------------------------------------------------------------------------------------------ keyword queries
def write_bookmarks(root: Path, lang_dir: str, entries: list[tuple[str, str]]) -> None:
    """A ``bookmarks.js`` as the help ships it: (page path, entry text as written in the file) per line."""
    lines = [f'{{url:"{lang_dir}/text/{path}?DbPAR=WRITER#bm_id{i}", app:"WRITER", text:"{text}"}},'
             for i, (path, text) in enumerate(entries)]
    target = root / "usr/share/libreoffice/help" / lang_dir / "bookmarks.js"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("var bookmarks = [\n" + "\n".join(lines) + "\n];\n", encoding="utf-8")


def test_index_entries_are_read_unescaped(tmp_path: Path) -> None:
    write_bookmarks(tmp_path, "de", [("swriter/guide/footnote_with_line.html", "Abstände --  Fußnoten/Endnoten"),
                                     ("scalc/01/04060115.html", "Gauß&#39;sche Fehlerfunktion"),
                                     ("sbasic/shared/03070700.html", "Ganzzahlige Division (\\\\)")])
    entries = lo.load_index_entries(tmp_path, "de")
    assert [(e.path, e.text) for e in entries] == [
        ("swriter/guide/footnote_with_line.html", "Abstände -- Fußnoten/Endnoten"),
        ("scalc/01/04060115.html", "Gauß'sche Fehlerfunktion"),
        ("sbasic/shared/03070700.html", "Ganzzahlige Division (\\)")]
    assert entries[0].anchor == "bm_id0"
    assert lo.keyword_query(entries[0].text) == "Abstände Fußnoten/Endnoten"
    with pytest.raises(DataError, match="bookmarks.js: missing"):
        lo.load_index_entries(tmp_path, "fr")


def entry(text: str, path: str, anchor: str = "bm") -> lo.IndexEntry:
    return lo.IndexEntry(text, path, anchor)


def test_keyword_queries_are_graded_split_by_page_and_skip_untranslated() -> None:
    langs = ["en-us", "de"]
    pages = corpus(langs)
    entries = {
        "en-us": [entry("tables -- inserting", TEST[1]), entry("Untranslated", TEST[2])],
        "de": [
            entry("Tabellen -- einfügen", TEST[1], "a"), entry("Tabellen -- einfügen", TEST[1], "b"),  # twice: grade 2
            entry("Tabellen -- einfügen", TRAIN[1]),  # also on a train page: still a test query, both relevant
            entry("Untranslated", TEST[2]),  # the English entry: no German query
            entry("Zeilen", DEV[0]), entry("Zeilen", TEST[2]),  # dev and test pages: in neither split
            entry("Spalten", TRAIN[2]),  # train only
            entry("Rahmen", "text/not-a-page.html"),  # no such page in the corpus
        ],
    }
    clir = lo.keywords_clir_eval(pages, entries, "test", langs)
    assert clir.name == "libreoffice-keywords-clir-test"
    assert clir.corpus == lo.clir_eval(pages, "test", langs).corpus  # the title set's corpus
    assert [(q["lang"], q["text"]) for q in clir.queries] == [("de", "Tabellen einfügen")]
    assert clir.qrels[clir.queries[0]["id"]] == {TEST[1]: 2, TRAIN[1]: 1}
    assert lo.keywords_clir_eval(pages, entries, "dev", langs).queries == []
    mlir = lo.keywords_mlir_eval(pages, entries, "test", langs, seed=13)
    assert mlir.corpus == lo.mlir_eval(pages, "test", langs, seed=13).corpus
    assert sorted(q["text"] for q in mlir.queries) == ["Tabellen einfügen", "Untranslated", "tables inserting"]
    assert len({q["id"] for q in mlir.queries}) == 3
