"""Recent encodings for ml-commons: one index's pivot, echo (and dense) views are two (three) ml-commons models,
so OpenSearch sends every text once per view: one right after the other (the ingest pipeline's processors) or
at the same time (a query's clauses). Each text is encoded once: a request for a text another request is
encoding waits for that result, and a text encoded lately is answered from memory. For an index with a dense
view every request asks for it (``dense``), so all three views come from that one pass."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from milco_os.runtime.encoder import SparseEncoder
    from milco_os.types import Encoded

Key = tuple[str, str, str]  # (model fingerprint, kind (+dense), text)


class RecentEncodings:
    """The texts encoded last (at most ``size`` of them and ``max_chars`` characters), per model and kind."""

    def __init__(self, size: int = 1024, max_chars: int = 4_000_000, wait_s: float = 60.0) -> None:
        self.size, self.max_chars, self.wait_s = size, max_chars, wait_s
        self._items: OrderedDict[Key, Encoded] = OrderedDict()
        self._chars = 0
        self._pending: dict[Key, threading.Event] = {}
        self._lock = threading.Lock()

    def encode(self, encoder: SparseEncoder, kind: str, texts: list[str], dense: bool = False) -> list[Encoded]:
        kind_key = f"{kind}+dense" if dense else kind
        keys = [(encoder.info.fingerprint, kind_key, text) for text in texts]
        with self._lock:
            found = {key: self._items[key] for key in keys if key in self._items}
            missing = [key for key in dict.fromkeys(keys) if key not in found]
            waiting = {key: self._pending[key] for key in missing if key in self._pending}
            mine = [key for key in missing if key not in waiting]
            for key in mine:
                self._pending[key] = threading.Event()
        try:
            if mine:
                found |= dict(zip(mine, self._run(encoder, kind_key, mine), strict=True))
        finally:
            with self._lock:
                for key in mine:
                    if key in found:
                        self._remember(key, found[key])
                    self._pending.pop(key).set()
        late = []
        for key, done in waiting.items():
            done.wait(self.wait_s)
            with self._lock:
                if key in self._items:
                    found[key] = self._items[key]
                else:  # the other request failed, or the entry is already gone
                    late.append(key)
        if late:
            found |= dict(zip(late, self._run(encoder, kind_key, late), strict=True))
        with self._lock:
            for key in keys:
                self._remember(key, found[key])
        return [found[key] for key in keys]

    @staticmethod
    def _run(encoder: SparseEncoder, kind: str, keys: list[Key]) -> list[Encoded]:
        encode_fn = encoder.encode_queries if kind.startswith("query") else encoder.encode_documents
        texts = [text for _, _, text in keys]
        return encode_fn(texts, dense=True) if kind.endswith("+dense") else encode_fn(texts)

    def _remember(self, key: Key, encoded: Encoded) -> None:
        """Store or refresh ``key`` (under the lock) and evict the oldest entries past the bounds."""
        if key not in self._items:
            self._chars += len(key[2])
        self._items[key] = encoded
        self._items.move_to_end(key)
        while self._items and (len(self._items) > self.size or self._chars > self.max_chars):
            old, _ = self._items.popitem(last=False)
            self._chars -= len(old[2])
