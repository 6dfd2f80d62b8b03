"""CSPLADE quantisation study on CPU (method-spec B4): one fp32 model and its quantised copies, measured
side by side in one run on the same texts.

    .venv/bin/python bench/quantisation.py --model csplade-mini                  # ~10 min on 2 cores
    .venv/bin/python bench/quantisation.py --model csplade-mini --max-docs 32 --formats fp32,torchao-int8wo
    .venv/bin/python bench/quantisation.py --model /path/to/causal-lm-dir --max-docs 8 --out /tmp/q.json

``--model`` is anything ``milco_os.loading.load_encoder`` takes (a built-in name or a local CSPLADE
directory). Formats (``--formats``, default all):

- ``fp32``: the baseline; ``bf16``: the whole LM in bfloat16 (the paper's inference precision);
- ``torchao-int8wo`` (int8 weight-only, W8 with fp32 activations here; W8A16 in the paper),
  ``torchao-int8dq`` (int8 dynamic activations + int8 weights), ``torchao-int4wo`` (torchao's int4
  weight-only, ``Int4WeightOnlyConfig``) and ``torchao-intx4wo`` (int4 weights, groups of 32, stored unpacked
  in int8: torchao's CPU route to int4);
- ``ort-int8``: onnxruntime dynamic int8 through milco-os's own ONNX export (every MatMul, the LM head too);
- ``bnb-int8`` (LLM.int8) and ``bnb-nf4`` (4-bit NF4, fp32 compute), when bitsandbytes is installed.

All are calibration-free. The torchao and bitsandbytes formats quantise every ``nn.Linear`` of the LM but
the LM head (``--quantise-head`` includes it), as transformers does by default. A format that cannot run
on this machine is recorded as "not runnable here: <reason>" instead of failing the run.

Per format, in its own subprocess (so memory readings are its own): the fp32 model is loaded from a
snapshot, quantised, then encodes every query at batch 1 (queries/s) and every document at batch 8
(documents/s), after a short untimed warm-up. Quality is scored exactly in memory: sparse dot products of
the query and document vectors, nDCG@10 and MRR@10 on ``libreoffice-en`` (English titles -> the split's
English pages without their title; ``--max-docs`` pages sampled with their own titles as queries),
documents cut at ``--doc-tokens`` tokens. "top-10 overlap" is the mean over documents of
|top10(format) & top10(fp32)| / 10.

Memory, per format: ``weights MB`` is the exact size of the model's tensors (quantised data and scales;
for ort-int8 the model file); ``RSS ready`` is the process's resident memory once the quantised model is in
place (after garbage collection and ``malloc_trim``, minus the RSS right after the imports); ``peak RSS`` is
the high-water mark of resident memory while encoding, also minus that baseline (the mark is reset through
``/proc/self/clear_refs`` once the model is ready, so the fp32 load before quantising is not counted).

Every format that ran is kept under ``<cache>/bench/quantisation/``: a rerun with the same settings runs
only the others (``--fresh`` runs everything again). Results: a markdown table on stdout, the JSON
(``--out``, default ``reports/bench/quantisation.json``) with machine facts, and a chart in ``docs/bench/``.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import hashlib
import importlib
import importlib.util
import json
import os
import random
import re
import subprocess
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "reports" / "bench" / "quantisation.json"
CHART = ROOT / "docs" / "bench" / "quantisation.png"
#: Documents sampled from the split: about 10 minutes for every format on 2 cores with a 135M LM
#: (~2-4 documents/s in fp32 at batch 8, 128 tokens; bf16 and some int8 paths are slower on CPUs without
#: native kernels for them).
DEFAULT_MAX_DOCS = 96
DOC_TOKENS = 128
QUERY_BATCH = 1
DOC_BATCH = 8
TOP_K = 10
NOT_RUNNABLE = "not runnable here"


# ---------------------------------------------------------------------------------------------- formats
@dataclass(frozen=True)
class Format:
    name: str
    kind: str  # torch | torchao | bnb | ort
    description: str
    package: str | None = None  # the optional package it needs (import name)


FORMATS: dict[str, Format] = {f.name: f for f in [
    Format("fp32", "torch", "fp32 (baseline)"),
    Format("bf16", "torch", "bfloat16 weights and compute"),
    Format("torchao-int8wo", "torchao", "torchao int8 weight-only (Int8WeightOnlyConfig), fp32 activations", "torchao"),
    Format("torchao-int8dq", "torchao", "torchao int8 dynamic activations + int8 weights "
           "(Int8DynamicActivationInt8WeightConfig)", "torchao"),
    Format("torchao-int4wo", "torchao", "torchao int4 weight-only (Int4WeightOnlyConfig, group 128)", "torchao"),
    Format("torchao-intx4wo", "torchao", "torchao int4 weights, group 32, unpacked to int8 "
           "(IntxWeightOnlyConfig, torchao's CPU int4)", "torchao"),
    Format("ort-int8", "ort", "onnxruntime dynamic int8 (milco-os export, per-channel, all MatMuls)"),
    Format("bnb-int8", "bnb", "bitsandbytes LLM.int8 (threshold 6.0)", "bitsandbytes"),
    Format("bnb-nf4", "bnb", "bitsandbytes 4-bit NF4, fp32 compute", "bitsandbytes"),
]}
#: Formats whose package is a declared optional dependency (``pip install -e '.[quant]'``): its absence
#: is an error. The others are recorded as not runnable when their package is missing.
REQUIRED_PACKAGES = {"torchao"}


def parse_formats(text: str | None) -> list[str]:
    """``"fp32,bf16"`` -> the formats in registry order, fp32 always first (the reference of the overlap)."""
    if text is None or text.strip().lower() == "all":
        return list(FORMATS)
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in FORMATS]
    if unknown or not names:
        msg = f"--formats {text!r}: unknown format(s) {', '.join(unknown) or '(none given)'}; " \
              f"expected a comma-separated subset of {', '.join(FORMATS)}"
        raise ValueError(msg)
    chosen = set(names) | {"fp32"}
    return [n for n in FORMATS if n in chosen]


def missing_required(formats: Sequence[str], find_spec: Any = importlib.util.find_spec) -> str | None:
    """A one-line error when a chosen format needs a declared optional package that is not installed."""
    for package in sorted(REQUIRED_PACKAGES):
        users = [f for f in formats if FORMATS[f].package == package]
        if users and find_spec(package) is None:
            return (f"bench/quantisation.py: the {package} package is missing (needed by {', '.join(users)}); "
                    f"install the quant extra (.venv/bin/pip install -e '.[quant]' -c constraints.txt) "
                    f"or leave those formats out of --formats")
    return None


def torchao_config(name: str) -> Any:
    if FORMATS.get(name, Format(name, "?", "")).kind != "torchao":
        msg = f"{name}: not a torchao format"
        raise ValueError(msg)
    import torch
    from torchao.quantization import (
        Int4WeightOnlyConfig,
        Int8DynamicActivationInt8WeightConfig,
        Int8WeightOnlyConfig,
        IntxWeightOnlyConfig,
    )
    from torchao.quantization.granularity import PerGroup

    if name == "torchao-int8wo":
        return Int8WeightOnlyConfig()
    if name == "torchao-int8dq":
        return Int8DynamicActivationInt8WeightConfig()
    if name == "torchao-int4wo":
        return Int4WeightOnlyConfig(group_size=128)
    return IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(32))


# ---------------------------------------------------------------------------------------------- scoring
def score_matrix(queries: Sequence[Any], docs: Sequence[Any]) -> np.ndarray:
    """Exact dot products [len(queries), len(docs)] of sparse vectors (anything with ``ids``/``weights``; ids
    unique within a vector), in float64 over the terms the documents use."""
    def flat(vecs: Sequence[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rows = np.repeat(np.arange(len(vecs)), [len(np.asarray(v.ids)) for v in vecs])
        ids = np.concatenate([np.asarray(v.ids, dtype=np.int64) for v in vecs] or [np.zeros(0, np.int64)])
        weights = np.concatenate([np.asarray(v.weights, dtype=np.float64) for v in vecs] or [np.zeros(0)])
        return rows, ids, weights

    d_rows, d_ids, d_weights = flat(docs)
    terms, columns = np.unique(d_ids, return_inverse=True)
    dense_docs = np.zeros((len(docs), len(terms)))
    dense_docs[d_rows, columns] = d_weights
    q_rows, q_ids, q_weights = flat(queries)
    pos = np.searchsorted(terms, q_ids)
    known = pos < len(terms)
    known[known] = terms[pos[known]] == q_ids[known]
    dense_queries = np.zeros((len(queries), len(terms)))
    dense_queries[q_rows[known], pos[known]] = q_weights[known]
    return dense_queries @ dense_docs.T


def rank(scores: np.ndarray, doc_ids: Sequence[str], depth: int = 100) -> list[list[str]]:
    """Per query the ids of the documents with a positive score, best first (ties: corpus order), as an
    inverted index would return them."""
    out = []
    for row in scores:
        order = np.argsort(-row, kind="stable")[:depth]
        out.append([doc_ids[i] for i in order if row[i] > 0])
    return out


def quality(query_vecs: Sequence[Any], doc_vecs: Sequence[Any], query_ids: Sequence[str], doc_ids: Sequence[str],
            qrels: Mapping[str, Mapping[str, int]]) -> dict[str, float]:
    """Mean nDCG@10 and MRR@10 over the queries (exact scoring)."""
    from milco_os.evaluation.metrics import mrr_at_k, ndcg_at_k

    ranked = rank(score_matrix(query_vecs, doc_vecs), doc_ids)
    n = max(len(query_ids), 1)
    return {
        "ndcg@10": sum(ndcg_at_k(r, qrels[q], 10) for q, r in zip(query_ids, ranked, strict=True)) / n,
        "mrr@10": sum(mrr_at_k(r, qrels[q], 10) for q, r in zip(query_ids, ranked, strict=True)) / n,
    }


def top_terms(vec: Any, k: int = TOP_K) -> list[int]:
    """The ``k`` heaviest term ids with a positive weight (ties: the smaller id first)."""
    ids, weights = np.asarray(vec.ids), np.asarray(vec.weights)
    keep = weights > 0
    ids, weights = ids[keep], weights[keep]
    order = np.lexsort((ids, -weights))[:k]
    return [int(i) for i in ids[order]]


def topk_overlap(a: Any, b: Any, k: int = TOP_K) -> float:
    """|topk(a) & topk(b)| / k; when both vectors have fewer than k terms, over the longer of the two top
    lists (two identical short vectors overlap fully); 1.0 when both are empty."""
    ta, tb = top_terms(a, k), top_terms(b, k)
    size = max(len(ta), len(tb))
    return 1.0 if size == 0 else len(set(ta) & set(tb)) / size


def mean_overlap(vecs: Sequence[Any], reference: Sequence[Any], k: int = TOP_K) -> float:
    if len(vecs) != len(reference):
        msg = f"{len(vecs)} vectors against {len(reference)} reference vectors"
        raise ValueError(msg)
    return float(np.mean([topk_overlap(a, b, k) for a, b in zip(vecs, reference, strict=True)])) if vecs else 0.0


# ---------------------------------------------------------------------------------------------- texts
def sample_eval(evalset: Any, max_docs: int | None, seed: int = 17) -> tuple[list[dict], list[dict], dict]:
    """(documents, queries, qrels): ``max_docs`` documents drawn (seeded) from the corpus, in id order, and the
    queries whose relevant documents are all among them."""
    corpus = sorted(evalset.corpus, key=lambda d: str(d["id"]))
    if max_docs is not None and max_docs < len(corpus):
        picked = set(random.Random(seed).sample(range(len(corpus)), max_docs))
        corpus = [d for i, d in enumerate(corpus) if i in picked]
    kept = {str(d["id"]) for d in corpus}
    queries, qrels = [], {}
    for q in evalset.queries:
        judged = {str(k): int(v) for k, v in evalset.qrels.get(q["id"], {}).items() if int(v) > 0}
        if judged and set(judged) <= kept:
            queries.append({"id": str(q["id"]), "text": q["text"]})
            qrels[str(q["id"])] = judged
    docs = [{"id": str(d["id"]), "text": d["text"]} for d in corpus]
    return docs, queries, qrels


def cut_to_tokens(tokenizer: Any, texts: Sequence[str], max_tokens: int) -> tuple[list[str], float]:
    """Each text cut after its first ``max_tokens`` tokens (without special tokens); the mean token count."""
    out, counts = [], []
    for text in texts:
        try:
            enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            offsets = enc["offset_mapping"]
            ids = enc["input_ids"]
            cut = text if len(ids) <= max_tokens else text[: offsets[max_tokens - 1][1]]
        except (NotImplementedError, ValueError, KeyError):  # a slow tokenizer: no offsets
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            cut = text if len(ids) <= max_tokens else tokenizer.decode(ids[:max_tokens])
        out.append(cut)
        counts.append(min(len(ids), max_tokens))
    return out, float(np.mean(counts)) if counts else 0.0


# ---------------------------------------------------------------------------------------------- memory
def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def hwm_mb() -> float:
    """Peak RSS of this process (VmHWM, since the start or since the last :func:`reset_hwm`)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_hwm() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def release_memory() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def tensor_bytes(t: Any) -> int:
    """Bytes of a tensor, summing the inner tensors of a tensor subclass (torchao's quantised weights)."""
    flatten = getattr(type(t), "__tensor_flatten__", None)
    if flatten is not None:
        names, _ = t.__tensor_flatten__()
        return sum(tensor_bytes(getattr(t, n)) for n in names)
    total = t.numel() * t.element_size()
    for extra in ("SCB",):  # bitsandbytes int8: per-row scales
        value = getattr(t, extra, None)
        if value is not None and hasattr(value, "numel"):
            total += value.numel() * value.element_size()
    state = getattr(t, "quant_state", None)  # bitsandbytes 4-bit: block scales
    if state is not None and getattr(state, "absmax", None) is not None:
        total += state.absmax.numel() * state.absmax.element_size()
    return total


def module_bytes(module: Any) -> int:
    seen: set[int] = set()
    total = 0
    for t in [*module.parameters(), *module.buffers()]:
        if id(t) not in seen:
            seen.add(id(t))
            total += tensor_bytes(t)
    return total


# ---------------------------------------------------------------------------------------------- child
#: Context for errors whose own message does not say why a format cannot run on a CPU.
HINTS = {"mslk": "torchao's int4 kernels are CUDA ones; torchao-intx4wo is its CPU int4"}


def _not_runnable(e: BaseException) -> str:
    first = (str(e).strip().splitlines() or [""])[0][:200]
    first += "".join(f" ({hint})" for word, hint in HINTS.items() if word in first)
    return f"{NOT_RUNNABLE}: {type(e).__name__}: {first}" if first else f"{NOT_RUNNABLE}: {type(e).__name__}"


def prepare(cfg: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Load the snapshot as format ``cfg['format']``; returns the encoder and facts about it."""
    import torch
    from torch import nn

    from milco_os.loading import load_encoder

    fmt = FORMATS[cfg["format"]]
    cache_dir, snapshot, threads = Path(cfg["cache_dir"]), cfg["snapshot"], int(cfg["threads"])
    if fmt.kind == "ort":
        encoder = load_encoder(snapshot, cache_dir, runtime="onnx", quantize="int8", device="cpu",
                               intra_op_num_threads=threads)
        path = Path(encoder.model_path)
        size = sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
        return encoder, {"weights_mb": size / 2**20, "provider": getattr(encoder, "provider", None)}
    encoder = load_encoder(snapshot, cache_dir, device="cpu")
    module = encoder.model
    skip_head = not cfg["quantise_head"]
    if fmt.name == "bf16":
        module.lm.to(torch.bfloat16)
    elif fmt.kind == "torchao":
        from torchao.quantization import quantize_

        head = module.lm.get_output_embeddings()

        def linear(m: Any, _fqn: str) -> bool:
            return isinstance(m, nn.Linear) and not (skip_head and m is head)

        quantize_(module.lm, torchao_config(fmt.name), filter_fn=linear)
    elif fmt.kind == "bnb":
        import bitsandbytes  # noqa: F401  (not installed: not runnable here)
        from transformers import AutoModelForCausalLM, BitsAndBytesConfig

        from milco_os.models.csplade import CSpladeModule

        skip = None if skip_head else []  # None: transformers' default, which keeps the LM head
        if fmt.name == "bnb-int8":
            qcfg = BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
        else:
            qcfg = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                      bnb_4bit_compute_dtype=torch.float32, llm_int8_skip_modules=skip)
        variant, chunk = module.variant, module.chunk_size
        encoder.model = None
        del module
        release_memory()
        lm = AutoModelForCausalLM.from_pretrained(snapshot, quantization_config=qcfg, device_map="cpu").eval()
        module = CSpladeModule(lm, variant=variant, chunk_size=chunk).eval()
        encoder.model = module
    return encoder, {"weights_mb": module_bytes(module) / 2**20}


def timed(encode: Any, texts: list[str]) -> tuple[list[Any], float]:
    start = time.perf_counter()
    out = encode(texts)
    return out, time.perf_counter() - start


def import_everything() -> None:
    """Import what any format uses, so that every format's memory baseline holds the same libraries."""
    import onnxruntime  # noqa: F401
    import transformers.models.llama.modeling_llama  # noqa: F401

    import milco_os.loading  # noqa: F401
    import milco_os.models.csplade  # noqa: F401
    import milco_os.runtime.onnx_runtime  # noqa: F401
    import milco_os.runtime.torch_runtime  # noqa: F401

    for optional in ("torchao.quantization", "bitsandbytes"):
        try:
            importlib.import_module(optional)
        except Exception:  # noqa: BLE001, S110 (absent or broken: the format that needs it says so)
            pass


def run_child(cfg: dict[str, Any]) -> dict[str, Any]:
    """One format: prepare, warm up, time queries at batch 1 and documents at batch 8, save the vectors.
    With ``prepare_only`` (the ONNX export, made once in a process of its own), just prepare."""
    import logging

    logging.basicConfig(level=logging.WARNING)
    warnings.simplefilter("ignore")
    import torch

    threads = int(cfg["threads"])
    torch.set_num_threads(threads)
    fmt = FORMATS[cfg["format"]]
    if fmt.package:
        try:
            importlib.import_module(fmt.package)
        except ImportError as e:
            return {"status": f"{NOT_RUNNABLE}: {fmt.package} not installed ({type(e).__name__})"}
    if cfg.get("prepare_only"):
        try:
            prepare(cfg)
        except Exception as e:  # noqa: BLE001
            return {"status": _not_runnable(e)}
        return {"status": "prepared"}
    import_everything()
    release_memory()
    baseline = rss_mb()
    texts = json.loads(Path(cfg["texts_file"]).read_text(encoding="utf-8"))
    queries = [q["text"] for q in texts["queries"]]
    docs = [d["text"] for d in texts["docs"]]
    load_avg_start = os.getloadavg()
    t0 = time.perf_counter()
    try:
        encoder, facts = prepare(cfg)
        release_memory()
        prepare_s = time.perf_counter() - t0
        ready = rss_mb()
        hwm_reset = reset_hwm()
        # Warm-up (untimed), which also proves the format runs here.
        encoder.batch_size = QUERY_BATCH
        encoder.encode_queries(queries[:2])
        encoder.batch_size = DOC_BATCH
        encoder.encode_documents(docs[:DOC_BATCH])
    except Exception as e:  # noqa: BLE001 (any failure to quantise or run is recorded, not raised)
        return {"status": _not_runnable(e), "prepare_s": round(time.perf_counter() - t0, 1)}
    encoder.batch_size = QUERY_BATCH
    q_enc, q_s = timed(encoder.encode_queries, queries)
    encoder.batch_size = DOC_BATCH
    d_enc, d_s = timed(encoder.encode_documents, docs)
    peak = hwm_mb()

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import pack

    arrays = {f"q_{k}": v for k, v in pack(q_enc).items()} | {f"d_{k}": v for k, v in pack(d_enc).items()}
    np.savez(cfg["vectors_file"], **arrays)
    return {
        "status": "ok", "description": fmt.description, "prepare_s": round(prepare_s, 1),
        "queries": len(queries), "query_seconds": round(q_s, 3), "queries_per_s": len(queries) / q_s,
        "documents": len(docs), "document_seconds": round(d_s, 3), "documents_per_s": len(docs) / d_s,
        "weights_mb": round(facts["weights_mb"], 1), "rss_baseline_mb": round(baseline, 1),
        "rss_ready_mb": round(ready - baseline, 1), "peak_rss_mb": round(peak - baseline, 1),
        "peak_method": "VmHWM reset once the model was ready" if hwm_reset else "VmHWM since process start",
        "provider": facts.get("provider"), "threads": threads,
        "loadavg": {"start": load_avg_start, "end": os.getloadavg()},
    }


def load_vectors(path: Path) -> tuple[list[Any], list[Any]]:
    """(query vectors, document vectors) saved by a child (pivot view; CSPLADE has no echo view)."""
    from milco_os.types import SparseVector, Vocab

    arrays = np.load(path)
    vocab = Vocab("quantisation", ())
    out = []
    for side in ("q", "d"):
        off, ids = arrays[f"{side}_pivot_offsets"], arrays[f"{side}_pivot_ids"]
        weights = arrays[f"{side}_pivot_weights"]
        out.append([SparseVector(ids[a:b].astype(np.int64), weights[a:b], vocab)
                    for a, b in zip(off[:-1], off[1:], strict=True)])
    return out[0], out[1]


# ---------------------------------------------------------------------------------------------- parent
def cpu_facts(threads: int) -> dict[str, Any]:
    facts: dict[str, Any] = {"logical_cores": os.cpu_count(), "threads": threads}
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return facts
    model = re.search(r"^model name\s*:\s*(.+)$", info, re.M)
    flags_line = re.search(r"^flags\s*:\s*(.+)$", info, re.M)
    flags = set(flags_line.group(1).split()) if flags_line else set()
    facts["cpu"] = model.group(1).strip() if model else None
    wanted = ("avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16",
              "amx_bf16", "amx_int8")
    facts["flags"] = {f: f in flags for f in wanted}
    facts["vnni"] = bool(flags & {"avx512_vnni", "avx_vnni"})
    return facts


def versions() -> dict[str, str | None]:
    from importlib import metadata

    out: dict[str, str | None] = {}
    for dist in ("torch", "torchao", "transformers", "onnxruntime-gpu", "onnxruntime", "bitsandbytes", "numpy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def save_snapshot(encoder: Any, directory: Path) -> None:
    """The loaded fp32 CSPLADE model as a plain causal-LM directory (config, safetensors, tokenizer, sidecar),
    which every format's subprocess loads quickly (a GGUF base is dequantised only once)."""
    import copy

    from transformers import AutoModelForCausalLM

    module = encoder.model
    lm = module.lm
    tmp = directory.with_name(directory.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    config = copy.deepcopy(lm.config)
    if hasattr(config, "quantization_config"):  # a GGUF-loaded model is marked quantised; its weights are not
        del config.quantization_config
    clean = AutoModelForCausalLM.from_config(config)
    clean.load_state_dict(lm.state_dict())
    clean.save_pretrained(str(tmp))
    del clean
    encoder.tokenizer.save_pretrained(str(tmp))
    info = encoder.info
    sidecar = {"variant": module.variant, "chunk_size": module.chunk_size,
               "max_query_length": info.max_query_length, "max_document_length": info.max_document_length}
    # The model's own pruning (csplade-mini emits its top 16 / 64 terms): every format is measured as deployed.
    sidecar.update({k: v for k, v in (("query_top_k", info.query_top_k), ("document_top_k", info.document_top_k))
                    if v is not None})
    (tmp / "csplade_config.json").write_text(json.dumps(sidecar, indent=1), encoding="utf-8")
    tmp.replace(directory)


def prepare_texts(args: argparse.Namespace, cache_dir: Path, work: Path) -> tuple[Path, dict[str, Any], str]:
    """The snapshot directory, the texts (written to ``texts.json``) and the run's key."""
    from milco_os import loading
    from milco_os.evaluation.runner import load_eval_set
    from milco_os.loading import load_encoder, resolve_model
    from milco_os.models import layouts

    path, _ = resolve_model(args.model, cache_dir)
    # loading.fingerprint also knows the CSPLADE directories without a config.json (a GGUF base, an adapter).
    fingerprint = getattr(loading, "fingerprint", layouts.fingerprint)(path)
    snapshot = work / f"model-{digest(fingerprint)}"
    if not snapshot.is_dir():
        log(f"loading {args.model} (fp32) once, saving a snapshot for the formats: {snapshot}")
        encoder = load_encoder(args.model, cache_dir, device="cpu")
        if getattr(encoder.info, "family", None) != "csplade" or not hasattr(getattr(encoder, "model", None), "lm"):
            raise SystemExit(f"bench/quantisation.py: {args.model} is a {encoder.info.family} model; "
                             "this study quantises CSPLADE causal LMs")
        save_snapshot(encoder, snapshot)
        del encoder
        release_memory()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(snapshot))
    evalset, _ = load_eval_set("libreoffice-en", args.split, None, cache_dir)
    docs, queries, qrels = sample_eval(evalset, args.max_docs or None, seed=args.seed)
    if not queries:
        raise SystemExit(f"bench/quantisation.py: no judged queries among {len(docs)} documents")
    cut, mean_tokens = cut_to_tokens(tokenizer, [d["text"] for d in docs], args.doc_tokens)
    docs = [{**d, "text": t} for d, t in zip(docs, cut, strict=True)]
    texts = {"docs": docs, "queries": queries, "qrels": qrels, "mean_doc_tokens": mean_tokens}
    key = digest(fingerprint, texts, args.threads, args.quantise_head, DOC_BATCH, QUERY_BATCH)
    return snapshot, texts, key


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run_format(name: str, cfg: dict[str, Any], result_file: Path) -> dict[str, Any]:
    """Run one format in a subprocess; its result (or why it failed) is written to ``result_file``."""
    cfg_file = result_file.with_suffix(".cfg.json")
    env = {**os.environ, "OMP_NUM_THREADS": str(cfg["threads"]), "TOKENIZERS_PARALLELISM": "false"}
    start = time.perf_counter()
    # ort-int8 exports (and quantises) the model once into the cache, in a process of its own, so that the
    # measured process only loads the result.
    for prepare_only in ([True] if FORMATS[name].kind == "ort" else []) + [False]:
        cfg_file.write_text(json.dumps({**cfg, "prepare_only": prepare_only}), encoding="utf-8")
        result_file.unlink(missing_ok=True)
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", str(cfg_file)],
                              capture_output=True, text=True, env=env)
        if proc.returncode != 0 or not result_file.is_file():
            tail = " | ".join(proc.stderr.strip().splitlines()[-3:])[-300:]
            return {"status": f"failed (exit {proc.returncode}): {tail}",
                    "wall_s": round(time.perf_counter() - start, 1)}
        result = json.loads(result_file.read_text(encoding="utf-8"))
        if result.get("status") != "prepared":
            break
    result["wall_s"] = round(time.perf_counter() - start, 1)
    return result


def summarise(results: dict[str, dict[str, Any]], texts: dict[str, Any], work: Path) -> None:
    """Add quality, top-10 overlap with fp32 and mean term counts to every ``ok`` result, in place."""
    query_ids = [q["id"] for q in texts["queries"]]
    doc_ids = [d["id"] for d in texts["docs"]]
    reference = None
    if results.get("fp32", {}).get("status") == "ok":
        reference = load_vectors(work / "fp32.npz")
    for name, result in results.items():
        if result.get("status") != "ok":
            continue
        q_vecs, d_vecs = load_vectors(work / f"{name}.npz")
        result.update({k: round(v, 4) for k, v in quality(q_vecs, d_vecs, query_ids, doc_ids, texts["qrels"]).items()})
        result["doc_terms"] = round(float(np.mean([len(v) for v in d_vecs])), 1) if d_vecs else 0.0
        result["query_terms"] = round(float(np.mean([len(v) for v in q_vecs])), 1) if q_vecs else 0.0
        if reference is not None:
            result["top10_overlap"] = round(mean_overlap(d_vecs, reference[1]), 4)
            result["query_top10_overlap"] = round(mean_overlap(q_vecs, reference[0]), 4)


COLUMNS = [("nDCG@10", "ndcg@10", 3), ("MRR@10", "mrr@10", 3), ("top-10 overlap", "top10_overlap", 3),
           ("q/s (b=1)", "queries_per_s", 2), ("docs/s (b=8)", "documents_per_s", 2),
           ("weights MB", "weights_mb", 1), ("RSS ready MB", "rss_ready_mb", 1), ("peak RSS MB", "peak_rss_mb", 1),
           ("doc terms", "doc_terms", 0)]


def markdown_table(results: Mapping[str, Mapping[str, Any]]) -> str:
    head = "| format | " + " | ".join(c[0] for c in COLUMNS) + " |"
    rule = "|---|" + "---:|" * len(COLUMNS)
    rows = [head, rule]
    for name, r in results.items():
        if r.get("status") != "ok":
            rows.append(f"| {name} | {r.get('status', '?')} |" + " |" * (len(COLUMNS) - 1))
            continue
        cells = []
        for _, key, digits in COLUMNS:
            v = r.get(key)
            cells.append("-" if v is None else f"{v:.{digits}f}")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def chart(results: Mapping[str, Mapping[str, Any]], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    panels = [("nDCG@10", "ndcg@10"), ("queries/s (batch 1)", "queries_per_s"),
              ("documents/s (batch 8)", "documents_per_s"), ("peak RSS MB (over baseline)", "peak_rss_mb")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 0.45 * len(names) + 1.6), sharey=True)
    for ax, (label, key) in zip(axes, panels, strict=True):
        values = [results[n].get(key) if results[n].get("status") == "ok" else None for n in names]
        ax.barh(names, [v or 0 for v in values], color=["tab:grey" if n == "fp32" else "tab:blue" for n in names])
        for i, v in enumerate(values):
            ax.text(v or 0, i, f" {v:.3g}" if v is not None else " n/a", va="center", fontsize=7)
        ax.set_title(label, fontsize=9)
        ax.margins(x=0.25)
    axes[0].invert_yaxis()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="csplade-mini", help="built-in name or CSPLADE directory")
    parser.add_argument("--split", default="test", choices=["dev", "test"])
    parser.add_argument("--max-docs", type=int, default=DEFAULT_MAX_DOCS,
                        help=f"documents sampled from the split (default {DEFAULT_MAX_DOCS}; 0: all)")
    parser.add_argument("--doc-tokens", type=int, default=DOC_TOKENS, help="tokens kept per document")
    parser.add_argument("--formats", default="all", help=f"comma-separated subset of {', '.join(FORMATS)}")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch / onnxruntime threads")
    parser.add_argument("--quantise-head", action="store_true",
                        help="quantise the LM head too (torchao, bitsandbytes formats)")
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--fresh", action="store_true", help="run every format again (ignore kept results)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="milco-os cache (default: the usual one)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="result JSON")
    parser.add_argument("--chart", type=Path, default=CHART, help="the chart (PNG)")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        cfg = json.loads(args.child.read_text(encoding="utf-8"))
        result = run_child(cfg)
        Path(cfg["result_file"]).write_text(json.dumps(result, indent=1), encoding="utf-8")
        return 0

    try:
        formats = parse_formats(args.formats)
    except ValueError as e:
        parser.error(str(e))
    problem = missing_required(formats)
    if problem:
        raise SystemExit(problem)
    if args.max_docs < 0 or args.doc_tokens < 1 or args.threads < 1:
        parser.error("--max-docs must be >= 0, --doc-tokens and --threads >= 1")
    from milco_os.settings import get_settings

    cache_dir = args.cache_dir or get_settings().cache_dir
    root = cache_dir / "bench" / "quantisation"
    root.mkdir(parents=True, exist_ok=True)
    snapshot, texts, key = prepare_texts(args, cache_dir, root)
    work = root / key
    work.mkdir(exist_ok=True)
    (work / "texts.json").write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")
    log(f"{len(texts['queries'])} queries, {len(texts['docs'])} documents (~{texts['mean_doc_tokens']:.0f} tokens); "
        f"formats: {', '.join(formats)}; kept results: {work}")

    results: dict[str, dict[str, Any]] = {}
    for name in formats:
        result_file = work / f"{name}.json"
        kept = json.loads(result_file.read_text(encoding="utf-8")) if result_file.is_file() else {}
        if kept.get("status") == "ok" and (work / f"{name}.npz").is_file() and not args.fresh:
            results[name] = kept
            log(f"{name}: kept from an earlier run")
            continue
        result_file.unlink(missing_ok=True)
        cfg = {"format": name, "snapshot": str(snapshot), "cache_dir": str(cache_dir), "threads": args.threads,
               "quantise_head": args.quantise_head, "texts_file": str(work / "texts.json"),
               "vectors_file": str(work / f"{name}.npz"), "result_file": str(result_file)}
        log(f"{name}: running")
        results[name] = run_format(name, cfg, result_file)
        log(f"{name}: {results[name].get('status')} ({results[name].get('wall_s', 0):.0f} s)")

    summarise(results, texts, work)
    table = markdown_table(results)
    print(f"\nCSPLADE quantisation study: {args.model}, libreoffice-en {args.split}, {len(texts['queries'])} queries, "
          f"{len(texts['docs'])} documents cut at {args.doc_tokens} tokens, {args.threads} threads\n")
    print(table)
    record = {
        "model": args.model, "dataset": "libreoffice-en", "split": args.split,
        "settings": {"max_docs": args.max_docs, "doc_tokens": args.doc_tokens,
                     "mean_doc_tokens": round(texts["mean_doc_tokens"], 1),
                     "query_batch": QUERY_BATCH, "doc_batch": DOC_BATCH, "threads": args.threads,
                     "quantise_head": args.quantise_head, "seed": args.seed, "formats": formats},
        "counts": {"queries": len(texts["queries"]), "documents": len(texts["docs"])},
        "machine": {**cpu_facts(args.threads), "versions": versions()},
        "formats": {n: {"description": FORMATS[n].description, **r} for n, r in results.items()},
        "table": table,
        "notes": [
            "quality: exact in-memory scoring (sparse dot products), documents with score 0 are not retrieved",
            "top10_overlap: mean over documents of |top10(format) & top10(fp32)| / 10",
            "memory: MB over the RSS right after the imports (rss_baseline_mb); peak = VmHWM while encoding",
        ],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    title = f"CSPLADE quantisation on CPU: {Path(args.model).name}, {len(texts['docs'])} docs, {args.threads} threads"
    png = chart(results, args.chart, title)
    log(f"wrote {args.out} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
