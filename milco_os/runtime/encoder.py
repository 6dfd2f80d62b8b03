"""The encoder interface: texts -> tokens -> model -> :class:`Encoded` (pivot + echo SparseVectors).

Model families (SPLADE, MILCO, CSPLADE) and runtimes (torch, onnxruntime) differ only in
:meth:`SparseEncoder._forward`; tokenisation, length-bucketed batching, windowing of long texts and
the merge of windows are shared here. Long texts are never truncated: they are split into overlapping
windows, the pivot view is max-merged over windows (SPLADE's own pooling). The echo view sums a piece's
weights within a window (MILCO's LexEcho) and, by default, takes the largest such sum over windows
(``window_merge="max"``), so that a page's echo weights do not grow with its length: with a sum over all
windows, long pages outscored the right page for any query (issue 11). ``window_merge="sum"`` counts
every position once over the whole text instead. A model trained with top-k masking says so in its
:class:`ModelInfo` (``query_top_k`` / ``document_top_k``): its merged pivot view is then cut to that many terms.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from milco_os.errors import EncodingError, ModelError
from milco_os.pruning import Prune
from milco_os.types import (
    DenseInfo,
    Encoded,
    ModelInfo,
    SparseVector,
    Vocab,
)

#: Batching on a GPU, where a batch should fill the device rather than a cache: up to 256 windows at once, as
#: long as rows x padded width stays within 65,536 tokens (128 windows of 512 tokens, 256 of up to 256).
#: A starting point, not a measurement: no GPU was available where these were chosen (docs/scaling-out.md).
GPU_BATCHING = {"batch_size": 256, "max_batch_tokens": 65_536}


def validate_texts(texts: Any) -> list[str]:
    """Return ``texts`` as a list of str, or raise an error naming the first bad position."""
    if isinstance(texts, str):
        msg = "texts must be a list of strings, not a single string"
        raise EncodingError(msg)
    out = list(texts)
    for i, text in enumerate(out):
        if not isinstance(text, str):
            kind = "null" if text is None else type(text).__name__
            msg = f"texts[{i}] is {kind}; every text must be a string"
            raise EncodingError(msg)
    return out


def keep_top_k(encoded: list[Encoded], k: int | None) -> list[Encoded]:
    """The model's own top-k (``ModelInfo.query_top_k`` / ``document_top_k``): each pivot view cut to its
    ``k`` heaviest terms (ties by term id, :func:`milco_os.pruning.top_k`), after the windows are merged; the
    echo view is left as it is. ``k = None``: unchanged."""
    if k is None:
        return encoded
    rule = Prune("top_k", k)
    return [dataclasses.replace(e, pivot=rule.apply(e.pivot)) for e in encoded]


@dataclass
class _Window:
    text_index: int
    input_ids: list[int]
    owned: tuple[int, int]  # [start, end) positions whose echo weight this window contributes


class SparseEncoder:
    """Base class: subclasses implement :meth:`_forward` for one runtime."""

    def __init__(
        self,
        info: ModelInfo,
        tokenizer: Any,
        *,
        batch_size: int = 32,
        max_batch_tokens: int | None = None,
        window_overlap: float = 0.25,
        echo_special_tokens: bool = False,
        window_merge: str = "max",
        max_windows: int = 256,
    ) -> None:
        if batch_size < 1:
            msg = f"batch_size must be >= 1, got {batch_size}"
            raise ValueError(msg)
        if max_batch_tokens is not None and max_batch_tokens < 1:
            msg = f"max_batch_tokens must be >= 1, got {max_batch_tokens}"
            raise ValueError(msg)
        self.max_batch_tokens = max_batch_tokens
        if not 0 <= window_overlap < 1:
            msg = f"window_overlap must be in [0, 1), got {window_overlap}"
            raise ValueError(msg)
        if window_merge not in ("max", "sum"):
            msg = f"window_merge must be 'max' or 'sum', got {window_merge!r}"
            raise ValueError(msg)
        self.window_merge = window_merge
        # A bound on the work one text can cause (~100k tokens at 512-token windows); the text after the
        # last window is not encoded. Ingest refuses such texts before they get here (MAX_DOCUMENT_CHARS).
        self.max_windows = max_windows
        self.info = info
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.window_overlap = window_overlap
        self.echo_special_tokens = echo_special_tokens
        # The special tokens the tokenizer wraps a text in ([CLS] .. [SEP], <s> .. </s>, <bos> ..), read
        # off one encoding so that every window gets the same wrapping.
        plain = list(tokenizer("a", add_special_tokens=False)["input_ids"])
        wrapped = list(tokenizer("a")["input_ids"])
        at = next(i for i in range(len(wrapped)) if wrapped[i : i + len(plain)] == plain)
        self._prefix = wrapped[:at]
        self._suffix = wrapped[at + len(plain) :]
        self._prefix_len = len(self._prefix)
        self._n_special = len(self._prefix) + len(self._suffix)
        self._pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    # ------------------------------------------------------------------ public API
    @property
    def has_echo(self) -> bool:
        return self.info.echo_vocab is not None

    @property
    def has_dense(self) -> bool:
        return self.info.dense is not None

    def encode_queries(self, texts: Sequence[str], *, dense: bool = False) -> list[Encoded]:
        """``dense``: also the dense view (:attr:`has_dense` models only), from the same pass."""
        encoded = self._encode(validate_texts(texts), self.info.max_query_length, dense)
        return keep_top_k(encoded, self.info.query_top_k)

    def encode_documents(self, texts: Sequence[str], *, dense: bool = False) -> list[Encoded]:
        encoded = self._encode(validate_texts(texts), self.info.max_document_length, dense)
        return keep_top_k(encoded, self.info.document_top_k)

    # ------------------------------------------------------------------ runtime hooks
    def _forward(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[B, L] int64 ids and mask -> (pivot [B, V_pivot] float32, echo [B, L] float32)."""
        raise NotImplementedError

    def _forward_dense(
        self, input_ids: np.ndarray, attention_mask: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """As :meth:`_forward`, plus the dense view [B, D] float32 (L2-normalised per window)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ internals
    def _windows(self, text_index: int, ids: list[int], max_length: int) -> list[_Window]:
        content = max(max_length - self._n_special, 1)
        step = max(int(content * (1 - self.window_overlap)), 1)
        starts = [0] if len(ids) <= content else list(range(0, len(ids) - content + step, step))
        starts = [s for s in starts if s < len(ids)][: self.max_windows] or [0]
        windows = []
        for k, start in enumerate(starts):
            piece = ids[start : start + content]
            full = self._prefix + piece + self._suffix
            is_first, is_last = k == 0, k == len(starts) - 1
            # Summed over windows, each position counts once (the part before the next window starts);
            # merged by max, each window scores its whole content.
            last_owned = is_last or self.window_merge == "max"
            owned_end = len(piece) if last_owned else min(starts[k + 1] - start, len(piece))
            lo = self._prefix_len
            hi = self._prefix_len + owned_end
            if self.echo_special_tokens:
                # Special tokens count once per text: the prefix in the first window, the suffix in the last.
                lo = 0 if is_first or self.window_merge == "max" else lo
                hi = len(full) if last_owned else hi
            windows.append(_Window(text_index, full, (lo, hi)))
        return windows

    def _batches(self, windows: list[_Window]) -> list[list[_Window]]:
        """Length-bucketed batches: sorted by length, so padding (wasted compute) stays small; each holds at
        most ``batch_size`` windows and, with ``max_batch_tokens``, at most that many padded tokens (long
        windows come in smaller batches, short ones in larger)."""
        batches: list[list[_Window]] = []
        batch: list[_Window] = []
        for window in sorted(windows, key=lambda w: len(w.input_ids)):
            full = len(batch) == self.batch_size or (
                self.max_batch_tokens is not None and (len(batch) + 1) * len(window.input_ids) > self.max_batch_tokens
            )
            if batch and full:
                batches.append(batch)
                batch = []
            batch.append(window)
        if batch:
            batches.append(batch)
        return batches

    def _encode(self, texts: list[str], max_length: int, with_dense: bool = False) -> list[Encoded]:
        if not texts:
            return []
        if with_dense and self.info.dense is None:
            msg = f"model {self.info.name!r} has no dense view (sparse only)"
            raise ModelError(msg)
        tokenized = self.tokenizer(texts, add_special_tokens=False, return_attention_mask=False)["input_ids"]
        windows: list[_Window] = []
        for i, ids in enumerate(tokenized):
            if ids:  # an empty text encodes to empty vectors without running the model
                windows.extend(self._windows(i, ids, max_length))

        pivot_vocab, echo_vocab = self.info.pivot_vocab, self.info.echo_vocab
        pivot_dense: dict[int, np.ndarray] = {}
        echo_sums: dict[int, dict[int, float]] = {}
        # A text's dense view: the mean of its windows' embeddings, normalised again.
        dense_sums: dict[int, np.ndarray] = {}
        for batch in self._batches(windows):
            width = len(batch[-1].input_ids)
            ids = np.full((len(batch), width), self._pad_id, dtype=np.int64)
            mask = np.zeros((len(batch), width), dtype=np.int64)
            for r, w in enumerate(batch):
                ids[r, : len(w.input_ids)] = w.input_ids
                mask[r, : len(w.input_ids)] = 1
            if with_dense:
                pivot, echo, embedded = self._forward_dense(ids, mask)
                for r, w in enumerate(batch):
                    acc = dense_sums.get(w.text_index)
                    dense_sums[w.text_index] = embedded[r].astype(np.float32) if acc is None else acc + embedded[r]
            else:
                pivot, echo = self._forward(ids, mask)
            for r, w in enumerate(batch):
                acc = pivot_dense.get(w.text_index)
                pivot_dense[w.text_index] = pivot[r].copy() if acc is None else np.maximum(acc, pivot[r])
                if echo_vocab is not None:
                    lo, hi = w.owned
                    window: dict[int, float] = {}
                    for token, weight in zip(w.input_ids[lo:hi], echo[r, lo:hi].tolist(), strict=True):
                        if weight > 0:
                            window[token] = window.get(token, 0.0) + weight
                    sums = echo_sums.setdefault(w.text_index, {})
                    for token, weight in window.items():
                        old = sums.get(token, 0.0)
                        sums[token] = max(old, weight) if self.window_merge == "max" else old + weight

        results = []
        for i in range(len(texts)):
            dense = pivot_dense.get(i)
            if dense is None:
                pivot_vec = SparseVector.empty(pivot_vocab)
            else:
                nz = np.flatnonzero(dense > 0)
                pivot_vec = SparseVector(nz.astype(np.int64), dense[nz].astype(np.float32), pivot_vocab)
            if echo_vocab is None or not echo_sums.get(i):
                echo_vec = SparseVector.empty(echo_vocab or pivot_vocab)
            else:
                sums = echo_sums[i]
                echo_vec = SparseVector(
                    np.fromiter(sums.keys(), dtype=np.int64, count=len(sums)),
                    np.fromiter(sums.values(), dtype=np.float32, count=len(sums)),
                    echo_vocab,
                )
            results.append(Encoded(pivot_vec, echo_vec, self._dense_of(dense_sums.get(i)) if with_dense else None))
        return results

    @staticmethod
    def _dense_of(summed: np.ndarray | None) -> np.ndarray | None:
        """A text's dense view from the sum of its windows' embeddings (an empty text has none: a zero vector
        has no cosine)."""
        if summed is None:
            return None
        norm = float(np.linalg.norm(summed))
        return (summed / norm if norm > 0 else summed).astype(np.float32)


MODEL_INFO_FILE = "milco_os_model.json"
VOCABS_FILE = "milco_os_vocabs.json"


def save_model_info(info: ModelInfo, directory: Path) -> None:
    """Write ``info`` (and its vocabularies) next to exported weights, so the directory is self-describing."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    record = {
        "name": info.name,
        "family": info.family,
        "fingerprint": info.fingerprint,
        "max_query_length": info.max_query_length,
        "max_document_length": info.max_document_length,
        "query_top_k": info.query_top_k,
        "document_top_k": info.document_top_k,
        "pivot_vocab": info.pivot_vocab.name,
        "echo_vocab": info.echo_vocab.name if info.echo_vocab is not None else None,
        "details": info.details,
        "dense": dataclasses.asdict(info.dense) if info.dense is not None else None,
    }
    (directory / MODEL_INFO_FILE).write_text(json.dumps(record, indent=2, default=str), encoding="utf-8")
    vocabs = {"pivot": list(info.pivot_vocab.tokens)}
    if info.echo_vocab is not None:
        vocabs["echo"] = list(info.echo_vocab.tokens)
    (directory / VOCABS_FILE).write_text(json.dumps(vocabs, ensure_ascii=False), encoding="utf-8")


def load_model_info(directory: Path) -> ModelInfo:
    """Read what :func:`save_model_info` wrote; errors name the missing or broken file."""
    directory = Path(directory)
    files = {}
    for name in (MODEL_INFO_FILE, VOCABS_FILE):
        path = directory / name
        if not path.is_file():
            msg = f"{path}: missing; expected a directory written by milco-os (export-onnx or model build)"
            raise ModelError(msg)
        try:
            files[name] = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as e:
            msg = f"{path}: not valid JSON ({e})"
            raise ModelError(msg) from e
    record, vocabs = files[MODEL_INFO_FILE], files[VOCABS_FILE]
    try:
        pivot = Vocab(record["pivot_vocab"], tuple(vocabs["pivot"]))
        echo = Vocab(record["echo_vocab"], tuple(vocabs["echo"])) if record.get("echo_vocab") else None
        return ModelInfo(
            name=record["name"],
            family=record["family"],
            fingerprint=record["fingerprint"],
            pivot_vocab=pivot,
            echo_vocab=echo,
            max_query_length=int(record["max_query_length"]),
            max_document_length=int(record["max_document_length"]),
            details=dict(record.get("details") or {}),
            # Absent in exports written before these keys existed: no top-k.
            query_top_k=record.get("query_top_k"),
            document_top_k=record.get("document_top_k"),
            dense=DenseInfo(**record["dense"]) if record.get("dense") else None,
        )
    except KeyError as e:
        msg = f"{directory / MODEL_INFO_FILE}: missing key {e}"
        raise ModelError(msg) from e
    except (ValueError, TypeError) as e:
        msg = f"{directory / MODEL_INFO_FILE}: {e}"
        raise ModelError(msg) from e
