"""The one sparse type that flows from the encoder to OpenSearch.

A :class:`SparseVector` holds term ids and weights over one :class:`Vocab`. Conversion to a
``{term: weight}`` mapping happens only at the edges (OpenSearch documents and queries, CLI output).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np


@dataclass(frozen=True, eq=False)
class Vocab:
    """An ordered vocabulary: id ``i`` is the token ``tokens[i]``.

    ``name`` is for people (e.g. ``bert-wordpiece``); ``fingerprint`` identifies the exact token list,
    so two indexes (or an index and a model) can be compared without shipping the vocabulary.
    """

    name: str
    tokens: tuple[str, ...]

    @cached_property
    def fingerprint(self) -> str:
        digest = hashlib.sha256("\n".join(self.tokens).encode("utf-8")).hexdigest()
        return f"sha256:{digest[:16]}"

    @cached_property
    def index(self) -> dict[str, int]:
        return {token: i for i, token in enumerate(self.tokens)}

    def __len__(self) -> int:
        return len(self.tokens)

    @cached_property
    def byte_level(self) -> bool:
        """Whether this is a byte-level BPE vocabulary (GPT-2's scheme, causal LLMs'): every byte is a printable
        character, and ``Ġ`` (the space byte) starts a word. Told by its entries: a tenth or more start with ``Ġ``."""
        return sum(t.startswith("Ġ") for t in self.tokens) * 10 >= len(self.tokens) > 0

    def readable(self, token: str) -> str:
        """``token`` as people read it (CLI, explain, the service): a byte-level entry decoded to its text, a word's
        first piece as the word (``Ġtable`` -> ``table``) and a piece inside a word marked as WordPiece marks it
        (``table`` -> ``##table``), since the two are different entries; ``␣`` for a bare space. Other
        vocabularies' entries are readable already (``heart``, ``##ing``, ``▁Herz``). Index keys never change."""
        if not self.byte_level:
            return token
        raw = bytes(_BYTE_OF_CHAR.get(c, 0x3F) for c in token).decode("utf-8", errors="backslashreplace")
        word_start = raw.startswith(" ")
        text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                       for c in (raw[1:] if word_start else raw))
        return (text or "␣") if word_start else "##" + text


def _byte_chars() -> dict[str, int]:
    """GPT-2's byte -> printable character table, inverted: the printable bytes stand for themselves, the others
    (control characters, space, 0x7F-0xA0, 0xAD) for the characters from U+0100 on, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = dict.fromkeys(printable, 0)
    n = 0
    for b in range(256):
        if b in chars:
            chars[b] = b
        else:
            chars[b] = 256 + n
            n += 1
    return {chr(c): b for b, c in chars.items()}


_BYTE_OF_CHAR = _byte_chars()


@dataclass(frozen=True, eq=False)
class SparseVector:
    """Term ids (int64) and weights (float32) over ``vocab``; ids are unique, order carries no meaning."""

    ids: np.ndarray
    weights: np.ndarray
    vocab: Vocab

    def __post_init__(self) -> None:
        if self.ids.shape != self.weights.shape or self.ids.ndim != 1:
            msg = f"SparseVector: ids {self.ids.shape} and weights {self.weights.shape} must be equal 1-d shapes"
            raise ValueError(msg)

    @classmethod
    def empty(cls, vocab: Vocab) -> SparseVector:
        return cls(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32), vocab)

    @classmethod
    def from_terms(cls, terms: dict[str, float], vocab: Vocab) -> SparseVector:
        """Build from ``{token: weight}``; every token must be in ``vocab``."""
        missing = [t for t in terms if t not in vocab.index]
        if missing:
            msg = f"tokens not in vocabulary {vocab.name!r}: {missing[:5]}"
            raise ValueError(msg)
        ids = np.fromiter((vocab.index[t] for t in terms), dtype=np.int64, count=len(terms))
        weights = np.fromiter(terms.values(), dtype=np.float32, count=len(terms))
        return cls(ids, weights, vocab)

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def sorted(self) -> SparseVector:
        """Same vector, largest weight first (ties broken by id, so the order is deterministic)."""
        order = np.lexsort((self.ids, -self.weights))
        return SparseVector(self.ids[order], self.weights[order], self.vocab)

    def readable_terms(self) -> dict[str, float]:
        """``{term as people read it: weight}``, largest weight first (:meth:`Vocab.readable`)."""
        return {self.vocab.readable(token): weight for token, weight in self.to_terms().items()}

    def to_terms(self) -> dict[str, float]:
        """``{token: weight}``, largest weight first."""
        s = self.sorted()
        tokens = self.vocab.tokens
        return {tokens[int(i)]: float(w) for i, w in zip(s.ids, s.weights, strict=True)}

    def dot(self, other: SparseVector) -> float:
        """Exact dot product; both vectors must share a vocabulary."""
        if other.vocab.fingerprint != self.vocab.fingerprint:
            msg = f"cannot take a dot product across vocabularies {self.vocab.name!r} and {other.vocab.name!r}"
            raise ValueError(msg)
        common, ia, ib = np.intersect1d(self.ids, other.ids, assume_unique=True, return_indices=True)
        del common
        return float(np.dot(self.weights[ia].astype(np.float64), other.weights[ib].astype(np.float64)))


@dataclass(frozen=True, eq=False)
class Encoded:
    """One text encoded: the English ``pivot`` view and the source-token ``echo`` view, and, when asked for
    (``encode_documents(texts, dense=True)``), the ``dense`` view: an L2-normalised float32 embedding.

    Encoders without an echo view (plain English SPLADE) return an empty ``echo``.
    """

    pivot: SparseVector
    echo: SparseVector
    dense: np.ndarray | None = None


@dataclass(frozen=True, eq=False)
class Passage:
    """One passage of a long text (a window of the encoder, encoded on its own): characters ``start:end`` of
    the text it came from, and its views."""

    start: int
    end: int
    encoded: Encoded


#: MILCO's released training scripts encode queries with 64 and passages with 256 tokens.
DEFAULT_MAX_QUERY_LENGTH = 64
DEFAULT_MAX_DOCUMENT_LENGTH = 256


@dataclass(frozen=True)
class DenseInfo:
    """A model's dense view: which embedding it is (``name``, ``fingerprint``) and its width."""

    name: str
    fingerprint: str
    dimensions: int


@dataclass(frozen=True)
class ModelInfo:
    """What an index must know about the model that encoded it."""

    name: str
    family: str  # "splade" | "milco" | "csplade"
    fingerprint: str
    pivot_vocab: Vocab
    echo_vocab: Vocab | None
    max_query_length: int = DEFAULT_MAX_QUERY_LENGTH
    max_document_length: int = DEFAULT_MAX_DOCUMENT_LENGTH
    details: dict[str, Any] = field(default_factory=dict)
    #: When set, the encoder keeps only this many pivot terms per query / document (the heaviest, ties by
    #: term id): for models trained with top-k masking (csplade-mini). None keeps every non-zero term.
    query_top_k: int | None = None
    document_top_k: int | None = None
    #: The dense view the encoder can emit beside the sparse ones (None: sparse only).
    dense: DenseInfo | None = None

    def __post_init__(self) -> None:
        for key in ("query_top_k", "document_top_k"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                msg = f"ModelInfo: {key} is {value!r}; expected a positive integer or None"
                raise ValueError(msg)


def vocab_from_tokenizer(tokenizer: Any, name: str) -> Vocab:
    """The tokenizer's vocabulary as a :class:`Vocab` (ids without an entry get a placeholder)."""
    mapping = tokenizer.get_vocab()
    size = max(len(tokenizer), max(mapping.values()) + 1)
    tokens = [f"[unused-id-{i}]" for i in range(size)]
    for token, i in mapping.items():
        tokens[i] = token
    return Vocab(name=name, tokens=tuple(tokens))


def pad_vocab(vocab: Vocab, size: int) -> Vocab:
    """Extend ``vocab`` to ``size`` ids (models often have more output rows than tokenizer entries)."""
    if len(vocab) >= size:
        return vocab
    extra = tuple(f"[unused-id-{i}]" for i in range(len(vocab), size))
    return Vocab(name=vocab.name, tokens=vocab.tokens + extra)
