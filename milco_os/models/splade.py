"""Plain SPLADE over a Hugging Face masked-LM (English-only encoders: naver/splade-*, OpenSearch
neural-sparse models, the packaged splade-tiny). No echo view."""

from __future__ import annotations

import torch
from torch import nn

from milco_os.models.pooling import splade_pool


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
