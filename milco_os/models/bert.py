"""A BERT encoder and MLM head in plain torch, for fast loading: no transformers import, no random init.

Importing ``transformers.models.bert`` costs seconds (it pulls in torch._dynamo, torch.distributed and the
hub machinery), and building a ``BertModel`` initialises every weight randomly before the checkpoint
overwrites it. The modules here leave their parameters uninitialised (:class:`Linear`, :class:`Embedding`,
:class:`LayerNorm`): build them on the ``meta`` device and assign the checkpoint's tensors to them
(``load_state_dict(assign=True)``, memory-mapped from ``model.safetensors``).

They compute exactly what transformers' ``BertModel`` (sdpa attention, inference) and ``BertOnlyMLMHead``
compute, op for op, so the outputs are bit-identical (tests/unit/test_milco.py checks this on random
weights, with and without padding). Parameter names are transformers' own, so the same state dicts load
into either. Only the plain configuration is covered (:func:`supported`): absolute positions, exact GELU,
an encoder (no decoder, no cross-attention), float32; anything else goes through transformers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

#: config.json keys whose value must be given (transformers' defaults are not assumed).
REQUIRED_KEYS = (
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
    "max_position_embeddings", "type_vocab_size", "layer_norm_eps",
)


def supported(config: dict[str, Any]) -> bool:
    """Whether a BERT ``config.json`` is one these modules reproduce exactly."""
    if config.get("model_type") != "bert" or any(not isinstance(config.get(k), (int, float)) for k in REQUIRED_KEYS):
        return False
    if config["hidden_size"] % config["num_attention_heads"]:
        return False
    attn = config.get("attn_implementation") or config.get("_attn_implementation")
    return (
        config.get("hidden_act", "gelu") == "gelu"
        and config.get("position_embedding_type", "absolute") == "absolute"
        and not config.get("is_decoder", False)
        and not config.get("add_cross_attention", False)
        and not config.get("chunk_size_feed_forward", 0)
        and config.get("dtype", config.get("torch_dtype")) in (None, "float32")
        and attn in (None, "sdpa")
    )


@dataclass(frozen=True)
class BertShape:
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> BertShape:
        return cls(**{k: config[k] for k in REQUIRED_KEYS})


class Linear(nn.Linear):
    """``nn.Linear`` without initialisation: the weights always come from a checkpoint. (Initialising on the
    meta device is not free either: ``normal_`` there imports torch._dynamo, seconds.)"""

    def reset_parameters(self) -> None:
        pass


class Embedding(nn.Embedding):
    """``nn.Embedding`` without initialisation (see :class:`Linear`)."""

    def reset_parameters(self) -> None:
        pass


class LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` without initialisation (see :class:`Linear`)."""

    def reset_parameters(self) -> None:
        pass


def exporting() -> bool:
    """True while a graph is traced or exported (data-dependent shortcuts must not be baked into it)."""
    if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return True
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and hasattr(compiler, "is_exporting") and compiler.is_exporting())


class BertEmbeddings(nn.Module):
    def __init__(self, shape: BertShape) -> None:
        super().__init__()
        self.word_embeddings = Embedding(shape.vocab_size, shape.hidden_size)
        self.position_embeddings = Embedding(shape.max_position_embeddings, shape.hidden_size)
        self.token_type_embeddings = Embedding(shape.type_vocab_size, shape.hidden_size)
        self.LayerNorm = LayerNorm(shape.hidden_size, eps=shape.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        length = input_ids.shape[1]
        position_ids = torch.arange(length, device=input_ids.device)[None, :]
        token_type_ids = torch.zeros_like(input_ids)
        embeddings = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        embeddings = embeddings + self.position_embeddings(position_ids)
        return self.LayerNorm(embeddings)


class BertSelfAttention(nn.Module):
    def __init__(self, shape: BertShape) -> None:
        super().__init__()
        self.num_heads = shape.num_attention_heads
        self.head_size = shape.hidden_size // shape.num_attention_heads
        self.scaling = self.head_size**-0.5
        self.query = Linear(shape.hidden_size, shape.hidden_size)
        self.key = Linear(shape.hidden_size, shape.hidden_size)
        self.value = Linear(shape.hidden_size, shape.hidden_size)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        batch, length = hidden.shape[:2]
        shape = (batch, length, -1, self.head_size)
        query = self.query(hidden).view(*shape).transpose(1, 2)
        key = self.key(hidden).view(*shape).transpose(1, 2)
        value = self.value(hidden).view(*shape).transpose(1, 2)
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=0.0, scale=self.scaling,
                                             is_causal=False)
        out = out.reshape(out.shape[0], -1, length, value.shape[-1]).transpose(1, 2).contiguous()
        return out.reshape(batch, length, -1).contiguous()


class BertOutput(nn.Module):
    """Dense projection back to the hidden size, residual, LayerNorm: the block that closes both the attention
    (transformers' ``BertSelfOutput``, from ``hidden_size``) and the feed-forward (``BertOutput``, from
    ``intermediate_size``) halves of a layer. The parameter names are those of both."""

    def __init__(self, shape: BertShape, in_features: int) -> None:
        super().__init__()
        self.dense = Linear(in_features, shape.hidden_size)
        self.LayerNorm = LayerNorm(shape.hidden_size, eps=shape.layer_norm_eps)

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(hidden) + residual)


class BertAttention(nn.Module):
    def __init__(self, shape: BertShape) -> None:
        super().__init__()
        self.self = BertSelfAttention(shape)
        self.output = BertOutput(shape, shape.hidden_size)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return self.output(self.self(hidden, mask), hidden)


class BertIntermediate(nn.Module):
    def __init__(self, shape: BertShape) -> None:
        super().__init__()
        self.dense = Linear(shape.hidden_size, shape.intermediate_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(hidden))


class BertLayer(nn.Module):
    def __init__(self, shape: BertShape) -> None:
        super().__init__()
        self.attention = BertAttention(shape)
        self.intermediate = BertIntermediate(shape)
        self.output = BertOutput(shape, shape.intermediate_size)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        attended = self.attention(hidden, mask)
        return self.output(self.intermediate(attended), attended)


class BertEncoder(nn.Module):
    def __init__(self, shape: BertShape) -> None:
        super().__init__()
        self.layer = nn.ModuleList([BertLayer(shape) for _ in range(shape.num_hidden_layers)])

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        for layer in self.layer:
            hidden = layer(hidden, mask)
        return hidden


@dataclass
class EncoderOutput:
    last_hidden_state: torch.Tensor


class BertModel(nn.Module):
    """transformers' ``BertModel`` without a pooler, for inference: ``forward(input_ids, attention_mask)``
    returns an object with ``last_hidden_state``."""

    def __init__(self, shape: BertShape) -> None:
        super().__init__()
        self.shape = shape
        self.embeddings = BertEmbeddings(shape)
        self.encoder = BertEncoder(shape)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> EncoderOutput:
        return EncoderOutput(self.encoder(self.embeddings(input_ids), attention_mask_4d(attention_mask)))


def attention_mask_4d(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """transformers' sdpa mask: boolean [B, 1, L, L], True where a key may be attended; none without padding."""
    if attention_mask is None or not (exporting() or not bool(attention_mask.all())):
        return None
    batch, length = attention_mask.shape
    return attention_mask.to(torch.bool)[:, None, None, :].expand(batch, 1, length, length).contiguous()


class BertPredictionHeadTransform(nn.Module):
    def __init__(self, shape: BertShape) -> None:
        super().__init__()
        self.dense = Linear(shape.hidden_size, shape.hidden_size)
        self.LayerNorm = LayerNorm(shape.hidden_size, eps=shape.layer_norm_eps)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(F.gelu(self.dense(hidden)))


class BertLMPredictionHead(nn.Module):
    def __init__(self, shape: BertShape) -> None:
        super().__init__()
        self.transform = BertPredictionHeadTransform(shape)
        self.decoder = Linear(shape.hidden_size, shape.vocab_size, bias=True)
        self.bias = nn.Parameter(torch.empty(shape.vocab_size))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(hidden))


class BertOnlyMLMHead(nn.Module):
    """transformers' ``BertOnlyMLMHead`` (``predictions.transform``, ``predictions.decoder``, ``predictions.bias``)."""

    def __init__(self, shape: BertShape) -> None:
        super().__init__()
        self.predictions = BertLMPredictionHead(shape)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.predictions(hidden)
