"""Plain SPLADE over a Hugging Face masked-LM (English-only encoders: naver/splade-*, OpenSearch
neural-sparse models, the packaged splade-tiny). No echo view."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from milco_os.errors import ModelError
from milco_os.models.files import quiet_transformers
from milco_os.models.layouts import ModelDir, as_model_dir, splade_fingerprint
from milco_os.models.pooling import splade_pool
from milco_os.types import ModelInfo, pad_vocab, vocab_from_tokenizer

if TYPE_CHECKING:
    from milco_os.runtime.encoder import SparseEncoder


class SpladeMLM(nn.Module):
    """``forward(input_ids, attention_mask) -> (pivot [B, V], echo [B, L])``; echo is all zeros.

    The two-output signature is shared by every model family so that one runtime (and one ONNX graph
    layout) serves them all.
    """

    has_echo = False

    def __init__(self, mlm: nn.Module) -> None:
        super().__init__()
        self.mlm = mlm

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.mlm(input_ids=input_ids, attention_mask=attention_mask).logits
        pivot = splade_pool(logits, attention_mask)
        return pivot, torch.zeros_like(input_ids, dtype=pivot.dtype)


def load_splade_dir(source: Path | ModelDir, name: str, **encoder_kwargs: Any) -> SparseEncoder:
    """A Hugging Face ``*ForMaskedLM`` directory (or it read, a :class:`~milco_os.models.layouts.ModelDir`) as an
    English-only SPLADE encoder."""
    quiet_transformers()
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from milco_os.runtime.torch_runtime import TorchEncoder

    model = as_model_dir(source)
    path, config = model.path, model.require_config()
    fingerprint = splade_fingerprint(model)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
        mlm = AutoModelForMaskedLM.from_pretrained(str(path))
    except (OSError, ValueError) as e:
        msg = f"{path}: cannot load the masked-LM model or its tokenizer: {e}"
        raise ModelError(msg) from e
    vocab = pad_vocab(vocab_from_tokenizer(tokenizer, name=f"{config.get('model_type', 'mlm')}-vocab"),
                      int(config.get("vocab_size", len(tokenizer))))
    info = ModelInfo(
        name=name,
        family="splade",
        fingerprint=fingerprint,
        pivot_vocab=vocab,
        echo_vocab=None,
        max_query_length=min(64, tokenizer.model_max_length),
        max_document_length=min(256, tokenizer.model_max_length),
        details={"path": str(path)},
    )
    return TorchEncoder(info, tokenizer, SpladeMLM(mlm), **encoder_kwargs)
