"""A deterministic fake encoder for tests about the OpenSearch side (no model weights involved), and a client
whose bulk requests find OpenSearch unreachable."""

from __future__ import annotations

import time

import numpy as np

from milco_os.runtime.encoder import SparseEncoder
from milco_os.types import ModelInfo, vocab_from_tokenizer
from tests.unit.tiny_models import multilingual_tokenizer


class FakeEncoder(SparseEncoder):
    """Pivot: weight 1 + (id % 7) / 7 on every piece in the text; echo: 0.5 per token. ``delay`` seconds per
    batch make it slow enough to interrupt."""

    def __init__(self, delay: float = 0.0, fingerprint: str = "sha256:fake", **kwargs) -> None:  # noqa: ANN003
        tok = multilingual_tokenizer()
        vocab = vocab_from_tokenizer(tok, "pieces")
        super().__init__(ModelInfo("fake", "milco", fingerprint, vocab, vocab), tok, **kwargs)
        self.delay = delay

    def _forward(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.delay:
            time.sleep(self.delay)
        pivot = np.zeros((input_ids.shape[0], len(self.info.pivot_vocab)), dtype=np.float32)
        for r in range(input_ids.shape[0]):
            ids = input_ids[r][attention_mask[r] == 1]
            pivot[r, ids] = 1.0 + (ids % 7) / 7.0
        return pivot, attention_mask.astype(np.float32) * 0.5


class BulkDown:
    """The real client, except that every bulk request finds OpenSearch unreachable."""

    def __init__(self, real: object) -> None:
        self.real = real

    def __getattr__(self, name: str) -> object:
        return getattr(self.real, name)

    def bulk(self, *_: object, **__: object) -> None:
        from opensearchpy.exceptions import ConnectionError as TransportConnectionError

        raise TransportConnectionError("N/A", "connection refused (test)", None)
