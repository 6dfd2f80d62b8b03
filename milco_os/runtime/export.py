"""Export a milco-os torch model to ONNX as a self-describing directory, optionally with int8 / fp16 variants.

Layout of an exported directory (one directory holds every variant of one source model)::

    model.onnx             fp32 graph; always written, the base the variants are derived from
    model.int8.onnx        dynamic int8 weights (``quantize="int8"``)
    model.fp16.onnx        float16 weights and compute, int64 inputs, float32 outputs (``quantize="fp16"``)
    <file>.data            external weights, only for graphs too large for one protobuf (> ~1.8 GB)
    milco_os_onnx.json     export manifest: opset, exporter, versions, variants, the default variant
    milco_os_model.json    ModelInfo (the *source* model's fingerprint: an index built with torch and one
    milco_os_vocabs.json   built with any ONNX variant of the same weights stay compatible)
    tokenizer files        ``tokenizer.save_pretrained``

Every graph has inputs ``input_ids`` / ``attention_mask`` (int64 [batch, sequence]) and outputs ``pivot``
(float32 [batch, V_pivot]) and ``echo`` (float32 [batch, sequence]), the contract of every model family. A model
with a dense view (``ModelInfo.dense``) adds an output ``dense_input`` (the states its dense view starts from,
[batch, sequence, hidden]) and a small second graph, ``dense.onnx`` (inputs ``dense_input`` and
``attention_mask``, output ``dense`` [batch, D], one L2-normalised row per window; fp32 for every variant).
Two graphs because onnxruntime runs a whole graph whatever outputs are asked for: a sparse-only call then
costs what it cost before the dense view existed, and a dense call adds only the second graph.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from milco_os.errors import ModelError
from milco_os.runtime.encoder import save_model_info
from milco_os.types import ModelInfo

if TYPE_CHECKING:
    from milco_os.runtime.torch_runtime import TorchEncoder

log = logging.getLogger(__name__)

MANIFEST_FILE = "milco_os_onnx.json"
#: 3: a model's dense view is exported too (``dense_input`` and ``dense.onnx``). Part of the cached export's
#: directory name, so an export made before it is made again.
MANIFEST_FORMAT = 3
DENSE_FILE = "dense.onnx"
#: Variant name -> file name. ``None`` (no quantization) is the fp32 variant.
VARIANT_FILES = {"fp32": "model.onnx", "int8": "model.int8.onnx", "fp16": "model.fp16.onnx"}
QUANTIZATIONS = ("int8", "fp16")
#: Opset 17 has LayerNormalization and is run by every onnxruntime >= 1.14 (CPU and CUDA).
DEFAULT_OPSET = 17
#: Graphs whose weights exceed this are saved with external data (protobuf's hard limit is 2 GB).
EXTERNAL_DATA_BYTES = 1_800_000_000

INPUT_NAMES = ["input_ids", "attention_mask"]
OUTPUT_NAMES = ["pivot", "echo"]
DENSE_INPUT = "dense_input"
DENSE_OUTPUT = "dense"
DYNAMIC_AXES = {
    "input_ids": {0: "batch", 1: "sequence"},
    "attention_mask": {0: "batch", 1: "sequence"},
    "pivot": {0: "batch"},
    "echo": {0: "batch", 1: "sequence"},
    DENSE_INPUT: {0: "batch", 1: "sequence"},
    DENSE_OUTPUT: {0: "batch"},
}

#: int8 settings (see bench/encode.py for the measurements behind them): per-channel weight scales keep
#: the top terms of the vocabulary projection stable; symmetric int8 weights are what MLAS's
#: fast (VNNI / AVX2) int8 GEMM paths expect.
INT8_PER_CHANNEL = True
INT8_OP_TYPES = ["MatMul", "Gemm"]


#: Model families onnxruntime's dynamic int8 cannot serve, and why (measured: docs/csplade.md).
NO_INT8 = {
    "csplade": "onnxruntime's dynamic int8 quantises each MatMul's input with one scale per tensor, and a causal "
               "LM's activations carry outlier channels (max/median above 10,000 in some layers of csplade-mini, "
               "where nearly every other value then rounds to zero), so its terms are lost (top-10 overlap "
               "with fp32: 0.001); use fp32 or --quantize fp16",
}


def check_quantization(family: str, quantize: str | None) -> None:
    """Refuse, with one line naming the reason, a quantisation that ruins this model family's vectors."""
    if variant_name(quantize) == "int8" and family in NO_INT8:
        msg = f"--quantize int8 is refused for {family} models: {NO_INT8[family]}"
        raise ModelError(msg)


def variant_name(quantize: str | None) -> str:
    """``None`` / ``"fp32"`` / ``"int8"`` / ``"fp16"`` -> the variant name; anything else is a ModelError."""
    name = "fp32" if quantize is None else str(quantize).lower()
    if name not in VARIANT_FILES:
        msg = f"quantize {quantize!r}: expected one of {', '.join(QUANTIZATIONS)} (or none for fp32)"
        raise ModelError(msg)
    return name


def read_manifest(directory: Path) -> dict[str, Any] | None:
    """The export manifest of ``directory``, or None when there is none (e.g. an older or foreign export)."""
    path = Path(directory) / MANIFEST_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        msg = f"{path}: not valid JSON ({e})"
        raise ModelError(msg) from e


def export_onnx(
    encoder: TorchEncoder, out_dir: Path, quantize: str | None = None, opset: int | None = None
) -> Path:
    """Export ``encoder.model`` into ``out_dir`` (layout in the module docstring); return the model file
    of the requested variant. ``model.onnx`` (fp32) is always (re)written; variants exported earlier from
    the same source weights are kept, stale ones removed. The requested variant becomes the directory's
    default, the one :func:`milco_os.runtime.onnx_runtime.load_onnx_dir` loads without ``quantize``."""
    variant = variant_name(quantize)
    check_quantization(encoder.info.family, variant)
    opset = int(opset or DEFAULT_OPSET)
    model = getattr(encoder, "model", None)
    if model is None:
        msg = f"{type(encoder).__name__} has no torch model to export; export_onnx needs a torch encoder"
        raise ModelError(msg)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    info: ModelInfo = encoder.info

    import onnx
    import torch

    base = out_dir / VARIANT_FILES["fp32"]
    with tempfile.TemporaryDirectory(prefix=".export-", dir=out_dir) as tmp:
        raw = Path(tmp) / "model.onnx"
        _torch_export(encoder, model, raw, opset)
        try:
            proto = onnx.load(str(raw))
        except Exception as e:  # onnx raises DecodeError, OSError, ...
            msg = f"{raw}: the exporter wrote a graph onnx cannot read back: {e}"
            raise ModelError(msg) from e
        _save(proto, base)
    if info.dense is not None:
        _export_dense_graph(encoder, model, out_dir / DENSE_FILE, opset)
    else:
        _remove(out_dir / DENSE_FILE)
    for graph in (base, *([out_dir / DENSE_FILE] if info.dense is not None else [])):
        try:
            onnx.checker.check_model(str(graph))  # a path (not a proto) also works for graphs with external data
        except onnx.checker.ValidationError as e:
            msg = f"{graph}: the exported graph fails onnx.checker: {e}"
            raise ModelError(msg) from e

    variants: dict[str, dict[str, Any]] = {"fp32": {"file": base.name}}
    try:
        previous = read_manifest(out_dir)
    except ModelError:  # a broken manifest from an interrupted export: start afresh
        previous = None
    if previous and previous.get("fingerprint") == info.fingerprint:
        for name, entry in (previous.get("variants") or {}).items():
            if name in QUANTIZATIONS and name != variant and (out_dir / entry.get("file", "")).is_file():
                variants[name] = entry
    for name in QUANTIZATIONS:  # files of another model's export would silently give wrong vectors
        if name not in variants and name != variant:
            _remove(out_dir / VARIANT_FILES[name])

    if variant == "int8":
        variants["int8"] = _quantize_int8(base, out_dir / VARIANT_FILES["int8"], len(info.pivot_vocab))
    elif variant == "fp16":
        variants["fp16"] = _convert_fp16(base, out_dir / VARIANT_FILES["fp16"])

    import onnxruntime

    manifest = {
        "format": MANIFEST_FORMAT,
        "name": info.name,
        "family": info.family,
        "fingerprint": info.fingerprint,
        "opset": opset,
        "exporter": "torch.onnx.export(dynamo=False)",
        "versions": {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__},
        "inputs": INPUT_NAMES,
        "outputs": output_names(info),
        "dense_graph": DENSE_FILE if info.dense is not None else None,
        "default": variant,
        "variants": variants,
    }
    (out_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    details = {**info.details, "runtime": "onnx", "onnx_opset": opset}
    save_model_info(dataclasses.replace(info, details=details), out_dir)
    try:
        encoder.tokenizer.save_pretrained(str(out_dir))
    except Exception as e:  # tokenizers raise many types (OSError, TypeError for unserialisable configs)
        msg = f"{out_dir}: cannot save the tokenizer next to the ONNX model: {e}"
        raise ModelError(msg) from e
    log.info("exported %s (%s) to %s", info.name, variant, out_dir / VARIANT_FILES[variant])
    return out_dir / VARIANT_FILES[variant]


# ---------------------------------------------------------------------------------------------- export
def output_names(info: ModelInfo) -> list[str]:
    return OUTPUT_NAMES + ([DENSE_INPUT] if info.dense is not None else [])


def _example_inputs(encoder: TorchEncoder, device: Any) -> tuple[Any, Any]:
    """Two rows of different lengths (the second padded), so the trace sees a real padding mask and
    no shape-specialised shortcut ("mask all ones -> drop it") is baked into the graph."""
    import torch

    ids = list(encoder.tokenizer("sparse retrieval exports one graph for every batch", add_special_tokens=False)
               ["input_ids"])[:12] or [encoder._pad_id]
    rows = [encoder._prefix + ids + encoder._suffix, encoder._prefix + ids[: max(len(ids) // 2, 1)] + encoder._suffix]
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), encoder._pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return input_ids.to(device), mask.to(device)


_SYMBOLICS_REGISTERED = False


def _register_symbolics() -> None:
    """ONNX translations the TorchScript exporter lacks: ``aten::isin`` (MILCO masks special tokens out of
    the pivot pooling with ``torch.isin``). Registered once per process, for opset 13 and later."""
    global _SYMBOLICS_REGISTERED
    if _SYMBOLICS_REGISTERED:
        return
    import torch
    from torch.onnx import register_custom_op_symbolic, symbolic_helper

    @symbolic_helper.parse_args("v", "v", "b", "b")
    def isin(g: Any, elements: Any, test_elements: Any, assume_unique: bool, invert: bool) -> Any:
        # isin(x, t) = any(x[..., None] == flatten(t), axis=-1), spelled with opset-13 ops.
        flat = g.op("Reshape", test_elements, g.op("Constant", value_t=torch.tensor([-1], dtype=torch.long)))
        last = g.op("Constant", value_t=torch.tensor([-1], dtype=torch.long))
        equal = g.op("Equal", g.op("Unsqueeze", elements, last), flat)
        hits = g.op("ReduceSum", g.op("Cast", equal, to_i=7), last, keepdims_i=0)  # 7: INT64
        found = g.op("Greater", hits, g.op("Constant", value_t=torch.tensor(0, dtype=torch.long)))
        return g.op("Not", found) if invert else found

    register_custom_op_symbolic("aten::isin", isin, 13)
    _SYMBOLICS_REGISTERED = True


def _torch_export(encoder: TorchEncoder, model: Any, path: Path, opset: int) -> None:
    """Trace ``model`` to ONNX with the TorchScript exporter (``dynamo=False``).

    Why not the dynamo exporter (torch's default since 2.9): it needs ``onnxscript`` (not a milco-os
    dependency) and its symbolic shapes trip over Hugging Face masking code for some architectures,
    while the tracer exports BERT/XLM-R (SPLADE, MILCO) and Llama-style (CSPLADE) models with dynamic
    batch and sequence axes reliably; the parity tests check the result against torch on other shapes.
    Its TracerWarnings (Python bools read off tensors in transformers' mask helpers) are expected: those
    helpers keep the mask when tracing, which the tests confirm.
    """
    import torch

    params = list(model.parameters())
    if params and any(p.dtype != torch.float32 for p in params):
        model = copy.deepcopy(model).to(device="cpu", dtype=torch.float32)  # export fp32; fp16 is a variant
        params = list(model.parameters())
    device = params[0].device if params else torch.device("cpu")
    args = _example_inputs(encoder, device)
    _register_symbolics()
    was_training = model.training
    model.eval()
    graph = _with_dense(model).eval() if encoder.info.dense is not None else model
    try:
        _trace(graph, args, path, INPUT_NAMES, output_names(encoder.info), opset, f"{encoder.info.name!r}")
    finally:
        model.train(was_training)


def _trace(module: Any, args: tuple[Any, ...], path: Path, inputs: list[str], outputs: list[str], opset: int,
           what: str) -> None:
    """``torch.onnx.export`` (TorchScript tracer, dynamic batch and sequence axes) with its warnings logged."""
    import torch

    try:
        with warnings.catch_warnings(record=True) as caught, torch.no_grad():
            warnings.simplefilter("always")
            torch.onnx.export(module, args, str(path), dynamo=False, input_names=inputs, output_names=outputs,
                              dynamic_axes={k: DYNAMIC_AXES[k] for k in (*inputs, *outputs)}, opset_version=opset,
                              do_constant_folding=True)
        for w in caught:
            log.debug("onnx export: %s: %s", w.category.__name__, w.message)
    except Exception as e:  # the exporter raises RuntimeError, TypeError, torch.onnx.errors.* ...
        msg = f"ONNX export of {what} (opset {opset}) failed: {type(e).__name__}: {e}"
        raise ModelError(msg) from e


def _with_dense(model: Any) -> Any:
    """``model`` as a module whose one call returns ``(pivot, echo, dense_input)``: the main graph of a model with a
    dense view."""
    import torch

    from milco_os.models.pooling import log_saturate

    class WithDenseInput(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            hidden, lower = self.model.hidden_and_lower(input_ids, attention_mask)
            pivot = log_saturate(self.model.pooled_logits(hidden, input_ids, attention_mask))
            return pivot, self.model.echo_weights(hidden, attention_mask), lower

    return WithDenseInput()


def _export_dense_graph(encoder: TorchEncoder, model: Any, path: Path, opset: int) -> None:
    """``dense.onnx``: the dense view from the main graph's ``dense_input`` (the original top layers, pooling)."""
    import torch

    class DenseHead(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, lower: Any, attention_mask: Any) -> Any:
            return self.model.dense_from(lower, attention_mask)

    input_ids, mask = _example_inputs(encoder, next(model.parameters()).device)
    with torch.no_grad():
        _, lower = model.hidden_and_lower(input_ids, mask)
    _trace(DenseHead().eval(), (lower, mask), path, [DENSE_INPUT, "attention_mask"], [DENSE_OUTPUT], opset,
           f"{encoder.info.name!r}'s dense view")


def _weights_bytes(proto: Any) -> int:
    return sum(len(t.raw_data) for t in proto.graph.initializer)


def _remove(path: Path) -> None:
    for p in (path, path.with_name(path.name + ".data")):
        if p.is_file():
            p.unlink()


def _save(proto: Any, path: Path) -> None:
    """Save ``proto`` to ``path``; weights go to ``<path>.data`` when one protobuf cannot hold them."""
    import onnx

    _remove(path)
    if _weights_bytes(proto) > EXTERNAL_DATA_BYTES:
        onnx.save_model(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=path.name + ".data", size_threshold=1024)
    else:
        onnx.save_model(proto, str(path))


# ---------------------------------------------------------------------------------------------- variants
class _DropToDebug(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        log.debug("onnxruntime.quantization: %s", record.getMessage())
        return False


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """onnxruntime.quantization logs through the *root* logger (``logging.warning``), which also installs a
    stderr handler on an unconfigured root for good; its advice ("run pre-processing first") was measured
    to change neither speed nor overlap here, so its records go to our debug log instead."""
    root = logging.getLogger()
    guard, drop = logging.NullHandler(), _DropToDebug()
    added = not root.handlers
    if added:
        root.addHandler(guard)  # keeps logging.warning from calling basicConfig
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)
        if added:
            root.removeHandler(guard)


def _quantize_int8(base: Path, target: Path, vocab_size: int) -> dict[str, Any]:
    """Dynamic int8 (weights quantised offline, activations per batch at run time): no calibration data
    needed, and the MatMuls that dominate a small encoder's cost (the vocabulary projection above all)
    run on int8 GEMM kernels."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    big = _weights_bytes(onnx.load(str(base), load_external_data=False)) > EXTERNAL_DATA_BYTES or (
        base.with_name(base.name + ".data").is_file()
    )
    _remove(target)
    try:
        with warnings.catch_warnings(), _quiet_root_logger():
            warnings.simplefilter("ignore")
            quantize_dynamic(
                str(base),
                str(target),
                op_types_to_quantize=INT8_OP_TYPES,
                per_channel=INT8_PER_CHANNEL,
                weight_type=QuantType.QInt8,
                use_external_data_format=big,
            )
    except Exception as e:  # onnxruntime.quantization raises plain Exceptions of many kinds
        _remove(target)
        msg = f"int8 quantization of {base} failed: {type(e).__name__}: {e}"
        raise ModelError(msg) from e
    return {"file": target.name, "method": "quantize_dynamic", "weight_type": "QInt8",
            "per_channel": INT8_PER_CHANNEL, "op_types": INT8_OP_TYPES}


def _convert_fp16(base: Path, target: Path) -> dict[str, Any]:
    """float16 weights and compute (half the size; fast on GPUs). ``keep_io_types`` keeps the int64
    inputs and float32 outputs, so callers never see float16."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    try:
        proto = onnx.load(str(base))
        big = _weights_bytes(proto) > EXTERNAL_DATA_BYTES
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            half = convert_float_to_float16(proto, keep_io_types=True, disable_shape_infer=big)
        _save(half, target)
    except Exception as e:  # onnx / the converter raise many kinds
        _remove(target)
        msg = f"float16 conversion of {base} failed: {type(e).__name__}: {e}"
        raise ModelError(msg) from e
    return {"file": target.name, "method": "convert_float_to_float16", "keep_io_types": True}
