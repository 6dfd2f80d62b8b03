"""The shared runtime: validation, batching, windowing of long texts, merging of windows."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from milco_os.errors import EncodingError
from milco_os.runtime.encoder import SparseEncoder
from milco_os.types import ModelInfo, vocab_from_tokenizer
from tests.unit.tiny_models import english_tokenizer, multilingual_tokenizer


class CountingEncoder(SparseEncoder):
    """A fake runtime: pivot marks every id present in a window; echo gives every real token weight 1.
    Merged echo weights are then exact token counts, which shows each position is counted once."""

    def __init__(self, max_length: int, tokenizer=None, **kwargs) -> None:  # noqa: ANN001, ANN003
        tok = tokenizer if tokenizer is not None else multilingual_tokenizer()
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


def test_a_token_budget_makes_long_windows_come_in_smaller_batches() -> None:
    texts = ["Tee"] * 6 + [" ".join(["der Hund und der Tee"] * 3)] * 4
    enc = CountingEncoder(64, batch_size=8, max_batch_tokens=64)
    budgeted = enc.encode_documents(texts)
    assert all(rows * width <= 64 for rows, width in enc.batches)
    assert max(rows for rows, _ in enc.batches) == 6  # the short texts still go together
    assert sum(rows for rows, _ in enc.batches) == len(texts)
    plain = CountingEncoder(64, batch_size=8).encode_documents(texts)
    assert [e.echo.to_terms() for e in budgeted] == [e.echo.to_terms() for e in plain]


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


# ------------------------------------------------------------------ tokenizers without transformers
TOKENIZER_TEXTS = [
    "der Hund und der Tee", "The HEART attack, u.s. blood!", "  spaces   around  ", "", "Vulkan\tlava\nsun",
    "<s> in the text </s>", "[CLS] green [SEP] tea", "ünïcödé Herzinfarkt ½ ﬁ", "dogs cats energy" * 5,
]


@pytest.mark.parametrize("make", [english_tokenizer, multilingual_tokenizer], ids=["wordpiece", "unigram"])
def test_fast_tokenizer_is_transformers_tokenizer(make, tmp_path: Path) -> None:  # noqa: ANN001
    from milco_os.models.tokenizer import VERDICT_FILE, FastTokenizer, load_tokenizer

    make().save_pretrained(tmp_path)
    hf = load_tokenizer(tmp_path)  # first load: transformers' tokenizer, and the verdict is recorded
    assert not isinstance(hf, FastTokenizer)
    assert json.loads((tmp_path / VERDICT_FILE).read_text())["identical"] is True
    fast = load_tokenizer(tmp_path)
    assert isinstance(fast, FastTokenizer)
    for add in (True, False):
        assert fast(TOKENIZER_TEXTS, add_special_tokens=add)["input_ids"] == hf(
            TOKENIZER_TEXTS, add_special_tokens=add)["input_ids"]
        assert fast(TOKENIZER_TEXTS[1], add_special_tokens=add)["input_ids"] == hf(
            TOKENIZER_TEXTS[1], add_special_tokens=add)["input_ids"]
    assert fast.get_vocab() == hf.get_vocab() and len(fast) == len(hf)
    assert fast.all_special_ids == hf.all_special_ids and fast.pad_token_id == hf.pad_token_id
    assert (fast.bos_token, fast.eos_token, fast.unk_token) == (hf.bos_token, hf.eos_token, hf.unk_token)
    assert fast.convert_ids_to_tokens([0, 3, 5]) == hf.convert_ids_to_tokens([0, 3, 5])
    assert vocab_from_tokenizer(fast, "v").tokens == vocab_from_tokenizer(hf, "v").tokens
    ids = hf("green tea")["input_ids"]
    assert fast.decode(ids) == hf.decode(ids)  # anything else is transformers' own answer
    batch = fast(["green tea", "sun"], padding=True, return_tensors="np")
    assert batch["input_ids"].shape[0] == 2

    copy = tmp_path / "copy"
    fast.save_pretrained(copy)
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(str(copy))(TOKENIZER_TEXTS)["input_ids"] == hf(TOKENIZER_TEXTS)["input_ids"]


def test_a_changed_tokenizer_file_invalidates_the_verdict(tmp_path: Path) -> None:
    from milco_os.models.tokenizer import VERDICT_FILE, FastTokenizer, load_tokenizer, prefetch

    multilingual_tokenizer().save_pretrained(tmp_path)
    load_tokenizer(tmp_path)
    prefetch(tmp_path)  # read in a background thread, picked up by the next load
    assert isinstance(load_tokenizer(tmp_path), FastTokenizer)
    config = tmp_path / "tokenizer_config.json"
    config.write_text(config.read_text())  # same content, new file: not trusted until checked again
    prefetch(tmp_path)  # no verdict that applies: nothing is started
    assert not isinstance(load_tokenizer(tmp_path), FastTokenizer)
    assert isinstance(load_tokenizer(tmp_path), FastTokenizer)
    verdict = json.loads((tmp_path / VERDICT_FILE).read_text())
    (tmp_path / VERDICT_FILE).write_text(json.dumps({**verdict, "identical": False}))
    assert not isinstance(load_tokenizer(tmp_path), FastTokenizer)


def test_encoders_on_either_tokenizer_agree(tmp_path: Path) -> None:
    from milco_os.models.tokenizer import FastTokenizer, load_tokenizer

    multilingual_tokenizer().save_pretrained(tmp_path)
    hf = load_tokenizer(tmp_path)
    fast = load_tokenizer(tmp_path)
    assert isinstance(fast, FastTokenizer)
    texts = [LONG, *TOKENIZER_TEXTS]
    for a, b in zip(CountingEncoder(9, tokenizer=hf).encode_documents(texts),
                    CountingEncoder(9, tokenizer=fast).encode_documents(texts), strict=True):
        assert a.pivot.to_terms() == b.pivot.to_terms() and a.echo.to_terms() == b.echo.to_terms()
