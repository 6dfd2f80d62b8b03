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

:meth:`SparseEncoder.encode_passages` keeps the windows apart instead: each is a passage with its own views
and the span of characters it covers, for indices that score a document by its best passage (docs/passages.md).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Sequence
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
    Passage,
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
    tokens: tuple[int, int]  # [start, end) of the text's tokens this window holds


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

    def encode_passages(self, texts: Sequence[str], *, dense: bool = False) -> list[list[Passage]]:
        """Each document's passages: its windows (what :meth:`encode_documents` merges), each encoded on its own,
        in text order, with the character span it covers (an empty text has none). A passage's echo view sums
        its own pieces; its dense view is its window's embedding."""
        return self._encode_passages(validate_texts(texts), dense)

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
    def _windows(self, text_index: int, ids: list[int], max_length: int, *, each_whole: bool) -> list[_Window]:
        """Overlapping windows over a text's ``ids``. ``each_whole``: every window's echo view counts its whole
        content (windows merged by max, or kept as passages); otherwise each position counts once over the text."""
        content = max(max_length - self._n_special, 1)
        step = max(int(content * (1 - self.window_overlap)), 1)
        starts = [0] if len(ids) <= content else list(range(0, len(ids) - content + step, step))
        starts = [s for s in starts if s < len(ids)][: self.max_windows] or [0]
        windows = []
        for k, start in enumerate(starts):
            piece = ids[start : start + content]
            full = self._prefix + piece + self._suffix
            is_first, is_last = k == 0, k == len(starts) - 1
            last_owned = is_last or each_whole
            owned_end = len(piece) if last_owned else min(starts[k + 1] - start, len(piece))
            lo = self._prefix_len
            hi = self._prefix_len + owned_end
            if self.echo_special_tokens:
                # Special tokens count once per text: the prefix in the first window, the suffix in the last.
                lo = 0 if is_first or each_whole else lo
                hi = len(full) if last_owned else hi
            windows.append(_Window(text_index, full, (lo, hi), (start, start + len(piece))))
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
        """Each text's windows merged into one :class:`Encoded` (see the module docstring)."""
        if not texts:
            return []
        tokenized = self._tokenize(texts, with_dense)["input_ids"]
        windows: list[_Window] = []
        for i, ids in enumerate(tokenized):
            if ids:  # an empty text encodes to empty vectors without running the model
                windows.extend(self._windows(i, ids, max_length, each_whole=self.window_merge == "max"))

        pivot_vocab, echo_vocab = self.info.pivot_vocab, self.info.echo_vocab
        pivot_dense: dict[int, np.ndarray] = {}
        echo_sums: dict[int, dict[int, float]] = {}
        # A text's dense view: the mean of its windows' embeddings, normalised again.
        dense_sums: dict[int, np.ndarray] = {}
        for w, pivot, window_echo, embedded in self._window_outputs(windows, with_dense):
            acc = pivot_dense.get(w.text_index)
            pivot_dense[w.text_index] = pivot.copy() if acc is None else np.maximum(acc, pivot)
            if embedded is not None:
                acc = dense_sums.get(w.text_index)
                dense_sums[w.text_index] = embedded.astype(np.float32) if acc is None else acc + embedded
            sums = echo_sums.setdefault(w.text_index, {})
            for token, weight in window_echo.items():
                old = sums.get(token, 0.0)
                sums[token] = max(old, weight) if self.window_merge == "max" else old + weight

        results = []
        for i in range(len(texts)):
            dense = pivot_dense.get(i)
            pivot_vec = SparseVector.empty(pivot_vocab) if dense is None else _nonzero(dense, pivot_vocab)
            echo_vec = _echo_vector(echo_sums.get(i), echo_vocab or pivot_vocab)
            results.append(Encoded(pivot_vec, echo_vec, self._dense_of(dense_sums.get(i)) if with_dense else None))
        return results

    def _encode_passages(self, texts: list[str], with_dense: bool) -> list[list[Passage]]:
        """Each text's windows, each kept as a :class:`Passage` with its characters' span."""
        tokens = self._tokenize(texts, with_dense, offsets=True)
        windows: list[_Window] = []
        for i, ids in enumerate(tokens["input_ids"]):
            if ids:
                windows.extend(self._windows(i, ids, self.info.max_document_length, each_whole=True))
        pivot_vocab, echo_vocab = self.info.pivot_vocab, self.info.echo_vocab
        found: list[list[tuple[int, Passage]]] = [[] for _ in texts]
        for w, pivot, window_echo, embedded in self._window_outputs(windows, with_dense):
            offsets = tokens["offset_mapping"][w.text_index]
            first, last = w.tokens
            encoded = Encoded(_nonzero(pivot, pivot_vocab), _echo_vector(window_echo, echo_vocab or pivot_vocab),
                              None if embedded is None else embedded.astype(np.float32))
            passage = Passage(int(offsets[first][0]), int(offsets[last - 1][1]), encoded)
            found[w.text_index].append((first, passage))
        passages = []
        for text_passages in found:
            ordered = [p for _, p in sorted(text_passages, key=lambda fp: fp[0])]
            kept = keep_top_k([p.encoded for p in ordered], self.info.document_top_k)
            passages.append([dataclasses.replace(p, encoded=e) for p, e in zip(ordered, kept, strict=True)])
        return passages

    def _tokenize(self, texts: list[str], with_dense: bool, *, offsets: bool = False) -> dict[str, Any]:
        if with_dense and self.info.dense is None:
            msg = f"model {self.info.name!r} has no dense view (sparse only)"
            raise ModelError(msg)
        extra = {"return_offsets_mapping": True} if offsets else {}
        return self.tokenizer(texts, add_special_tokens=False, return_attention_mask=False, **extra)

    def _window_outputs(
        self, windows: list[_Window], with_dense: bool
    ) -> Iterator[tuple[_Window, np.ndarray, dict[int, float], np.ndarray | None]]:
        """Run the model over ``windows`` in length-bucketed batches: per window, its pivot row [V_pivot], its echo
        weights summed per piece over the positions it owns, and (``with_dense``) its dense embedding."""
        echo_vocab = self.info.echo_vocab
        for batch in self._batches(windows):
            width = len(batch[-1].input_ids)
            ids = np.full((len(batch), width), self._pad_id, dtype=np.int64)
            mask = np.zeros((len(batch), width), dtype=np.int64)
            for r, w in enumerate(batch):
                ids[r, : len(w.input_ids)] = w.input_ids
                mask[r, : len(w.input_ids)] = 1
            if with_dense:
                pivot, echo, embedded = self._forward_dense(ids, mask)
            else:
                (pivot, echo), embedded = self._forward(ids, mask), None
            for r, w in enumerate(batch):
                window: dict[int, float] = {}
                if echo_vocab is not None:
                    lo, hi = w.owned
                    for token, weight in zip(w.input_ids[lo:hi], echo[r, lo:hi].tolist(), strict=True):
                        if weight > 0:
                            window[token] = window.get(token, 0.0) + weight
                yield w, pivot[r], window, None if embedded is None else embedded[r]

    @staticmethod
    def _dense_of(summed: np.ndarray | None) -> np.ndarray | None:
        """A text's dense view from the sum of its windows' embeddings (an empty text has none: a zero vector
        has no cosine)."""
        if summed is None:
            return None
        norm = float(np.linalg.norm(summed))
        return (summed / norm if norm > 0 else summed).astype(np.float32)


def _nonzero(row: np.ndarray, vocab: Vocab) -> SparseVector:
    """A dense pivot row as a :class:`SparseVector` of its positive weights."""
    nz = np.flatnonzero(row > 0)
    return SparseVector(nz.astype(np.int64), row[nz].astype(np.float32), vocab)


def _echo_vector(sums: dict[int, float] | None, vocab: Vocab) -> SparseVector:
    if not sums:
        return SparseVector.empty(vocab)
    return SparseVector(np.fromiter(sums.keys(), dtype=np.int64, count=len(sums)),
                        np.fromiter(sums.values(), dtype=np.float32, count=len(sums)), vocab)


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
