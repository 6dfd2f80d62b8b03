"""LibreOffice help (Debian ``libreoffice-help-<lang>``): aligned multilingual pages for training and
evaluation, obtained with ``apt-get download`` + ``dpkg-deb -x`` (nothing is installed).

- Pages align across languages by their relative path under ``help/<lang>/text/``; paragraphs and
  headings by their ``id`` attribute.
- Every page belongs to one split by a hash of its path (train 80 / dev 10 / test 10), the same for all
  languages, so no test page in any language is ever used in training. Nor is an evaluation query: a
  training pair or query that equals a dev/test page's title or heading, or contains such a title of at
  least two words, is dropped (:class:`HeldOut`).
- Title sets (known-item search, one relevant page per query):
  ``libreoffice-clir``: titles of split pages in each non-English language -> all English pages;
  ``libreoffice-mlir``: titles in every language -> all pages, each in one language drawn per page;
  ``libreoffice-en``: English titles of split pages -> the English pages of that split only, without their
  titles (monolingual, small enough for English-only causal LMs on a CPU).
- Keyword sets (what users type rather than titles): the help's own index (``bookmarks.js``, written by its
  indexers in every language), each distinct entry of a language one query judged against every page it
  points to: ``libreoffice-keywords-clir`` (non-English entries -> the English pages of ``libreoffice-clir``)
  and ``libreoffice-keywords-mlir`` (entries in every language -> the mixed corpus of ``libreoffice-mlir``).
"""

from __future__ import annotations

import functools
import gettext
import gzip
import hashlib
import json
import logging
import random
import re
import subprocess
import sys
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import NamedTuple

from milco_os.errors import DataError
from milco_os.paths import data_dir, sha256_file, write_bytes_atomic, write_text_atomic

log = logging.getLogger(__name__)

ENGLISH = "en-us"
#: Every language Debian ships LibreOffice help for (bookworm), English (en-us) first.
DEFAULT_LANGUAGES = [
    "en-us", "ca", "cs", "da", "de", "dz", "el", "en-gb", "es", "et", "eu", "fi", "fr", "gl", "hi", "hu", "id",
    "it", "ja", "km", "ko", "nl", "om", "pl", "pt", "pt-br", "ru", "sk", "sl", "sv", "tr", "vi", "zh-cn", "zh-tw",
]
QUICK_LANGUAGES = ["en-us", "de", "fr", "es", "ja", "zh-cn", "ru"]
SPLITS = ("train", "dev", "test")
#: Characters of page text kept for a document (title + first paragraphs, ~150 tokens): the known-item
#: task needs the head of a page, and the CPU budget of evaluation is set by document length.
DOC_CHARS = 600
_SPACE = re.compile(r"\s+")
#: What :func:`load_pages` caches; raised when parsing changes (2: heading ids), so older caches are re-parsed.
_PAGE_CACHE_VERSION = 2
_GETTEXT_LOCALES = {"pt-br": "pt_BR", "zh-cn": "zh_CN", "zh-tw": "zh_TW", "en-gb": "en_GB"}


@dataclass
class Page:
    path: str  # relative to help/<lang>/text/, e.g. "swriter/guide/pageorientation.html"
    lang: str
    title: str
    paragraphs: dict[str, str] = field(default_factory=dict)  # id -> text, in page order
    heading_ids: list[str] = field(default_factory=list)  # the ids in ``paragraphs`` of <h1>..<h6> headings

    def headings(self) -> list[str]:
        """The text of the page's <h1>..<h6> headings, in page order."""
        return [self.paragraphs[pid] for pid in self.heading_ids if pid in self.paragraphs]


def split_of(path: str) -> str:
    """train / dev / test for a page path: 80 / 10 / 10 by SHA-1, fixed forever."""
    bucket = int(hashlib.sha1(path.encode("utf-8")).hexdigest()[:8], 16) % 10
    return "test" if bucket == 0 else "dev" if bucket == 1 else "train"


def page_text(page: Page, max_chars: int | None = DOC_CHARS, include_title: bool = True) -> str:
    """Title and paragraphs, cut at ``max_chars`` on a word boundary (``None``: the whole page)."""
    body = [p for p in page.paragraphs.values() if p != page.title]
    text = " ".join([page.title, *body] if include_title else body)
    if max_chars is None or len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    return cut[: cut.rfind(" ")] if " " in cut else cut


# ------------------------------------------------------------------------------------------ obtaining
def help_root(cache_dir: Path) -> Path:
    return data_dir(cache_dir) / "libreoffice-help"


def fetch_help(languages: Sequence[str], cache_dir: Path) -> Path:
    """Download and unpack ``libreoffice-help-<lang>`` for each language (once); returns the root under
    which ``usr/share/libreoffice/help/<lang>/text`` lies.

    ``apt-get download`` runs in ``<cache>/data/debs``; when it fails (typically: no package lists yet),
    ``apt-get update`` runs once per call and the download is retried. ``dpkg-deb -x`` unpacks into
    ``<cache>/data/libreoffice-help``; nothing is installed. A ``.complete-<lang>`` marker makes this
    idempotent, and ``manifest.json`` records each language's .deb name and SHA-256."""
    root = help_root(cache_dir)
    debs = data_dir(cache_dir) / "debs"
    unknown = [lang for lang in languages if lang not in DEFAULT_LANGUAGES]
    if unknown:
        raise DataError(f"language {unknown[0]!r}: no LibreOffice help package; known: {', '.join(DEFAULT_LANGUAGES)}")
    root.mkdir(parents=True, exist_ok=True)
    debs.mkdir(parents=True, exist_ok=True)
    manifest_path = root / "manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8")) if manifest_path.is_file() else {}
    updated = [False]  # apt-get update at most once per call
    for lang in languages:
        if (root / f".complete-{lang}").exists():
            continue
        package = f"libreoffice-help-{lang}"
        deb = _download_deb(package, debs, updated)
        proc = _run(["dpkg-deb", "-x", str(deb), str(root)])
        if proc.returncode != 0:
            raise DataError(f"{deb.name}: dpkg-deb -x failed: {proc.stderr.strip()[-300:]}")
        manifest[lang] = {"deb": deb.name, "sha256": sha256_file(deb)}
        # The manifest first, then the marker: a language marked complete is always in the manifest.
        write_text_atomic(manifest_path, json.dumps(manifest, indent=1, sort_keys=True))
        (root / f".complete-{lang}").write_text(deb.name + "\n", encoding="utf-8")
    return root


def _run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError as e:
        msg = f"{cmd[0]} not found: the LibreOffice help is obtained with apt-get and dpkg-deb (Debian/Ubuntu)"
        raise DataError(msg) from e


def _download_deb(package: str, debs: Path, updated: list[bool]) -> Path:
    def found() -> list[Path]:
        return sorted(debs.glob(f"{package}_*.deb"))

    if found():
        return found()[-1]
    proc = _run(["apt-get", "download", package], cwd=debs)
    if (proc.returncode != 0 or not found()) and not updated[0]:
        log.warning("apt-get download %s failed; refreshing the package lists once (apt-get update)", package)
        updated[0] = True
        _run(["apt-get", "update", "-qq"])
        proc = _run(["apt-get", "download", package], cwd=debs)
    if proc.returncode != 0 or not found():
        tail = proc.stderr.strip()[-300:]
        raise DataError(
            f"could not download the Debian package {package} (apt-get download; a Debian/Ubuntu machine "
            f"with package sources is needed): {tail}"
        )
    return found()[-1]


# ------------------------------------------------------------------------------------------ parsing
class _HelpPageParser(HTMLParser):
    """Collects <title>, and the text of every <p>/<h1..6> with an id (spans etc. inside are kept); records
    which ids are headings."""

    BLOCKS = {"p", "h1", "h2", "h3", "h4", "h5", "h6"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.title_parts: list[str] = []
        self.in_title = False
        self.h1: str | None = None
        self.paragraphs: dict[str, str] = {}
        self.heading_ids: list[str] = []
        self.current: tuple[str, str, list[str]] | None = None  # (tag, id, parts)
        self.skip = 0  # inside <script>/<style>

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self.in_title = True
        elif tag in ("script", "style"):
            self.skip += 1
        elif tag in self.BLOCKS and self.current is None:
            pid = dict(attrs).get("id")
            if pid:
                self.current = (tag, pid, [])

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self.in_title = False
        elif tag in ("script", "style"):
            self.skip = max(0, self.skip - 1)
        elif self.current is not None and tag == self.current[0]:
            _, pid, parts = self.current
            text = _SPACE.sub(" ", "".join(parts)).strip()
            if text and pid not in self.paragraphs:
                self.paragraphs[pid] = text
                if tag != "p":
                    self.heading_ids.append(pid)
                if tag == "h1" and self.h1 is None:
                    self.h1 = text
            self.current = None

    def handle_data(self, data: str) -> None:
        if self.skip:
            return
        if self.in_title:
            self.title_parts.append(data)
        if self.current is not None:
            self.current[2].append(data)


def parse_page(html: str, path: str, lang: str) -> Page:
    parser = _HelpPageParser()
    parser.feed(html)
    parser.close()
    # The visible first heading is what a user reads and searches for; <title> is its fallback.
    title = parser.h1 or _SPACE.sub(" ", "".join(parser.title_parts)).strip()
    return Page(path=path, lang=lang, title=title, paragraphs=parser.paragraphs, heading_ids=parser.heading_ids)


def help_dir_name(lang: str) -> str:
    """Package language code -> the help directory's name: ``en-us`` -> ``en-US``, ``de`` -> ``de``."""
    base, _, region = lang.partition("-")
    return f"{base}-{region.upper()}" if region else base


def load_pages(root: Path, lang: str) -> dict[str, Page]:
    """Every help page of ``lang`` by relative path; parsed once, then read from a JSON cache."""
    text_dir = Path(root) / "usr" / "share" / "libreoffice" / "help" / help_dir_name(lang) / "text"
    if not text_dir.is_dir():
        raise DataError(f"{text_dir}: missing; fetch the language first (fetch_help([{lang!r}], ...))")
    cache = Path(root) / f"pages-{lang}.json.gz"
    marker = Path(root) / f".complete-{lang}"
    # A cache older than the language's unpacking (a re-fetch), or written by an older parser (a bare list,
    # or another version: pages without heading ids), is parsed again.
    if cache.is_file() and (not marker.exists() or cache.stat().st_mtime >= marker.stat().st_mtime):
        raw = json.loads(gzip.decompress(cache.read_bytes()))
        if isinstance(raw, dict) and raw.get("version") == _PAGE_CACHE_VERSION:
            return {p["path"]: Page(**p) for p in raw["pages"]}
    pages: dict[str, Page] = {}
    for file in sorted(text_dir.rglob("*.html")):
        rel = file.relative_to(text_dir).as_posix()
        pages[rel] = parse_page(file.read_text(encoding="utf-8", errors="replace"), rel, lang)
    payload = json.dumps({"version": _PAGE_CACHE_VERSION, "pages": [vars(p) for p in pages.values()]},
                         ensure_ascii=False).encode("utf-8")
    write_bytes_atomic(cache, gzip.compress(payload))
    return pages


# ------------------------------------------------------------------------------------------ leaks
#: Scripts written without spaces between words (Thai, Lao, Myanmar, Khmer, CJK ideographs, kana): each of
#: their letters is a word of its own for matching.
_UNSPACED = ((0x0E00, 0x0EFF), (0x1000, 0x109F), (0x1780, 0x17FF), (0x19E0, 0x19FF), (0x2E80, 0x2FDF),
             (0x3040, 0x30FF), (0x31A0, 0x31FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF),
             (0xFF66, 0xFF9F), (0x20000, 0x3134F))
#: A held-out *title* leaks by containment from this many words on (a letter of an unspaced script counts
#: as :data:`UNSPACED_WORD`); a shorter title ("Toolbars", "Example", "表"), and a heading of any length,
#: leaks only where a whole text equals it. Measured on the help in the 30 SAP languages (docs/models.md):
#: containment of headings too drops 13% (from 3 words) to 31% (from 2 words) of the train bitext, nearly
#: all of it common UI phrases ("Current document", "Table of contents"); containment of titles from 2 words
#: drops 14%, equality alone 5%.
MIN_CONTAINED_WORDS = 2.0
UNSPACED_WORD = 0.5


@functools.cache
def _word_re() -> re.Pattern[str]:
    """A word: one letter of an unspaced script, or a run of other letters, marks and digits (unlike ``\\w``,
    marks are inside a word: Devanagari vowel signs do not split it)."""
    unspaced = {cp for lo, hi in _UNSPACED for cp in range(lo, hi + 1)}
    classes: tuple[list[int], list[int]] = ([], [])
    for cp in range(sys.maxunicode + 1):
        if unicodedata.category(chr(cp))[0] in "LMN":
            classes[cp in unspaced].append(cp)

    def char_class(cps: list[int]) -> str:
        runs, start = [], cps[0]
        for prev, cp in zip(cps, [*cps[1:], -1], strict=True):
            if cp != prev + 1:
                runs.append(f"\\U{start:08x}" + (f"-\\U{prev:08x}" if prev > start else ""))
                start = cp
        return "[" + "".join(runs) + "]"

    return re.compile(f"{char_class(classes[True])}|{char_class(classes[False])}+")


def words(text: str) -> list[str]:
    """``text`` as the leak rule compares it: NFKC, case-folded, split into words (:func:`_word_re`);
    punctuation and spacing are ignored."""
    return _word_re().findall(unicodedata.normalize("NFKC", text).casefold())


class HeldOut:
    """The titles and <h1>..<h6> headings of dev/test pages, which no training text may carry: titles are
    the evaluation queries, headings name what the held-out pages are about. A text *leaks* when, compared as
    :func:`words`, it equals one of them, or contains a title of at least :data:`MIN_CONTAINED_WORDS` words
    as a run of whole words (word boundaries on both sides).

    :meth:`keep` drops the pairs with a leaking side and counts them in :attr:`dropped` by label."""

    def __init__(self, titles: Iterable[str], headings: Iterable[str] = (),
                 min_words: float = MIN_CONTAINED_WORDS) -> None:
        title_words = {tuple(words(s)) for s in titles}
        self.exact: set[tuple[str, ...]] = {ws for ws in title_words | {tuple(words(s)) for s in headings} if ws}
        self.trie: dict[str, dict] = {}  # word -> next words; "" marks the end of a contained title
        self.dropped: Counter[str] = Counter()
        for ws in title_words:
            if ws and word_count(ws) >= min_words:
                node = self.trie
                for w in ws:
                    node = node.setdefault(w, {})
                node[""] = {}

    @classmethod
    def of_pages(cls, pages_by_lang: Mapping[str, Mapping[str, Page]], min_words: float = MIN_CONTAINED_WORDS
                 ) -> HeldOut:
        """Titles and headings of every dev/test page in every language of ``pages_by_lang``."""
        held = [page for pages in pages_by_lang.values() for page in pages.values() if split_of(page.path) != "train"]
        return cls([page.title for page in held], [h for page in held for h in page.headings()], min_words)

    def __len__(self) -> int:
        return len(self.exact)

    def leaks(self, text: str) -> bool:
        return self.match(words(text)) is not None

    def match(self, ws: Sequence[str]) -> tuple[str, ...] | None:
        """The held-out string (as words) that the words ``ws`` of a text equal or contain, if any."""
        if tuple(ws) in self.exact:
            return tuple(ws)
        for i in range(len(ws)):
            node = self.trie.get(ws[i])
            j = i + 1
            while node is not None:  # node: the trie after ws[i:j]
                if "" in node:
                    return tuple(ws[i:j])
                if j == len(ws):
                    break
                node = node.get(ws[j])
                j += 1
        return None

    def keep(self, pairs: Iterable[tuple[str, str]], label: str) -> list[tuple[str, str]]:
        """The pairs neither side of which leaks; the others are counted under ``label``."""
        kept = []
        for pair in pairs:
            if self.leaks(pair[0]) or self.leaks(pair[1]):
                self.dropped[label] += 1
            else:
                kept.append(pair)
        return kept


def word_count(ws: Sequence[str]) -> float:
    """The length of :func:`words` as the leak rule weighs it (a letter of an unspaced script: half a word)."""
    return sum(UNSPACED_WORD if len(w) == 1 and _is_unspaced(w) else 1.0 for w in ws)


def _is_unspaced(char: str) -> bool:
    cp = ord(char)
    return any(lo <= cp <= hi for lo, hi in _UNSPACED)


# ------------------------------------------------------------------------------------------ training data
def bitext_pairs(
    pages_by_lang: Mapping[str, Mapping[str, Page]], langs: Iterable[str], split: str = "train", min_chars: int = 12,
    held_out: HeldOut | None = None,
) -> list[tuple[str, str]]:
    """(X paragraph, English paragraph) joined by (page path, paragraph id), pages of ``split`` only;
    identical strings (untranslated) and very short English ones are skipped. Train pairs that leak a dev/test
    title or heading (``held_out``, by default :meth:`HeldOut.of_pages` of ``pages_by_lang``) are dropped: a
    train page's paragraph may quote another page's title."""
    english = pages_by_lang[ENGLISH]
    pairs = []
    for lang in langs:
        if lang == ENGLISH:
            continue
        for path, page in pages_by_lang[lang].items():
            en_page = english.get(path)
            if en_page is None or split_of(path) != split:
                continue
            for pid, text in page.paragraphs.items():
                en = en_page.paragraphs.get(pid)
                # Length is judged on the English side: CJK text says as much in a third of the characters.
                if en and text != en and len(en) >= min_chars:
                    pairs.append((text, en))
    if split != "train":
        return pairs
    return (held_out if held_out is not None else HeldOut.of_pages(pages_by_lang)).keep(pairs, "bitext")


def gettext_pairs(
    langs: Iterable[str],
    pages_by_lang: Mapping[str, Mapping[str, Page]],
    locale_dir: Path = Path("/usr/share/locale"),
    held_out: HeldOut | None = None,
) -> list[tuple[str, str]]:
    """(translation, English msgid) from the machine's gettext catalogues (``<locale_dir>/<locale>/
    LC_MESSAGES/*.mo``; ``zh-cn`` -> ``zh_CN`` etc.). Plural and context entries, the header, identical
    strings and msgids under 3 characters are skipped. These pairs come from no page, so a pair either side
    of which leaks a dev/test title or heading (``held_out``, by default :meth:`HeldOut.of_pages` of
    ``pages_by_lang``) is dropped: it would put an evaluation query and its answer into training."""
    held_out = held_out if held_out is not None else HeldOut.of_pages(pages_by_lang)
    pairs = []
    for lang in langs:
        if lang == ENGLISH:
            continue
        locale = _GETTEXT_LOCALES.get(lang, lang)
        for mo in sorted(Path(locale_dir).glob(f"{locale}/LC_MESSAGES/*.mo")):
            try:
                with open(mo, "rb") as f:
                    catalog = gettext.GNUTranslations(f)._catalog  # type: ignore[attr-defined]
            except (OSError, ValueError, UnicodeDecodeError):
                continue
            for msgid, msgstr in catalog.items():
                # Plural forms are keyed (msgid, n); a context is "ctx\x04msgid".
                if not isinstance(msgid, str) or not msgid or not isinstance(msgstr, str) or "\x04" in msgid:
                    continue
                if msgstr == msgid or len(msgid) < 3 or not msgstr.strip():
                    continue
                pairs.append((msgstr, msgid))
    return held_out.keep(pairs, "gettext")


class RetrievalPair(NamedTuple):
    query: str  # a page title in ``query_lang``
    positive: str  # the same page's text (:func:`page_text`) in ``doc_lang``
    path: str
    query_lang: str
    doc_lang: str


def retrieval_pairs(
    pages_by_lang: Mapping[str, Mapping[str, Page]], langs: Iterable[str], split: str = "train", seed: int = 13,
    held_out: HeldOut | None = None,
) -> list[RetrievalPair]:
    """Title -> page pairs from pages of ``split`` only: for every page and language X in ``langs`` (English
    too, when given), the title in X -> the English page text; and the title in X -> the page text in one
    non-English language Y != X of ``langs``, drawn per (X, page) (seeded; none when there is no such Y).
    Pages with an empty title are skipped; untranslated titles are kept. A train title that leaks a dev/test
    title or heading (several pages are titled "Toolbars"; ``held_out``, by default :meth:`HeldOut.of_pages`)
    is no query: it is counted in ``held_out.dropped["retrieval"]``."""
    rng = random.Random(seed)
    langs = list(dict.fromkeys(langs))
    english = pages_by_lang[ENGLISH]
    others = [lang for lang in langs if lang != ENGLISH]
    if split == "train" and held_out is None:
        held_out = HeldOut.of_pages(pages_by_lang)
    pairs = []
    for lang in langs:
        for path, page in sorted(pages_by_lang[lang].items()):
            if split_of(path) != split or not page.title or path not in english:
                continue
            if split == "train" and held_out is not None and held_out.leaks(page.title):
                held_out.dropped["retrieval"] += 1
                continue
            pairs.append(RetrievalPair(page.title, page_text(english[path]), path, lang, ENGLISH))
            candidates = [y for y in others if y != lang and path in pages_by_lang[y]]
            if candidates:
                y = rng.choice(candidates)
                pairs.append(RetrievalPair(page.title, page_text(pages_by_lang[y][path]), path, lang, y))
    return pairs


# ------------------------------------------------------------------------------------------ evaluation
@dataclass
class EvalSet:
    name: str
    corpus: list[dict[str, str]]  # id, text, lang
    queries: list[dict[str, str]]  # id, text, lang
    qrels: dict[str, dict[str, int]]


def english_corpus(pages_by_lang: Mapping[str, Mapping[str, Page]], max_chars: int | None = DOC_CHARS
                   ) -> list[dict[str, str]]:
    """Every English page (cut at ``max_chars``; ``None``: whole pages): the corpus of the CLIR sets."""
    return [{"id": path, "text": page_text(page, max_chars), "lang": ENGLISH}
            for path, page in sorted(pages_by_lang[ENGLISH].items())]


def mixed_corpus(pages_by_lang: Mapping[str, Mapping[str, Page]], langs: Sequence[str], seed: int = 13,
                 max_chars: int | None = DOC_CHARS) -> list[dict[str, str]]:
    """Every page once, in a language drawn per page (seeded): the corpus of the MLIR sets."""
    rng = random.Random(seed)
    langs = sorted(set(langs) | {ENGLISH})
    corpus = []
    for path in sorted(pages_by_lang[ENGLISH]):
        lang = rng.choice([lang for lang in langs if path in pages_by_lang[lang]])
        corpus.append({"id": path, "text": page_text(pages_by_lang[lang][path], max_chars), "lang": lang})
    return corpus


def clir_eval(pages_by_lang: Mapping[str, Mapping[str, Page]], split: str, langs: Iterable[str],
              max_chars: int | None = DOC_CHARS) -> EvalSet:
    """Queries: titles of ``split`` pages in each non-English language; corpus: every English page (cut at
    ``max_chars``; ``None``: whole pages).

    A title identical to the English one (left untranslated: 2% of German titles, 35% of Japanese, 96% of
    Hindi) is not a cross-language query, and en-gb is English: both are left out."""
    english = pages_by_lang[ENGLISH]
    queries, qrels = [], {}
    for lang in langs:
        if lang in (ENGLISH, "en-gb"):
            continue
        for path, page in sorted(pages_by_lang[lang].items()):
            if path in english and page.title == english[path].title:
                continue
            if split_of(path) == split and path in english and page.title:
                qid = f"{lang}:{path}"
                queries.append({"id": qid, "text": page.title, "lang": lang})
                qrels[qid] = {path: 1}
    return EvalSet(f"libreoffice-clir-{split}", english_corpus(pages_by_lang, max_chars), queries, qrels)


def mlir_eval(
    pages_by_lang: Mapping[str, Mapping[str, Page]], split: str, langs: Sequence[str], seed: int = 13,
    max_chars: int | None = DOC_CHARS,
) -> EvalSet:
    """Corpus: every page once, in a language drawn per page (seeded); queries: titles of ``split``
    pages in every language (the relevant page is then often in another language)."""
    langs = sorted(set(langs) | {ENGLISH})
    paths = sorted(pages_by_lang[ENGLISH])
    queries, qrels = [], {}
    for lang in langs:
        for path in paths:
            page = pages_by_lang[lang].get(path)
            if page is not None and split_of(path) == split and page.title:
                qid = f"{lang}:{path}"
                queries.append({"id": qid, "text": page.title, "lang": lang})
                qrels[qid] = {path: 1}
    return EvalSet(f"libreoffice-mlir-{split}", mixed_corpus(pages_by_lang, langs, seed, max_chars), queries, qrels)


# ------------------------------------------------------------------------------------------ keyword queries
class IndexEntry(NamedTuple):
    """One line of the help's own index (``bookmarks.js``): a keyword phrase pointing to a page."""

    text: str  # as the help shows it, e.g. "Abstände --  Fußnoten/Endnoten"
    path: str  # the page, relative to help/<lang>/text/
    anchor: str  # the bookmark on that page, e.g. "bm_id3147683"


_BOOKMARK = re.compile(r'\{url:"[^"/]+/text/([^"?#]+)[^"#]*#?([^"]*)", app:"[^"]*", text:"((?:[^"\\]|\\.)*)"\}')
#: A maximum relevance grade: a keyword indexed at several places of one page is central to it.
MAX_GRADE = 2


def load_index_entries(root: Path, lang: str) -> list[IndexEntry]:
    """The help's index entries in ``lang`` (``help/<lang>/bookmarks.js``), in file order."""
    from html import unescape

    file = Path(root) / "usr" / "share" / "libreoffice" / "help" / help_dir_name(lang) / "bookmarks.js"
    if not file.is_file():
        raise DataError(f"{file}: missing; fetch the language first (fetch_help([{lang!r}], ...))")
    entries = []
    for match in _BOOKMARK.finditer(file.read_text(encoding="utf-8", errors="replace")):
        path, anchor, text = match.groups()
        text = _SPACE.sub(" ", unescape(re.sub(r"\\(.)", r"\1", text))).strip()
        if text:
            entries.append(IndexEntry(text, path, anchor))
    return entries


def keyword_query(entry_text: str) -> str:
    """What a user would type for an index entry: its levels joined (``Abstände -- Fußnoten`` ->
    ``Abstände Fußnoten``)."""
    return _SPACE.sub(" ", entry_text.replace(" -- ", " ").replace("--", " ")).strip()


def keyword_queries(
    entries_by_lang: Mapping[str, Sequence[IndexEntry]], split: str, langs: Iterable[str], corpus_paths: set[str],
) -> tuple[list[dict[str, str]], dict[str, dict[str, int]]]:
    """One query per distinct (language, keyword) of the help's index, judged against every page the keyword
    points to; grade = the keyword's bookmarks on that page, at most :data:`MAX_GRADE`.

    A query belongs to ``split`` when one of its pages does and none is in the other held-out split (pages
    are split by the same hash as everywhere, so a dev query never points at a test page). An entry whose text
    is also an English entry (left untranslated) is no query in another language, so it is left out there."""
    other = {"dev": "test", "test": "dev"}.get(split)
    english = {e.text for e in entries_by_lang.get(ENGLISH, ())}
    queries, qrels = [], {}
    for lang in langs:
        grades: dict[str, dict[str, int]] = {}
        for entry in entries_by_lang[lang]:
            if entry.path not in corpus_paths or (lang != ENGLISH and entry.text in english):
                continue
            pages = grades.setdefault(keyword_query(entry.text), {})
            pages[entry.path] = min(pages.get(entry.path, 0) + 1, MAX_GRADE)
        for text, pages in sorted(grades.items()):
            splits = {split_of(path) for path in pages}
            if split not in splits or other in splits or not text:
                continue
            qid = f"{lang}:kw:{hashlib.sha1(text.encode('utf-8')).hexdigest()[:12]}"
            queries.append({"id": qid, "text": text, "lang": lang})
            qrels[qid] = pages
    return queries, qrels


def keywords_clir_eval(pages_by_lang: Mapping[str, Mapping[str, Page]],
                       entries_by_lang: Mapping[str, Sequence[IndexEntry]], split: str, langs: Iterable[str],
                       max_chars: int | None = DOC_CHARS) -> EvalSet:
    """Keyword queries of the help's index in each non-English language (en-gb is English) -> every English
    page (the corpus of :func:`clir_eval`)."""
    corpus = english_corpus(pages_by_lang, max_chars)
    langs = [lang for lang in langs if lang not in (ENGLISH, "en-gb")]
    queries, qrels = keyword_queries(entries_by_lang, split, langs, {d["id"] for d in corpus})
    return EvalSet(f"libreoffice-keywords-clir-{split}", corpus, queries, qrels)


def keywords_mlir_eval(pages_by_lang: Mapping[str, Mapping[str, Page]],
                       entries_by_lang: Mapping[str, Sequence[IndexEntry]], split: str, langs: Sequence[str],
                       seed: int = 13, max_chars: int | None = DOC_CHARS) -> EvalSet:
    """Keyword queries in every language -> every page once in a drawn language (the corpus of
    :func:`mlir_eval`, same seed)."""
    langs = sorted(set(langs) | {ENGLISH})
    corpus = mixed_corpus(pages_by_lang, langs, seed, max_chars)
    queries, qrels = keyword_queries(entries_by_lang, split, langs, {d["id"] for d in corpus})
    return EvalSet(f"libreoffice-keywords-mlir-{split}", corpus, queries, qrels)


def en_eval(pages_by_lang: Mapping[str, Mapping[str, Page]], split: str,
            max_chars: int | None = DOC_CHARS) -> EvalSet:
    """English known-item search within one split: queries are the English titles of ``split`` pages, the
    corpus is those same pages only (about 10% of the help for dev or test), as text *without* the title
    (:func:`page_text` with ``include_title=False``, cut at ``max_chars``; ``None``: whole pages), so a query
    must match the page's content, not a copy of itself. Pages with an empty title, or with no text besides
    the title, are left out of both."""
    english = pages_by_lang[ENGLISH]
    corpus, queries, qrels = [], [], {}
    for path, page in sorted(english.items()):
        if split_of(path) != split or not page.title.strip():
            continue
        text = page_text(page, max_chars, include_title=False).strip()
        if not text:
            continue
        corpus.append({"id": path, "text": text, "lang": ENGLISH})
        qid = f"{ENGLISH}:{path}"
        queries.append({"id": qid, "text": page.title, "lang": ENGLISH})
        qrels[qid] = {path: 1}
    return EvalSet(f"libreoffice-en-{split}", corpus, queries, qrels)


def untranslated_share(pages_by_lang: Mapping[str, Mapping[str, Page]], lang: str) -> float:
    """Share of ``lang`` page titles identical to the English title (untranslated strings make lexical
    matching look better than it is)."""
    english = pages_by_lang[ENGLISH]
    same = [page.title == english[path].title for path, page in pages_by_lang[lang].items() if path in english]
    return sum(same) / max(len(same), 1)


def write_eval_set(evalset: EvalSet, directory: Path) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name, rows in (("corpus", evalset.corpus), ("queries", evalset.queries)):
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        write_text_atomic(directory / f"{name}.jsonl", lines)
    write_text_atomic(directory / "qrels.json", json.dumps({"name": evalset.name, "qrels": evalset.qrels}))


def read_eval_set(directory: Path) -> EvalSet:
    directory = Path(directory)
    try:
        corpus, queries = (
            [json.loads(line) for line in (directory / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()]
            for name in ("corpus", "queries")
        )
        meta = json.loads((directory / "qrels.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"{directory}: not a complete evaluation set ({e})") from e
    return EvalSet(meta["name"], corpus, queries, meta["qrels"])
