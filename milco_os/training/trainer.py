"""The two training stages of milco-mini (spec A3), on cached backbone states (see :mod:`.states`).

Both stages log, every 20 steps, the loss and the average number of non-zero pivot terms (queries and
documents apart in SCT), to stderr and to ``<output>/train.log.jsonl``; every ``gate_every`` steps the
gates of :mod:`.gates` (``gates`` records). Every ``checkpoint_every`` steps they write a resumable
checkpoint (trained parameters, optimiser, schedule, step, torch's random state) to ``<output>/checkpoint.pt``:
run the same command again after a kill and training continues from there, on the same batches.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from milco_os.models.milco import MilcoModule, dual_view_scores, head_decoder, head_transform
from milco_os.paths import atomic_file
from milco_os.training.config import SapConfig, SctConfig
from milco_os.training.states import (
    CachedStates,
    dense_targets,
    head_inputs,
    pivot_and_mse,
    sparse_mse,
    sparse_pivot,
    token_loss,
    top_layers,
)

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


def update(optimizer: torch.optim.Optimizer, schedule: torch.optim.lr_scheduler.LRScheduler,
           loss: torch.Tensor) -> None:
    """One optimiser step on ``loss``, then one schedule step."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    schedule.step()


def hardware_facts(device: str) -> dict[str, Any]:
    """Where a stage ran, for its manifest."""
    import platform

    facts: dict[str, Any] = {"device": device, "cpu": platform.processor() or platform.machine(),
                             "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    if device.startswith("cuda"):
        facts["gpu"] = torch.cuda.get_device_name(0)
    return facts


class StepLog:
    def __init__(self, output: Path, stage: str, total_steps: int, every: int = 20, earlier_s: float = 0.0) -> None:
        output.mkdir(parents=True, exist_ok=True)
        self.file = open(output / "train.log.jsonl", "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self.stage, self.total, self.every = stage, total_steps, every
        self.sums: dict[str, float] = {}
        self.count = 0
        self.start = time.monotonic() - earlier_s  # a resumed run counts the time its earlier part trained

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


def plan(n: int, size: int, epochs: int, seed: int) -> list[list[int]]:
    """Every batch of every epoch, fixed by the seed: a resumed run continues on the same batches."""
    rng = random.Random(seed)
    return [rows for _ in range(epochs) for rows in batches_of(n, size, rng)]


GateFn = Callable[[], dict[str, Any]]


class Run:
    """What one training stage keeps besides the model: optimiser and schedule, the step log, and
    ``<output>/checkpoint.pt`` (trained parameters, optimiser and schedule state, next step), read back
    at start so that ``first`` is where a killed run continues. Every ``checkpoint_every`` steps it saves,
    every ``gate_every`` steps it measures the gates."""

    def __init__(self, module: MilcoModule, config: SapConfig | SctConfig, stage: str, total: int,
                 gate_fn: GateFn | None = None, on_step: Callable[[], None] | None = None,
                 on_gates: Callable[[int, dict[str, Any]], Any] | None = None) -> None:
        self.module, self.config, self.total, self.gate_fn, self.on_step = module, config, total, gate_fn, on_step
        self.on_gates = on_gates
        self.optimizer, self.schedule = optimizer_and_schedule(module, config.lr, total, config.warmup_ratio,
                                                               config.backbone_lr)
        self.path = Path(config.output) / "checkpoint.pt"
        self.resumed = self.path.is_file()
        self.first = 0
        earlier_s = 0.0
        if self.resumed:
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
            module.load_state_dict(saved["state"], strict=False)
            self.optimizer.load_state_dict(saved["optimizer"])
            self.schedule.load_state_dict(saved["schedule"])
            if "torch_rng" in saved:  # dropout continues as it would have: a resumed run repeats an unbroken one
                torch.set_rng_state(saved["torch_rng"])
            self.first = int(saved["step"])
            earlier_s = float(saved.get("seconds", 0.0))
            log.warning("resuming from %s at step %d", self.path, self.first)
        self.log = StepLog(config.output, stage, total, earlier_s=earlier_s)

    def save(self, step: int) -> None:
        from milco_os.models.sources.milco_mini import trained_state

        with atomic_file(self.path) as f:
            torch.save({"step": step, "state": trained_state(self.module), "optimizer": self.optimizer.state_dict(),
                        "schedule": self.schedule.state_dict(), "torch_rng": torch.get_rng_state(),
                        "seconds": self.seconds()}, f)

    def seconds(self) -> float:
        """Training time up to now, the parts before any resume included."""
        return time.monotonic() - self.log.start

    def gates(self, step: int) -> dict[str, Any] | None:
        if self.gate_fn is None:
            return None
        result = self.gate_fn()
        self.log.file.write(json.dumps({"stage": self.log.stage, "step": step, "gates": result}) + "\n")
        self.log.file.flush()
        log.warning("%s gates at step %d: %s", self.log.stage, step, result)
        if self.on_gates is not None:
            self.on_gates(step, result)
        return result

    def update(self, loss: torch.Tensor) -> None:
        update(self.optimizer, self.schedule, loss)

    def step_done(self, step: int) -> None:
        done = step + 1
        if done % self.config.checkpoint_every == 0:
            self.save(done)
        if self.config.gate_every and done % self.config.gate_every == 0 and done < self.total:
            self.gates(done)
        if self.on_step:
            self.on_step()

    def finish(self) -> dict[str, Any] | None:
        """The final gates, and a checkpoint of the finished stage."""
        result = self.gates(self.total)
        self.save(self.total)
        return result

    def close(self) -> None:
        self.log.close()


def trained_seconds(output: Path) -> float:
    """How long the stage in ``output`` trained, over all its resumed parts (its last checkpoint says)."""
    return float(torch.load(Path(output) / "checkpoint.pt", map_location="cpu", weights_only=True).get("seconds", 0.0))


# --------------------------------------------------------------------------------------------- SAP
def align_tokens(
    module: MilcoModule, en_states: CachedStates, token_targets: CachedStates, config: SapConfig,
    on_step: Callable[[], None] | None = None,
) -> None:
    """Token-level alignment on English text: the connector and head transform learn to give each student
    token the teacher's decoder input of the English tokens it covers (MSE over 128 dims, many tokens per
    step). Cheap (no vocabulary projection) and dense, it gives the pooled loss a grounded start."""
    device = torch.device(config.device)
    with torch.no_grad():
        hidden, targets = [], []
        for start in range(0, len(en_states), 256):
            rows = list(range(start, min(start + 256, len(en_states))))
            _, mask, states = en_states.batch(rows, device)
            states = top_layers(module, states, mask, config.train_top_layers)
            target = token_targets.batch(rows, device)[2]
            valid = (mask > 0) & ~torch.isnan(target).any(-1)
            hidden.append(states[valid])
            targets.append(target[valid])
        x, z = torch.cat(hidden), torch.cat(targets)
    params = [*module.projector.parameters(), *head_transform(module.mlm_head).parameters()]
    optimizer = torch.optim.Adam(params, lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    steps = StepLog(config.output, "sap-tokens", config.token_epochs * -(-len(x) // config.token_batch), every=50)
    step = 0
    try:
        for _ in range(config.token_epochs):
            order = torch.randperm(len(x), generator=generator).to(device)
            for start in range(0, len(x), config.token_batch):
                rows = order[start : start + config.token_batch]
                loss = torch.mean((head_inputs(module, x[rows]) - z[rows]) ** 2)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                steps.add(step, token_loss=loss.item())
                step += 1
                if on_step:
                    on_step()
    finally:
        steps.close()


def train_sap(
    module: MilcoModule,
    targets: torch.Tensor,
    x_states: CachedStates,
    en_states: CachedStates | None,
    config: SapConfig,
    vocab: torch.Tensor | None = None,
    gate_fn: GateFn | None = None,
    on_step: Callable[[], None] | None = None,
    token_targets: CachedStates | None = None,
    on_token_step: Callable[[], None] | None = None,
) -> dict[str, Any] | None:
    """``x_states[i]`` (source text) and ``en_states[i]`` (the English text through the student's tokenizer,
    the code's second term) both align to ``targets[i]``, the teacher's raw max-pooled logits of the English
    text (over ``vocab`` when given). With ``token_targets`` (aligned to ``en_states``, see
    :func:`~milco_os.training.states.teacher_token_targets`) a token-level alignment runs first and stays
    on as a second loss. Returns the final gates (when ``gate_fn`` is given)."""
    batches = plan(len(x_states), config.batch_size, config.epochs, config.seed)
    run = Run(module, config, "sap", len(batches), gate_fn, on_step)
    use_tokens = token_targets is not None and en_states is not None
    device = torch.device(config.device)
    try:
        if use_tokens and config.token_epochs and not run.resumed:
            align_tokens(module, en_states, token_targets, config, on_token_step)  # type: ignore[arg-type]
            run.save(0)
            run.gates(0)
        module.train()
        for step in range(run.first, len(batches)):
            rows = batches[step]
            target = targets[rows].float().to(device)
            ids, mask, states = x_states.batch(rows, device)
            states = top_layers(module, states, mask, config.train_top_layers)
            loss, values = sparse_mse(module, states, mask, target, vocab)
            terms = (values > 0).sum(1).float().mean()
            if en_states is not None and config.english_term:
                _, en_mask, en_hidden = en_states.batch(rows, device)
                en_hidden = top_layers(module, en_hidden, en_mask, config.train_top_layers)
                en_loss, _ = sparse_mse(module, en_hidden, en_mask, target, vocab)
                loss = loss + en_loss
                if use_tokens and config.token_weight:
                    aligned = token_targets.batch(rows, device)[2]  # type: ignore[union-attr]
                    tok = token_loss(module, en_hidden, en_mask, aligned)
                    loss = loss + config.token_weight * tok
            run.update(loss)
            run.log.add(step, loss=loss.item(), terms=terms.item(),
                        teacher_terms=(target > 0).sum(1).float().mean())
            run.step_done(step)
        return run.finish()
    finally:
        run.close()


# --------------------------------------------------------------------------------------------- SCT
class BatchScores(NamedTuple):
    scores: torch.Tensor  # [Bq, Bd], both views
    pivot_scores: torch.Tensor  # [Bq, Bd], the pivot view alone
    q_pivot: torch.Tensor
    d_pivot: torch.Tensor
    ground: torch.Tensor | None  # the passages' grounding loss, when targets were given


def batch_scores(
    module: MilcoModule,
    q: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    d: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    train_top_layers: int = 0,
    vocab: torch.Tensor | None = None,
    d_target: torch.Tensor | None = None,
) -> BatchScores:
    """Dual-view scores of every query against every passage of the batch [Bq, Bd] (spec A2.3), the pivot
    part of them alone, the two pivot views (for the sparsity terms), and with ``d_target`` (the English
    teacher's raw logits of each passage, over ``vocab``) the passages' grounding loss (spec Eq. 8)."""
    q_ids, q_mask, q_states = q
    d_ids, d_mask, d_states = d
    q_states = top_layers(module, q_states, q_mask, train_top_layers)
    d_states = top_layers(module, d_states, d_mask, train_top_layers)
    q_pivot = sparse_pivot(module, q_states, q_mask, vocab)
    ground = None
    if d_target is None:
        d_pivot = sparse_pivot(module, d_states, d_mask, vocab)
    else:
        ground, d_pivot = pivot_and_mse(module, d_states, d_mask, d_target, vocab)
    pivot_scores = q_pivot @ d_pivot.T
    if not module.has_echo:
        return BatchScores(pivot_scores, pivot_scores, q_pivot, d_pivot, ground)
    # Zero on pads (so padded ids never match) and on special tokens (the echo view leaves them out).
    q_echo = module.echo_weights(q_states, q_mask) * not_special(module, q_ids)
    d_echo = module.echo_weights(d_states, d_mask) * not_special(module, d_ids)
    return BatchScores(dual_view_scores(q_pivot, q_ids, q_echo, d_pivot, d_ids, d_echo), pivot_scores, q_pivot,
                       d_pivot, ground)


def not_special(module: MilcoModule, ids: torch.Tensor) -> torch.Tensor:
    return (~torch.isin(ids, module.special_token_ids)).float()


def ranking_loss(
    scores: torch.Tensor, group_size: int, loss: str, teacher: torch.Tensor | None, doc_rows: torch.Tensor | None = None
) -> torch.Tensor:
    """``scores`` [B, B*G]: query b's own passages are columns b*G .. b*G+G-1, its positive first.

    ``kl``: KL(teacher || student) over the query's own group (the official code: no in-batch
    negatives); ``infonce``: cross-entropy of the positive against every passage in the batch (its own
    hard negatives and everyone else's passages). ``doc_rows`` [B*G] identifies the pages: another copy
    of a query's positive elsewhere in the batch (the same page, maybe in another language) is masked
    rather than treated as a negative."""
    b = scores.shape[0]
    if loss == "kl":
        return torch.nn.functional.kl_div(torch.log_softmax(own_groups(scores, group_size), -1), teacher,
                                          reduction="batchmean")
    target = torch.arange(b, device=scores.device) * group_size
    if doc_rows is not None:
        duplicate = doc_rows[None, :] == doc_rows[target][:, None]
        duplicate[torch.arange(b, device=scores.device), target] = False
        scores = scores.masked_fill(duplicate, float("-inf"))
    return torch.nn.functional.cross_entropy(scores, target)


def sct_ranking_loss(scores: torch.Tensor, group_size: int, config: SctConfig, teacher: torch.Tensor,
                     doc_rows: torch.Tensor | None) -> torch.Tensor:
    """The configured ranking loss, and with ``distill_weight`` beside an InfoNCE loss, that weight times
    KL(teacher || student) over each query's own group."""
    loss = ranking_loss(scores, group_size, config.loss, teacher, doc_rows)
    if config.distill_weight and config.loss != "kl":
        loss = loss + config.distill_weight * ranking_loss(scores, group_size, "kl", teacher)
    return loss


def own_groups(scores: torch.Tensor, group_size: int) -> torch.Tensor:
    """[B, B*G] -> [B, G]: each query's scores of its own passages."""
    b = scores.shape[0]
    rows = torch.arange(b, device=scores.device)
    return scores.view(b, b, group_size)[rows, rows]


def sparsity(pivot: torch.Tensor, kind: str) -> torch.Tensor:
    """L1 (mean over the batch of each vector's sum) or FLOPS (sum over terms of the squared batch mean)."""
    if kind == "flops":
        return (pivot.abs().mean(0) ** 2).sum()
    return pivot.abs().sum(1).mean()


def common_terms(pivot: torch.Tensor, share: float) -> torch.Tensor:
    """Each term active in more than ``share`` of the batch's vectors pays its mean weight times the excess
    share: a penalty that reaches only the terms that fire nearly everywhere (FLOPS shrinks every term in
    proportion to its own mass, rare ones included)."""
    active = (pivot > 0).float().mean(0).detach()
    return (torch.relu(active - share) * pivot.abs().mean(0)).sum()


def train_sct(
    module: MilcoModule,
    q_states: CachedStates,
    d_states: CachedStates,
    groups: np.ndarray,
    teacher_scores: np.ndarray,
    config: SctConfig,
    doc_pages: np.ndarray | None = None,
    vocab: torch.Tensor | None = None,
    gate_fn: GateFn | None = None,
    on_step: Callable[[], None] | None = None,
    ground: tuple[torch.Tensor, torch.Tensor] | None = None,
    on_gates: Callable[[int, dict[str, Any]], Any] | None = None,
) -> dict[str, Any] | None:
    """``groups[i]``: passage rows for query i, positive first; ``teacher_scores[i]``: the teacher's
    scores of those passages (used by ``kl``; ``infonce`` needs only the positive); ``doc_pages[row]``: the
    page a passage row shows (translations of the positive are not negatives); ``ground``: per passage row,
    the English teacher's top entries (:func:`~milco_os.training.states.top_k_targets`, over ``vocab``) that
    ``ground_weight`` pulls the passage's pivot toward; ``on_gates(step, gates)`` runs after each gate
    measurement (the pipeline keeps each measured step's delta, to choose among them on dev). Returns the final
    gates."""
    batches = plan(len(q_states), config.batch_size, config.epochs, config.seed)
    run = Run(module, config, "sct", len(batches), gate_fn, on_step, on_gates)
    warmup = max(1, int(len(batches) * config.regulariser_warmup))
    module.train()
    g = groups.shape[1]
    pages = doc_pages if doc_pages is not None else np.arange(len(d_states))
    device = torch.device(config.device)
    width = len(vocab) if vocab is not None else head_decoder(module.mlm_head).out_features  # of the targets
    try:
        for step in range(run.first, len(batches)):
            rows = batches[step]
            q = q_states.batch(rows, device)
            doc_rows = [int(p) for r in rows for p in groups[r]]
            d_target = None
            if ground is not None and config.ground_weight:
                d_target = dense_targets(ground[0][doc_rows], ground[1][doc_rows], width).to(device)
            scores, pivot_scores, q_pivot, d_pivot, ground_loss = batch_scores(
                module, q, d_states.batch(doc_rows, device), config.train_top_layers, vocab, d_target)
            teacher = torch.softmax(torch.from_numpy(teacher_scores[rows]).float() / config.teacher_temperature, -1)
            teacher, same_page = teacher.to(device), torch.from_numpy(pages[doc_rows]).to(device)
            rank_loss = sct_ranking_loss(scores, g, config, teacher, same_page)
            loss = rank_loss
            if config.pivot_only_weight:
                loss = loss + config.pivot_only_weight * ranking_loss(pivot_scores, g, config.loss, teacher, same_page)
            ramp = min(1.0, ((step + 1) / warmup) ** 2)  # quadratic warm-up of lambda (SPLADE)
            reg_q, reg_d = sparsity(q_pivot, config.regulariser), sparsity(d_pivot, config.regulariser)
            loss = loss + ramp * (config.lambda_q * reg_q + config.lambda_d * reg_d)
            extra = {}
            if config.common_lambda:  # documents only: a batch holds too few queries to tell common from shared
                common = common_terms(d_pivot, config.common_share)
                loss = loss + ramp * config.common_lambda * common
                extra["common"] = common.item()
            if ground_loss is not None:
                loss = loss + config.ground_weight * ground_loss
                extra["ground"] = ground_loss.item()
            run.update(loss)
            run.log.add(
                step, loss=loss.item(), rank_loss=rank_loss.item(),
                q_terms=(q_pivot > 0).sum(1).float().mean().item(), d_terms=(d_pivot > 0).sum(1).float().mean().item(),
                top1=(own_groups(scores, g).argmax(-1) == 0).float().mean().item(),
                pivot_top1=(own_groups(pivot_scores, g).argmax(-1) == 0).float().mean().item(), **extra,
            )
            run.step_done(step)
        return run.finish()
    finally:
        run.close()
