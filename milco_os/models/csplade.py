"""CSPLADE (arXiv 2504.10816; method-spec PART B): SPLADE on a decoder-only causal LM, through the LM's own
head and vocabulary.

Three variants (spec B2.1), all pooled with SPLADE's ``max_i log(1 + ReLU(logit_i))`` over non-pad tokens:

- ``causal``: the LM as is;
- ``echo``: the input is fed twice, ``[x ; x]``, and only the second copy is pooled (its early tokens have
  seen the whole text through the first copy);
- ``bi``: the causal mask is dropped (full attention over non-pad tokens), as in NV-Embed / llm2vec.

Logits are never materialised for a whole ``[B, L, V]`` batch at once: with 128k-token vocabularies that is
gigabytes (spec B7), so the LM head runs over chunks of positions with a running max.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from milco_os.errors import ModelError
from milco_os.models.files import quiet_transformers
from milco_os.models.layouts import (
    CSPLADE_DEFAULT_CHUNK_SIZE,
    CSPLADE_DEFAULT_VARIANT,
    CSPLADE_VARIANTS,
    ModelDir,
    csplade_layout,
)
from milco_os.models.pooling import log_saturate
from milco_os.runtime.encoder import SparseEncoder
from milco_os.types import ModelInfo, pad_vocab, vocab_from_tokenizer

log = logging.getLogger(__name__)

VARIANTS = CSPLADE_VARIANTS
DEFAULT_VARIANT = CSPLADE_DEFAULT_VARIANT
#: Positions per LM-head chunk: [B, 32, 128k] fp32 logits for B = 32 is ~0.5 GB.
DEFAULT_CHUNK_SIZE = CSPLADE_DEFAULT_CHUNK_SIZE
# The paper states no lengths (spec B2): milco-os's defaults apply. The directory layout (sidecar, LoRA
# adapters, shards, gguf) and the fingerprint are read by milco_os.models.layouts, without torch.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


def _check_variant(variant: Any) -> str:
    if variant not in VARIANTS:
        msg = f"variant {variant!r}: expected one of {', '.join(VARIANTS)}"
        raise ValueError(msg)
    return variant


def _is_peft(model: Any) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "merge_and_unload")


def merge_lora(model: Any) -> Any:
    """Fold a peft LoRA adapter into its base weights (spec B2: "LoRA merged into the backbone") so inference
    runs plain Linear layers; anything that is not a peft model is returned unchanged."""
    if _is_peft(model):
        return model.merge_and_unload()
    return model


def make_bidirectional(lm: nn.Module) -> None:
    """Switch a causal LM to full (non-causal) attention, in place (spec B2.1, CSPLADE-Bi, llm2vec-style).

    Two switches, because transformers consults both: ``config.is_causal = False`` makes
    ``masking_utils.create_causal_mask`` build a bidirectional padding-only mask (transformers >= 5), and
    ``module.is_causal = False`` on every attention module stops SDPA / flash-attention from applying their
    own causal flag when no mask is passed (no padding). :class:`CSpladeModule` additionally passes an
    explicit 4D padding-only mask for the eager and sdpa implementations, which does not depend on either.
    """
    configs = {id(lm.config): lm.config}
    for module in lm.modules():
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "to_dict"):
            configs[id(config)] = config
        if hasattr(module, "is_causal") and isinstance(module.is_causal, bool):
            module.is_causal = False
    for config in configs.values():
        config.is_causal = False
        text_config = getattr(config, "text_config", None)
        if text_config is not None and hasattr(text_config, "to_dict"):
            text_config.is_causal = False


def _exporting() -> bool:
    """True while a graph is traced or exported: the chunk loop would be unrolled for one length."""
    if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return True
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and hasattr(compiler, "is_exporting") and compiler.is_exporting())


class CSpladeModule(nn.Module):
    """``forward(input_ids, attention_mask) -> (pivot [B, V], echo [B, L])``; echo is all zeros.

    CSPLADE has no source-token view; the two-output signature is the one every milco-os model shares.
    ``lm`` is a Hugging Face causal LM (a peft-wrapped one is run with its adapter active; call
    :func:`merge_lora` first for speed). The ``bi`` variant changes ``lm`` in place (:func:`make_bidirectional`).
    """

    has_echo = False

    def __init__(self, lm: nn.Module, variant: str = DEFAULT_VARIANT, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        super().__init__()
        self.variant = _check_variant(variant)
        if not isinstance(chunk_size, int) or chunk_size < 1:
            msg = f"chunk_size {chunk_size!r}: expected a positive integer"
            raise ValueError(msg)
        self.chunk_size = chunk_size
        if _is_peft(lm):
            lm = lm.get_base_model()  # LoRA layers are injected in place, so the base model runs them
        if lm.get_output_embeddings() is None:
            msg = f"{type(lm).__name__} has no LM head; CSPLADE needs a causal LM (AutoModelForCausalLM)"
            raise ValueError(msg)
        self.lm = lm
        if variant == "bi":
            make_bidirectional(lm)

    # The decoder and head are looked up, not stored, so that they are not registered twice as submodules.
    def _decoder(self) -> nn.Module:
        return self.lm.get_decoder()

    def _head(self) -> nn.Module:
        return self.lm.get_output_embeddings()

    def hidden_states(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Final hidden states [B, L, H] of the decoder, with this variant's attention pattern."""
        mask: torch.Tensor = attention_mask
        if self.variant == "bi" and self.lm.config._attn_implementation in ("eager", "sdpa"):
            # Keys are masked only where they are padding; no causal triangle. Additive float (not bool) so
            # that the eager path can add it, and finite so that a row with no real key cannot produce NaN.
            dtype = self._head().weight.dtype
            blocked = (attention_mask == 0)[:, None, None, :]
            mask = torch.zeros(blocked.shape, dtype=dtype, device=attention_mask.device)
            mask = mask.masked_fill(blocked, torch.finfo(dtype).min)
            mask = mask.expand(-1, -1, attention_mask.shape[1], -1)
        out = self._decoder()(input_ids=input_ids, attention_mask=mask, position_ids=position_ids, use_cache=False)
        return out[0]

    def _transform(self, logits: torch.Tensor) -> torch.Tensor:
        """The monotone post-head steps some causal LMs apply to their logits (Gemma soft-capping, Cohere /
        Granite scaling); none for Llama. Monotone, so applying them after the max-pool is exact."""
        config = self.lm.config
        cap = getattr(config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        scale = getattr(config, "logit_scale", None)
        if isinstance(scale, (int, float)) and scale > 0:
            logits = logits * scale
        divisor = getattr(config, "logits_scaling", None)
        if isinstance(divisor, (int, float)) and divisor > 0:
            logits = logits / divisor
        return logits

    def max_logits(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[B, L, H] hidden states -> [B, V] = max over non-pad positions of the LM head's logits.

        The LM head runs ``chunk_size`` positions at a time with a running max; ReLU and log1p are monotone,
        so saturating this max equals the paper's saturate-then-max (spec B2, Eq. 1).
        """
        head = self._head()
        pad = attention_mask == 0
        length = hidden.shape[1]
        step = length if _exporting() else self.chunk_size
        best: torch.Tensor | None = None
        for start in range(0, length, step):
            logits = head(hidden[:, start : start + step])
            logits = logits.masked_fill(pad[:, start : start + step, None], float("-inf"))
            chunk_max = logits.max(dim=1).values
            best = chunk_max if best is None else torch.maximum(best, chunk_max)
        assert best is not None  # length >= 1
        return self._transform(best.float())

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pivot = log_saturate(self.pooled_logits(input_ids, attention_mask))
        return pivot, torch.zeros(input_ids.shape, dtype=pivot.dtype, device=pivot.device)

    def pooled_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[B, V] max-pooled logits before log(1 + ReLU(.)): a training loss can still reach an entry whose
        pooled weight is 0 (a dead ReLU passes no gradient)."""
        ids, mask = input_ids, attention_mask
        length = input_ids.shape[1]
        if self.variant == "echo":
            ids, mask = ids.repeat(1, 2), mask.repeat(1, 2)  # [x, pad.., x, pad..]
        # Pads take no position: real tokens are numbered 0, 1, ... as if unpadded. For "echo" this makes
        # the second copy follow the first directly (RoPE sees the same distances whatever the batch's
        # padding), and any padding side gives the same vectors.
        position_ids = (mask.long().cumsum(dim=1) - 1).clamp(min=0)
        hidden = self.hidden_states(ids, mask, position_ids)
        if self.variant == "echo":
            hidden, mask = hidden[:, length:], mask[:, length:]
        return self.max_logits(hidden, mask)


def adaptation_loss(
    logits: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor, lambda_relu: float = 1.0
) -> torch.Tensor:
    """CSPLADE's adaptation objective (spec B3.1, Eqs. 2-3): next-token CE on the raw logits plus
    ``lambda_relu`` x next-token CE on log(1 + ReLU(logits)), which keeps the ReLU units alive before
    contrastive training. Both are means over the non-pad targets; no pooling. ``logits`` is [B, L, V]."""
    vocab = logits.shape[-1]
    shift = logits[:, :-1].reshape(-1, vocab).float()
    targets = input_ids[:, 1:].reshape(-1)
    valid = (attention_mask[:, 1:] != 0).reshape(-1)
    targets = targets.masked_fill(~valid, -100)
    count = valid.sum().clamp(min=1)
    clm = F.cross_entropy(shift, targets, ignore_index=-100, reduction="sum") / count
    adapt = F.cross_entropy(log_saturate(shift), targets, ignore_index=-100, reduction="sum") / count
    return clm + lambda_relu * adapt


# ---------------------------------------------------------------------------------------------- loading
def load_csplade_dir(
    source: Path | ModelDir, name: str, variant: str | None = None, **encoder_kwargs: Any
) -> SparseEncoder:
    """A Hugging Face causal-LM directory (config.json + weights, or one ``*.gguf``), optionally a LoRA
    adapter directory (``adapter_config.json``) over a local base, as a CSPLADE :class:`TorchEncoder`.

    ``csplade_config.json`` next to the weights may set ``variant``, ``chunk_size``, ``max_query_length``,
    ``max_document_length``, ``query_top_k`` and ``document_top_k``; the ``variant`` argument overrides the
    file (default ``causal``). The two top-k keys are for a model trained with top-k masking (csplade-mini
    keeps the 16 / 64 heaviest terms): every query / document vector it encodes then holds at most that many
    pivot terms, its heaviest (ties by term id), wherever it is used (search, ingest, the service, ONNX
    exports, which record them in ``milco_os_model.json``); without them every non-zero term is kept. They
    are part of the fingerprint, so an index built with one setting refuses a model loaded with another.
    """
    from milco_os.runtime.torch_runtime import TorchEncoder

    layout = csplade_layout(source.path if isinstance(source, ModelDir) else source, variant)
    path = layout.path
    model_dir, gguf_file, adapter = layout.model_dir, layout.gguf_file, layout.adapter
    quiet_transformers()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    has_tokenizer = [d for d in (path, model_dir) if any((d / f).is_file() for f in TOKENIZER_FILES)]
    try:
        if has_tokenizer:
            tokenizer = AutoTokenizer.from_pretrained(str(has_tokenizer[0]))
        else:
            tokenizer = AutoTokenizer.from_pretrained(str(model_dir), **gguf_kwargs)
        lm = AutoModelForCausalLM.from_pretrained(str(model_dir), **gguf_kwargs)
    except (OSError, ValueError, KeyError) as e:
        msg = f"{model_dir}: cannot load the causal-LM model or its tokenizer: {e}"
        raise ModelError(msg) from e
    if adapter:
        try:
            from peft import PeftModel
        except ImportError as e:
            msg = f"{path}: a LoRA adapter directory needs the peft package (pip install peft)"
            raise ModelError(msg) from e
        try:
            lm = merge_lora(PeftModel.from_pretrained(lm, str(path)))
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            msg = f"{path}: cannot apply the LoRA adapter to {model_dir}: {e}"
            raise ModelError(msg) from e
    lm.eval()

    # Spec B2 / [L]: pad = EOS when there is no pad token, right padding (pads are masked either way).
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"

    try:
        module = CSpladeModule(lm, variant=layout.variant, chunk_size=layout.chunk_size)
    except ValueError as e:
        msg = f"{model_dir}: {e}"
        raise ModelError(msg) from e
    out_size = int(module._head().weight.shape[0])
    model_type = getattr(lm.config, "model_type", "causal-lm")
    vocab = pad_vocab(vocab_from_tokenizer(tokenizer, name=f"{model_type}-vocab"), out_size)
    info = ModelInfo(
        name=name,
        family="csplade",
        fingerprint=layout.fingerprint,
        pivot_vocab=vocab,
        echo_vocab=None,
        max_query_length=layout.max_query_length,
        max_document_length=layout.max_document_length,
        query_top_k=layout.query_top_k,
        document_top_k=layout.document_top_k,
        details={
            "path": str(path),
            "variant": layout.variant,
            "base_model": str(model_dir) if adapter else None,
            "gguf_file": gguf_file,
        },
    )
    return TorchEncoder(info, tokenizer, module, **encoder_kwargs)
