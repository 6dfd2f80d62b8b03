"""SPLADE pooling shared by every model family: w_j = max_i log(1 + ReLU(logit_ij)) over non-pad tokens."""

from __future__ import annotations

import torch


def masked_max(logits: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Max over the sequence of ``logits`` [B, L, V], ignoring positions where ``attention_mask`` is 0.

    Pads are set to -inf rather than multiplied by 0 (as MILCO's code does) so that the raw pooled logits
    used by the SAP loss do not depend on how much padding a batch has.
    """
    pad = attention_mask[..., None] == 0
    return logits.masked_fill(pad, float("-inf")).max(dim=1).values


def log_saturate(x: torch.Tensor) -> torch.Tensor:
    """log(1 + ReLU(x)); maps -inf (an all-pad row) to 0."""
    return torch.log1p(torch.relu(x))


def splade_pool(logits: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """[B, L, V] logits -> [B, V] non-negative term weights. ReLU and log1p are monotone, so pooling
    first and saturating after equals the paper's saturate-then-max."""
    return log_saturate(masked_max(logits, attention_mask))
