"""The shared runtime: validation, batching, windowing of long texts, merging of windows."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from milco_os.errors import EncodingError
from milco_os.runtime.encoder import ModelInfo, SparseEncoder, vocab_from_tokenizer
from tests.unit.tiny_models import multilingual_tokenizer


class CountingEncoder(SparseEncoder):
    """A fake runtime: pivot marks every id present in a window; echo gives every real token weight 1.
    Merged echo weights are then exact token counts, which shows each position is counted once."""

    def __init__(self, max_length: int, **kwargs) -> None:  # noqa: ANN003
        tok = multilingual_tokenizer()
        vocab = vocab_from_tokenizer(tok, "pieces")
        info = ModelInfo("fake", "milco", "sha256:fake", vocab, vocab, max_length, max_length)
        super().__init__(info, tok, **kwargs)
        self.batches: list[tuple[int, int]] = []

    def _forward(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.batches.append(input_ids.shape)
        pivot = np.zeros((input_ids.shape[0], len(self.info.pivot_vocab)), dtype=np.float32)
        for r in range(input_ids.shape[0]):
            pivot[r, input_ids[r][attention_mask[r] == 1]] = 1.0
        return pivot, attention_mask.astype(np.float32)


LONG = " ".join(["der Hund und der Tee"] * 13 + ["Vulkan"])


@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5])
@pytest.mark.parametrize("max_length", [6, 9, 64])
def test_long_text_is_windowed_and_every_position_counted_once(overlap: float, max_length: int) -> None:
    enc = CountingEncoder(max_length, window_overlap=overlap, window_merge="sum", echo_special_tokens=True)
    tokens = enc.tokenizer(LONG)["input_ids"]  # with <s> and </s>
    expected = Counter(enc.tokenizer.convert_ids_to_tokens(tokens))
    out = enc.encode_documents([LONG])[0]
    assert out.echo.to_terms() == {t: float(c) for t, c in expected.most_common()}
    assert set(out.pivot.to_terms()) >= set(expected) - {"<s>", "</s>"}
    assert "▁Vulkan" in out.pivot.to_terms()  # the last word survives: no truncation
    assert all(width <= max_length for _, width in enc.batches)


def test_special_tokens_are_left_out_of_the_echo_view_by_default() -> None:
    enc = CountingEncoder(8, window_merge="sum")
    terms = enc.encode_documents([LONG])[0].echo.to_terms()
    assert "<s>" not in terms and "</s>" not in terms and terms["▁Hund"] == 13.0


@pytest.mark.parametrize("max_length", [9, 16])
def test_max_merged_echo_weights_do_not_grow_with_length(max_length: int) -> None:
    enc = CountingEncoder(max_length)
    short = enc.encode_documents(["der Hund und der Tee"])[0].echo.to_terms()
    longer = enc.encode_documents([LONG])[0].echo.to_terms()
    much_longer = enc.encode_documents([" ".join([LONG] * 5)])[0].echo.to_terms()
    content = max_length - 2  # <s> and </s> wrap every window
    # A piece weighs at most what one window holds of it, however often the page repeats it ...
    assert max(much_longer.values()) <= content and much_longer["▁der"] < 2 * longer["▁der"]
    assert 2.0 <= longer["▁der"] and longer["▁Hund"] >= short["▁Hund"] == 1.0 and "▁Vulkan" in longer
    # ... where a sum over windows grows with the length.
    summed = CountingEncoder(max_length, window_merge="sum").encode_documents([" ".join([LONG] * 5)])[0]
    assert summed.echo.to_terms()["▁der"] == 5 * 26.0


def test_batches_are_length_sorted_and_order_is_restored() -> None:
    texts = ["der Hund", LONG, "", "Tee", "und der Vulkan"]
    enc = CountingEncoder(16, batch_size=2)
    together = enc.encode_queries(texts)
    alone = [CountingEncoder(16).encode_queries([t])[0] for t in texts]
    for a, b in zip(together, alone, strict=True):
        assert a.echo.to_terms() == b.echo.to_terms()
        assert a.pivot.to_terms() == b.pivot.to_terms()
    assert len(together[2].pivot) == 0 and len(together[2].echo) == 0  # empty text -> empty vectors


@pytest.mark.parametrize(
    ("texts", "message"),
    [(["ok", None], r"texts\[1\] is null"), (["ok", "fine", 3], r"texts\[2\] is int"), ("just one", "not a single")],
)
def test_bad_input_names_the_position(texts, message: str) -> None:  # noqa: ANN001
    with pytest.raises(EncodingError, match=message):
        CountingEncoder(16).encode_documents(texts)


def test_invalid_runtime_options_are_refused() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        CountingEncoder(16, batch_size=0)
    with pytest.raises(ValueError, match="window_overlap"):
        CountingEncoder(16, window_overlap=1.0)
