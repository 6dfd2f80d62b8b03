"""``milco-os search``: queries in any language, printed as hits (with --explain, the terms that matched), as JSON,
or as the request body itself."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.markup import escape

from milco_os.cli_encode import following_index, load_model
from milco_os.cli_index import IndexOpt, connect
from milco_os.cli_support import (
    checked_index_name,
    handle_errors,
    out,
    typed_queries,
    with_search_options,
    with_settings,
)


@handle_errors
@with_search_options
@with_settings(model=True, opensearch=True)
def search(
    query: Annotated[str | None, typer.Argument(
        help="Query text, any language. Without it, queries are read one per line (the model is loaded once).")] = None,
    *,
    index: IndexOpt,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object per query (for scripts).")] = False,
    top_terms: Annotated[int, typer.Option("--top-terms", min=1, help="Terms shown per hit with --explain.")] = 8,
    print_query: Annotated[str | None, typer.Option(
        "--print-query", metavar="FORM",
        help="Print the search body instead of searching: rank_feature (what search sends), neural_sparse "
             "(query_tokens, keys as the index stores them, alpha applied) or model (neural_sparse with the "
             "index's ml-commons models; OpenSearch encodes). Where search fuses lists (--hybrid-norm, an index "
             "with a dense view): a neural-search hybrid query and a temporary search pipeline that fuses as "
             "search does.")] = None,
    settings: Any = None,
    options: Any = None,
) -> None:
    """Search an index with queries in any language; --explain shows which terms matched and how much."""
    from milco_os.opensearch.indices import index_record
    from milco_os.opensearch.search import query_request, term_stats
    from milco_os.opensearch.search import search as run_search

    checked_index_name("--index", index)
    client = connect(settings)
    # Read once for all queries: the document frequencies `--query-prune selective:R` prunes by.
    record = index_record(client, index)
    stats = term_stats(client, index, record, options)
    settings = following_index(settings, client, index, record)
    if print_query is not None:
        encoder = None if print_query == "model" else load_model(settings)
        for text in [query] if query is not None else typed_queries():
            body = query_request(client, index, text, encoder, options, form=print_query, stats=stats)
            sys.stdout.write(json.dumps(body, ensure_ascii=False) + "\n")
        return
    encoder = load_model(settings)
    for text in [query] if query is not None else typed_queries():
        result = run_search(client, index, text, encoder, options, stats=stats)
        if as_json:
            sys.stdout.write(json.dumps(result.to_dict(top_terms if options.explain else None), ensure_ascii=False)
                             + "\n")
            sys.stdout.flush()
        else:
            print_hits(result, options.explain, top_terms)


def _listed(name: str, hit: Any) -> str:
    """Where a fused hit stood in one list: ``dense #1 (cos 0.871)``, ``sparse #3 (12.31)``, ``bm25 -``."""
    listed = hit.lists.get(name)
    if listed is None:
        return f"{name} -"
    if name == "dense":
        return f"dense #{listed.rank} (cos {hit.dense_similarity:.3f})"
    return f"{name} #{listed.rank} ({listed.score:.4g})"


def _passage_line(passage: Any, width: int = 160) -> str:
    """``passage 1,204-1,910 (dense): 'text…'``: the passage that scored a hit, its text on one line, cut."""
    span, _, text = passage.excerpt(width).partition(" ")
    origin = "" if passage.list == "sparse" else f" ({passage.list})"
    return f"passage {span}{origin}: [italic]{escape(repr(text))}[/]"


def print_hits(result: Any, explain: bool, top_terms: int) -> None:
    from rich.table import Table

    for rank, hit in enumerate(result.hits, 1):
        title = hit.source.get("title") or next((v for v in hit.source.values() if isinstance(v, str)), "")
        out.print(f"[bold]{rank}. {escape(hit.id)}[/]  score {hit.score:.4f}  {escape(str(title)[:100])}",
                  highlight=False)
        if hit.passage is not None:
            out.print(f"   {_passage_line(hit.passage)}", highlight=False)
        if explain and hit.lists:
            out.print("   " + "  ".join(_listed(name, hit) for name in result.lists), highlight=False)
        if explain and hit.terms:
            table = Table(show_header=True, box=None, padding=(0, 2))
            for col in ("view", "term", "query w", "doc w", "contribution", "share"):
                table.add_column(col, justify="right" if col not in ("view", "term") else "left")
            for t in hit.terms[:top_terms]:
                share = t.contribution / hit.sparse_score if hit.sparse_score else 0.0
                table.add_row(t.view, escape(t.term), f"{t.query_weight:.3f}", f"{t.document_weight:.3f}",
                              f"{t.contribution:.3f}", f"{share:.0%}")
            out.print(table)
    out.print(f"{len(result.hits)} hits in {result.took_ms} ms" if result.hits else "no hits", highlight=False)
