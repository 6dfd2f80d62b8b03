"""MILCO (arXiv 2510.00671): a multilingual encoder, a connector into an English MLM head, LexEcho.

    H = Enc(x)                                  [B, n, d_enc]   any Hugging Face encoder backbone
    Hc = GELU(connector(H))                     [B, n, d_head]  connector: one Linear (spec A2.1), or an
                                                                MLP Linear-GELU-Linear (``connector_hidden``)
    logits = mlm_head(Hc)                       [B, n, V_en]    BERT MLM head: transform + decoder
    pivot = max_i log(1 + ReLU(logits_i))       [B, V_en]       over non-pad tokens (spec A2.2)

LexEcho gives each input token one non-negative weight; the runtime sums them per source piece into the
echo view (spec A2.3). Both readings of the spec are implemented behind ``echo_impl``:

- ``"code"``  (official code, the released checkpoints): ``ReLU(Linear(H)) * scale``, on encoder states.
- ``"paper"`` (Eq. 7): one extra decoder row on the connector output ``Z = transform(Hc)``, then
  log(1 + ReLU(.)).

Attribute names follow the official ``MILCOModel`` (``m_model``, ``projector``, ``mlm_head``, ``echo``,
``scale``) so its state dicts load without renaming.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from milco_os.models.pooling import log_saturate, masked_max

EchoImpl = Literal["code", "paper"]
ECHO_IMPLS: tuple[str, ...] = ("code", "paper")


def head_transform(mlm_head: nn.Module) -> nn.Module:
    """The transform block (Linear, act, LayerNorm) of a BERT-style MLM head (``BertOnlyMLMHead``)."""
    predictions = getattr(mlm_head, "predictions", None)
    transform = getattr(predictions, "transform", None)
    if transform is None:
        msg = f"{type(mlm_head).__name__} has no predictions.transform; the paper echo head needs a BERT MLM head"
        raise ValueError(msg)
    return transform


def head_decoder(mlm_head: nn.Module) -> nn.Linear:
    return mlm_head.predictions.decoder


class MilcoModule(nn.Module):
    """``forward(input_ids, attention_mask) -> (pivot [B, V_en], echo [B, n])``."""

    def __init__(
        self,
        m_model: nn.Module,
        mlm_head: nn.Module,
        *,
        encoder_hidden: int,
        head_hidden: int,
        echo_impl: EchoImpl | None = "code",
        special_token_ids: list[int] | None = None,
        mask_special_tokens: bool = False,
        connector_hidden: int = 0,
    ) -> None:
        super().__init__()
        if echo_impl is not None and echo_impl not in ECHO_IMPLS:
            msg = f"echo_impl must be one of {ECHO_IMPLS} or None, got {echo_impl!r}"
            raise ValueError(msg)
        self.m_model = m_model
        if connector_hidden:
            # A wider connector where one Linear is too small a bridge (a small backbone into a small head).
            self.projector: nn.Module = nn.Sequential(
                nn.Linear(encoder_hidden, connector_hidden), nn.GELU(), nn.Linear(connector_hidden, head_hidden)
            )
        else:
            self.projector = nn.Linear(encoder_hidden, head_hidden)
        self.connector_hidden = connector_hidden
        self.activation = nn.GELU()
        self.mlm_head = mlm_head
        self.echo_impl = echo_impl
        if echo_impl == "code":
            self.echo = nn.Linear(encoder_hidden, 1)
            self.scale = nn.Parameter(torch.tensor([1.0]))
        elif echo_impl == "paper":
            head_transform(mlm_head)  # fail early if the head has no transform
            # Spec A2.3: initialisation is unknown; start from small random weights and a zero bias.
            self.echo_row = nn.Linear(head_hidden, 1)
        # The official code pools over <s> and </s> too; [F] masks them. Off by default (code-faithful).
        self.mask_special_tokens = mask_special_tokens
        self.register_buffer(
            "special_token_ids", torch.tensor(sorted(set(special_token_ids or [])), dtype=torch.long), persistent=False
        )

    @property
    def has_echo(self) -> bool:
        return self.echo_impl is not None

    def pooling_mask(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if not self.mask_special_tokens or self.special_token_ids.numel() == 0:
            return attention_mask
        return attention_mask * (~torch.isin(input_ids, self.special_token_ids)).to(attention_mask.dtype)

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """H: the backbone's last hidden states."""
        return self.m_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def pooled_logits(
        self, hidden: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """Raw max-pooled English logits [B, V_en] (the SAP loss works on these, before LogSat)."""
        logits = self.mlm_head(self.activation(self.projector(hidden)))
        return masked_max(logits, self.pooling_mask(input_ids, attention_mask))

    def echo_weights(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """One non-negative weight per input token [B, n] (zeros without an echo head)."""
        mask = attention_mask.to(hidden.dtype)
        if self.echo_impl == "code":
            return torch.relu(self.echo(hidden).squeeze(-1)) * mask * self.scale
        if self.echo_impl == "paper":
            z = head_transform(self.mlm_head)(self.activation(self.projector(hidden)))
            return log_saturate(self.echo_row(z).squeeze(-1)) * mask
        return torch.zeros_like(mask)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.hidden_states(input_ids, attention_mask)
        pivot = log_saturate(self.pooled_logits(hidden, input_ids, attention_mask))
        return pivot, self.echo_weights(hidden, attention_mask)


def dual_view_scores(
    q_pivot: torch.Tensor,
    q_ids: torch.Tensor,
    q_echo: torch.Tensor,
    d_pivot: torch.Tensor,
    d_ids: torch.Tensor,
    d_echo: torch.Tensor,
) -> torch.Tensor:
    """Training-time dense scores of every query against every document: [Bq, Bd].

    pivot dot product + sum over matching source tokens of w_q * w_d (spec A2.3), which equals the dot
    product of the per-piece summed echo views that the index stores.
    """
    pivot = q_pivot @ d_pivot.T
    match = (q_ids[:, None, :, None] == d_ids[None, :, None, :]).to(q_echo.dtype)  # [Bq, Bd, nq, nd]
    echo = torch.einsum("qi,dj,qdij->qd", q_echo, d_echo, match)
    return pivot + echo
