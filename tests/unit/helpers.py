"""Small builders shared by unit tests."""

from __future__ import annotations

import numpy as np

from milco_os.types import Encoded, ModelInfo, SparseVector, Vocab

PIVOT = Vocab("test-pivot", ("heart", "attack", "u.s.", "##ing", "blood", "tea"))
ECHO = Vocab("test-echo", ("<s>", "</s>", "▁Herz", "infarkt", "▁Tee"))


def model_info(fingerprint: str = "sha256:abc", echo: bool = True) -> ModelInfo:
    return ModelInfo(
        name="test-model", family="milco", fingerprint=fingerprint, pivot_vocab=PIVOT, echo_vocab=ECHO if echo else None
    )


def encoded(pivot: dict[str, float], echo: dict[str, float] | None = None) -> Encoded:
    return Encoded(SparseVector.from_terms(pivot, PIVOT), SparseVector.from_terms(echo or {}, ECHO))


def assert_same_encoding(a, b) -> None:  # noqa: ANN001
    """Same ids and the same weights to float32 rounding, both views. The two load paths compute op for op alike,
    but one memory-maps the weights (unaligned addresses) and the other copies them: on some CPUs (AVX-512) a
    matrix-vector product such as the echo head then rounds its last bit differently."""
    for x, y in ((a.pivot, b.pivot), (a.echo, b.echo)):
        order_x, order_y = np.argsort(x.ids), np.argsort(y.ids)
        np.testing.assert_array_equal(x.ids[order_x], y.ids[order_y])
        np.testing.assert_allclose(x.weights[order_x], y.weights[order_y], rtol=1e-6, atol=0)
