"""Encoding throughput and memory: torch fp32 against onnxruntime fp32 / int8 (and fp16 / CUDA with a GPU).

    .venv/bin/python bench/encode.py                       # built-in splade-tiny, batch sizes 1 and 32
    .venv/bin/python bench/encode.py --batch-sizes 1,8,32 --model /path/to/model --threads 2

Every (runtime, text kind, batch size) runs in its own subprocess, so its peak RSS is its own; each
warms up with one full pass (whose output also gives the top-10 overlap with torch) and is then timed
over whole passes for at least ``--min-seconds``. Texts are built deterministically from the packaged
demo documents: ~10-token queries and ~200-token documents. Throughput counts texts through the whole
``encode_*`` path (tokenisation, batching, the model, sparse conversion), i.e. what a caller gets.
Results: a table on stdout, ``reports/bench/encode.json`` and ``encode.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import machine

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "milco_os" / "data"
RESULT_PREFIX = "RESULT "

#: name -> (runtime, quantize, device)
RUNTIMES: dict[str, tuple[str, str | None, str]] = {
    "torch-fp32": ("torch", None, "cpu"),
    "ort-fp32": ("onnx", "fp32", "cpu"),
    "ort-int8": ("onnx", "int8", "cpu"),
    "ort-fp16": ("onnx", "fp16", "cpu"),
    "torch-fp32-cuda": ("torch", None, "cuda"),
    "ort-fp32-cuda": ("onnx", "fp32", "cuda"),
    "ort-fp16-cuda": ("onnx", "fp16", "cuda"),
}
CPU_DEFAULT = ["torch-fp32", "ort-fp32", "ort-int8"]
GPU_EXTRA = ["torch-fp32-cuda", "ort-fp32-cuda", "ort-fp16-cuda"]


# ---------------------------------------------------------------------------------------------- texts
def sentences(langs: str) -> list[str]:
    docs = [json.loads(line) for line in (DATA / "demo_documents.jsonl").read_text(encoding="utf-8").splitlines()]
    out = []
    for doc in docs:
        if langs != "all" and doc["lang"] not in langs.split(","):
            continue
        out.append(doc["title"] + ".")
        out.extend(s.strip().rstrip(".") + "." for s in doc["text"].split(". ") if s.strip())
    return out


def make_texts(tokenizer: Any, n_queries: int, n_documents: int, langs: str, seed: int = 0) -> dict[str, list[str]]:
    """Queries: 5-8 consecutive words of a demo sentence (~10 tokens); documents: shuffled demo sentences
    joined until the text reaches ~200 tokens. Seeded, so every run measures the same texts."""
    rng = random.Random(seed)
    pool = sentences(langs)
    queries = []
    for _ in range(n_queries):
        words = rng.choice(pool).rstrip(".").split()
        size = min(len(words), rng.randint(5, 8))
        start = rng.randint(0, len(words) - size)
        queries.append(" ".join(words[start : start + size]).lower())
    documents = []
    for _ in range(n_documents):
        parts: list[str] = []
        while True:
            parts.append(rng.choice(pool))
            n = len(tokenizer(" ".join(parts), add_special_tokens=False)["input_ids"])
            if n >= 198:
                break
        documents.append(" ".join(parts))
    return {"queries": queries, "documents": documents}


def mean_tokens(tokenizer: Any, texts: list[str]) -> float:
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return sum(len(i) for i in ids) / max(len(ids), 1)


# ---------------------------------------------------------------------------------------------- child
def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def peak_rss_mb() -> float:
    """This process's own peak RSS. Not ``getrusage``: its ru_maxrss survives fork + exec, so a child
    would report the parent's peak whenever that is larger. VmHWM belongs to the new address space."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux; not Linux: best effort


def run_child(cfg: dict[str, Any]) -> dict[str, Any]:
    """Load one runtime, warm up, time whole passes; report throughput, RSS and top-10 term ids."""
    import logging

    logging.basicConfig(level=logging.WARNING)
    t_load = time.perf_counter()
    runtime, quantize, device = RUNTIMES[cfg["runtime"]]
    threads = int(cfg["threads"])
    if runtime == "torch":
        import torch

        from milco_os.loading import load_encoder

        if threads > 0:
            torch.set_num_threads(threads)
        encoder = load_encoder(cfg["model"], Path(cfg["cache_dir"]), device=device)
    else:
        from milco_os.runtime.onnx_runtime import load_onnx_dir

        encoder = load_onnx_dir(Path(cfg["onnx_dir"]), quantize=quantize, device=device, intra_op_num_threads=threads)
    load_s = time.perf_counter() - t_load
    rss_loaded = rss_mb()
    encoder.batch_size = int(cfg["batch_size"])
    texts = json.loads(Path(cfg["texts_file"]).read_text(encoding="utf-8"))[cfg["kind"]]
    encode = encoder.encode_queries if cfg["kind"] == "queries" else encoder.encode_documents

    warm = encode(texts)  # warm-up pass; its output is the one compared with torch
    top10 = [v.pivot.sorted().ids[:10].tolist() for v in warm]
    passes, start = 0, time.perf_counter()
    while passes < cfg["min_passes"] or time.perf_counter() - start < cfg["min_seconds"]:
        encode(texts)
        passes += 1
    elapsed = time.perf_counter() - start
    peak = peak_rss_mb()
    provider = getattr(encoder, "provider", str(getattr(encoder, "device", "")))
    return {
        "runtime": cfg["runtime"], "kind": cfg["kind"], "batch_size": cfg["batch_size"], "texts": len(texts),
        "passes": passes, "seconds": round(elapsed, 3), "texts_per_s": len(texts) * passes / elapsed,
        "peak_rss_mb": round(peak, 1), "rss_after_load_mb": round(rss_loaded, 1), "load_s": round(load_s, 2),
        "provider": provider, "top10": top10,
    }


# ---------------------------------------------------------------------------------------------- parent
def prepare_onnx(encoder: Any, onnx_dir: Path, variants: set[str], reuse: bool) -> None:
    from milco_os.runtime.export import VARIANT_FILES, export_onnx, read_manifest

    manifest = read_manifest(onnx_dir) if onnx_dir.is_dir() else None
    have = manifest is not None and manifest.get("fingerprint") == encoder.info.fingerprint and all(
        (onnx_dir / VARIANT_FILES[v]).is_file() for v in variants
    )
    if reuse and have:
        print(f"reusing the ONNX export in {onnx_dir}", file=sys.stderr)
        return
    for variant in ["fp32", *sorted(variants - {"fp32"})]:
        t0 = time.perf_counter()
        export_onnx(encoder, onnx_dir, quantize=None if variant == "fp32" else variant)
        print(f"exported {variant} in {time.perf_counter() - t0:.1f}s", file=sys.stderr)


def overlap(ref: list[list[int]], got: list[list[int]]) -> float:
    scores = [len(set(r) & set(g)) / len(r) if r else float(not g) for r, g in zip(ref, got, strict=True)]
    return sum(scores) / max(len(scores), 1)


def table(rows: list[dict[str, Any]]) -> str:
    head = f"{'texts':<10} {'batch':>5}  {'runtime':<16} {'texts/s':>9} {'x base':>7} {'peak RSS MB':>11} " \
           f"{'RSS load MB':>11} {'top10 ovl':>9}  provider"
    lines = [head, "-" * len(head)]
    for r in rows:
        ratio = f"{r['speedup']:.2f}" if r.get("speedup") is not None else "-"
        ovl = f"{r['top10_overlap']:.3f}" if r.get("top10_overlap") is not None else "-"
        lines.append(
            f"{r['kind']:<10} {r['batch_size']:>5}  {r['runtime']:<16} {r['texts_per_s']:>9.1f} {ratio:>7} "
            f"{r['peak_rss_mb']:>11.0f} {r['rss_after_load_mb']:>11.0f} {ovl:>9}  {r['provider']}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="splade-tiny", help="built-in name, model directory or hub id")
    parser.add_argument("--cache-dir", type=Path, default=None, help="milco-os cache (default: the usual one)")
    parser.add_argument("--batch-sizes", default="1,32", help="comma-separated, e.g. 1,8,32")
    parser.add_argument("--runtimes", default=None,
                        help=f"comma-separated from {', '.join(RUNTIMES)} (default: {', '.join(CPU_DEFAULT)}, "
                             "plus the CUDA ones when a GPU is present)")
    parser.add_argument("--kinds", default="queries,documents")
    parser.add_argument("--queries", type=int, default=256, help="number of ~10-token queries")
    parser.add_argument("--documents", type=int, default=64, help="number of ~200-token documents")
    parser.add_argument("--langs", default="en", help="demo languages for the texts (en, de, fr, es, or all)")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads for torch and ORT (0: default)")
    parser.add_argument("--min-seconds", type=float, default=3.0, help="timed seconds per configuration, at least")
    parser.add_argument("--min-passes", type=int, default=2, help="timed passes over the texts, at least")
    parser.add_argument("--onnx-dir", type=Path, default=None, help="where to export (default under results/)")
    parser.add_argument("--reuse-onnx", action="store_true", help="skip the export when the dir is up to date")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench" / "encode.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        result = run_child(json.loads(args.child))
        print(RESULT_PREFIX + json.dumps(result))
        return 0

    import torch

    from milco_os.loading import load_encoder
    from milco_os.settings import default_cache_dir

    cache_dir = args.cache_dir or default_cache_dir()
    gpu = torch.cuda.is_available()
    names = args.runtimes.split(",") if args.runtimes else CPU_DEFAULT + (GPU_EXTRA if gpu else [])
    unknown = [n for n in names if n not in RUNTIMES]
    if unknown:
        parser.error(f"unknown runtimes {unknown}; expected some of {', '.join(RUNTIMES)}")
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    kinds = args.kinds.split(",")

    info_machine = machine()
    encoder = load_encoder(args.model, cache_dir)
    slug = encoder.info.name.replace("/", "--")
    onnx_dir = args.onnx_dir or ROOT / "results" / "bench" / "onnx" / slug
    variants = {RUNTIMES[n][1] for n in names if RUNTIMES[n][0] == "onnx"}
    if variants:
        prepare_onnx(encoder, onnx_dir, {v for v in variants if v}, args.reuse_onnx)
    texts = make_texts(encoder.tokenizer, args.queries, args.documents, args.langs)
    lengths = {k: round(mean_tokens(encoder.tokenizer, v), 1) for k, v in texts.items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    texts_file = args.out.with_name(args.out.stem + "_texts.json")
    texts_file.write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")
    del encoder
    print(f"texts: {len(texts['queries'])} queries ({lengths['queries']} tokens on average), "
          f"{len(texts['documents'])} documents ({lengths['documents']} tokens)", file=sys.stderr)

    rows: list[dict[str, Any]] = []
    for kind in kinds:
        for batch_size in batch_sizes:
            for name in names:  # runtimes interleaved, so background load hits them alike
                cfg = {
                    "model": args.model, "cache_dir": str(cache_dir), "onnx_dir": str(onnx_dir), "runtime": name,
                    "kind": kind, "batch_size": batch_size, "threads": args.threads, "texts_file": str(texts_file),
                    "min_seconds": args.min_seconds, "min_passes": args.min_passes,
                }
                proc = subprocess.run(
                    [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(cfg)],
                    capture_output=True, text=True, cwd=ROOT,
                )
                lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
                if proc.returncode != 0 or not lines:
                    print(f"{name} {kind} b{batch_size}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
                    continue
                row = json.loads(lines[-1][len(RESULT_PREFIX):])
                print(f"{name:<16} {kind:<10} b{batch_size:<3} {row['texts_per_s']:9.1f} texts/s "
                      f"peak {row['peak_rss_mb']:.0f} MB", file=sys.stderr)
                rows.append(row)

    # Ratios and overlaps against torch fp32 on the same device, texts and batch size, from this run.
    for row in rows:
        device = RUNTIMES[row["runtime"]][2]
        base_name = "torch-fp32" if device == "cpu" else "torch-fp32-cuda"
        base = next((r for r in rows if r["runtime"] == base_name and r["kind"] == row["kind"]
                     and r["batch_size"] == row["batch_size"]), None)
        row["baseline"] = base_name if base else None
        row["speedup"] = row["texts_per_s"] / base["texts_per_s"] if base else None
        row["top10_overlap"] = overlap(base["top10"], row["top10"]) if base else None
    report = table(rows)
    print(report)

    record = {
        "model": args.model, "machine": info_machine, "loadavg_end": os.getloadavg(),
        "settings": {"batch_sizes": batch_sizes, "runtimes": names, "threads": args.threads,
                     "min_seconds": args.min_seconds, "min_passes": args.min_passes, "langs": args.langs,
                     "onnx_dir": str(onnx_dir)},
        "texts": {"queries": len(texts["queries"]), "documents": len(texts["documents"]),
                  "mean_tokens": lengths},
        "results": [{k: v for k, v in r.items() if k != "top10"} for r in rows],
        "table": report,
    }
    args.out.write_text(json.dumps(record, indent=2), encoding="utf-8")
    print(f"wrote {args.out}", file=sys.stderr)
    plot(rows, args.model, args.out.with_suffix(".png"))
    return 0


def plot(rows: list[dict[str, Any]], model: str, path: Path) -> None:
    """texts/s per runtime, one panel per text kind, bars grouped by batch size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = list(dict.fromkeys(r["kind"] for r in rows))
    runtimes = list(dict.fromkeys(r["runtime"] for r in rows))
    fig, axes = plt.subplots(1, len(kinds), figsize=(6 * len(kinds), 4), squeeze=False)
    for ax, kind in zip(axes[0], kinds, strict=True):
        batches = sorted({r["batch_size"] for r in rows if r["kind"] == kind})
        width = 0.8 / max(len(runtimes), 1)
        for j, name in enumerate(runtimes):
            values = [next((r["texts_per_s"] for r in rows if r["kind"] == kind and r["runtime"] == name
                            and r["batch_size"] == b), 0.0) for b in batches]
            ax.bar([i + (j - (len(runtimes) - 1) / 2) * width for i in range(len(batches))], values, width,
                   label=name)
        ax.set_xticks(range(len(batches)), [f"batch {b}" for b in batches])
        ax.set_ylabel(f"{kind} per second")
        ax.set_title(f"{model}: {kind}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
