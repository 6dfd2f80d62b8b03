"""What the benchmark scripts share: machine facts, the LibreOffice-help corpus, cached encodings,
bulk loading of precomputed vectors, latency statistics and result files.

Benchmarks are not part of the package: they import milco-os like any user would. All their OpenSearch IO
goes through the library (``milco_os.opensearch``, its benchmark helpers in ``milco_os.opensearch.measure``).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from milco_os.specs import ECHO_FIELD, PIVOT_FIELD
from milco_os.types import Encoded, Passage, SparseVector

if TYPE_CHECKING:
    from milco_os.opensearch.engine import Client
    from milco_os.runtime.encoder import SparseEncoder

ROOT = Path(__file__).resolve().parents[1]
#: Charts and large outputs (ignored by git).
RESULTS = ROOT / "results" / "bench"
#: The reports the docs quote (committed; ``bench/report.py`` writes the docs from them). A smoke run
#: (``make bench-quick``) sets ``MILCO_OS_BENCH_REPORTS`` elsewhere, so it never replaces them.
REPORTS = Path(os.environ.get("MILCO_OS_BENCH_REPORTS") or ROOT / "reports" / "bench")
#: Languages of the benchmark corpus and queries: one download each (~10 MB), scripts of four kinds.
CORPUS_LANGUAGES = ["en-us", "de", "fr", "es", "ja", "zh-cn", "ru"]
#: Paragraphs shorter than this are menu labels and headings repeated on many pages.
MIN_PARAGRAPH_CHARS = 20


def model_arg(value: str) -> str:
    """The ``--model`` argument's type: a built-in name pinned to the version it loads (``milco-mini`` ->
    ``milco-mini@2``), so that a report names the version it measured after the default moves on."""
    from milco_os.loading import pinned

    return pinned(value)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ machine
def machine() -> dict[str, Any]:
    import onnxruntime
    import psutil
    import torch

    model_name = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model_name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model_name, "logical_cores": os.cpu_count(), "physical_cores": psutil.cpu_count(logical=False),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1), "loadavg_start": os.getloadavg(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(), "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
        "torch_threads": torch.get_num_threads(),
    }


# ------------------------------------------------------------------------------------------ results
def write_json(name: str, record: dict[str, Any]) -> Path:
    """The run's report, ``<REPORTS>/<name>.json``."""
    REPORTS.mkdir(parents=True, exist_ok=True)
    path = REPORTS / f"{name}.json"
    path.write_text(json.dumps(record, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    log(f"wrote {path}")
    return path


def text_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A fixed-width table; numbers right-aligned."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    numeric = [all(isinstance(row[i], (int, float)) or row[i] is None for row in rows) for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True))

    return "\n".join([line(list(headers)), "  ".join("-" * w for w in widths), *(line(r) for r in cells)])


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:#.3g}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def save_chart(fig: Any, name: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    log(f"wrote {path.relative_to(ROOT)}")
    return path


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# ------------------------------------------------------------------------------------------ corpus
@dataclass(frozen=True)
class Doc:
    id: str
    text: str
    lang: str


def help_pages(cache_dir: Path, langs: Sequence[str]) -> dict[str, dict[str, Any]]:
    from milco_os.datasets import libreoffice

    root = libreoffice.fetch_help(langs, cache_dir)
    return {lang: libreoffice.load_pages(root, lang) for lang in langs}


def paragraph_corpus(pages_by_lang: dict[str, dict[str, Any]], n_docs: int, seed: int = 7) -> list[Doc]:
    """``n_docs`` distinct help paragraphs, drawn round-robin over the languages in a seeded order."""
    pools = []
    for lang in sorted(pages_by_lang):
        seen: dict[str, Doc] = {}
        for path, page in sorted(pages_by_lang[lang].items()):
            for pid, text in page.paragraphs.items():
                if len(text) >= MIN_PARAGRAPH_CHARS and text not in seen:
                    seen[text] = Doc(f"{lang}:{path}#{pid}", text, lang)
        pool = list(seen.values())
        random.Random(f"{seed}:{lang}").shuffle(pool)
        pools.append(pool)
    available = sum(len(p) for p in pools)
    if n_docs > available:
        msg = f"--docs {n_docs}: only {available} distinct paragraphs in {', '.join(sorted(pages_by_lang))}"
        raise SystemExit(msg)
    docs: list[Doc] = []
    depth = 0
    while len(docs) < n_docs:
        for pool in pools:
            if depth < len(pool) and len(docs) < n_docs:
                docs.append(pool[depth])
        depth += 1
    return docs


def title_queries(pages_by_lang: dict[str, dict[str, Any]], n_queries: int, seed: int = 11) -> list[Doc]:
    """Page titles (what users type) of the held-out dev split, in every corpus language (speed is measured
    where defaults are chosen; test stays for reporting quality once)."""
    from milco_os.datasets.libreoffice import split_of

    titles = sorted(
        {(lang, page.title) for lang, pages in pages_by_lang.items() for path, page in pages.items()
         if page.title and split_of(path) == "dev"}
    )
    random.Random(seed).shuffle(titles)
    return [Doc(f"q{i}", title, lang) for i, (lang, title) in enumerate(titles[:n_queries])]


# ------------------------------------------------------------------------------------------ encodings
def load_bench_encoder(model: str, cache_dir: Path, runtime: str, batch_size: int = 32) -> SparseEncoder:
    from milco_os.loading import load_encoder

    quantize = {"onnx": None, "onnx-int8": "int8"}.get(runtime)
    base = "onnx" if runtime.startswith("onnx") else "torch"
    encoder = load_encoder(model, cache_dir, runtime=base, quantize=quantize)
    encoder.batch_size = batch_size
    return encoder


def encodings_digest(encoder: SparseEncoder, runtime: str, texts: Sequence[str], dense: bool = False,
                     passages: bool = False) -> str:
    dense_key = f"dense {encoder.info.dense.fingerprint}\n" if dense and encoder.info.dense else ""
    passages_key = "passages\n" if passages else ""
    h = hashlib.sha256(f"{encoder.info.fingerprint}\n{runtime}\n{dense_key}{passages_key}".encode())
    for t in texts:
        h.update(t.encode("utf-8") + b"\0")
    return h.hexdigest()[:16]


def encode_cached(
    encoder: SparseEncoder, runtime: str, texts: Sequence[str], cache_dir: Path, label: str, chunk: int = 1024,
    dense: bool = False, passages: bool = False,
) -> tuple[list[Any], float | None]:
    """Encode documents once (``dense``: with the dense view; ``passages``: each document's passages, a list of
    :class:`~milco_os.types.Passage` per document); later runs read ``<cache>/bench/<label>-<digest>.npz``.

    Long encodings resume: each finished chunk is kept under ``<label>-<digest>.parts/`` until the whole
    corpus is done. Returns the encodings and the seconds encoding took in this run (None when read from
    the cache)."""
    path = cache_dir / "bench" / f"{label}-{encodings_digest(encoder, runtime, texts, dense, passages)}.npz"
    save, load = (pack_passages, unpack_passages) if passages else (pack, unpack)
    if path.is_file():
        log(f"{label}: reusing {len(texts)} encodings from {path}")
        return load(np.load(path), encoder), None
    from tqdm import tqdm

    parts = path.with_suffix(".parts")
    parts.mkdir(parents=True, exist_ok=True)
    out: list[Any] = []
    start = time.perf_counter()
    with tqdm(total=len(texts), desc=f"encoding {label}", unit="doc", file=sys.stderr) as bar:
        for i in range(0, len(texts), chunk):
            part_path = parts / f"{i:09d}.npz"
            if part_path.is_file():
                part = load(np.load(part_path), encoder)
            else:
                batch = list(texts[i : i + chunk])
                part = (encoder.encode_passages(batch, dense=dense) if passages
                        else encoder.encode_documents(batch, dense=dense))
                _save_npz(part_path, save(part))
            out.extend(part)
            bar.update(len(part))
    seconds = time.perf_counter() - start
    _save_npz(path, save(out))
    for part_path in parts.iterdir():
        part_path.unlink()
    parts.rmdir()
    return out, seconds


def pack_passages(documents: Sequence[Sequence[Passage]]) -> dict[str, np.ndarray]:
    """Every document's passages: their encodings packed as :func:`pack`'s, their spans, and where each document's
    passages start."""
    flat = [p for passages in documents for p in passages]
    arrays = pack([p.encoded for p in flat])
    arrays["spans"] = np.array([(p.start, p.end) for p in flat], dtype=np.int64).reshape(-1, 2)
    arrays["document_offsets"] = np.cumsum([0, *(len(d) for d in documents)]).astype(np.int64)
    return arrays


def unpack_passages(arrays: Any, encoder: SparseEncoder) -> list[list[Passage]]:
    encoded, spans, offsets = unpack(arrays, encoder), arrays["spans"], arrays["document_offsets"]
    return [[Passage(int(spans[i][0]), int(spans[i][1]), encoded[i]) for i in range(a, b)]
            for a, b in zip(offsets[:-1], offsets[1:], strict=True)]


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)


def pack(encoded: Sequence[Encoded]) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    for view in ("pivot", "echo"):
        vecs = [getattr(e, view) for e in encoded]
        arrays[f"{view}_offsets"] = np.cumsum([0, *(len(v) for v in vecs)]).astype(np.int64)
        arrays[f"{view}_ids"] = np.concatenate([v.ids for v in vecs] or [np.zeros(0)]).astype(np.int32)
        arrays[f"{view}_weights"] = np.concatenate([v.weights for v in vecs] or [np.zeros(0)]).astype(np.float32)
    if encoded and any(e.dense is not None for e in encoded):
        width = next(e.dense for e in encoded if e.dense is not None).shape[0]
        arrays["dense"] = np.stack([np.zeros(width, np.float32) if e.dense is None else e.dense for e in encoded])
        arrays["dense_present"] = np.array([e.dense is not None for e in encoded])
    return arrays


def unpack(arrays: Any, encoder: SparseEncoder) -> list[Encoded]:
    vocabs = {"pivot": encoder.info.pivot_vocab, "echo": encoder.info.echo_vocab or encoder.info.pivot_vocab}
    views: dict[str, list[SparseVector]] = {}
    for view, vocab in vocabs.items():
        off, ids, weights = arrays[f"{view}_offsets"], arrays[f"{view}_ids"], arrays[f"{view}_weights"]
        views[view] = [
            SparseVector(ids[a:b].astype(np.int64), weights[a:b], vocab) for a, b in zip(off[:-1], off[1:], strict=True)
        ]
    dense = [None] * len(views["pivot"])
    if "dense" in arrays:
        dense = [row if present else None
                 for row, present in zip(arrays["dense"], arrays["dense_present"], strict=True)]
    return [Encoded(p, e, d) for p, e, d in zip(views["pivot"], views["echo"], dense, strict=True)]


def merged_from_passages(passages: Sequence[Passage], info: Any) -> Encoded:
    """A document's merged vector from its passages' (unpruned) views, as ``encode_documents`` merges windows by
    default: per term the largest weight over the windows (pivot and echo), and the normalised mean of the dense
    views; one encoding then serves both layouts (tests/unit/test_passages.py checks the two agree)."""

    def max_merge(vectors: Sequence[SparseVector], vocab: Any) -> SparseVector:
        best: dict[int, float] = {}
        for v in vectors:
            for i, w in zip(v.ids.tolist(), v.weights.tolist(), strict=True):
                if w > best.get(i, 0.0):
                    best[i] = w
        return SparseVector(np.fromiter(best, np.int64, len(best)),
                            np.fromiter(best.values(), np.float32, len(best)), vocab)

    encoded = [p.encoded for p in passages]
    dense = None
    if encoded and encoded[0].dense is not None:
        total = np.sum([e.dense for e in encoded], axis=0)
        dense = (total / np.linalg.norm(total)).astype(np.float32)
    return Encoded(max_merge([e.pivot for e in encoded], info.pivot_vocab),
                   max_merge([e.echo for e in encoded], info.echo_vocab or info.pivot_vocab), dense)


def prune_all(encoded: Sequence[Encoded], rule: str) -> list[Encoded]:
    """``rule`` is ``PIVOT[,ECHO]`` (one rule alone prunes both views), as ``--doc-prune`` takes it."""
    from milco_os.pruning import Pruning

    pruning = Pruning.parse(rule)
    return [pruning.apply(e) for e in encoded]


def mean_terms(encoded: Sequence[Encoded]) -> dict[str, float]:
    n = max(len(encoded), 1)
    pivot = sum(len(e.pivot) for e in encoded) / n
    echo = sum(len(e.echo) for e in encoded) / n
    return {"pivot": round(pivot, 1), "echo": round(echo, 1), "total": round(pivot + echo, 1)}


# ------------------------------------------------------------------------------------------ indexing
def bulk_load(
    client: Client,
    index: str,
    docs: Sequence[Doc],
    encoded: Sequence[Any] | None,
    *,
    pivot_field: str = PIVOT_FIELD,
    echo_field: str = ECHO_FIELD,
    dense_field: str | None = None,
    passages_field: str | None = None,
    source_fields: Callable[[Doc], dict[str, Any]] | None = None,
    chunk: int = 1000,
    pivot_keys: str = "names",
    label: str = "",
) -> float:
    """Write documents (``{"text": ...}`` unless ``source_fields`` says otherwise, plus their precomputed
    vectors when given; ``dense_field``: the dense views too; ``passages_field``: ``encoded`` holds each
    document's passages, written as an index with passages stores them), ``chunk`` per bulk request, and
    refresh; returns seconds.

    Any document not written stops the benchmark: a benchmark of a partial index would be meaningless."""
    from tqdm import tqdm

    from milco_os.opensearch.bulk import BulkConfig, write_documents
    from milco_os.opensearch.documents import document_source, passages_source
    from milco_os.opensearch.indices import refresh
    from milco_os.opensearch.ingest import batches

    fields = source_fields or (lambda d: {"text": d.text})
    config = BulkConfig(max_docs=chunk)
    start = time.perf_counter()
    with tqdm(total=len(docs), desc=f"indexing {label or index}", unit="doc", file=sys.stderr) as bar:
        for part in batches(range(len(docs)), chunk):
            sources = []
            for j in part:
                source = fields(docs[j])
                if encoded is not None and passages_field is not None:
                    source = passages_source(source, encoded[j], passages_field=passages_field,
                                             pivot_field=pivot_field, echo_field=echo_field, dense_field=dense_field,
                                             pivot_keys=pivot_keys)
                elif encoded is not None:
                    source = document_source(source, encoded[j], pivot_field=pivot_field, echo_field=echo_field,
                                             dense_field=dense_field, pivot_keys=pivot_keys)
                sources.append((docs[j].id, source))
            outcome = write_documents(client, index, sources, config)
            lost = outcome.failed + outcome.unavailable
            if lost:
                raise SystemExit(f"bulk indexing into {index} failed for {len(lost)} documents, "
                                 f"first {lost[0][0]}: {lost[0][1]}")
            bar.update(len(part))
    refresh(client, index)
    return time.perf_counter() - start


# ------------------------------------------------------------------------------------------ latency statistics
def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty sample."""
    if not values:
        msg = "percentile of an empty sample"
        raise ValueError(msg)
    ordered = sorted(values)
    rank = max(1, int(np.ceil(p / 100 * len(ordered))))
    return float(ordered[rank - 1])


def interleaved_latency(variants: dict[str, Callable[[str], Any]], queries: Sequence[Doc],
                        repeat: int) -> dict[str, dict[str, float]]:
    """Client time of each variant (``name -> search(text)``) over ``queries``, ``repeat`` rounds after one warm-up
    round, the variants interleaved query by query in a rotating order (a slower spell hits all of them):
    :func:`summary_ms` per variant."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for r in range(repeat + 1):  # the first round warms caches and is not counted
        for i, q in enumerate(queries):
            for k in range(len(names)):
                name = names[(i + k) % len(names)]
                start = time.perf_counter()
                variants[name](q.text)
                if r:
                    times[name].append((time.perf_counter() - start) * 1000)
    return {name: summary_ms(values) for name, values in times.items()}


def latency_rows(latency: dict[str, Any]) -> list[list[Any]]:
    """Rows of a latency table (search, p50, p95, p99, mean) from :func:`interleaved_latency`'s summaries."""
    return [[name, *(v[k] for k in ("p50", "p95", "p99", "mean"))] for name, v in latency.items()
            if isinstance(v, dict)]


def alternating_seconds(kinds: dict[str, Callable[[list[str]], Any]], texts: list[str], batch: int,
                        rounds: int) -> dict[str, float]:
    """Seconds each way of encoding (``name -> encode(texts)``) takes over ``texts``, ``rounds`` times, batch by
    batch with the order alternating (a slower spell of the machine hits both); call each once first to warm up."""
    seconds = dict.fromkeys(kinds, 0.0)
    names = list(kinds)
    for r in range(rounds):
        for i in range(0, len(texts), batch):
            part = texts[i : i + batch]
            for name in names if (i // batch + r) % 2 == 0 else names[::-1]:
                start = time.perf_counter()
                kinds[name](part)
                seconds[name] += time.perf_counter() - start
    return seconds


def summary_ms(values: Sequence[float]) -> dict[str, float]:
    return {
        "p50": round(percentile(values, 50), 2), "p95": round(percentile(values, 95), 2),
        "p99": round(percentile(values, 99), 2), "mean": round(float(np.mean(values)), 2),
    }
