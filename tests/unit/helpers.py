"""Small builders shared by unit tests."""

from __future__ import annotations

from milco_os.types import Encoded, ModelInfo, SparseVector, Vocab

PIVOT = Vocab("test-pivot", ("heart", "attack", "u.s.", "##ing", "blood", "tea"))
ECHO = Vocab("test-echo", ("<s>", "</s>", "▁Herz", "infarkt", "▁Tee"))


def model_info(fingerprint: str = "sha256:abc", echo: bool = True) -> ModelInfo:
    return ModelInfo(
        name="test-model", family="milco", fingerprint=fingerprint, pivot_vocab=PIVOT, echo_vocab=ECHO if echo else None
    )


def encoded(pivot: dict[str, float], echo: dict[str, float] | None = None) -> Encoded:
    return Encoded(SparseVector.from_terms(pivot, PIVOT), SparseVector.from_terms(echo or {}, ECHO))
