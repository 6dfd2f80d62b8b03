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

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from milco_os.errors import ModelError
from milco_os.models import bert
from milco_os.models.dense import mean_pooled
from milco_os.models.files import load_state_dict, quiet_transformers, read_config, weight_file
from milco_os.models.layouts import MilcoLayout, ModelDir, milco_fingerprint, milco_layout
from milco_os.models.pooling import log_saturate, masked_max
from milco_os.types import DenseInfo, ModelInfo, pad_vocab, vocab_from_tokenizer

if TYPE_CHECKING:
    from milco_os.runtime.encoder import SparseEncoder

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
        #: The dense view's own top layers (:meth:`with_dense_view`); none: the module is sparse only.
        self.dense_layers: nn.ModuleList | None = None
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

    def with_dense_view(self, original_layers: nn.ModuleList) -> None:
        """Give the module a dense view: the backbone's original top layers (``original_layers``, in place of the
        ones training changed) run on the shared lower states, then e5's mean pooling (:mod:`milco_os.models.dense`).
        The backbone must be :mod:`milco_os.models.bert`'s (its layers are called one by one)."""
        if not isinstance(self.m_model, bert.BertModel):
            msg = "the dense view needs the plain-torch BERT backbone (milco_os.models.bert)"
            raise ValueError(msg)
        self.dense_layers = original_layers

    def hidden_and_lower(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(H, the states the dense view starts from): one pass, the layers below the ones training changed run
        once for both views."""
        if self.dense_layers is None:
            msg = "this MILCO module has no dense view"
            raise ValueError(msg)
        m = self.m_model
        mask = bert.attention_mask_4d(attention_mask)
        layers = m.encoder.layer
        split = len(layers) - len(self.dense_layers)
        hidden = m.embeddings(input_ids)
        for layer in layers[:split]:
            hidden = layer(hidden, mask)
        lower = hidden
        for layer in layers[split:]:
            hidden = layer(hidden, mask)
        return hidden, lower

    def dense_from(self, lower: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The dense view [B, d] from :meth:`hidden_and_lower`'s lower states: the backbone's original top layers,
        then e5's pooling."""
        assert self.dense_layers is not None
        mask = bert.attention_mask_4d(attention_mask)
        for layer in self.dense_layers:
            lower = layer(lower, mask)
        return mean_pooled(lower, attention_mask)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, dense: bool = False
    ) -> tuple[torch.Tensor, ...]:
        """(pivot, echo), and the dense view last with ``dense`` (a module given :meth:`with_dense_view`)."""
        if dense:
            hidden, lower = self.hidden_and_lower(input_ids, attention_mask)
            embedding = self.dense_from(lower, attention_mask)
        else:
            hidden = self.hidden_states(input_ids, attention_mask)
        pivot = log_saturate(self.pooled_logits(hidden, input_ids, attention_mask))
        echo = self.echo_weights(hidden, attention_mask)
        return (pivot, echo, embedding) if dense else (pivot, echo)


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


# ---------------------------------------------------------------------------------------------- loading
def load_milco_dir(
    source: Path | ModelDir, name: str, *, layout: MilcoLayout | None = None, **encoder_kwargs: Any
) -> SparseEncoder:
    """A MILCO checkpoint in the official layout (github thongnt99/milco: ``MILCOConfig`` +
    ``pytorch_model.bin``/``model.safetensors`` with ``m_model.*``, ``projector.*``, ``mlm_head.*``,
    ``echo.*``, ``scale`` weights); the backbone and English head configurations (and tokenizers) come from
    the checkpoints its config names, local paths first.

    BERT backbones and heads with ``model.safetensors`` (milco-mini) take the fast path: the plain-torch
    modules of :mod:`milco_os.models.bert` built on the meta device, the weights memory-mapped, tokenizers
    without transformers (:mod:`milco_os.models.tokenizer`); the outputs match the transformers path, which every
    other checkpoint takes, to float32 rounding: the modules compute op for op alike, but mapped weights sit at
    unaligned addresses, where some CPUs' matrix-vector kernels round the last bit differently.

    ``source``: the directory, or it read (:class:`~milco_os.models.layouts.ModelDir`); ``layout``: its
    :func:`~milco_os.models.layouts.milco_layout`, where the caller has it already.
    """
    from milco_os.models import bert
    from milco_os.models.tokenizer import load_tokenizer
    from milco_os.runtime.torch_runtime import TorchEncoder

    layout = layout or milco_layout(source)
    path, config, m_dir, en_dir = layout.model.path, layout.config, layout.m_dir, layout.en_dir
    m_raw, en_raw = read_config(m_dir), read_config(en_dir)
    fast = bert.supported(m_raw) and bert.supported(en_raw) and weight_file(path) == "model.safetensors"
    if fast:
        m_config: Any = bert.BertShape.from_config(m_raw)
        en_config: Any = bert.BertShape.from_config(en_raw)
    else:
        quiet_transformers()
        from transformers import AutoConfig

        m_config = AutoConfig.from_pretrained(str(m_dir))
        en_config = AutoConfig.from_pretrained(str(en_dir))
    expected = {
        "m_hidden_size": m_config.hidden_size,
        "en_hidden_size": en_config.hidden_size,
        "m_vocab_size": m_config.vocab_size,
        "en_vocab_size": en_config.vocab_size,
    }
    for key, value in expected.items():
        if config.get(key) not in (None, value):
            msg = f"{path}/config.json: {key} is {config[key]} but the referenced checkpoint has {value}"
            raise ModelError(msg)

    echo_impl = config.get("echo_impl", "code") if config.get("echo") else None
    tokenizer = load_tokenizer(layout.tokenizer_dir)
    en_tokenizer = load_tokenizer(en_dir)
    if fast:
        # No random initialisation: the parameters stay on the meta device until the checkpoint's
        # tensors are assigned to them.
        with torch.device("meta"):
            m_model: nn.Module = bert.BertModel(m_config)
            head: nn.Module = bert.BertOnlyMLMHead(en_config)
    else:
        from transformers import AutoModel, AutoModelForMaskedLM
        from transformers.models.bert.modeling_bert import BertOnlyMLMHead

        m_model = AutoModel.from_config(m_config)
        head = BertOnlyMLMHead(en_config) if en_config.model_type == "bert" else AutoModelForMaskedLM.from_config(
            en_config).cls
    module = MilcoModule(
        m_model,
        head,
        encoder_hidden=m_config.hidden_size,
        head_hidden=en_config.hidden_size,
        echo_impl=echo_impl,
        special_token_ids=list(tokenizer.all_special_ids),
        mask_special_tokens=bool(config.get("mask_special_tokens", False)),
        connector_hidden=int(config.get("connector_hidden", 0)),
    )
    state, weights_file = load_state_dict(path)
    state = {k: v for k, v in state.items() if not k.startswith("en_lsr.")}  # the SAP teacher; unused
    # BERT ties the decoder bias to predictions.bias; checkpoints may carry either name.
    decoder_bias, bias = "mlm_head.predictions.decoder.bias", "mlm_head.predictions.bias"
    if decoder_bias not in state and bias in state:
        state[decoder_bias] = state[bias]
    if bias not in state and decoder_bias in state:
        state[bias] = state[decoder_bias]
    if "m_model.pooler.dense.weight" in state and not hasattr(m_model, "pooler"):
        state = {k: v for k, v in state.items() if not k.startswith("m_model.pooler.")}
    try:
        missing, unexpected = module.load_state_dict(state, strict=False, assign=fast)
    except RuntimeError as e:  # shape mismatches
        msg = f"{path}/{weights_file} does not match the MILCO architecture in config.json: {e}"
        raise ModelError(msg) from e
    # MILCO reads last_hidden_state only: a backbone saved without its (unused) pooler is complete.
    missing = [k for k in missing if not k.endswith("position_ids") and not k.startswith("m_model.pooler.")]
    if missing or unexpected:
        msg = (
            f"{path}/{weights_file} does not match the MILCO architecture in config.json: "
            f"missing {missing[:6]}{' ...' if len(missing) > 6 else ''}, "
            f"unexpected {unexpected[:6]}{' ...' if len(unexpected) > 6 else ''}"
        )
        raise ModelError(msg)

    # The backbone's own embedding comes with the pass when its checkpoint is here in plain BERT form (milco-mini).
    dense = (_attach_dense_view(module, state, m_dir, m_raw) if fast and (m_dir / "model.safetensors").is_file()
             else None)
    del state
    pivot_vocab = pad_vocab(vocab_from_tokenizer(en_tokenizer, name="en-wordpiece"), en_config.vocab_size)
    echo_vocab = pad_vocab(vocab_from_tokenizer(tokenizer, name="source-pieces"), m_config.vocab_size)
    info = ModelInfo(
        name=name,
        family="milco",
        fingerprint=milco_fingerprint(layout.model),
        pivot_vocab=pivot_vocab,
        echo_vocab=echo_vocab if echo_impl else None,
        max_query_length=int(config.get("query_max_length", 64)),
        max_document_length=int(config.get("passage_max_length", 256)),
        details={"path": str(path), "echo_impl": echo_impl},
        dense=dense,
    )
    kwargs = {"echo_special_tokens": bool(config.get("echo_special_tokens", False)), **encoder_kwargs}
    return TorchEncoder(info, tokenizer, module, **kwargs)


def _attach_dense_view(
    module: MilcoModule, state: dict[str, torch.Tensor], backbone_dir: Path, backbone_config: dict[str, Any]
) -> DenseInfo | None:
    """Give ``module`` the backbone checkpoint's embedding as its dense view: its original layers from the first
    one training changed (docs/dense.md); None (no dense view) when training changed its embeddings too.
    ``backbone_config``: the backbone's config.json, as the loader read it."""
    import hashlib

    from milco_os.models.dense import POOLING, first_changed_layer, original_top_layers
    from milco_os.models.files import fingerprint_dir

    start = first_changed_layer(state, backbone_dir, "m_model.")
    if start is None:
        return None
    layers = len(module.m_model.encoder.layer)
    module.with_dense_view(original_top_layers(backbone_dir, start, backbone_config) if start < layers
                           else nn.ModuleList())
    backbone = fingerprint_dir(backbone_dir, ["config.json", "model.safetensors"])
    digest = hashlib.sha256(f"{backbone}\n{POOLING}\n".encode()).hexdigest()[:16]
    return DenseInfo(name=f"{backbone_dir.name} ({POOLING} pooling)", fingerprint=f"sha256:{digest}",
                     dimensions=int(module.m_model.shape.hidden_size))
