"""The dense view: a sentence embedding read off the same backbone pass as the sparse views.

milco-mini's backbone is multilingual-e5-small, whose own embedding is the mean of its last hidden states over
the attention mask, L2-normalised. milco-mini fine-tunes the backbone's top two layers for its sparse heads, so
the dense view runs e5-small's *original* top layers on the states below them (shared with the sparse pass):
two more layers per window, measured against the fine-tuned layers in reports/bench/dense-view.json
(docs/dense.md). Queries and documents carry no ``query: `` / ``passage: `` prefix: the sparse heads were
trained without one, and one input feeds both views.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from milco_os.errors import ModelError
from milco_os.models import bert

#: What :class:`DenseView` computes, recorded in the index's layout (a different pooling is a different space).
POOLING = "mean"


def original_top_layers(backbone_dir: Path, start: int, config: dict[str, Any] | None = None) -> nn.ModuleList:
    """The backbone checkpoint's layers ``start ..`` as plain-torch BERT layers (weights memory-mapped).
    ``config``: the backbone's config.json where the caller has read it (else it is read here)."""
    from safetensors.torch import load_file

    from milco_os.models.files import read_config

    config = config if config is not None else read_config(backbone_dir)
    if not bert.supported(config):
        msg = f"{backbone_dir}: the dense view needs a plain BERT backbone (see milco_os.models.bert)"
        raise ModelError(msg)
    shape = bert.BertShape.from_config(config)
    if not 0 <= start < shape.num_hidden_layers:
        msg = f"{backbone_dir}: dense view from layer {start}, but the backbone has {shape.num_hidden_layers}"
        raise ModelError(msg)
    with torch.device("meta"):
        layers = nn.ModuleList([bert.BertLayer(shape) for _ in range(start, shape.num_hidden_layers)])
    state = load_file(str(backbone_dir / "model.safetensors"))
    prefix = "encoder.layer."
    own = {}
    for i in range(start, shape.num_hidden_layers):
        for key, value in state.items():
            if key.startswith(f"{prefix}{i}."):
                own[f"{i - start}.{key[len(f'{prefix}{i}.'):]}"] = value
    missing, unexpected = layers.load_state_dict(own, strict=False, assign=True)
    if missing or unexpected:
        msg = f"{backbone_dir}/model.safetensors: layers {start}.. do not load (missing {missing[:3]})"
        raise ModelError(msg)
    return layers


def mean_pooled(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """e5's embedding: the mean of ``hidden`` [B, n, d] over the mask, L2-normalised: [B, d]."""
    mask = attention_mask[..., None].to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, p=2, dim=-1)


def first_changed_layer(state: dict[str, torch.Tensor], backbone_dir: Path, prefix: str) -> int | None:
    """The first backbone layer whose weights in ``state`` (keys ``prefix + 'encoder.layer.N...'``) differ from
    the backbone checkpoint's: the dense view runs the checkpoint's own layers from there. The layer count when
    nothing changed; None when the embeddings changed too (the lower states are no longer the backbone's, so its
    embedding cannot be read off this pass)."""
    from safetensors import safe_open

    with safe_open(str(backbone_dir / "model.safetensors"), "pt") as original:
        keys = list(original.keys())

        def same(key: str) -> bool:
            ours = state.get(prefix + key)
            return ours is not None and torch.equal(ours, original.get_tensor(key))

        if not all(same(k) for k in keys if k.startswith("embeddings.")):
            return None
        layers = sorted({int(k.split(".")[2]) for k in keys if k.startswith("encoder.layer.")})
        for i in layers:
            if not all(same(k) for k in keys if k.startswith(f"encoder.layer.{i}.")):
                return i
        return len(layers)
