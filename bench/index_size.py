"""Index size after force-merge: BM25 only against BM25 + milco-os ``rank_features`` at each document
pruning level, with and without the vectors kept in ``_source``.

    .venv/bin/python bench/index_size.py --url http://127.0.0.1:9260
    .venv/bin/python bench/index_size.py --url http://127.0.0.1:9260 --corpus-docs 5000 --docs 5000

The documents are the first ``--docs`` paragraphs of the latency benchmark's corpus (``--corpus-docs``
names that corpus, so its cached encodings are reused). Every index has one shard, no replica, the
text in ``_source`` and a BM25 ``text`` field; each is force-merged to one segment before its primary
store size is read. Results: a table, ``reports/bench/index_size.json`` and ``index_size.png``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from common import (
    CORPUS_LANGUAGES,
    bulk_load,
    encode_cached,
    help_pages,
    load_bench_encoder,
    log,
    machine,
    mean_terms,
    model_arg,
    paragraph_corpus,
    prune_all,
    pyplot,
    save_chart,
    text_table,
    write_json,
)

from milco_os.opensearch.indices import create_index, create_plain_index, delete_index
from milco_os.opensearch.measure import (
    bench_client,
    force_merge,
    opensearch_facts,
    store_bytes,
    text_index_body,
)
from milco_os.pruning import Pruning
from milco_os.specs import IndexSpec

DOC_PRUNING = ["none", "mass:0.5", "mass:0.8", "mass:0.9", "top_k:64", "top_k:32"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("MILCO_OS_OPENSEARCH_URL", "http://127.0.0.1:9260"))
    parser.add_argument("--corpus-docs", type=int, default=100_000, help="the latency corpus (cache key)")
    parser.add_argument("--docs", type=int, default=20_000, help="documents per index (first of the corpus)")
    parser.add_argument("--model", default="milco-mini", type=model_arg)
    parser.add_argument("--runtime", default="onnx", choices=["torch", "onnx", "onnx-int8"])
    parser.add_argument("--levels", default=",".join(DOC_PRUNING), help="document pruning levels")
    parser.add_argument("--cache-dir", type=Path, default=None, help="milco-os cache (default: the usual one)")
    args = parser.parse_args(argv)

    from milco_os.settings import get_settings

    cache_dir = args.cache_dir or get_settings().cache_dir
    client = bench_client(args.url)
    facts = {"machine": machine(), "opensearch": opensearch_facts(client)}
    docs = paragraph_corpus(help_pages(cache_dir, CORPUS_LANGUAGES), args.corpus_docs)
    encoder = load_bench_encoder(args.model, cache_dir, args.runtime)
    encoded, _ = encode_cached(encoder, args.runtime, [d.text for d in docs], cache_dir, "paragraphs")
    n = min(args.docs, len(docs))
    docs, encoded = docs[:n], encoded[:n]

    index = "bench-size"
    delete_index(client, index)
    create_plain_index(client, index, text_index_body())
    bulk_load(client, index, docs, None, label="bm25 only")
    force_merge(client, index)
    bm25_bytes = store_bytes(client, index)
    delete_index(client, index)
    records: list[dict[str, Any]] = [{"level": "bm25 only", "vectors_in_source": None, "bytes": bm25_bytes,
                                      "terms_per_doc": None, "vs_bm25": 1.0}]
    for level in args.levels.split(","):
        pruned = prune_all(encoded, level)
        terms = mean_terms(pruned)
        for in_source in (True, False):
            spec = IndexSpec(replicas=0, vectors_in_source=in_source, doc_pruning=Pruning.parse(level))
            create_index(client, index, encoder.info, spec)
            label = f"{level} {'with' if in_source else 'without'} vectors in _source"
            # Two halves, two segments: the final merge then rewrites (and drops _recovery_source).
            half = len(docs) // 2
            bulk_load(client, index, docs[:half], pruned[:half], label=label)
            bulk_load(client, index, docs[half:], pruned[half:], label=label)
            force_merge(client, index, source_filtered=not in_source)
            size = store_bytes(client, index)
            delete_index(client, index)
            records.append({"level": level, "vectors_in_source": in_source, "bytes": size, "terms_per_doc": terms,
                            "vs_bm25": round(size / bm25_bytes, 2)})
            log(f"{level:<10} source={in_source!s:<5} {size / 2**20:8.1f} MiB  {size / bm25_bytes:5.2f}x BM25")

    rows = [[r["level"], "-" if r["vectors_in_source"] is None else ("yes" if r["vectors_in_source"] else "no"),
             (r["terms_per_doc"] or {}).get("total"), (r["terms_per_doc"] or {}).get("pivot"),
             (r["terms_per_doc"] or {}).get("echo"), round(r["bytes"] / 2**20, 1), round(r["bytes"] / n, 1),
             r["vs_bm25"]] for r in records]
    table = text_table(["doc pruning", "vectors in _source", "terms/doc", "pivot", "echo", "MiB", "bytes/doc",
                        "x BM25 only"], rows)
    print(f"\nIndex size after force-merge, {n} paragraphs in {len(CORPUS_LANGUAGES)} languages, "
          f"OpenSearch {facts['opensearch']['version']}")
    print(table)
    write_json("index_size", {**facts, "settings": vars(args), "documents": n, "results": records, "table": table})
    plot(records, n)
    return 0


def plot(records: list[dict[str, Any]], n: int) -> None:
    plt = pyplot()
    bm25 = records[0]["bytes"] / 2**20
    levels = list(dict.fromkeys(r["level"] for r in records[1:]))
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for offset, in_source, colour in ((-0.2, True, "tab:orange"), (0.2, False, "tab:blue")):
        sizes = [next(r["bytes"] for r in records if r["level"] == lv and r["vectors_in_source"] is in_source) / 2**20
                 for lv in levels]
        label = "vectors in _source" if in_source else "vectors not in _source"
        ax.bar([i + offset for i in range(len(levels))], sizes, width=0.4, label=label, color=colour)
    terms = [next(r["terms_per_doc"]["total"] for r in records if r["level"] == lv) for lv in levels]
    ax.set_xticks(range(len(levels)), [f"{lv}\n{t:.0f} terms/doc" for lv, t in zip(levels, terms, strict=True)])
    ax.axhline(bm25, color="black", linestyle="--", label="BM25 only")
    ax.axhline(1.5 * bm25, color="grey", linestyle=":", label="1.5x BM25 only (target)")
    ax.set_ylabel("MiB after force-merge")
    ax.set_title(f"Index size, {n:,} paragraphs, by document pruning")
    ax.legend(fontsize=8)
    save_chart(fig, "index_size")


if __name__ == "__main__":
    sys.exit(main())
