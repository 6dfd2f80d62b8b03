"""BM25 baseline requests: every document goes into the text field of its own language, analysed by that
language's built-in analyzer (``german``, ``cjk``, ...; ``standard`` where OpenSearch has none); a query is
a ``multi_match`` over all those fields, so each document is matched by the query analysed the way its own
language is.

Pure builders (analyzer choice, index body, document source, query body), plus one probe
(:func:`unavailable_analyzers`) that asks the node which of the analyzers it lacks. Writing and searching go
through :mod:`milco_os.opensearch.bulk` and :mod:`milco_os.opensearch.search`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from milco_os.opensearch.engine import Client

#: milco-os language codes -> Client built-in language analyzers (module analysis-common). A code
#: is looked up as given (lower case), then by its part before "-" (``de-ch`` -> ``de``).
LANGUAGE_ANALYZERS: dict[str, str] = {
    "ar": "arabic", "hy": "armenian", "eu": "basque", "bn": "bengali", "pt-br": "brazilian",
    "bg": "bulgarian", "ca": "catalan", "cs": "czech", "da": "danish", "nl": "dutch", "en": "english",
    "et": "estonian", "fi": "finnish", "fr": "french", "gl": "galician", "de": "german", "el": "greek",
    "hi": "hindi", "hu": "hungarian", "id": "indonesian", "ga": "irish", "it": "italian", "lv": "latvian",
    "lt": "lithuanian", "nb": "norwegian", "nn": "norwegian", "no": "norwegian", "fa": "persian",
    "pt": "portuguese", "ro": "romanian", "ru": "russian", "ckb": "sorani", "es": "spanish",
    "sv": "swedish", "tr": "turkish", "th": "thai",
    # CJK: overlapping character bigrams (no dictionary segmenter is built in).
    "ja": "cjk", "ko": "cjk", "zh": "cjk", "zh-cn": "cjk", "zh-tw": "cjk",
}  # fmt: skip
STANDARD = "standard"
#: Hits per query when none is given (Recall@100 needs 100).
DEFAULT_SIZE = 100


def analyzer_for(lang: str) -> str:
    """The built-in analyzer for a language code, ``standard`` when OpenSearch has none."""
    code = lang.strip().lower().replace("_", "-")
    return LANGUAGE_ANALYZERS.get(code) or LANGUAGE_ANALYZERS.get(code.split("-")[0]) or STANDARD


def language_field(lang: str) -> str:
    """The text field holding documents of ``lang``: ``text_de``, ``text_zh_cn``, ..."""
    return "text_" + re.sub(r"[^a-z0-9]+", "_", lang.strip().lower())


def resolve_analyzers(
    langs: Sequence[str], unavailable: Mapping[str, str] | None = None
) -> tuple[dict[str, str], dict[str, str]]:
    """``({lang: analyzer}, {lang: why it fell back to standard})``; ``unavailable`` maps analyzer names
    the node lacks to the reason."""
    unavailable = unavailable or {}
    chosen: dict[str, str] = {}
    fallbacks: dict[str, str] = {}
    for lang in sorted(set(langs)):
        analyzer = analyzer_for(lang)
        if analyzer != STANDARD and analyzer in unavailable:
            fallbacks[lang] = f"analyzer {analyzer!r} unavailable: {unavailable[analyzer]}"
            analyzer = STANDARD
        chosen[lang] = analyzer
    return chosen, fallbacks


def bm25_index_body(analyzers: Mapping[str, str], *, shards: int = 1, replicas: int = 0) -> dict[str, Any]:
    """One text field per language with its analyzer, plus the language as a keyword."""
    properties: dict[str, Any] = {"lang": {"type": "keyword"}}
    for lang, analyzer in sorted(analyzers.items()):
        properties[language_field(lang)] = {"type": "text", "analyzer": analyzer}
    return {
        "settings": {"index": {"number_of_shards": shards, "number_of_replicas": replicas}},
        "mappings": {"dynamic": "strict", "properties": properties},
    }


def bm25_document(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The ``_source`` of a ``{"text", "lang"}`` document: its text in its language's field."""
    return {"lang": doc["lang"], language_field(doc["lang"]): doc["text"]}


def bm25_documents(docs: Iterable[Mapping[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(id, source)`` pairs for :func:`milco_os.opensearch.bulk.write_documents`."""
    for doc in docs:
        yield str(doc["id"]), bm25_document(doc)


def bm25_query_body(text: str, langs: Sequence[str], size: int = DEFAULT_SIZE) -> dict[str, Any]:
    """``multi_match`` over every language field (each analyses the query its own way); a document has
    exactly one of them, so ``best_fields`` scores it by BM25 in its own language."""
    return {
        "size": size,
        "_source": False,
        "query": {
            "multi_match": {
                "query": text,
                "fields": sorted({language_field(lang) for lang in langs}),
                "type": "best_fields",
            }
        },
    }


def unavailable_analyzers(client: Client, names: Sequence[str]) -> dict[str, str]:
    """Analyzers the node does not know (e.g. a distribution without the analysis-common module), each
    with OpenSearch's reason."""
    from milco_os.opensearch.engine import error_status, transport_error

    missing: dict[str, str] = {}
    for name in sorted(set(names) - {STANDARD}):
        try:
            client.indices.analyze(body={"analyzer": name, "text": "probe"})
        except transport_error() as e:
            if error_status(e) != 400:
                raise
            info = getattr(e, "info", None)
            reason = info.get("error", {}).get("reason") if isinstance(info, dict) else None
            missing[name] = str(reason or getattr(e, "error", e))
    return missing


def choose_analyzers(client: Client, langs: Sequence[str]) -> tuple[dict[str, str], dict[str, str]]:
    """:func:`resolve_analyzers` for ``langs`` against what this node has."""
    wanted = {analyzer_for(lang) for lang in langs}
    return resolve_analyzers(langs, unavailable_analyzers(client, sorted(wanted)))
