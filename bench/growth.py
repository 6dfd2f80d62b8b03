"""Cost growth: latency and index size as the corpus grows (10k, 100k, 1M documents), BM25 ``match`` against
milco-os search, at 1, 4 and 16 clients, on one node, in one run.

    .venv/bin/python bench/growth.py --url http://127.0.0.1:9260                          # 10k, 100k, 1M
    .venv/bin/python bench/growth.py --url http://127.0.0.1:9260 --sizes 2000,20000 --real 5000  # quick

Corpus: the latency benchmark's paragraphs (seven languages, encoded once and cached), the first N of them up
to ``--real``. Larger corpora than this machine encodes in a benchmark run are filled with **perturbed copies**
of those real paragraphs: copy j picks a real paragraph at random (seeded by j), keeps each of its sparse terms
with probability 0.8 (the heaviest always) with its weight scaled by exp(N(0, 0.1)), and keeps each word of its
text with probability 0.8 (each character in scripts written without spaces). Term and word distributions stay
those of real text, so document frequencies grow in proportion to N for BM25 and milco-os alike; a real corpus
would also bring new rare terms (Heaps' law), which this does not model.

Variants: BM25 ``match`` on the text field; milco-os with the search default (``selective:0.2``, document
frequencies read from the index by :class:`milco_os.opensearch.stats.IndexTermStats`, as ``milco-os search``
does); the full expansion; ``--two-phase`` (the full query's top 10, first phase by value). Every index is
force-merged to one segment; queries run ``--repeat`` times, variants interleaved query by query (as in
``bench/latency.py``). Results: a table, the growth ratios, ``reports/bench/growth.json`` and ``growth.png``.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from common import (
    CORPUS_LANGUAGES,
    Doc,
    bulk_load,
    encode_cached,
    help_pages,
    load_bench_encoder,
    log,
    machine,
    model_arg,
    paragraph_corpus,
    prune_all,
    pyplot,
    save_chart,
    summary_ms,
    text_table,
    title_queries,
    write_json,
)
from report import p50_growth

from milco_os.opensearch.indices import create_index, delete_index, index_record
from milco_os.opensearch.measure import (
    bench_client,
    force_merge,
    match_body,
    opensearch_facts,
    run_interleaved,
    run_queries,
    store_bytes,
    timed_request,
)
from milco_os.opensearch.query import search_body
from milco_os.opensearch.stats import IndexTermStats
from milco_os.pruning import Pruning
from milco_os.specs import DEFAULT_QUERY_PRUNE, ECHO_FIELD, PIVOT_FIELD, IndexSpec, TwoPhase
from milco_os.types import Encoded, SparseVector

#: Share of terms and words a perturbed copy keeps, and the spread of its log-weights.
KEEP = 0.8
LOG_WEIGHT_SD = 0.1
#: Scripts written without spaces: copies drop characters there, words elsewhere.
NO_SPACES = re.compile(r"[\u3040-\u30ff\u3400-\u9fff]")
VARIANTS = {"bm25 match": None, "milco default": DEFAULT_QUERY_PRUNE, "milco full": "none",
            "milco two-phase": "none"}


class Corpus(Sequence):
    """``size`` documents: the real ones, then perturbed copies made on demand (see the module docstring)."""

    def __init__(self, docs: list[Doc], encoded: list[Encoded], size: int, seed: int = 23) -> None:
        self.docs, self.encoded, self.size, self.seed = docs, encoded, size, seed
        self._last: tuple[int, tuple[Doc, Encoded]] | None = None

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, j: int) -> tuple[Doc, Encoded]:  # type: ignore[override]
        if j < len(self.docs):
            return self.docs[j], self.encoded[j]
        # bulk_load reads a document's text and then its vectors (two Columns): make each copy once.
        if self._last is None or self._last[0] != j:
            self._last = (j, self._copy(j))
        return self._last[1]

    def _copy(self, j: int) -> tuple[Doc, Encoded]:
        rng = np.random.default_rng((self.seed, j))
        source = int(rng.integers(len(self.docs)))
        doc = self.docs[source]
        text = perturb_text(doc.text, rng)
        return Doc(f"copy{j}:{doc.id}", text, doc.lang), Encoded(*(
            perturb_vector(v, rng) for v in (self.encoded[source].pivot, self.encoded[source].echo)))


def perturb_vector(vec: SparseVector, rng: np.random.Generator) -> SparseVector:
    if len(vec) == 0:
        return vec
    keep = rng.random(len(vec)) < KEEP
    keep[int(np.argmax(vec.weights))] = True
    weights = vec.weights[keep] * np.exp(rng.normal(0.0, LOG_WEIGHT_SD, int(keep.sum())))
    return SparseVector(vec.ids[keep], weights.astype(np.float32), vec.vocab)


def perturb_text(text: str, rng: np.random.Generator) -> str:
    if NO_SPACES.search(text):
        chars = list(text)
        return "".join(c for c, k in zip(chars, rng.random(len(chars)) < KEEP, strict=True) if k) or text
    words = text.split()
    return " ".join(w for w, k in zip(words, rng.random(len(words)) < KEEP, strict=True) if k) or text


class Column(Sequence):
    """One side of a :class:`Corpus` (what ``bulk_load`` reads: documents or their vectors)."""

    def __init__(self, corpus: Corpus, side: int) -> None:
        self.corpus, self.side = corpus, side

    def __len__(self) -> int:
        return len(self.corpus)

    def __getitem__(self, j: int) -> Any:  # type: ignore[override]
        return self.corpus[j][self.side]


def variant_bodies(
    client: Any, index: str, queries: list[Doc], encoded: list[Encoded], size: int
) -> dict[str, list[str]]:
    """Every variant's serialised request bodies; ``selective`` reads document frequencies from the index."""
    stats = IndexTermStats(client, index, index_record(client, index))
    bodies: dict[str, list[str]] = {}
    for name, rule in VARIANTS.items():
        if rule is None:
            bodies[name] = [timed_request(match_body(q.text, size)) for q in queries]
            continue
        pruning = Pruning.parse(rule)
        two_phase = TwoPhase() if name == "milco two-phase" else None
        bodies[name] = [
            timed_request(search_body(pruning.apply(e, stats), pivot_field=PIVOT_FIELD, echo_field=ECHO_FIELD,
                                      size=size, two_phase=two_phase, stats=stats))
            for e in encoded
        ]
    return bodies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("MILCO_OS_OPENSEARCH_URL", "http://127.0.0.1:9260"))
    parser.add_argument("--sizes", default="10000,100000,1000000", help="corpus sizes, ascending")
    parser.add_argument("--real", type=int, default=100_000, help="real (encoded) paragraphs; copies beyond")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--model", default="milco-mini", type=model_arg)
    parser.add_argument("--runtime", default="onnx", choices=["torch", "onnx", "onnx-int8"])
    parser.add_argument("--doc-prune", default="top_k:40", help="document pruning, PIVOT[,ECHO]")
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--repeat", type=int, default=3, help="rounds over the queries (variants interleaved)")
    parser.add_argument("--size", type=int, default=10, help="hits per query")
    parser.add_argument("--cache-dir", type=Path, default=None)
    args = parser.parse_args(argv)

    from milco_os.settings import get_settings

    cache_dir = args.cache_dir or get_settings().cache_dir
    sizes = sorted(int(s) for s in args.sizes.split(","))
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    client = bench_client(args.url)
    facts = {"machine": machine(), "opensearch": opensearch_facts(client)}

    pages = help_pages(cache_dir, CORPUS_LANGUAGES)
    real = min(args.real, sizes[-1])
    docs = paragraph_corpus(pages, real)
    queries = title_queries(pages, args.queries)
    del pages
    encoder = load_bench_encoder(args.model, cache_dir, args.runtime)
    encoded, _ = encode_cached(encoder, args.runtime, [d.text for d in docs], cache_dir, "paragraphs")
    encoded = prune_all(encoded, args.doc_prune)
    q_encoded = encoder.encode_queries([q.text for q in queries])

    index = "bench-growth"
    records: list[dict[str, Any]] = []
    for n in sizes:
        corpus = Corpus(docs[: min(n, real)], encoded[: min(n, real)], n)
        delete_index(client, index)
        spec = IndexSpec(replicas=0, vectors_in_source=False, doc_pruning=Pruning.parse(args.doc_prune))
        create_index(client, index, encoder.info, spec)
        index_s = bulk_load(client, index, Column(corpus, 0), Column(corpus, 1), label=f"{n:,} documents")
        force_merge(client, index, source_filtered=True)
        size_bytes = store_bytes(client, index)
        bodies = variant_bodies(client, index, queries, q_encoded, args.size)
        for variant in bodies.values():  # warm-up
            run_queries(client, index, variant[: min(50, len(variant))], 4)
        for c in concurrencies:
            for name, res in run_interleaved(client, index, bodies, c, args.repeat).items():
                ms = summary_ms(res.client_ms)
                records.append({"documents": n, "real_documents": min(n, real), "variant": name, "concurrency": c,
                                "client_ms": ms, "opensearch_took_ms": summary_ms(res.took_ms),
                                "qps": round(res.qps, 1), "store_bytes": size_bytes, "index_s": round(index_s, 1)})
                log(f"{n:>9,} docs c={c:<2} {name:<14} p50 {ms['p50']:7.2f} ms  p99 {ms['p99']:7.2f} ms  "
                    f"{res.qps:7.1f} qps")
        delete_index(client, index)

    table, growth = report(records, sizes, concurrencies)
    print(f"\nLatency as the corpus grows ({args.doc_prune} per view; {len(queries)} queries; OpenSearch "
          f"{facts['opensearch']['version']}; documents beyond {real:,} are perturbed copies)")
    print(table)
    print("\nGrowth of p50 from one size to the next (x), per variant and concurrency")
    print(growth)
    perturbation = {"keep": KEEP, "log_weight_sd": LOG_WEIGHT_SD}
    write_json("growth", {**facts, "settings": vars(args), "perturbation": perturbation, "results": records,
                          "table": table, "growth": growth})
    plot(records, sizes, concurrencies)
    return 0


def at(records: list[dict[str, Any]], n: int, variant: str, c: int) -> dict[str, Any]:
    return next(r for r in records if r["documents"] == n and r["variant"] == variant and r["concurrency"] == c)


def report(records: list[dict[str, Any]], sizes: list[int], concurrencies: list[int]) -> tuple[str, str]:
    rows = []
    for n in sizes:
        for c in concurrencies:
            bm25 = at(records, n, "bm25 match", c)["client_ms"]
            for name in VARIANTS:
                r = at(records, n, name, c)
                ms = r["client_ms"]
                rows.append([n, c, name, ms["p50"], ms["p99"], r["qps"], round(ms["p50"] / bm25["p50"], 2),
                             round(ms["p99"] / bm25["p99"], 2), round(r["store_bytes"] / 2**20, 1)])
    table = text_table(["documents", "conc", "variant", "p50 ms", "p99 ms", "QPS", "p50/BM25", "p99/BM25",
                        "index MiB"], rows)
    grows = []
    for small, large in zip(sizes, sizes[1:], strict=False):
        for c in concurrencies:
            ratios = [p50_growth(records, small, large, name, c) for name in VARIANTS]
            grows.append([f"{small:,} -> {large:,}", c, *ratios])
    return table, text_table(["sizes", "conc", *VARIANTS], grows)


def plot(records: list[dict[str, Any]], sizes: list[int], concurrencies: list[int]) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(concurrencies) + 1, figsize=(4.2 * (len(concurrencies) + 1), 4.2))
    colours = dict(zip(VARIANTS, ("tab:blue", "tab:green", "tab:red", "tab:purple"), strict=True))
    for ax, c in zip(axes, concurrencies, strict=False):
        for name in VARIANTS:
            for key, style in (("p50", "-"), ("p99", ":")):
                ax.plot(sizes, [at(records, n, name, c)["client_ms"][key] for n in sizes], marker="o", linestyle=style,
                        color=colours[name], label=f"{name} {key}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("documents")
        ax.set_ylabel("ms per query (client side)")
        ax.set_title(f"{c} client{'s' if c > 1 else ''}")
    axes[0].legend(fontsize=7)
    last = axes[-1]
    last.plot(sizes, [at(records, n, "bm25 match", concurrencies[0])["store_bytes"] / 2**20 for n in sizes], marker="o")
    last.set_xscale("log")
    last.set_yscale("log")
    last.set_xlabel("documents")
    last.set_ylabel("index size, MiB (BM25 text + milco-os vectors)")
    last.set_title("Index size")
    save_chart(fig, "growth")


if __name__ == "__main__":
    sys.exit(main())
