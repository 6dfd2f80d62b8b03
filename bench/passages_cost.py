"""What passages cost beside the merged layout: index size and query latency on whole help pages in many
languages, both layouts built from one encoding and measured side by side in one run.

    .venv/bin/python bench/passages_cost.py --url http://127.0.0.1:9260     # the eval sets' whole pages
    .venv/bin/python bench/passages_cost.py --url http://127.0.0.1:9260 --languages de,fr,es,ja,zh-cn,ru

0. Encoding: the same whole pages encoded merged (``encode_documents``) and into passages (``encode_passages``),
   alternating batch by batch (a slower spell of the machine hits both); the ratio is what keeping the windows
   apart costs.
1. The corpus: the whole pages of the eval sets (every English page, the CLIR corpus, and every page once in one
   of the seven corpus languages, the MLIR corpus), and with ``--languages`` every page of those languages too,
   whole (title and paragraphs), encoded once into passages (the encoder's windows) and cached per corpus under
   ``<cache>/bench/`` (the eval sets' with bench/passages.py's encodings; resumable chunk by chunk: an
   interrupted run goes on where it stopped). A page's merged vector is made from the same windows, as
   ``encode_documents`` merges them, so both layouts hold the same model output.
2. Index size: the corpus indexed twice, merged (one vector per page) and with passages (one nested object per
   window), the same document pruning, vectors out of ``_source``, each force-merged to one segment (target:
   passages at most 2x merged).
3. Latency: the library's own ``search`` on each (the CLI's default query pruning, ``selective`` counting
   documents on the merged index and passages on the other), queries (dev page titles in the corpus languages)
   encoded beforehand so that only OpenSearch and the client are timed, interleaved query by query, and BM25
   ``match`` on the same pages (target: passages p50 at most 1.5x merged). Writes
   ``reports/bench/passages-cost.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Any

from common import (
    CORPUS_LANGUAGES,
    Doc,
    alternating_seconds,
    bulk_load,
    encode_cached,
    help_pages,
    interleaved_latency,
    latency_rows,
    load_bench_encoder,
    log,
    machine,
    merged_from_passages,
    model_arg,
    text_table,
    title_queries,
    write_json,
)

from milco_os.evaluation.systems import MemoEncoder
from milco_os.opensearch.indices import create_index, delete_index
from milco_os.opensearch.measure import bench_client, force_merge, hit_ids, match_body, opensearch_facts, store_bytes
from milco_os.pruning import Pruning
from milco_os.specs import DEFAULT_QUERY_PRUNE, IndexSpec, SearchOptions


def encoding_cost(encoder: Any, texts: list[str], rounds: int = 2) -> dict[str, Any]:
    """Seconds to encode ``texts`` merged and into passages, alternating in batches of 16, ``rounds`` times."""
    encoder.encode_passages(texts[:16])  # warm-up: allocations, first-call overheads
    seconds = alternating_seconds({"merged": encoder.encode_documents, "passages": encoder.encode_passages}, texts,
                                  16, rounds)
    n = len(texts) * rounds
    return {"texts": len(texts), "rounds": rounds, "merged_texts_per_s": round(n / seconds["merged"], 2),
            "passages_texts_per_s": round(n / seconds["passages"], 2),
            "ratio": round(seconds["passages"] / seconds["merged"], 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("MILCO_OS_OPENSEARCH_URL", "http://127.0.0.1:9260"))
    parser.add_argument("--languages", default="", help=f"also every page of these languages (of "
                        f"{','.join(CORPUS_LANGUAGES)}), comma-separated")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3, help="rounds over the queries for the latency")
    parser.add_argument("--doc-prune", default="none", help="document pruning of both layouts (index create's default)")
    parser.add_argument("--model", default="milco-mini", type=model_arg)
    parser.add_argument("--runtime", default="torch", choices=["onnx", "torch"],
                        help="the corpus's encoder (torch: bench/passages.py's encodings of the eval sets serve)")
    parser.add_argument("--encode-only", action="store_true", help="encode (and cache) the corpus, then stop")
    parser.add_argument("--encode-texts", type=int, default=96, help="pages for the encoding cost")
    args = parser.parse_args(argv)

    from milco_os.datasets.libreoffice import page_text
    from milco_os.evaluation import runner
    from milco_os.settings import get_settings

    cache_dir = get_settings().cache_dir
    encoder = load_bench_encoder(args.model, cache_dir, args.runtime)
    dense = encoder.info.dense is not None  # as bench/passages.py encodes, so that its encodings serve
    corpora: dict[str, list[Doc]] = {}
    for label, dataset in (("clir", "libreoffice-clir"), ("mlir", "libreoffice-mlir")):
        evalset, _ = runner.load_eval_set(dataset, "dev", None, cache_dir, whole_pages=True)
        corpora[label] = [Doc(f"{label}:{d['id']}", d["text"], d["lang"]) for d in evalset.corpus if d.get("text")]
    langs = [lang for lang in args.languages.split(",") if lang]
    pages = help_pages(cache_dir, sorted({*CORPUS_LANGUAGES, *langs}))
    for lang in langs:
        texts = {path: page_text(page, None) for path, page in sorted(pages[lang].items())}
        corpora[lang] = [Doc(f"{lang}:{path}", text, lang) for path, text in texts.items() if text.strip()]
    docs: list[Doc] = []
    passages: list[Any] = []
    seconds = 0.0
    for part in corpora.values():  # one cache per corpus: a long encoding resumes corpus by corpus
        encoded, took = encode_cached(encoder, args.runtime, [d.text for d in part], cache_dir,
                                      f"passages-{args.model}", dense=dense, passages=True)
        docs += part
        passages += encoded
        seconds += took or 0.0
    if args.encode_only:
        log(f"encoded {len(docs)} pages: {', '.join(f'{k} {len(v)}' for k, v in corpora.items())}")
        return 0
    pruning = Pruning.parse(args.doc_prune)
    merged = [pruning.apply(merged_from_passages(p, encoder.info)) for p in passages]
    passages = [[dataclasses.replace(p, encoded=pruning.apply(p.encoded)) for p in doc] for doc in passages]
    n_passages = sum(len(p) for p in passages)
    # 0. Encoding cost, on pages spread over the corpus.
    sample = [d.text for d in docs[:: max(len(docs) // args.encode_texts, 1)]][: args.encode_texts]
    log(f"encoding cost: {len(sample)} whole pages, merged and into passages")
    report: dict[str, Any] = {
        "machine": machine(), "settings": vars(args) | {"query_prune": DEFAULT_QUERY_PRUNE},
        "encoding": encoding_cost(encoder, sample),
        "corpus": {"corpora": {k: len(v) for k, v in corpora.items()},
                   "languages": sorted({d.lang for d in docs}), "documents": len(docs), "passages": n_passages,
                   "passages_per_document": round(n_passages / len(docs), 2),
                   "characters": sum(len(d.text) for d in docs),
                   "encoding_s_this_run": round(seconds, 1)}}

    # 2. Index size, merged and with passages.
    client = bench_client(args.url)
    indices = {"merged": "bench-passages-merged", "passages": "bench-passages-nested"}
    sizes = {}
    for units, index in indices.items():
        delete_index(client, index)
        spec = IndexSpec(replicas=0, doc_pruning=pruning, vectors_in_source=False, passages=units == "passages")
        create_index(client, index, encoder.info, spec)
        if units == "passages":
            bulk_load(client, index, docs, passages, passages_field=spec.passages_field, label=units, chunk=200)
        else:
            bulk_load(client, index, docs, merged, label=units, chunk=200)
        force_merge(client, index, source_filtered=True)
        sizes[units] = store_bytes(client, index)
    report["index_bytes"] = sizes | {"ratio": round(sizes["passages"] / sizes["merged"], 3)}

    # 3. Latency through the library's search, the queries encoded beforehand.
    from milco_os.opensearch.indices import index_record
    from milco_os.opensearch.search import search
    from milco_os.opensearch.stats import IndexTermStats

    queries = title_queries(pages, args.queries)
    memo = MemoEncoder(encoder)
    memo.encode_queries([q.text for q in queries])
    options = SearchOptions(query_pruning=Pruning.parse(DEFAULT_QUERY_PRUNE))
    stats = {units: IndexTermStats(client, index, index_record(client, index)) for units, index in indices.items()}
    variants = {
        "merged": lambda text: search(client, indices["merged"], text, memo, options, stats=stats["merged"]),
        "passages": lambda text: search(client, indices["passages"], text, memo, options, stats=stats["passages"]),
        "bm25": lambda text: hit_ids(client, indices["merged"], match_body(text, 10)),
    }
    report["latency_ms"] = interleaved_latency(variants, queries, args.repeat)
    report["latency_ms"]["passages_over_merged_p50"] = round(
        report["latency_ms"]["passages"]["p50"] / report["latency_ms"]["merged"]["p50"], 3)
    report["opensearch"] = opensearch_facts(client)
    for index in indices.values():
        delete_index(client, index)

    print(text_table(["search", "p50 ms", "p95 ms", "p99 ms", "mean ms"], latency_rows(report["latency_ms"])),
          file=sys.stderr)
    print(f"index bytes: {report['index_bytes']}; corpus: {report['corpus']}", file=sys.stderr)
    write_json("passages-cost", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
