"""Run an exported milco-os ONNX directory (see :mod:`milco_os.runtime.export`) with onnxruntime.

onnxruntime is imported here only, when an ONNX model is loaded, never when milco_os is imported.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np

from milco_os.errors import ModelError
from milco_os.runtime.encoder import GPU_BATCHING, SparseEncoder, load_model_info
from milco_os.runtime.export import (
    DENSE_FILE,
    DENSE_INPUT,
    DENSE_OUTPUT,
    MANIFEST_FILE,
    VARIANT_FILES,
    check_quantization,
    read_manifest,
    variant_name,
)
from milco_os.types import ModelInfo

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


def _cuda_device_present() -> bool:
    """Whether a CUDA device exists at all; saves a failing (and loud) CUDA session attempt on CPU machines.

    Asked of the CUDA driver itself (``cuInit`` + ``cuDeviceGetCount`` through ctypes), not of torch, whose
    import alone costs seconds on the onnx runtime's path."""
    import ctypes

    # Plain names: the dynamic loader searches its usual paths (ctypes.util.find_library would run ldconfig).
    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll", "libcuda.dylib"):
        try:
            driver = ctypes.CDLL(name)
        except OSError:
            continue
        try:
            count = ctypes.c_int(0)
            return driver.cuInit(0) == 0 and driver.cuDeviceGetCount(ctypes.byref(count)) == 0 and count.value > 0
        except (AttributeError, OSError):  # not the driver library after all
            return False
    return False


def make_session(
    model_path: Path, *, device: str | None = None, intra_op_num_threads: int = 0
) -> tuple[Any, str]:
    """An ``InferenceSession`` for ``model_path`` and the provider it runs on.

    ``device``: None picks CUDA when onnxruntime offers it and a session can actually be created on it
    (onnxruntime-gpu lists CUDA even where the CUDA libraries are missing), else CPU, with a log line;
    ``"cpu"`` forces CPU; ``"cuda"`` / ``"cuda:N"`` requires CUDA (ModelError otherwise).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = max(int(intra_op_num_threads), 0)  # 0: onnxruntime's default (all cores)
    options.log_severity_level = 3

    kind = (device or "auto").lower()
    if kind not in ("auto", "cpu") and not kind.startswith("cuda"):
        msg = f"device {device!r}: expected cpu, cuda or cuda:N for the onnx runtime"
        raise ModelError(msg)
    want_cuda = kind.startswith("cuda") or (
        kind == "auto" and CUDA in ort.get_available_providers() and _cuda_device_present()
    )
    providers: list[Any] = [CPU]
    if want_cuda:
        device_id = int(kind.split(":", 1)[1]) if ":" in kind else 0
        providers = [(CUDA, {"device_id": device_id}), CPU]
    try:
        session = ort.InferenceSession(str(model_path), options, providers=providers)
    except Exception as e:  # onnxruntime raises its own Fail / InvalidGraph / RuntimeException types
        msg = f"{model_path}: onnxruntime cannot load this model: {e}"
        raise ModelError(msg) from e
    active = session.get_providers()[0]
    if want_cuda and active != CUDA:
        if kind.startswith("cuda"):
            msg = (
                f"device {device!r}: onnxruntime could not create a CUDA session (providers available: "
                f"{ort.get_available_providers()}); check the CUDA/cuDNN libraries onnxruntime-gpu needs"
            )
            raise ModelError(msg)
        log.warning("onnxruntime: CUDA provider unavailable here, running %s on CPU", model_path.name)
    log.info("onnxruntime %s: %s on %s", ort.__version__, model_path.name, active)
    return session, active


class OnnxEncoder(SparseEncoder):
    """:class:`SparseEncoder` over an onnxruntime session (graph layout: :mod:`milco_os.runtime.export`)."""

    def __init__(
        self,
        info: ModelInfo,
        tokenizer: Any,
        model_path: Path,
        *,
        device: str | None = None,
        intra_op_num_threads: int = 0,
        session: tuple[Any, str] | None = None,
        **kwargs: Any,
    ) -> None:
        """``session``: an ``(InferenceSession, provider)`` pair made by :func:`make_session` for
        ``model_path`` (``device`` and ``intra_op_num_threads`` are then ignored); made here when None."""
        self.model_path = Path(model_path)
        self.session, self.provider = session or make_session(
            self.model_path, device=device, intra_op_num_threads=intra_op_num_threads
        )
        self.dense_session: Any = None
        if self.provider == CUDA:
            kwargs = {**GPU_BATCHING, **kwargs}  # larger batches unless the caller chose
        super().__init__(info, tokenizer, **kwargs)
        names = [i.name for i in self.session.get_inputs()]
        if names != ["input_ids", "attention_mask"]:
            msg = f"{self.model_path}: inputs are {names}; expected input_ids, attention_mask (a milco-os export)"
            raise ModelError(msg)

    def _forward(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pivot, echo = self.session.run(
            ["pivot", "echo"],
            {"input_ids": np.ascontiguousarray(input_ids, dtype=np.int64),
             "attention_mask": np.ascontiguousarray(attention_mask, dtype=np.int64)},
        )
        return np.asarray(pivot, dtype=np.float32), np.asarray(echo, dtype=np.float32)

    def _forward_dense(
        self, input_ids: np.ndarray, attention_mask: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        dense_path = self.model_path.with_name(DENSE_FILE)
        if DENSE_INPUT not in {o.name for o in self.session.get_outputs()} or not dense_path.is_file():
            msg = f"{self.model_path.parent}: this export has no dense view; export the model again"
            raise ModelError(msg)
        if self.dense_session is None:  # made on the first dense call: sparse-only use never loads it
            device = "cuda" if self.provider == CUDA else "cpu"  # where the main graph runs
            self.dense_session, _ = make_session(dense_path, device=device)
        mask = np.ascontiguousarray(attention_mask, dtype=np.int64)
        pivot, echo, lower = self.session.run(
            ["pivot", "echo", DENSE_INPUT], {"input_ids": np.ascontiguousarray(input_ids, dtype=np.int64),
                                             "attention_mask": mask})
        (dense,) = self.dense_session.run([DENSE_OUTPUT], {DENSE_INPUT: lower, "attention_mask": mask})
        return (np.asarray(pivot, dtype=np.float32), np.asarray(echo, dtype=np.float32),
                np.asarray(dense, dtype=np.float32))


def load_onnx_dir(path: Path, quantize: str | None = None, **encoder_kwargs: Any) -> OnnxEncoder:
    """Load an exported directory. ``quantize`` picks the variant (``"int8"``, ``"fp16"``, ``"fp32"``);
    None takes the directory's default (the variant last exported into it, fp32 without a manifest).
    ``encoder_kwargs`` go to :class:`OnnxEncoder` (``device``, ``intra_op_num_threads``, ``batch_size`` ...)."""
    path = Path(path)
    if not path.is_dir():
        msg = f"{path}: not a directory; expected a directory written by milco-os export-onnx"
        raise ModelError(msg)
    manifest = read_manifest(path)
    variant = variant_name(quantize) if quantize is not None else (manifest or {}).get("default", "fp32")
    variant = variant_name(variant)
    check_quantization((manifest or {}).get("family", ""), variant)  # an int8 export made before the refusal
    model_file = path / VARIANT_FILES[variant]
    if not model_file.is_file():
        exported = sorted(n for n, f in VARIANT_FILES.items() if (path / f).is_file())
        hint = (
            f"this directory has {', '.join(exported)}; re-export with --quantize {variant}"
            if exported else f"run milco-os export-onnx --out {path}"
        )
        msg = f"{model_file}: missing ({variant} variant); {hint}"
        raise ModelError(msg)
    if manifest is None:
        log.debug("%s: no %s; assuming a plain export", path, MANIFEST_FILE)
    info = load_model_info(path)
    info = dataclasses.replace(info, details={**info.details, "runtime": "onnx", "quantize": variant})
    from milco_os.models.tokenizer import load_tokenizer, prefetch

    # The tokenizer is read while onnxruntime builds the session: both release the GIL.
    prefetch(path)
    session = make_session(model_file, device=encoder_kwargs.pop("device", None),
                           intra_op_num_threads=encoder_kwargs.pop("intra_op_num_threads", 0))
    tokenizer = load_tokenizer(path)  # ModelError names the directory
    return OnnxEncoder(info, tokenizer, model_file, session=session, **encoder_kwargs)
