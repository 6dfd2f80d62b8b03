"""What the dense view costs: encoding time, index size and query latency, each measured side by side in one run.

    .venv/bin/python bench/dense_cost.py --url http://127.0.0.1:9260               # 100k paragraphs
    .venv/bin/python bench/dense_cost.py --url http://127.0.0.1:9260 --docs 20000  # a shorter run

1. Encoding: the same texts (help paragraphs, and pages cut to 600 characters) encoded with and without the
   dense view, alternating batch by batch (a slower spell of the machine hits both), per runtime; the ratio
   is the dense view's cost (target: at most 1.25x).
2. Index size: the corpus (the latency benchmark's paragraphs, encoded once with the dense view and cached)
   indexed twice, sparse views only and with the dense view, each force-merged to one segment.
3. Latency: the library's own ``search`` on each (the CLI's default query pruning), the queries encoded
   beforehand so that only OpenSearch and the client are timed, interleaved query by query: sparse only,
   fused (the default fusion: an ``_msearch`` of the sparse and k-NN lists), and BM25 ``match`` (target: fused
   p50 at most 2x sparse only). Writes ``reports/bench/dense-cost.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from common import (
    CORPUS_LANGUAGES,
    alternating_seconds,
    bulk_load,
    encode_cached,
    help_pages,
    interleaved_latency,
    latency_rows,
    load_bench_encoder,
    log,
    machine,
    model_arg,
    paragraph_corpus,
    text_table,
    title_queries,
    write_json,
)

from milco_os.evaluation.systems import MemoEncoder
from milco_os.opensearch.indices import create_index, delete_index
from milco_os.opensearch.measure import (
    bench_client,
    force_merge,
    hit_ids,
    match_body,
    opensearch_facts,
    store_bytes,
)
from milco_os.pruning import Pruning
from milco_os.specs import DEFAULT_QUERY_PRUNE, IndexSpec, SearchOptions


def encoding_cost(encoder: Any, texts: list[str], rounds: int) -> dict[str, Any]:
    """Seconds to encode ``texts`` without and with the dense view, alternating in batches of 64, ``rounds``
    times; the sums give the ratio."""
    encoder.encode_documents(texts[:64], dense=True)  # warm-up: allocations, first-call overheads
    seconds = alternating_seconds({"sparse": lambda part: encoder.encode_documents(part),
                                   "dense": lambda part: encoder.encode_documents(part, dense=True)}, texts, 64, rounds)
    n = len(texts) * rounds
    return {"texts": len(texts), "rounds": rounds, "sparse_texts_per_s": round(n / seconds["sparse"], 1),
            "dense_texts_per_s": round(n / seconds["dense"], 1),
            "ratio": round(seconds["dense"] / seconds["sparse"], 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("MILCO_OS_OPENSEARCH_URL", "http://127.0.0.1:9260"))
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3, help="rounds over the queries for the latency")
    parser.add_argument("--encode-texts", type=int, default=512, help="texts per kind for the encoding cost")
    parser.add_argument("--doc-prune", default="top_k:40")
    parser.add_argument("--model", default="milco-mini", type=model_arg)
    parser.add_argument("--runtime", default="onnx", choices=["onnx", "torch"], help="the corpus's encoder")
    args = parser.parse_args(argv)

    from milco_os.datasets.libreoffice import page_text
    from milco_os.settings import get_settings

    cache_dir = get_settings().cache_dir
    pages = help_pages(cache_dir, CORPUS_LANGUAGES)
    docs = paragraph_corpus(pages, args.docs)
    queries = title_queries(pages, args.queries)
    report: dict[str, Any] = {"machine": machine(), "settings": vars(args) | {"query_prune": DEFAULT_QUERY_PRUNE},
                              "encoding": {}}

    # 1. Encoding cost, per runtime, on short paragraphs and on cut pages.
    page_texts = [page_text(p) for lang in sorted(pages) for p in list(pages[lang].values())[:200]]
    samples = {"paragraphs": [d.text for d in docs[: args.encode_texts]], "pages": page_texts[: args.encode_texts]}
    for runtime in ("onnx", "torch"):
        encoder = load_bench_encoder(args.model, cache_dir, runtime)
        for kind, texts in samples.items():
            log(f"encoding cost: {runtime}, {len(texts)} {kind}")
            report["encoding"][f"{runtime} {kind}"] = encoding_cost(encoder, texts, rounds=2)
        del encoder

    # 2. Index size, sparse only and with the dense view.
    encoder = load_bench_encoder(args.model, cache_dir, args.runtime)
    encoded, _ = encode_cached(encoder, args.runtime, [d.text for d in docs], cache_dir, "paragraphs", dense=True)
    pruning = Pruning.parse(args.doc_prune)
    encoded = [pruning.apply(e) for e in encoded]
    client = bench_client(args.url)
    indices = {"sparse": "bench-dense-cost-sparse", "dense": "bench-dense-cost-dense"}
    sizes = {}
    for kind, index in indices.items():
        delete_index(client, index)
        spec = IndexSpec(replicas=0, doc_pruning=pruning, vectors_in_source=False, dense=kind == "dense")
        create_index(client, index, encoder.info, spec)
        bulk_load(client, index, docs, encoded, dense_field=spec.dense_field if spec.dense else None, label=kind)
        force_merge(client, index, source_filtered=True)
        sizes[kind] = store_bytes(client, index)
    report["index_bytes"] = sizes | {"ratio": round(sizes["dense"] / sizes["sparse"], 3)}

    # 3. Latency through the library's search, the queries encoded beforehand.
    from milco_os.opensearch.indices import index_record
    from milco_os.opensearch.search import search
    from milco_os.opensearch.stats import IndexTermStats

    memo = MemoEncoder(encoder)
    memo.encode_queries([q.text for q in queries], dense=True)
    prune = Pruning.parse(DEFAULT_QUERY_PRUNE)
    stats = {kind: IndexTermStats(client, index, index_record(client, index)) for kind, index in indices.items()}
    variants = {
        "sparse only": lambda text: search(client, indices["sparse"], text, memo,
                                           SearchOptions(query_pruning=prune), stats=stats["sparse"]),
        "fused": lambda text: search(client, indices["dense"], text, memo, SearchOptions(query_pruning=prune),
                                     stats=stats["dense"]),
        "bm25": lambda text: hit_ids(client, indices["sparse"], match_body(text, 10)),
    }
    report["latency_ms"] = interleaved_latency(variants, queries, args.repeat)
    report["latency_ms"]["fused_over_sparse_p50"] = round(
        report["latency_ms"]["fused"]["p50"] / report["latency_ms"]["sparse only"]["p50"], 3)
    report["opensearch"] = opensearch_facts(client)
    for index in indices.values():
        delete_index(client, index)

    print(text_table(["search", "p50 ms", "p95 ms", "p99 ms", "mean ms"], latency_rows(report["latency_ms"])),
          file=sys.stderr)
    print(text_table(["encoding", "sparse/s", "+dense/s", "ratio"],
                     [[k, v["sparse_texts_per_s"], v["dense_texts_per_s"], v["ratio"]]
                      for k, v in report["encoding"].items()]), file=sys.stderr)
    print(f"index bytes: {sizes}", file=sys.stderr)
    write_json("dense-cost", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
