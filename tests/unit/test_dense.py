"""The dense view: the backbone's own embedding read off the sparse pass (milco-mini's layout, tiny weights)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from milco_os.errors import ModelError
from milco_os.loading import load_dir
from milco_os.runtime.encoder import SparseEncoder, load_model_info, save_model_info
from milco_os.types import DenseInfo, ModelInfo, vocab_from_tokenizer
from tests.unit.tiny_models import multilingual_tokenizer, save_tiny_bert_milco

TEXTS = ["der Hund", "the tea and the dog", "Vulkan"]


def backbone_embedding(backbone_dir: Path, ids: list[int]) -> np.ndarray:
    """What e5 computes: the backbone checkpoint (transformers) mean-pooled and normalised."""
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(backbone_dir), add_pooling_layer=False).eval()
    with torch.no_grad():
        hidden = model(input_ids=torch.tensor([ids])).last_hidden_state[0]
    pooled = hidden.mean(0).numpy()
    return pooled / np.linalg.norm(pooled)


@pytest.mark.parametrize("changed", [0, 1])
def test_dense_view_is_the_backbone_checkpoints_embedding(tmp_path: Path, changed: int) -> None:
    # changed = 1: training changed the top layer, so the view runs the backbone's original one on the
    # shared states below it; 0: nothing changed, the sparse pass's final states are the backbone's.
    ckpt = save_tiny_bert_milco(tmp_path, changed_top_layers=changed)
    enc = load_dir(ckpt)
    assert enc.info.dense is not None and enc.info.dense.dimensions == 24
    assert len(enc.model.dense_layers) == changed
    with_dense = enc.encode_queries(TEXTS, dense=True)
    for text, got in zip(TEXTS, with_dense, strict=True):
        expected = backbone_embedding(tmp_path / "backbone", enc.tokenizer(text)["input_ids"])
        np.testing.assert_allclose(got.dense, expected, atol=1e-5)
    # Asking for the dense view leaves the sparse views exactly as they are.
    for a, b in zip(with_dense, enc.encode_queries(TEXTS), strict=True):
        assert b.dense is None
        assert a.pivot.to_terms() == b.pivot.to_terms() and a.echo.to_terms() == b.echo.to_terms()


def test_changed_embeddings_leave_no_dense_view(tmp_path: Path) -> None:
    enc = load_dir(save_tiny_bert_milco(tmp_path, changed_top_layers=1, change_embeddings=True))
    assert enc.info.dense is None
    with pytest.raises(ModelError, match="has no dense view"):
        enc.encode_documents(["der Hund"], dense=True)


def test_the_dense_fingerprint_names_the_backbone_not_the_sparse_heads(tmp_path: Path) -> None:
    a = load_dir(save_tiny_bert_milco(tmp_path / "a", changed_top_layers=1, seed=4)).info
    b = load_dir(save_tiny_bert_milco(tmp_path / "b", changed_top_layers=1, seed=5)).info
    assert a.fingerprint != b.fingerprint  # other sparse heads: other models
    assert a.dense is not None and a.dense == b.dense  # the same backbone: the same dense space


class WindowEncoder(SparseEncoder):
    """A fake runtime whose dense view of a window is one-hot on the window's first piece id (mod 4)."""

    def __init__(self) -> None:
        tok = multilingual_tokenizer()
        vocab = vocab_from_tokenizer(tok, "pieces")
        info = ModelInfo("fake", "milco", "sha256:fake", vocab, vocab, 8, 8,
                         dense=DenseInfo("fake-dense", "sha256:dense", 4))
        super().__init__(info, tok)

    def _forward(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros((input_ids.shape[0], len(self.info.pivot_vocab)), np.float32), attention_mask.astype(np.float32)

    def _forward_dense(self, input_ids: np.ndarray, attention_mask: np.ndarray):  # noqa: ANN202
        pivot, echo = self._forward(input_ids, attention_mask)
        dense = np.zeros((input_ids.shape[0], 4), np.float32)
        dense[np.arange(input_ids.shape[0]), input_ids[:, 1] % 4] = 1.0
        return pivot, echo, dense


def test_a_long_texts_dense_view_is_the_normalised_mean_of_its_windows() -> None:
    enc = WindowEncoder()
    long_text = " ".join(["der Hund und der Tee"] * 4)
    windows = enc._windows(0, enc.tokenizer(long_text, add_special_tokens=False)["input_ids"], 8, each_whole=True)
    assert len(windows) > 1
    expected = np.zeros(4)
    for w in windows:
        expected[w.input_ids[1] % 4] += 1
    out = enc.encode_documents([long_text, ""], dense=True)
    np.testing.assert_allclose(out[0].dense, expected / np.linalg.norm(expected), rtol=1e-6)
    assert out[1].dense is None  # an empty text has no dense view (a zero vector has no cosine)


def test_model_info_keeps_the_dense_view_on_disk(tmp_path: Path) -> None:
    info = WindowEncoder().info
    save_model_info(info, tmp_path)
    assert load_model_info(tmp_path).dense == info.dense
    save_model_info(dataclasses.replace(info, dense=None), tmp_path)
    assert load_model_info(tmp_path).dense is None
