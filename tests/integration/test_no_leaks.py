"""No dev/test title or heading of the real LibreOffice help (en-us, de, fr, ja; fetched with apt-get into the
cache) reaches training: the SAP pairs (help bitext + this machine's gettext catalogues) and the SCT and
retrieval queries, built by the training code itself, are checked against every held-out title and heading
with a matcher written independently of :class:`milco_os.datasets.libreoffice.HeldOut`."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import pytest

from milco_os.datasets import libreoffice as lo
from milco_os.training import pipeline
from milco_os.training.config import SapConfig, SctConfig

LANGS = ["en-us", "de", "fr", "ja"]
FOREIGN = LANGS[1:]


@pytest.fixture(scope="module")
def pages(cache_dir: Path) -> dict[str, dict[str, lo.Page]]:
    root = lo.fetch_help(LANGS, cache_dir)
    return {lang: lo.load_pages(root, lang) for lang in LANGS}


class Naive:
    """The rule spelled out: a text leaks when its words equal a held-out title or heading, or contain a
    held-out title of at least MIN_CONTAINED_WORDS words as a contiguous run of words."""

    def __init__(self, pages: dict[str, dict[str, lo.Page]]) -> None:
        held = [p for pp in pages.values() for p in pp.values() if lo.split_of(p.path) in ("dev", "test")]
        titles = {tuple(lo.words(p.title)) for p in held}
        headings = {tuple(lo.words(p.paragraphs[i])) for p in held for i in p.heading_ids}
        self.exact = (titles | headings) - {()}
        self.contained = {ws for ws in titles if ws and lo.word_count(ws) >= lo.MIN_CONTAINED_WORDS}
        self.lengths: dict[str, set[int]] = defaultdict(set)
        for ws in self.contained:
            self.lengths[ws[0]].add(len(ws))

    def leaks(self, text: str) -> bool:
        ws = lo.words(text)
        return tuple(ws) in self.exact or any(
            tuple(ws[i : i + n]) in self.contained for i, w in enumerate(ws) for n in self.lengths.get(w, ()))

    def count(self, pairs: Iterable[tuple[str, str]]) -> int:
        return sum(1 for x, en in pairs if self.leaks(x) or self.leaks(en))


def test_held_out_strings_include_headings(pages: dict[str, dict[str, lo.Page]]) -> None:
    english = pages["en-us"]
    assert sum(len(p.heading_ids) for p in english.values()) > 10_000
    orientation = english["swriter/guide/pageorientation.html"]  # a dev page
    assert orientation.headings()[0] == orientation.title == "Changing Page Orientation"
    held = lo.HeldOut.of_pages(pages)
    naive = Naive(pages)
    assert len(held) == len(naive.exact) > 5 * sum(lo.split_of(p) != "train" for p in english)


def test_sap_pairs_carry_no_held_out_title_or_heading(pages: dict[str, dict[str, lo.Page]], cache_dir: Path,
                                                      tmp_path: Path) -> None:
    naive = Naive(pages)
    # Room for every candidate pair: what sap_pairs keeps is the whole filtered pool.
    config = SapConfig(languages=FOREIGN, output=tmp_path, max_pairs=10**8, gettext_share=0.5)
    pairs, dropped = pipeline.sap_pairs(config, cache_dir)
    assert pairs and not any(naive.leaks(x) or naive.leaks(en) for x, en in pairs)
    # What was dropped is exactly what leaks in the unfiltered pools, and the real help has such leaks.
    nothing = lo.HeldOut([])
    raw_bitext = lo.bitext_pairs(pages, FOREIGN, "train", held_out=nothing)
    raw_gettext = lo.gettext_pairs(FOREIGN, pages, held_out=nothing)
    assert dropped == {"bitext": naive.count(raw_bitext), "gettext": naive.count(raw_gettext)}
    assert len(pairs) == len(raw_bitext) + len(raw_gettext) - dropped["bitext"] - dropped["gettext"]
    assert dropped["bitext"] > 100


def test_sct_and_retrieval_queries_are_no_held_out_title(pages: dict[str, dict[str, lo.Page]], cache_dir: Path,
                                                          tmp_path: Path) -> None:
    naive = Naive(pages)
    config = SctConfig(languages=FOREIGN, doc_languages=["en-us", "de", "ja"], output=tmp_path, max_queries=10**8)
    data = pipeline.sct_data(config, cache_dir)
    queries, dropped = data.queries, data.dropped_as_leaks
    assert queries and not any(naive.leaks(q) for q in queries)
    train_titles = [p.title for pp in pages.values() for path, p in pp.items()
                    if lo.split_of(path) == "train" and p.title.strip()]
    assert dropped == sum(naive.leaks(t) for t in train_titles) > 0
    # "Toolbars" titles pages of several splits: an evaluation query, so never a training one.
    toolbars = [path for path, p in pages["en-us"].items() if p.title == "Toolbars"]
    assert {lo.split_of(p) for p in toolbars} >= {"train"} and {lo.split_of(p) for p in toolbars} - {"train"}
    assert "Toolbars" not in queries
    retrieval = lo.retrieval_pairs(pages, LANGS, "train")
    assert retrieval and not any(naive.leaks(p.query) for p in retrieval)


def test_sct_keyword_queries_are_no_evaluation_query(pages: dict[str, dict[str, lo.Page]], cache_dir: Path,
                                                      tmp_path: Path) -> None:
    """The help's own index entries as SCT queries: never one of the keyword sets' dev or test queries (in any of
    the languages), never a held-out title or heading, and each positive a train page the entry points at."""
    config = SctConfig(languages=FOREIGN, doc_languages=["en-us"], output=tmp_path, max_queries=10**8,
                       query_sources=["keywords"])
    data = pipeline.sct_data(config, cache_dir)
    queries, passages, positives, relevant = data.queries, data.passages, data.positives, data.relevant
    assert len(queries) > 1000
    naive = Naive(pages)
    assert not any(naive.leaks(q) for q in queries)
    root = lo.fetch_help(LANGS, cache_dir)
    entries = {lang: lo.load_index_entries(root, lang) for lang in LANGS}
    held_out = {q["text"] for split in ("dev", "test")
                for q in lo.keywords_mlir_eval(pages, entries, split, LANGS).queries
                + lo.keywords_clir_eval(pages, entries, split, FOREIGN).queries}
    assert len(held_out) > 100 and not set(queries) & held_out
    pages_of = defaultdict(set)
    for text, path in pipeline.train_keywords(LANGS, cache_dir):
        assert lo.split_of(path) == "train"
        pages_of[text].add(path)
    shown_by = defaultdict(set)  # passage text -> the English pages that read so
    for path, page in pages["en-us"].items():
        shown_by[lo.page_text(page, include_title=False)].add(path)
    assert all(shown_by[passages[row]] & pages_of[query] for query, row in zip(queries, positives, strict=True))
    assert all(len(pages) >= 1 for pages in relevant) and max(len(pages) for pages in relevant) > 1
