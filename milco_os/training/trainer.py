"""The two training stages of milco-mini (spec A3), on cached backbone states (see :mod:`.states`).

Both stages log, every ``log_every`` steps, the loss and the average number of non-zero pivot terms
(queries and documents apart in SCT), to stderr and to ``<output>/train.log.jsonl``.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from milco_os.models.milco import MilcoModule, dual_view_scores
from milco_os.training.config import SapConfig, SctConfig
from milco_os.training.states import CachedStates, sparse_mse, sparse_pivot, teacher_logits, top_layers

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def optimizer_and_schedule(
    module: MilcoModule, lr: float, total_steps: int, warmup_ratio: float, backbone_lr: float | None = None
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW over the trainable parameters (pretrained backbone layers at ``backbone_lr``); linear warm-up
    then cosine decay (spec Tables 16-17)."""
    trainable = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    groups = [{"params": [p for n, p in trainable if not n.startswith("m_model.")], "lr": lr}]
    backbone = [p for n, p in trainable if n.startswith("m_model.")]
    if backbone:
        groups.append({"params": backbone, "lr": backbone_lr or lr})
    optimizer = torch.optim.AdamW(groups, weight_decay=0.0)
    warmup = max(1, int(total_steps * warmup_ratio))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class StepLog:
    def __init__(self, output: Path, stage: str, total_steps: int, every: int = 20) -> None:
        output.mkdir(parents=True, exist_ok=True)
        self.file = open(output / "train.log.jsonl", "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self.stage, self.total, self.every = stage, total_steps, every
        self.sums: dict[str, float] = {}
        self.count = 0
        self.start = time.monotonic()

    def add(self, step: int, **values: float) -> None:
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
        self.count += 1
        if (step + 1) % self.every == 0 or step + 1 == self.total:
            means = {k: round(v / self.count, 5) for k, v in self.sums.items()}
            record = {"stage": self.stage, "step": step + 1, "of": self.total,
                      "elapsed_s": round(time.monotonic() - self.start, 1), **means}
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()
            log.warning("%s step %d/%d %s", self.stage, step + 1, self.total,
                        " ".join(f"{k}={v:.4g}" for k, v in means.items()))
            self.sums, self.count = {}, 0

    def close(self) -> None:
        self.file.close()


def batches_of(n: int, size: int, rng: random.Random) -> list[list[int]]:
    order = list(range(n))
    rng.shuffle(order)
    return [order[i : i + size] for i in range(0, n, size)]


# --------------------------------------------------------------------------------------------- SAP
def train_sap(
    module: MilcoModule,
    teacher: torch.nn.Module,
    en_tokenizer: Any,
    x_states: CachedStates,
    en_states: CachedStates | None,
    en_texts: Sequence[str],
    config: SapConfig,
    on_step: Callable[[], None] | None = None,
) -> None:
    """``x_states[i]`` (source text) and ``en_states[i]`` (the same English text through the student's
    tokenizer, for the code's second term) both align to the teacher on ``en_texts[i]``."""
    rng = random.Random(config.seed)
    steps_per_epoch = math.ceil(len(x_states) / config.batch_size)
    total = steps_per_epoch * config.epochs
    optimizer, schedule = optimizer_and_schedule(module, config.lr, total, config.warmup_ratio, config.backbone_lr)
    steps = StepLog(config.output, "sap", total)
    module.train()
    teacher.eval()
    step = 0
    for _ in range(config.epochs):
        for rows in batches_of(len(x_states), config.batch_size, rng):
            target = teacher_logits(teacher, en_tokenizer, [en_texts[r] for r in rows], config.max_length)
            ids, mask, states = x_states.batch(rows)
            states = top_layers(module, states, mask, config.train_top_layers)
            loss, values = sparse_mse(module, states, mask, target)
            terms = (values > 0).sum(1).float().mean()
            if en_states is not None and config.english_term:
                _, en_mask, en_hidden = en_states.batch(rows)
                en_hidden = top_layers(module, en_hidden, en_mask, config.train_top_layers)
                en_loss, _ = sparse_mse(module, en_hidden, en_mask, target)
                loss = loss + en_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            steps.add(step, loss=loss.item(), terms=terms.item(), teacher_terms=(target > 0).sum(1).float().mean())
            step += 1
            if on_step:
                on_step()
    steps.close()


# --------------------------------------------------------------------------------------------- SCT
def batch_scores(
    module: MilcoModule,
    q: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    d: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    train_top_layers: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Dual-view scores of every query against every passage of the batch [Bq, Bd] (spec A2.3), and the
    two pivot views (for the L1 terms)."""
    q_ids, q_mask, q_states = q
    d_ids, d_mask, d_states = d
    q_states = top_layers(module, q_states, q_mask, train_top_layers)
    d_states = top_layers(module, d_states, d_mask, train_top_layers)
    q_pivot = sparse_pivot(module, q_states, q_mask)
    d_pivot = sparse_pivot(module, d_states, d_mask)
    if not module.has_echo:
        return q_pivot @ d_pivot.T, q_pivot, d_pivot
    q_echo = module.echo_weights(q_states, q_mask)  # zero on pads, so padded ids never match
    d_echo = module.echo_weights(d_states, d_mask)
    return dual_view_scores(q_pivot, q_ids, q_echo, d_pivot, d_ids, d_echo), q_pivot, d_pivot


def ranking_loss(
    scores: torch.Tensor, group_size: int, loss: str, teacher: torch.Tensor | None, doc_rows: torch.Tensor | None = None
) -> torch.Tensor:
    """``scores`` [B, B*G]: query b's own passages are columns b*G .. b*G+G-1, its positive first.

    ``kl``: KL(teacher || student) over the query's own group (the official code: no in-batch
    negatives); ``infonce``: cross-entropy of the positive against every passage in the batch (its own
    hard negatives and everyone else's passages). ``doc_rows`` [B*G] identifies the passages: another
    copy of a query's positive elsewhere in the batch (the same page asked in two languages) is masked
    rather than treated as a negative."""
    b = scores.shape[0]
    if loss == "kl":
        return torch.nn.functional.kl_div(torch.log_softmax(own_groups(scores, group_size), -1), teacher,
                                          reduction="batchmean")
    target = torch.arange(b) * group_size
    if doc_rows is not None:
        duplicate = doc_rows[None, :] == doc_rows[target][:, None]
        duplicate[torch.arange(b), target] = False
        scores = scores.masked_fill(duplicate, float("-inf"))
    return torch.nn.functional.cross_entropy(scores, target)


def own_groups(scores: torch.Tensor, group_size: int) -> torch.Tensor:
    """[B, B*G] -> [B, G]: each query's scores of its own passages."""
    b = scores.shape[0]
    return scores.view(b, b, group_size)[torch.arange(b), torch.arange(b)]


def train_sct(
    module: MilcoModule,
    q_states: CachedStates,
    d_states: CachedStates,
    groups: np.ndarray,
    teacher_scores: np.ndarray,
    config: SctConfig,
    on_step: Callable[[], None] | None = None,
) -> None:
    """``groups[i]``: passage rows for query i, positive first; ``teacher_scores[i]``: the teacher's
    scores of those passages (used by ``kl``; ``infonce`` needs only the positive)."""
    rng = random.Random(config.seed)
    total = math.ceil(len(q_states) / config.batch_size) * config.epochs
    optimizer, schedule = optimizer_and_schedule(module, config.lr, total, config.warmup_ratio, config.backbone_lr)
    steps = StepLog(config.output, "sct", total)
    module.train()
    g = groups.shape[1]
    step = 0
    for _ in range(config.epochs):
        for rows in batches_of(len(q_states), config.batch_size, rng):
            q = q_states.batch(rows)
            doc_rows = [int(p) for r in rows for p in groups[r]]
            scores, q_pivot, d_pivot = batch_scores(module, q, d_states.batch(doc_rows), config.train_top_layers)
            teacher = torch.softmax(torch.from_numpy(teacher_scores[rows]).float() / config.teacher_temperature, -1)
            rank_loss = ranking_loss(scores, g, config.loss, teacher, torch.tensor(doc_rows))
            l1_q = q_pivot.abs().sum(1).mean()
            l1_d = d_pivot.abs().sum(1).mean()
            loss = rank_loss + config.lambda_q * l1_q + config.lambda_d * l1_d
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            steps.add(
                step, loss=loss.item(), rank_loss=rank_loss.item(),
                q_terms=(q_pivot > 0).sum(1).float().mean().item(), d_terms=(d_pivot > 0).sum(1).float().mean().item(),
                top1=(own_groups(scores, g).argmax(-1) == 0).float().mean().item(),
            )
            step += 1
            if on_step:
                on_step()
    steps.close()
