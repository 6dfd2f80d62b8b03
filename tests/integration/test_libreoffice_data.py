"""The real LibreOffice help (Debian libreoffice-help-en-us, -de, -ja): fetched with apt-get download and
dpkg-deb -x into the cache, parsed, aligned, split, and turned into training pairs and evaluation sets."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from milco_os.datasets import libreoffice as lo

LANGS = ["en-us", "de", "ja"]
ORIENTATION = "swriter/guide/pageorientation.html"  # a dev page


@pytest.fixture(scope="module")
def root(cache_dir: Path) -> Path:
    if shutil.which("apt-get") is None and not all(
        (lo.help_root(cache_dir) / f".complete-{lang}").exists() for lang in LANGS
    ):
        pytest.skip("apt-get is needed to obtain the LibreOffice help (a Debian/Ubuntu machine)")
    return lo.fetch_help(LANGS, cache_dir)


@pytest.fixture(scope="module")
def pages(root: Path) -> dict[str, dict[str, lo.Page]]:
    return {lang: lo.load_pages(root, lang) for lang in LANGS}


def test_fetch_records_the_packages(root: Path, cache_dir: Path) -> None:
    manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
    for lang in LANGS:
        deb = cache_dir / "data" / "debs" / manifest[lang]["deb"]
        assert deb.name.startswith(f"libreoffice-help-{lang}_") and deb.suffix == ".deb"
        assert hashlib.sha256(deb.read_bytes()).hexdigest() == manifest[lang]["sha256"]
        assert (root / f".complete-{lang}").is_file()
    assert lo.fetch_help(LANGS, cache_dir) == root  # idempotent


def test_pages_align_across_languages(pages: dict[str, dict[str, lo.Page]]) -> None:
    english = pages["en-us"]
    assert 2400 <= len(english) <= 2800  # 2,560 in bookworm's 7.4
    en_ids = {(path, pid) for path, page in english.items() for pid in page.paragraphs}
    assert len(en_ids) > 50_000
    for lang in ("de", "ja"):
        assert set(pages[lang]) == set(english)
        ids = {(path, pid) for path, page in pages[lang].items() for pid in page.paragraphs}
        assert len(en_ids & ids) >= 0.9 * len(en_ids)
    assert sum(1 for page in english.values() if page.title) >= 0.99 * len(english)
    texts = [text for page in english.values() for text in page.paragraphs.values()]
    assert all(text and text == " ".join(text.split()) for text in texts)


def test_the_example_title_pair(pages: dict[str, dict[str, lo.Page]], root: Path) -> None:
    # The visible heading is the title ...
    assert pages["en-us"][ORIENTATION].title == "Changing Page Orientation"
    assert pages["de"][ORIENTATION].title == "Ändern der Seitenausrichtung"
    assert pages["ja"][ORIENTATION].title and pages["ja"][ORIENTATION].title != "Changing Page Orientation"
    assert pages["de"][ORIENTATION].paragraphs["par_id6418042"].startswith("Alle Seiteneigenschaften")
    # ... the <title> holds the longer form quoted in docs/offline-resources.md.
    help_dir = root / "usr" / "share" / "libreoffice" / "help"
    en_html = (help_dir / "en-US" / "text" / ORIENTATION).read_text(encoding="utf-8")
    de_html = (help_dir / "de" / "text" / ORIENTATION).read_text(encoding="utf-8")
    assert "<title>Changing Page Orientation (Landscape or Portrait)</title>" in en_html
    assert "<title>Ändern der Seitenausrichtung (Quer- oder Hochformat)</title>" in de_html


def test_split_and_training_pairs(pages: dict[str, dict[str, lo.Page]]) -> None:
    shares = Counter(lo.split_of(path) for path in pages["en-us"])
    n = len(pages["en-us"])
    assert 0.75 * n < shares["train"] < 0.85 * n and shares["dev"] > 0.07 * n and shares["test"] > 0.07 * n
    assert lo.split_of(ORIENTATION) == "dev"
    train = lo.bitext_pairs(pages, ["de", "ja"], "train")
    dev = lo.bitext_pairs(pages, ["de", "ja"], "dev")
    assert len(train) > 40_000
    orientation = (pages["de"][ORIENTATION].paragraphs["par_id6418042"],
                   pages["en-us"][ORIENTATION].paragraphs["par_id6418042"])
    assert orientation in dev and orientation not in train
    retrieval = lo.retrieval_pairs(pages, LANGS, "train")
    assert retrieval and all(lo.split_of(p.path) == "train" for p in retrieval)
    assert not any(p.query == "Ändern der Seitenausrichtung" for p in retrieval)
    held_out = {p.title.lower() for p in pages["en-us"].values() if lo.split_of(p.path) != "train"}
    assert not any(en.strip().lower() in held_out for _, en in lo.gettext_pairs(["de", "ja"], pages))


def test_eval_sets(pages: dict[str, dict[str, lo.Page]], tmp_path: Path) -> None:
    clir = lo.clir_eval(pages, "dev", LANGS)
    doc_ids = {d["id"] for d in clir.corpus}
    assert len(doc_ids) == len(clir.corpus) == len(pages["en-us"]) and {d["lang"] for d in clir.corpus} == {"en-us"}
    assert all(0 < len(d["text"]) <= lo.DOC_CHARS for d in clir.corpus)
    assert len({q["id"] for q in clir.queries}) == len(clir.queries) > 300
    assert {q["lang"] for q in clir.queries} == {"de", "ja"}
    assert all(set(clir.qrels[q["id"]]) <= doc_ids and lo.split_of(next(iter(clir.qrels[q["id"]]))) == "dev"
               for q in clir.queries)
    query = next(q for q in clir.queries if q["id"] == f"de:{ORIENTATION}")
    assert query["text"] == "Ändern der Seitenausrichtung" and clir.qrels[query["id"]] == {ORIENTATION: 1}

    mlir = lo.mlir_eval(pages, "test", LANGS)
    assert len({d["id"] for d in mlir.corpus}) == len(mlir.corpus) == len(pages["en-us"])
    assert {d["lang"] for d in mlir.corpus} == set(LANGS)
    assert {q["lang"] for q in mlir.queries} == set(LANGS)
    assert all(mlir.qrels[q["id"]] == {q["id"].split(":", 1)[1]: 1} for q in mlir.queries)
    assert all(lo.split_of(q["id"].split(":", 1)[1]) == "test" for q in mlir.queries)

    lo.write_eval_set(mlir, tmp_path / "mlir")
    assert lo.read_eval_set(tmp_path / "mlir") == mlir
