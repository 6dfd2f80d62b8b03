"""The README's main job: local OpenSearch + default model + multilingual sample + cross-lingual searches.

About 1,800 LibreOffice help pages are indexed, each in ONE of six languages (drawn per page); six example
queries, one per language, each look for a page indexed in another language than the query's. Every page a
query looks for is held out (the dev or test split of :func:`milco_os.datasets.libreoffice.split_of`): the
models were trained on train pages only, so the demo shows retrieval of pages no model has seen.

The summary reports how many hits are in another language than their query next to what a ranking blind to
language would give (:func:`language_blind_expectation`), and can be written as a JSON report
(:func:`write_report`, ``milco-os demo --report FILE``).
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from milco_os.pruning import Pruning
from milco_os.settings import Settings

TEXT_FIELDS = ("title", "text")
HELP_LANGUAGES = ["en-us", "de", "fr", "es", "ja", "zh-cn"]
#: Keep each document's 40 strongest terms per view: smaller and, for milco-mini, better than unpruned
#: (docs/evaluation.md).
DOC_PRUNING = Pruning.parse("top_k:40")
#: Pages per language in the default demo: ~1,800 pages, a few minutes of encoding on 2 CPU cores.
PAGES_PER_LANGUAGE = 300


def sample_documents() -> list[dict[str, Any]]:
    """The small packaged sample (32 short documents in 4 languages): the fallback where the LibreOffice
    help packages cannot be downloaded (not a Debian/Ubuntu machine)."""
    text = resources.files("milco_os.data").joinpath("demo_documents.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def sample_queries() -> list[dict[str, Any]]:
    return json.loads(resources.files("milco_os.data").joinpath("demo_queries.json").read_text(encoding="utf-8"))


def help_queries() -> list[dict[str, Any]]:
    """The example queries over the help pages: ``text``, ``lang`` (one per :data:`HELP_LANGUAGES`) and the
    ``path`` of the page each looks for, always a held-out (dev/test) page."""
    return json.loads(resources.files("milco_os.data").joinpath("demo_help_queries.json").read_text(encoding="utf-8"))


def help_documents(cache_dir: Any, pages_per_language: int, seed: int = 7, whole: bool = False) -> list[dict[str, Any]]:
    """LibreOffice help pages, each indexed in ONE of the demo languages (drawn per page, seeded), so
    most queries can only find their page across languages. The pages the example queries look for (all
    held out from training) are always included, in a language other than the query's. Each page is cut to
    its first 600 characters, or with ``whole`` kept whole (for an index with passages)."""
    from milco_os.datasets import libreoffice

    root = libreoffice.fetch_help(HELP_LANGUAGES, cache_dir)
    pages = {lang: libreoffice.load_pages(root, lang) for lang in HELP_LANGUAGES}
    rng = random.Random(seed)
    paths = sorted(pages[libreoffice.ENGLISH])
    rng.shuffle(paths)
    chosen = {path: rng.choice(HELP_LANGUAGES) for path in paths[: pages_per_language * len(HELP_LANGUAGES)]}
    for q in help_queries():
        chosen[q["path"]] = HELP_LANGUAGES[(HELP_LANGUAGES.index(q["lang"]) + 1) % len(HELP_LANGUAGES)]
    docs = []
    for path, lang in sorted(chosen.items()):
        page = pages[lang][path]
        body = libreoffice.page_text(page, None if whole else libreoffice.DOC_CHARS)[len(page.title):].strip()
        docs.append({"id": f"{lang}:{path}", "title": page.title, "text": body, "lang": lang, "path": path})
    return docs


def run_demo(
    settings: Settings, *, port: int, index: str, console: Console, size: int = 4, start_node: bool = True,
    pages_per_language: int = PAGES_PER_LANGUAGE, passages: bool = False, engine: str = "opensearch",
) -> dict[str, Any]:
    """Run the demo end to end; returns a summary (also printed), the content of ``--report``.

    With ``start_node`` the local node of ``engine`` (opensearch or elasticsearch) on ``port`` is started (or found
    running); otherwise the demo uses whatever cluster ``settings.opensearch_url`` points at.

    Summary keys: ``created_at`` (UTC), ``engine``, ``opensearch`` (the engine's version), ``model``, ``corpus``
    (``libreoffice-help``, or ``sample`` where the help cannot be downloaded), ``pages_per_language`` (as asked),
    ``documents``, ``documents_per_language``, ``languages``, ``document_pruning``, ``query_prune``, ``fusion`` (the
    lists fused on an index with the model's dense view, or None), ``size``, ``queries``, ``found`` (the page is
    among the ``size`` hits shown), ``top1_found``, ``hits_shown``, ``hits_in_another_language``,
    ``hits_in_another_language_expected`` (a ranking blind to language, see :func:`language_blind_expectation`) and
    ``per_query``: for each query ``text``, ``lang``, ``path``, ``split`` (of that path), ``rank`` of the page
    looked for (``None``: not shown), ``hit_languages`` and ``pivot_terms`` (the query's five heaviest English pivot
    terms, after query pruning).
    """
    from milco_os.loading import load_encoder
    from milco_os.localnode import LocalNode
    from milco_os.opensearch.client import make_client
    from milco_os.opensearch.engine import engine_of
    from milco_os.opensearch.indices import create_index, delete_index, index_record, server_version
    from milco_os.opensearch.ingest import ingest
    from milco_os.opensearch.search import search, term_stats
    from milco_os.pruning import Pruning
    from milco_os.specs import DEFAULT_DENSE_WEIGHT, DEFAULT_FUSION, DEFAULT_QUERY_PRUNE, IndexSpec, SearchOptions

    if start_node:
        node = LocalNode(settings.cache_dir, port, engine)
        with console.status(f"starting the local {node.engine.title} node on port {port} ..."):
            # OpenSearch's dense view is the k-NN plugin's field; Elasticsearch's is in its core.
            node.up(plugins=("knn",) if node.engine.takes_plugins else ())
    client = make_client(settings)
    os_version = server_version(client)
    console.print(f"{engine_of(client).label} {os_version} at {settings.opensearch_url}", highlight=False)
    with console.status(f"loading model {settings.model!r} ..."):
        encoder = load_encoder(settings.model, settings.cache_dir)
    info = encoder.info
    echo = "with" if info.echo_vocab is not None else "without"
    console.print(f"model {info.name} ({info.family}, {echo} echo view, {info.fingerprint})", highlight=False)

    delete_index(client, index)
    # With the model's dense view where it has one: search then fuses it with the sparse views (docs/dense.md).
    dense = info.dense is not None
    # With passages: whole pages, each scored by its best passage, shown beside the hit (docs/passages.md).
    create_index(client, index, info, IndexSpec(text_fields=TEXT_FIELDS, replicas=0, doc_pruning=DOC_PRUNING,
                                                dense=dense, passages=passages))
    from milco_os.datasets.libreoffice import split_of
    from milco_os.errors import DataError

    try:
        with console.status("fetching the LibreOffice help pages (Debian packages, once) ..."):
            docs, queries = help_documents(settings.cache_dir, pages_per_language, whole=passages), help_queries()
        corpus = "libreoffice-help"
    except DataError as e:
        console.print(f"LibreOffice help unavailable ({e}); using the small packaged sample instead", highlight=False)
        docs, queries = sample_documents(), sample_queries()
        corpus = "sample"
    docs_per_language = dict(sorted(Counter(d["lang"] for d in docs).items()))
    languages = list(docs_per_language)
    with Progress(
        TextColumn("indexing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as progress:
        task = progress.add_task("ingest", total=len(docs))
        report = ingest(
            client, index, docs, encoder, refresh=True, on_progress=lambda n: progress.advance(task, n)
        )
    console.print(
        f"indexed {report.indexed} documents in {len(languages)} languages ({', '.join(languages)}); "
        f"{report.failed} failed",
        highlight=False,
    )

    found, top1, shown, other_language = 0, 0, 0, 0
    per_query: list[dict[str, Any]] = []
    query_pruning = Pruning.parse(DEFAULT_QUERY_PRUNE)
    options = SearchOptions(size=size, explain=True, query_pruning=query_pruning)
    stats = term_stats(client, index, index_record(client, index), options)  # read once for every query
    for q in queries:
        result = search(client, index, q["text"], encoder, options, stats=stats)
        table = Table(title=f"[{q['lang']}] {q['text']}", title_justify="left", show_lines=False)
        table.add_column("#", justify="right")
        table.add_column("score", justify="right")
        table.add_column("doc")
        table.add_column("title")
        if result.lists:
            table.add_column("sparse, dense rank")
        if passages:
            table.add_column("best passage")
        table.add_column("top matched terms: contribution (* = echo view)")
        for rank, hit in enumerate(result.hits, 1):
            terms = ", ".join(f"{t.term}{'*' if t.view == 'echo' else ''} {t.contribution:.2f}" for t in hit.terms[:4])
            ranks = [", ".join(str(hit.lists[n].rank) if n in hit.lists else "-" for n in result.lists)]
            excerpt = [hit.passage.excerpt(60) if hit.passage else ""] if passages else []
            table.add_row(str(rank), f"{hit.score:.3f}" if result.lists else f"{hit.score:.2f}", hit.id,
                          hit.source.get("title", ""), *(ranks if result.lists else []), *excerpt, terms)
        console.print(table)
        ranks = [rank for rank, hit in enumerate(result.hits, 1) if is_answer(hit.source, q)]
        hit_languages = [hit.source.get("lang") for hit in result.hits]
        shown += len(result.hits)
        other_language += sum(lang != q["lang"] for lang in hit_languages)
        found += bool(ranks)
        top1 += ranks[:1] == [1]
        path = q.get("path")
        per_query.append({
            "text": q["text"], "lang": q["lang"], "path": path, "split": split_of(path) if path else None,
            "rank": ranks[0] if ranks else None, "hit_languages": hit_languages,
            "pivot_terms": list(result.query.pivot.readable_terms())[:5],
        })
    expected = language_blind_expectation(((q["lang"], len(q["hit_languages"])) for q in per_query),
                                          docs_per_language)
    summary = {
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "engine": engine_of(client).name,
        "opensearch": os_version,
        "model": info.name,
        "corpus": corpus,
        "pages_per_language": pages_per_language,
        "documents": report.indexed,
        "documents_per_language": docs_per_language,
        "languages": languages,
        "document_pruning": str(DOC_PRUNING),
        "units": "passages" if passages else "merged",
        "query_prune": str(query_pruning),
        "fusion": {"norm": DEFAULT_FUSION, "dense_weight": DEFAULT_DENSE_WEIGHT} if dense else None,
        "size": size,
        "queries": len(queries),
        "found": found,
        "top1_found": top1,
        "hits_shown": shown,
        "hits_in_another_language": other_language,
        "hits_in_another_language_expected": expected,
        "per_query": per_query,
    }
    console.print(
        f"the page a query looks for is among the top {size} hits for {found} of {len(queries)} queries, "
        f"the top hit for {top1}; {other_language} of {shown} hits shown are in another language than the query "
        f"(a ranking blind to language would give about {expected:.1f}; * marks echo-view terms)."
        + (f" The node keeps running at {settings.opensearch_url}; stop it with `milco-os cluster down --port {port}`."
           if start_node else ""),
        highlight=False,
    )
    return summary


def language_blind_expectation(
    hits_per_query: Iterable[tuple[str, int]], docs_per_language: Mapping[str, int]
) -> float:
    """Hits in another language than their query that a ranking blind to language would show: for each
    ``(query language, hits shown)``, hits x (1 - share of the indexed documents in the query's language),
    summed over queries and rounded to 1 decimal. With 6 languages indexed evenly, 6 queries x 4 hits give
    20.0: fewer other-language hits than that means a bias towards the query's language."""
    total = sum(docs_per_language.values())
    if total <= 0:
        return 0.0
    expected = sum(hits * (1 - docs_per_language.get(lang, 0) / total) for lang, hits in hits_per_query)
    return round(expected, 1)


def write_report(summary: Mapping[str, Any], path: Path) -> Path:
    """Write the summary of :func:`run_demo` as JSON (indent 1, sorted keys, UTF-8 text, trailing newline)."""
    from milco_os.paths import write_text_atomic

    path = Path(path)
    write_text_atomic(path, json.dumps(summary, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    return path


def is_answer(source: dict[str, Any], query: dict[str, Any]) -> bool:
    """The hit is what the query looks for: its help page, or (packaged sample) its topic."""
    if "path" in query:
        return source.get("path") == query["path"]
    return source.get("topic") == query["topic"]
