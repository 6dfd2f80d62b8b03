"""What makes milco-mini trainable on a 2-core CPU: a frozen backbone whose states are computed once,
and max-pooled vocabulary logits whose gradient is computed only where it is non-zero.

The English head maps every token to 30,522 logits; max pooling keeps, per vocabulary entry, the value
of one token. Its gradient therefore flows only through that (token, entry) pair. :func:`pooled_logits`
finds the maxima without autograd (the full [B, n, V] product, chunked) and recomputes with autograd
only the entries a loss needs: the result and its gradients equal those of the dense computation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from milco_os.models.milco import MilcoModule, head_decoder, head_transform


@dataclass
class CachedStates:
    """Backbone states of many texts, unpadded: text i is ``states[offsets[i]:offsets[i+1]]``."""

    ids: np.ndarray  # int64 [total tokens]
    states: torch.Tensor  # float16 [total tokens, d]
    offsets: np.ndarray  # int64 [n + 1]

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def to_tensors(self) -> dict[str, torch.Tensor]:
        return {"ids": torch.from_numpy(self.ids), "states": self.states, "offsets": torch.from_numpy(self.offsets)}

    @classmethod
    def from_tensors(cls, saved: dict[str, torch.Tensor]) -> CachedStates:
        return cls(ids=saved["ids"].numpy(), states=saved["states"], offsets=saved["offsets"].numpy())

    def batch(self, rows: Sequence[int], device: torch.device | str = "cpu"
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(input_ids [B, n], attention_mask [B, n], states float32 [B, n, d]), right-padded, on ``device``."""
        lengths = [int(self.offsets[r + 1] - self.offsets[r]) for r in rows]
        n = max(lengths)
        d = self.states.shape[1]
        ids = torch.zeros(len(rows), n, dtype=torch.long)
        mask = torch.zeros(len(rows), n, dtype=torch.long)
        states = torch.zeros(len(rows), n, d)
        for b, (r, length) in enumerate(zip(rows, lengths, strict=True)):
            start = int(self.offsets[r])
            ids[b, :length] = torch.from_numpy(self.ids[start : start + length])
            mask[b, :length] = 1
            states[b, :length] = self.states[start : start + length].float()
        return ids.to(device), mask.to(device), states.to(device)


def encode_states(
    backbone: nn.Module,
    tokenizer: object,
    texts: Sequence[str],
    max_length: int,
    batch_size: int = 64,
    on_progress: Callable[[int], None] | None = None,
    below_top: int = 0,
) -> CachedStates:
    """Run the frozen backbone once over ``texts`` (sorted by length, so batches waste little padding).

    ``below_top=k`` keeps the states that enter the last ``k`` layers (those train; see
    :func:`top_layers`) instead of the last hidden states."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    per_text: list[tuple[np.ndarray, torch.Tensor]] = [None] * len(texts)  # type: ignore[list-item]
    backbone.eval()
    device = next(backbone.parameters()).device
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            enc = tokenizer([texts[i] for i in rows], truncation=True, max_length=max_length, padding=True,
                            return_tensors="pt").to(device)  # type: ignore[operator]
            out = backbone(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                           output_hidden_states=below_top > 0)
            hidden = out.hidden_states[-1 - below_top] if below_top else out.last_hidden_state
            for b, i in enumerate(rows):
                length = int(enc["attention_mask"][b].sum())
                per_text[i] = (enc["input_ids"][b, :length].cpu().numpy(),
                               hidden[b, :length].to(torch.float16).cpu().clone())
            if on_progress:
                on_progress(len(rows))
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(ids) for ids, _ in per_text])
    return CachedStates(
        ids=np.concatenate([ids for ids, _ in per_text]) if texts else np.zeros(0, dtype=np.int64),
        states=torch.cat([s for _, s in per_text]) if texts else torch.zeros(0, 1, dtype=torch.float16),
        offsets=offsets,
    )


def top_layers(module: MilcoModule, states: torch.Tensor, mask: torch.Tensor, k: int) -> torch.Tensor:
    """The backbone's last ``k`` (trainable) layers over cached states: H for the head and the echo."""
    if k == 0:
        return states
    additive = torch.zeros(mask.shape[0], 1, 1, mask.shape[1], dtype=states.dtype, device=states.device)
    additive = additive.masked_fill(mask[:, None, None, :] == 0, torch.finfo(states.dtype).min)
    for layer in module.m_model.encoder.layer[-k:]:
        out = layer(states, attention_mask=additive)
        states = out[0] if isinstance(out, tuple) else out
    return states


def head_inputs(module: MilcoModule, states: torch.Tensor) -> torch.Tensor:
    """Z = transform(GELU(connector(H))): the per-token input of the decoder [B, n, d_head]."""
    return head_transform(module.mlm_head)(module.activation(module.projector(states)))


def decoder_rows(module: MilcoModule, vocab: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) of the English decoder, restricted to the entries ``vocab`` when given (training on
    the terms the teacher ever uses skips the rest of the 30,522 logits)."""
    decoder = head_decoder(module.mlm_head)
    if vocab is None:
        return decoder.weight, decoder.bias
    return decoder.weight[vocab], decoder.bias[vocab]


@torch.no_grad()
def argmax_logits(z: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, chunk: int = 8
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Max over non-pad tokens of the raw logits, and the token holding it: ([B, V], [B, V])."""
    values, where = [], []
    for start in range(0, z.shape[0], chunk):
        logits = torch.nn.functional.linear(z[start : start + chunk].detach(), weight.detach(), bias.detach())
        logits.masked_fill_(mask[start : start + chunk, :, None] == 0, float("-inf"))
        v, i = logits.max(dim=1)
        values.append(v)
        where.append(i)
    return torch.cat(values), torch.cat(where)


def pooled_logits(
    module: MilcoModule, states: torch.Tensor, mask: torch.Tensor, select: Callable[[torch.Tensor], torch.Tensor],
    vocab: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Raw max-pooled logits with gradients on the entries ``select(values) -> bool [B, V]`` picks.

    Returns ``(values, idx, selected)``: all values without grad [B, V], the picked entries as
    ``idx = [rows; cols]`` [2, N], and their values with grad [N]. With ``vocab`` (entry ids), V and the
    columns index into ``vocab``.
    """
    weight, bias = decoder_rows(module, vocab)
    z = head_inputs(module, states)
    values, where = argmax_logits(z, mask, weight, bias)
    rows, cols = select(values).nonzero(as_tuple=True)
    tokens = where[rows, cols]
    z_sel = z[rows, tokens]  # [N, d_head]
    selected = (z_sel * weight[cols]).sum(-1) + bias[cols]
    return values, torch.stack([rows, cols]), selected


def sparse_pivot(module: MilcoModule, states: torch.Tensor, mask: torch.Tensor, vocab: torch.Tensor | None = None
                 ) -> torch.Tensor:
    """The pivot view log(1 + ReLU(max logits)) as a dense [B, V] tensor whose gradient matches the dense
    computation (entries with a non-positive max are 0 with zero gradient either way)."""
    values, idx, selected = pooled_logits(module, states, mask, lambda v: v > 0, vocab)
    return _pivot(values, idx, selected)


def _pivot(values: torch.Tensor, idx: torch.Tensor, selected: torch.Tensor) -> torch.Tensor:
    """The dense [B, V] pivot from :func:`pooled_logits`' selected entries (a non-positive one gives 0 and no
    gradient)."""
    return torch.zeros_like(values).index_put((idx[0], idx[1]), torch.log1p(torch.relu(selected)))


def _mse(selected: torch.Tensor, idx: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if selected.numel() == 0:
        return selected.sum() * 0.0
    return torch.mean((selected - target[idx[0], idx[1]]) ** 2)


@torch.no_grad()
def teacher_logits(teacher: nn.Module, en_tokenizer: object, texts: Sequence[str], max_length: int) -> torch.Tensor:
    """The English SPLADE teacher's raw max-pooled logits [B, V] (pads masked with -inf)."""
    enc = en_tokenizer(list(texts), truncation=True, max_length=max_length, padding=True,
                       return_tensors="pt")  # type: ignore[operator]
    logits = teacher(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
    logits.masked_fill_(enc["attention_mask"][:, :, None] == 0, float("-inf"))
    return logits.max(dim=1).values


def sparse_mse(
    module: MilcoModule, states: torch.Tensor, mask: torch.Tensor, target: torch.Tensor,
    vocab: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Spec Eq. 8 over the flattened batch: mean squared error on the entries where the student's or the
    teacher's raw logit is positive. Returns (loss, student values without grad). ``target`` [B, V] is over
    ``vocab`` when given."""
    values, idx, selected = pooled_logits(module, states, mask, lambda v: (v > 0) | (target > 0), vocab)
    return _mse(selected, idx, target), values


def pivot_and_mse(
    module: MilcoModule, states: torch.Tensor, mask: torch.Tensor, target: torch.Tensor,
    vocab: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`sparse_mse` and :func:`sparse_pivot` from one pass over the logits: (loss, pivot [B, V] with
    grad)."""
    values, idx, selected = pooled_logits(module, states, mask, lambda v: (v > 0) | (target > 0), vocab)
    return _mse(selected, idx, target), _pivot(values, idx, selected)


def top_k_targets(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest positive entries of each row of ``logits`` [N, V] as (indices [N, k] int64, values
    [N, k] float16), zero-padded where a row has fewer: a teacher target at a fraction of a dense row's size."""
    values, indices = logits.float().topk(min(k, logits.shape[1]), dim=1)
    values = torch.where(values > 0, values, torch.zeros_like(values))
    return indices, values.half()


def damp_common(indices: torch.Tensor, values: torch.Tensor, share: float, top: int = 20
                ) -> tuple[torch.Tensor, dict[int, float]]:
    """``values`` with every term that is among the ``top`` heaviest of a share ``df > share`` of the rows scaled by
    ``share / df``, and those terms with their factor. The teacher's own near-always-on terms (``to``, ``libre``
    in the help) then weigh less than a page's specific ones, in proportion to how common they are, instead of
    teaching the student to put them into every page; a term stays where the teacher gives it (``table`` on
    a table's page)."""
    heaviest = values.float().topk(min(top, values.shape[1]), dim=1).indices
    top_terms = torch.gather(indices, 1, heaviest)[torch.gather(values, 1, heaviest) > 0]
    df = torch.bincount(top_terms, minlength=int(indices.max()) + 1 if indices.numel() else 1) / max(1, len(indices))
    factor = torch.clamp(share / df.clamp(min=1e-9), max=1.0)
    common = torch.nonzero(factor < 1).squeeze(1)
    return (values.float() * factor[indices]).half(), {int(t): float(factor[t]) for t in common}


def dense_targets(indices: torch.Tensor, values: torch.Tensor, size: int) -> torch.Tensor:
    """Rows of :func:`top_k_targets` back to dense [B, size] targets."""
    out = torch.zeros(indices.shape[0], size)
    return out.scatter_(1, indices, values.float())


def align_pieces(student: Sequence[tuple[int, int]], teacher: Sequence[tuple[int, int]]) -> list[list[int]]:
    """For each student token (character span), the teacher tokens whose spans overlap it. Special tokens
    (empty spans) pair up in order of appearance: the first with the first ([CLS] for <s>), the last with
    the last ([SEP] for </s>); a student token that overlaps nothing (cut off by the teacher's truncation)
    gets no teacher token."""
    t_real = [j for j, (a, b) in enumerate(teacher) if b > a]
    t_special = [j for j, (a, b) in enumerate(teacher) if b <= a]
    s_special = [i for i, (a, b) in enumerate(student) if b <= a]
    out: list[list[int]] = [[] for _ in student]
    for k, i in enumerate(s_special):
        if t_special:
            out[i] = [t_special[0] if k == 0 else t_special[-1]]
    j0 = 0
    for i, (a, b) in enumerate(student):
        if b <= a:
            continue
        while j0 < len(t_real) and teacher[t_real[j0]][1] <= a:
            j0 += 1
        j = j0
        while j < len(t_real) and teacher[t_real[j]][0] < b:
            out[i].append(t_real[j])
            j += 1
    return out


@torch.no_grad()
def teacher_token_targets(
    teacher: nn.Module, en_tokenizer: object, tokenizer: object, texts: Sequence[str], max_length: int,
    batch_size: int = 64, on_progress: Callable[[int], None] | None = None,
) -> CachedStates:
    """Token-level targets for English texts, on the student's tokens: the teacher's decoder input
    (``transform`` of its last hidden states) averaged over the teacher tokens that overlap each student
    token (NaN where none does). A dense signal beside the pooled one: without it the student's pivot
    drifted to one input-independent vector (issue 11)."""
    transform = head_transform(teacher.cls)  # type: ignore[attr-defined]
    ids_all, rows_all = [], []
    for start in range(0, len(texts), batch_size):
        chunk = list(texts[start : start + batch_size])
        s_enc = tokenizer(chunk, truncation=True, max_length=max_length, return_offsets_mapping=True)  # type: ignore[operator]
        t_enc = en_tokenizer(chunk, truncation=True, max_length=max_length, padding=True,  # type: ignore[operator]
                             return_offsets_mapping=True, return_tensors="pt")
        out = teacher(input_ids=t_enc["input_ids"], attention_mask=t_enc["attention_mask"], output_hidden_states=True)
        z = transform(out.hidden_states[-1])
        for b in range(len(chunk)):
            t_len = int(t_enc["attention_mask"][b].sum())
            t_offsets = [tuple(o) for o in t_enc["offset_mapping"][b, :t_len].tolist()]
            groups = align_pieces([tuple(o) for o in s_enc["offset_mapping"][b]], t_offsets)
            target = torch.full((len(groups), z.shape[-1]), float("nan"))
            for i, js in enumerate(groups):
                if js:
                    target[i] = z[b, js].mean(0)
            ids_all.append(np.asarray(s_enc["input_ids"][b], dtype=np.int64))
            rows_all.append(target.to(torch.float16))
        if on_progress:
            on_progress(len(chunk))
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(i) for i in ids_all])
    return CachedStates(ids=np.concatenate(ids_all), states=torch.cat(rows_all), offsets=offsets)


def token_loss(module: MilcoModule, states: torch.Tensor, mask: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean squared error between the student's decoder inputs and the aligned teacher targets, over the
    tokens that have one (NaN rows and pads are skipped)."""
    valid = (mask > 0) & ~torch.isnan(targets).any(-1)
    if not valid.any():
        return states.sum() * 0.0
    z = head_inputs(module, states)
    return torch.mean((z[valid] - targets[valid]) ** 2)
