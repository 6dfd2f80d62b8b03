"""Ingest and reindex throughput end to end against encoding alone, on the same documents.

    .venv/bin/python bench/throughput.py --url http://127.0.0.1:9260
    .venv/bin/python bench/throughput.py --url http://127.0.0.1:9260 --docs 200   # a quick run

Documents: LibreOffice-help pages (title + first paragraphs, up to 600 characters, ~150 tokens) in
seven languages. One encoder, warmed up by two passes, runs in order: encoding only, bulk writing of the vectors it made
(OpenSearch alone), ``Ingester`` (encode + write, pipelined), reindex from a text-only index, and
encoding only again. If writing overlapped encoding perfectly, ingest would run at the encoding-only
rate; run one after the other it would run at the "serial" rate shown. Results: a table,
``reports/bench/throughput.json`` and ``throughput.png``.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import (
    CORPUS_LANGUAGES,
    Doc,
    bulk_load,
    help_pages,
    load_bench_encoder,
    log,
    machine,
    model_arg,
    prune_all,
    pyplot,
    save_chart,
    text_table,
    write_json,
)

from milco_os.opensearch.indices import create_index, create_plain_index, delete_index
from milco_os.opensearch.measure import bench_client, opensearch_facts, text_index_body
from milco_os.pruning import Pruning
from milco_os.specs import IndexSpec


def page_documents(cache_dir: Path, n_docs: int, seed: int = 5) -> list[Doc]:
    from milco_os.datasets.libreoffice import page_text

    pages = help_pages(cache_dir, CORPUS_LANGUAGES)
    docs = [Doc(f"{lang}:{path}", page_text(page), lang) for lang, by_path in sorted(pages.items())
            for path, page in sorted(by_path.items()) if page.paragraphs]
    random.Random(seed).shuffle(docs)
    return docs[:n_docs]


def encode_only(encoder: Any, texts: list[str], batch: int) -> tuple[float, list[Any]]:
    """Encode in the ingester's chunks (so the batch shapes are the same); returns seconds and encodings."""
    out: list[Any] = []
    start = time.perf_counter()
    for i in range(0, len(texts), batch):
        out.extend(encoder.encode_documents(texts[i : i + batch]))
    return time.perf_counter() - start, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("MILCO_OS_OPENSEARCH_URL", "http://127.0.0.1:9260"))
    parser.add_argument("--docs", type=int, default=1000, help="help pages (~150 tokens each)")
    parser.add_argument("--model", default="milco-mini", type=model_arg)
    parser.add_argument("--runtime", default="onnx", choices=["torch", "onnx", "onnx-int8"])
    parser.add_argument("--doc-prune", default="top_k:40", help="document pruning, PIVOT[,ECHO]")
    parser.add_argument("--cache-dir", type=Path, default=None, help="milco-os cache (default: the usual one)")
    args = parser.parse_args(argv)

    from milco_os.opensearch.bulk import BulkConfig
    from milco_os.opensearch.ingest import Ingester
    from milco_os.opensearch.reindex import reindex
    from milco_os.settings import get_settings

    cache_dir = args.cache_dir or get_settings().cache_dir
    client = bench_client(args.url)
    facts = {"machine": machine(), "opensearch": opensearch_facts(client)}
    docs = page_documents(cache_dir, args.docs)
    texts = [d.text for d in docs]
    config = BulkConfig()  # the library's and the CLI's defaults
    encoder = load_bench_encoder(args.model, cache_dir, args.runtime, batch_size=config.encode_batch)
    spec = IndexSpec(replicas=0, doc_pruning=Pruning.parse(args.doc_prune))
    # Two whole untimed passes first: onnxruntime needs about two passes over new batch shapes to reach
    # its steady speed (measured: 11.6, 14.0, 18.7, 18.8 pages/s for passes 1-4).
    log(f"warm-up: encoding {len(docs)} pages twice")
    encode_only(encoder, texts, config.encode_batch)
    encoded = prune_all(encode_only(encoder, texts, config.encode_batch)[1], args.doc_prune)
    seconds: dict[str, float] = {}

    log("encoding only")
    seconds["encode only (before)"] = encode_only(encoder, texts, config.encode_batch)[0]

    log("bulk write only (the vectors of the warm-up pass)")
    delete_index(client, "bench-write")
    create_index(client, "bench-write", encoder.info, spec)
    seconds["bulk write only"] = bulk_load(client, "bench-write", docs, encoded,
                                           chunk=config.max_docs)
    delete_index(client, "bench-write")

    log("ingest: encode + bulk write, pipelined")
    delete_index(client, "bench-ingest")
    create_index(client, "bench-ingest", encoder.info, spec)
    report = Ingester(client, "bench-ingest", encoder, config=config).run(
        ({"id": d.id, "text": d.text} for d in docs), refresh=True
    )
    assert report.failed == 0, report.failures[:3]
    seconds["ingest"] = report.elapsed_s
    delete_index(client, "bench-ingest")

    log("reindex: text-only index -> milco-os index")
    for name in ("bench-src", "bench-dest"):
        delete_index(client, name)
    create_plain_index(client, "bench-src", text_index_body())
    bulk_load(client, "bench-src", docs, None)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        # Pages of one encode batch, so reindex encodes in the same chunks as the other phases (the CLI's
        # default page of 64 would sort twice as many texts by length and pad less).
        result = reindex(client, "bench-src", "bench-dest", encoder, spec=spec,
                         checkpoint_path=Path(tmp) / "checkpoint.json", config=config, page_size=config.encode_batch)
        seconds["reindex"] = time.perf_counter() - start
    assert result.verified and result.ingest.failed == 0, result
    for name in ("bench-src", "bench-dest"):
        delete_index(client, name)

    log("encoding only, again")
    seconds["encode only (after)"] = encode_only(encoder, texts, config.encode_batch)[0]

    n = len(docs)
    rate = {k: n / v for k, v in seconds.items()}
    encode_rate = (rate["encode only (before)"] + rate["encode only (after)"]) / 2
    serial = 1 / (1 / encode_rate + 1 / rate["bulk write only"])
    rows = [[k, round(v, 1), round(rate[k], 1), round(rate[k] / encode_rate, 2)] for k, v in seconds.items()]
    rows.append(["serial estimate (encode, then write)", round(n / serial, 1), round(serial, 1),
                 round(serial / encode_rate, 2)])
    table = text_table(["phase", "seconds", "docs/s", "x encoding only"], rows)
    print(f"\nThroughput on {n} help pages, {args.model} ({args.runtime}), encode batch {config.encode_batch}, "
          f"bulk {config.max_docs} docs, document pruning {args.doc_prune}")
    print(table)
    record = {**facts, "settings": {**vars(args), "encode_batch": config.encode_batch, "bulk_docs": config.max_docs},
              "documents": n, "seconds": seconds, "docs_per_s": rate, "encode_only_docs_per_s": encode_rate,
              "serial_estimate_docs_per_s": serial,
              "ratios": {"ingest": rate["ingest"] / encode_rate, "reindex": rate["reindex"] / encode_rate},
              "table": table}
    write_json("throughput", record)

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4))
    names = [*seconds, "serial estimate"]
    values = [*rate.values(), serial]
    ax.barh(names, values, color=["tab:grey", "tab:green", "tab:blue", "tab:orange", "tab:grey", "lightgrey"])
    ax.axvline(0.85 * encode_rate, color="black", linestyle=":", label="85% of encoding only (target)")
    ax.set_xlabel("documents per second")
    ax.set_title(f"Ingest and reindex vs encoding alone ({n} pages, {args.runtime})")
    ax.invert_yaxis()
    ax.legend(fontsize=8)
    save_chart(fig, "throughput")
    return 0


if __name__ == "__main__":
    sys.exit(main())
