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

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from milco_os.errors import ModelError
from milco_os.models.pooling import log_saturate
from milco_os.runtime.encoder import ModelInfo, SparseEncoder, pad_vocab, vocab_from_tokenizer

log = logging.getLogger(__name__)

VARIANTS = ("causal", "echo", "bi")
DEFAULT_VARIANT = "causal"
#: Positions per LM-head chunk: [B, 32, 128k] fp32 logits for B = 32 is ~0.5 GB.
DEFAULT_CHUNK_SIZE = 32
#: The paper states no lengths (spec B2); these match the rest of milco-os.
DEFAULT_MAX_QUERY_LENGTH = 64
DEFAULT_MAX_DOCUMENT_LENGTH = 256
SIDECAR_FILE = "csplade_config.json"
SIDECAR_KEYS = ("variant", "chunk_size", "max_query_length", "max_document_length")
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
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

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[B, L, H] hidden states -> [B, V] = max over non-pad positions of log(1 + ReLU(head(h))).

        The LM head runs ``chunk_size`` positions at a time with a running max of the raw logits; ReLU and
        log1p are monotone, so pooling first equals the paper's saturate-then-max (spec B2, Eq. 1).
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
        return log_saturate(self._transform(best.float()))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
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
        pivot = self.pool(hidden, mask)
        return pivot, torch.zeros(input_ids.shape, dtype=pivot.dtype, device=pivot.device)


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
def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        msg = f"{path}: not valid JSON ({e})"
        raise ModelError(msg) from e
    if not isinstance(data, dict):
        msg = f"{path}: expected a JSON object"
        raise ModelError(msg)
    return data


def _read_sidecar(path: Path) -> dict[str, Any]:
    sidecar = path / SIDECAR_FILE
    if not sidecar.is_file():
        return {}
    data = _read_json(sidecar)
    unknown = sorted(set(data) - set(SIDECAR_KEYS))
    if unknown:
        msg = f"{sidecar}: unknown keys {unknown}; expected only {', '.join(SIDECAR_KEYS)}"
        raise ModelError(msg)
    for key in SIDECAR_KEYS[1:]:
        value = data.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            msg = f"{sidecar}: {key} is {value!r}; expected a positive integer"
            raise ModelError(msg)
    return data


def _weight_files(path: Path) -> list[str]:
    """Weight files of a HF directory, relative to it: one file, or an index and its shards."""
    for name in WEIGHT_FILES:
        if (path / name).is_file():
            return [name]
    for index in WEIGHT_INDEXES:
        if (path / index).is_file():
            shards = sorted(set(_read_json(path / index).get("weight_map", {}).values()))
            missing = [s for s in shards if not (path / s).is_file()]
            if missing or not shards:
                msg = f"{path}/{index}: shard files missing: {missing[:3] or 'none listed'}"
                raise ModelError(msg)
            return [index, *shards]
    return []


def _model_files(path: Path) -> tuple[list[str], str | None]:
    """(files to fingerprint, gguf file name or None) of a causal-LM directory; ModelError when it has none."""
    has_config = (path / "config.json").is_file()
    ggufs = sorted(p.name for p in path.glob("*.gguf"))
    weights = _weight_files(path) if has_config else []
    if has_config and weights:
        return ["config.json", *weights], None
    if len(ggufs) == 1:
        return (["config.json"] if has_config else []) + ggufs, ggufs[0]
    if len(ggufs) > 1:
        msg = f"{path}: several *.gguf files ({', '.join(ggufs)}); expected exactly one"
        raise ModelError(msg)
    if not has_config:
        msg = (
            f"{path}: no config.json; expected a Hugging Face causal-LM directory (config.json + "
            f"{' / '.join(WEIGHT_FILES)}) or a single *.gguf file"
        )
        raise ModelError(msg)
    msg = f"{path}: no weights file; expected one of {', '.join(WEIGHT_FILES + WEIGHT_INDEXES)} or a *.gguf file"
    raise ModelError(msg)


def _adapter_base(path: Path) -> Path:
    """The base model directory a LoRA adapter names (local only: milco-os never downloads a base here)."""
    config = _read_json(path / ADAPTER_CONFIG)
    reference = config.get("base_model_name_or_path")
    if not reference:
        msg = f"{path}/{ADAPTER_CONFIG}: missing base_model_name_or_path"
        raise ModelError(msg)
    for candidate in (Path(reference).expanduser(), path / reference):
        if candidate.is_dir():
            return candidate
    msg = (
        f"{path}/{ADAPTER_CONFIG}: base_model_name_or_path {reference!r} is not a local directory; expected the "
        "path of the base causal LM (absolute or relative to the adapter directory)"
    )
    raise ModelError(msg)


def _combine(*parts: str) -> str:
    h = hashlib.sha256("\0".join(parts).encode("utf-8"))
    return f"sha256:{h.hexdigest()[:32]}"


def load_csplade_dir(path: Path, name: str, variant: str | None = None, **encoder_kwargs: Any) -> SparseEncoder:
    """A Hugging Face causal-LM directory (config.json + weights, or one ``*.gguf``), optionally a LoRA
    adapter directory (``adapter_config.json``) over a local base, as a CSPLADE :class:`TorchEncoder`.

    ``csplade_config.json`` next to the weights may set ``variant``, ``chunk_size``, ``max_query_length`` and
    ``max_document_length``; the ``variant`` argument overrides the file (default ``causal``).
    """
    from milco_os.models.loading import _quiet_transformers, fingerprint_dir
    from milco_os.runtime.torch_runtime import TorchEncoder

    path = Path(path)
    if not path.is_dir():
        msg = f"{path}: not a directory"
        raise ModelError(msg)
    sidecar = _read_sidecar(path)
    chosen = variant if variant is not None else sidecar.get("variant", DEFAULT_VARIANT)
    if chosen not in VARIANTS:
        source = "variant argument" if variant is not None else f"{path / SIDECAR_FILE}: variant"
        msg = f"{source} {chosen!r}: expected one of {', '.join(VARIANTS)}"
        raise ModelError(msg)
    chunk_size = int(sidecar.get("chunk_size") or DEFAULT_CHUNK_SIZE)
    max_query_length = int(sidecar.get("max_query_length") or DEFAULT_MAX_QUERY_LENGTH)
    max_document_length = int(sidecar.get("max_document_length") or DEFAULT_MAX_DOCUMENT_LENGTH)

    adapter = (path / ADAPTER_CONFIG).is_file()
    model_dir = _adapter_base(path) if adapter else path
    files, gguf_file = _model_files(model_dir)
    fingerprints = [fingerprint_dir(model_dir, files)]
    if adapter:
        adapter_weights = [f for f in ADAPTER_WEIGHTS if (path / f).is_file()]
        if not adapter_weights:
            msg = f"{path}: {ADAPTER_CONFIG} but no adapter weights; expected one of {', '.join(ADAPTER_WEIGHTS)}"
            raise ModelError(msg)
        fingerprints.append(fingerprint_dir(path, [ADAPTER_CONFIG, adapter_weights[0]]))

    _quiet_transformers()
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
        module = CSpladeModule(lm, variant=chosen, chunk_size=chunk_size)
    except ValueError as e:
        msg = f"{model_dir}: {e}"
        raise ModelError(msg) from e
    out_size = int(module._head().weight.shape[0])
    model_type = getattr(lm.config, "model_type", "causal-lm")
    vocab = pad_vocab(vocab_from_tokenizer(tokenizer, name=f"{model_type}-vocab"), out_size)
    info = ModelInfo(
        name=name,
        family="csplade",
        # The variant and lengths change the vectors, not the files: they are part of the identity.
        fingerprint=_combine(*fingerprints, f"variant={chosen}", f"lengths={max_query_length}/{max_document_length}"),
        pivot_vocab=vocab,
        echo_vocab=None,
        max_query_length=max_query_length,
        max_document_length=max_document_length,
        details={
            "path": str(path),
            "variant": chosen,
            "base_model": str(model_dir) if adapter else None,
            "gguf_file": gguf_file,
        },
    )
    return TorchEncoder(info, tokenizer, module, **encoder_kwargs)
