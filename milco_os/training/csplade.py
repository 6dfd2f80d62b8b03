"""CSPLADE training (spec PART B) on SmolLM2-135M: the adaptation phase, then contrastive LoRA training of
one variant (causal, echo, bi).

    milco-os train csplade-adapt configs/train/csplade-adapt.toml   # B3.1: CLM + CE on log(1 + ReLU(logits))
    milco-os train csplade configs/train/csplade-bi.toml            # B3.2: InfoNCE + FLOPS, LoRA

Both stages train LoRA adapters only (the committed delta must stay small); the adaptation adapter is merged
into the base before contrastive training adds its own. Every ``checkpoint_every`` steps a resumable
checkpoint (adapter weights, optimiser, schedule, step) is written to ``<output>/checkpoint.pt``: run the
same command again after a kill and training continues on the same batches. Every ``log_every`` steps the
losses and the alive terms (vocabulary entries with a positive pooled weight, per query and per document)
go to stderr and ``<output>/train.log.jsonl``: a dying-ReLU collapse (spec B6) shows as those counts
falling to zero.

Output directory layout (a delta for :mod:`milco_os.models.sources.csplade_mini`): ``adapt/`` (the
adaptation adapter), ``contrastive/`` (the contrastive one), ``manifest.json``, ``train.log.jsonl``.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from milco_os.models.csplade import CSpladeModule, adaptation_loss
from milco_os.models.pooling import log_saturate
from milco_os.models.sources import csplade_mini
from milco_os.paths import atomic_file
from milco_os.training.config import CspladeAdaptConfig, CspladeConfig
from milco_os.training.states import dense_targets
from milco_os.training.trainer import StepLog, hardware_facts, optimizer_and_schedule, plan, seed_everything, update

log = logging.getLogger(__name__)

ENGLISH = "en-us"
ADAPT_DIR = "adapt"
CONTRASTIVE_DIR = "contrastive"
#: LoRA on every attention and MLP projection; the LM head (tied to the embeddings) is not adapted (spec B3.2).
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
Progress = Callable[[int], None]
#: Slope of a target term's weight below a zero logit in :func:`term_loss`.
LEAK = 0.1


def _no_progress(_n: int = 1) -> None:
    return None


# --------------------------------------------------------------------------------------------- data
def english_pages(cache_dir: Path, split: str) -> list[tuple[str, str, str]]:
    """(path, title, text without title) of the English help pages of ``split``."""
    from milco_os.datasets import libreoffice

    root = libreoffice.fetch_help([ENGLISH], cache_dir)
    pages = libreoffice.load_pages(root, ENGLISH)
    out = []
    for path, page in sorted(pages.items()):
        if libreoffice.split_of(path) != split:
            continue
        text = libreoffice.page_text(page, include_title=False)
        if text.strip():
            out.append((path, page.title.strip(), text))
    return out


def packed_sequences(tokenizer: Any, texts: Sequence[str], length: int) -> torch.Tensor:
    """Sequence packing (spec B3.1): the texts' tokens concatenated, each followed by EOS, cut into rows of
    ``length`` tokens (the remainder is dropped). [N, length] int64."""
    ids: list[int] = []
    for text in texts:
        ids.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        ids.append(tokenizer.eos_token_id)
    n = len(ids) // length
    return torch.tensor(ids[: n * length], dtype=torch.long).view(n, length)


# -------------------------------------------------------------------------------------------- model
def new_model(cache_dir: Path, config: CspladeAdaptConfig | CspladeConfig, init: Path | None) -> tuple[Any, Any]:
    """The base LM (with ``init``'s adaptation adapter merged, when given) wrapped in a fresh LoRA adapter."""
    from peft import LoraConfig, get_peft_model

    lm, tokenizer = csplade_mini.load_base(cache_dir)
    if init is not None:
        lm = csplade_mini.apply_adapter(lm, Path(init) / ADAPT_DIR)
        log.warning("merged the adaptation adapter of %s", init)
    layers = lm.config.num_hidden_layers
    top = config.lora_layers or layers
    lora = LoraConfig(
        r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=0.0, target_modules=LORA_TARGETS,
        layers_to_transform=list(range(layers - top, layers)), bias="none",
    )
    model = get_peft_model(lm, lora)
    return model.to(config.device), tokenizer


class Checkpoint:
    """``<output>/checkpoint.pt``: adapter weights, optimiser, schedule and the next step."""

    def __init__(self, output: Path, model: Any, optimizer: Any, schedule: Any) -> None:
        self.path = Path(output) / "checkpoint.pt"
        self.model, self.optimizer, self.schedule = model, optimizer, schedule

    def restore(self) -> int:
        from peft import set_peft_model_state_dict

        if not self.path.is_file():
            return 0
        saved = torch.load(self.path, map_location="cpu", weights_only=True)
        set_peft_model_state_dict(self.model, saved["adapter"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.schedule.load_state_dict(saved["schedule"])
        log.warning("resuming from %s at step %d", self.path, saved["step"])
        return int(saved["step"])

    def save(self, step: int) -> None:
        from peft import get_peft_model_state_dict

        with atomic_file(self.path) as f:
            torch.save({"step": step, "adapter": get_peft_model_state_dict(self.model),
                        "optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict()}, f)


def _setup(config: CspladeAdaptConfig | CspladeConfig) -> None:
    seed_everything(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    Path(config.output).mkdir(parents=True, exist_ok=True)


def _write_json(path: Path, value: Any) -> None:
    from milco_os.paths import write_text_atomic

    write_text_atomic(path, json.dumps(value, indent=1, ensure_ascii=False) + "\n")


def _base_record() -> dict[str, Any]:
    from milco_os.models.sources.packaged import PACKAGED

    spec = PACKAGED[csplade_mini.BASE]
    return {"package": spec.package, "version": spec.version, "sha256": spec.wheel_sha256,
            "gguf_file": csplade_mini.GGUF_FILE}


@torch.no_grad()
def alive_terms(module: CSpladeModule, ids: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean number of vocabulary entries with a positive pooled weight per text."""
    was_training = module.training
    module.eval()
    pivot, _ = module(ids, mask)
    module.train(was_training)
    return alive(pivot)


# -------------------------------------------------------------------------------------- adaptation
def run_adapt(config: CspladeAdaptConfig, cache_dir: Path, progress: Progress = _no_progress) -> Path:
    """Spec B3.1 with LoRA: ``steps`` batches of packed English help text (train split). Logs the CE terms,
    the share of vocabulary entries with a positive logit per position, and the alive pooled terms of
    held-out (dev) pages every ``log_every`` steps."""
    _setup(config)
    model, tokenizer = new_model(cache_dir, config, init=None)
    output = Path(config.output)
    pages = english_pages(cache_dir, "train")
    rng = random.Random(config.seed)
    rng.shuffle(pages)
    rows = packed_sequences(tokenizer, [f"{title}\n{text}" for _, title, text in pages], config.sequence_length)
    batches = plan(len(rows), config.batch_size, epochs=-(-config.steps * config.batch_size // len(rows)),
                   seed=config.seed)[: config.steps]
    probe = [text for _, _, text in english_pages(cache_dir, "dev")[: config.probe_texts]]
    probe_enc = tokenizer(probe, max_length=128, truncation=True, padding=True, return_tensors="pt")
    probe_ids, probe_mask = probe_enc["input_ids"].to(config.device), probe_enc["attention_mask"].to(config.device)
    module = CSpladeModule(model, variant="causal")
    optimizer, schedule = optimizer_and_schedule(model, config.lr, config.steps, config.warmup_ratio)
    checkpoint = Checkpoint(output, model, optimizer, schedule)
    first = checkpoint.restore()
    steps = StepLog(output, config.stage, config.steps, every=config.log_every)
    log.warning("adaptation: %d packed rows of %d tokens; %d steps of %d", len(rows), config.sequence_length,
                config.steps, config.batch_size)

    def probe_record(step: int) -> None:
        steps.file.write(json.dumps({"stage": config.stage, "step": step,
                                     "probe_terms": round(alive_terms(module, probe_ids, probe_mask), 1)}) + "\n")
        steps.file.flush()

    if first == 0:
        probe_record(0)
    start = time.monotonic()
    model.train()
    try:
        for step in range(first, config.steps):
            ids = rows[batches[step]].to(config.device)
            mask = torch.ones_like(ids)
            logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
            loss = adaptation_loss(logits, ids, mask, config.lambda_relu)
            update(optimizer, schedule, loss)
            steps.add(step, loss=loss.item(), positive_share=float((logits.detach() > 0).float().mean()))
            if (step + 1) % config.log_every == 0 or step + 1 == config.steps:
                probe_record(step + 1)
            if (step + 1) % config.checkpoint_every == 0:
                checkpoint.save(step + 1)
            progress(1)
        checkpoint.save(config.steps)
    finally:
        steps.close()
    model.save_pretrained(str(output / ADAPT_DIR))
    final_terms = alive_terms(module, probe_ids, probe_mask)
    _write_json(output / "manifest.json", {
        "name": csplade_mini.NAME, "stage": config.stage, "base": _base_record(),
        "training": {config.stage: config.model_dump(mode="json")},
        "adapt": {"packed_rows": len(rows), "seconds": round(time.monotonic() - start),
                  "probe_terms_after": round(final_terms, 1)},
        "hardware": {config.stage: hardware_facts(config.device)}, "torch": torch.__version__,
    })
    return output


# ------------------------------------------------------------------------------------- contrastive
def alive(x: torch.Tensor) -> float:
    """Mean number of terms with a positive weight per row."""
    return float((x > 0).sum(1).float().mean())


def keep_top_k(x: torch.Tensor, k: int) -> torch.Tensor:
    """``x`` [B, V] with all but the ``k`` largest entries of each row set to 0 (``k = 0``: unchanged); the
    gradient flows through the kept entries only, as it would through an index pruned to top-k."""
    if k <= 0 or k >= x.shape[1]:
        return x
    values, ids = x.topk(k, dim=1)
    return torch.zeros_like(x).scatter(1, ids, values)


def flops(x: torch.Tensor) -> torch.Tensor:
    """FLOPS regulariser (Paria et al. 2020): sum over terms of the squared batch-mean weight."""
    return (x.abs().mean(0) ** 2).sum()


def hard_negatives(cache_dir: Path, queries: Sequence[str], passages: Sequence[str], group_size: int,
                   kind: str, seed: int) -> np.ndarray:
    """[Q, group_size] passage ids: query i's own passage (i) first, then negatives: the passages e5-small
    ranks highest for the query (``dense``), or random ones."""
    if kind == "random":
        rng = np.random.default_rng(seed)
        groups = np.zeros((len(queries), group_size), dtype=np.int64)
        for i in range(len(queries)):
            others = rng.choice(len(passages) - 1, group_size - 1, replace=False)
            groups[i] = [i, *(others + (others >= i))]
        return groups
    from milco_os.evaluation.systems import E5_PASSAGE_PREFIX, E5_QUERY_PREFIX, E5Encoder
    from milco_os.models.sources.milco_mini import base_parts
    from milco_os.training.pipeline import hard_negative_groups

    e5 = E5Encoder(base_parts(cache_dir)[0])
    q = e5.encode(queries, E5_QUERY_PREFIX, 64)
    d = e5.encode(passages, E5_PASSAGE_PREFIX, 256)
    groups, _ = hard_negative_groups(q, d, list(range(len(queries))), group_size)
    return groups


def contrastive_data(config: CspladeConfig, cache_dir: Path) -> tuple[list[str], list[str], np.ndarray]:
    """(queries, passages, groups): titles of train-split English pages, the pages without their title,
    and each query's group (positive first). Mined once per seed and group shape into the cache, so every
    variant (and a resumed run) trains on the same groups."""
    from milco_os.paths import data_dir

    key = f"{config.seed}-{config.max_queries}-{config.group_size}-{config.negatives}"
    path = data_dir(cache_dir) / "csplade" / f"contrastive-{key}.json"
    if path.is_file():
        saved = json.loads(path.read_text(encoding="utf-8"))
        return saved["queries"], saved["passages"], np.array(saved["groups"], dtype=np.int64)
    pages = [p for p in english_pages(cache_dir, "train") if p[1]]
    rng = random.Random(config.seed)
    pages = rng.sample(pages, min(config.max_queries, len(pages)))
    queries, passages = [title for _, title, _ in pages], [text for _, _, text in pages]
    groups = hard_negatives(cache_dir, queries, passages, config.group_size, config.negatives, config.seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_json(path, {"queries": queries, "passages": passages, "groups": groups.tolist()})
    return queries, passages, groups


def _tokens(tokenizer: Any, texts: Sequence[str], max_length: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    enc = tokenizer(list(texts), max_length=max_length, truncation=True, padding=True, return_tensors="pt")
    return enc["input_ids"].to(device), enc["attention_mask"].to(device)


# ------------------------------------------------------------------------------------ term targets
def teacher_spellings(teacher_tokenizer: Any, tokenizer: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(teacher ids, LM ids): each entry of the English teacher's WordPiece vocabulary paired with the LM
    entries that spell it. A word ``table`` pairs with the LM's tokens of `` table`` (``Ġtable``, or its pieces
    where the LM splits the word); a piece ``##ing`` with ``ing`` where the LM has that piece whole; special
    and unused entries with nothing."""
    special = set(teacher_tokenizer.all_special_tokens)
    lm_vocab = tokenizer.get_vocab()
    src: list[int] = []
    dst: list[int] = []
    words = []
    for token, i in sorted(teacher_tokenizer.get_vocab().items(), key=lambda x: x[1]):
        if token in special or token.startswith("[unused"):
            continue
        if token.startswith("##"):
            if token[2:] in lm_vocab:
                src.append(i)
                dst.append(lm_vocab[token[2:]])
        else:
            words.append((i, token))
    spelled = tokenizer([" " + w for _, w in words], add_special_tokens=False)["input_ids"]
    for (i, _), ids in zip(words, spelled, strict=True):
        src.extend([i] * len(ids))
        dst.extend(ids)
    return torch.tensor(src), torch.tensor(dst)


def term_targets(config: CspladeConfig, cache_dir: Path, tokenizer: Any, texts: Sequence[str], max_length: int,
                 size: int, common_share: float) -> tuple[torch.Tensor, torch.Tensor]:
    """splade-tiny's weights ``log(1 + ReLU(max logits))`` of each text as the student sees it (cut at
    ``max_length`` LM tokens), spelled in the LM's vocabulary of ``size`` entries (an LM entry takes the
    heaviest teacher entry spelling it), as the top ``ground_top_k`` (indices, values) per text, with the
    teacher's own common terms damped (``common_share``). Computed once, kept in the output directory."""
    from milco_os.training.pipeline import _cached, _texts_key

    def compute() -> tuple[torch.Tensor, torch.Tensor]:
        from transformers import AutoModelForMaskedLM, AutoTokenizer

        from milco_os.models.sources.packaged import fetch_packaged
        from milco_os.training.states import damp_common, teacher_logits, top_k_targets

        teacher_dir = str(fetch_packaged("splade-tiny", cache_dir))
        teacher = AutoModelForMaskedLM.from_pretrained(teacher_dir).eval()
        teacher_tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
        src, dst = teacher_spellings(teacher_tokenizer, tokenizer)
        cut = tokenizer(list(texts), max_length=max_length, truncation=True, add_special_tokens=False)["input_ids"]
        seen = tokenizer.batch_decode(cut)
        indices, values = [], []
        for start in range(0, len(seen), 32):
            weights = log_saturate(teacher_logits(teacher, teacher_tokenizer, seen[start : start + 32], 512))
            spelled = torch.zeros(len(weights), size).scatter_reduce_(
                1, dst.expand(len(weights), -1), weights[:, src], reduce="amax")
            i, v = top_k_targets(spelled, config.ground_top_k)
            indices.append(i)
            values.append(v)
        indices_t, values_t = torch.cat(indices), torch.cat(values)
        values_t, common = damp_common(indices_t, values_t, common_share)
        log.warning("term targets damp %d common terms: %s", len(common), " ".join(
            f"{tokenizer.convert_ids_to_tokens(t)}x{f:.2f}" for t, f in sorted(common.items(), key=lambda x: x[1])))
        return indices_t, values_t

    key = _texts_key(texts, max_length, size, config.ground_top_k, common_share)
    return tuple(_cached(Path(config.output) / f"terms-{key}.pt", compute))


def term_loss(logits: torch.Tensor, target: torch.Tensor, keep: int) -> torch.Tensor:
    """Mean squared error of the pooled weights toward ``target`` [B, V] over the entries that decide what the
    index holds: the target's terms and the student's ``keep`` heaviest (all positive ones for 0). ``logits``
    are the max-pooled logits (:meth:`CSpladeModule.pooled_logits`). On a target term the weight is read
    leaky, log(1 + ReLU(z)) + LEAK x min(z, 0), so that a term the student has dropped is pulled back however
    negative its logit (a dead ReLU passes no gradient: with the plain weight this loss emptied every document
    within 100 steps); the student's other kept terms are pushed toward 0 through the ReLU itself."""
    weights = log_saturate(logits)
    on_target = target > 0
    select = (keep_top_k(weights.detach(), keep) > 0) | on_target
    leaky = weights + LEAK * logits.clamp(max=0)
    error = torch.where(on_target, leaky - target, weights)
    return (error**2)[select].mean()


def token_shares(tokenizer: Any, texts: Sequence[str], size: int) -> torch.Tensor:
    """[size]: the share of ``texts`` in which each LM entry occurs (document frequency / N)."""
    counts = torch.zeros(size)
    for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]:
        counts[sorted(set(ids))] += 1
    return counts / max(1, len(texts))


# ---------------------------------------------------------------------------------------- dev measure
def function_entries(tokenizer: Any, size: int) -> torch.Tensor:
    """[size] bool: the LM entries whose text is a function word or has no letter or digit (special tokens
    included), by the fixed list of :mod:`milco_os.evaluation.function_words`."""
    from milco_os.evaluation.function_words import is_function_term

    special = set(tokenizer.all_special_ids)
    tokens = tokenizer.convert_ids_to_tokens(list(range(size)))
    return torch.tensor([i in special or (t is not None and is_function_term(
        tokenizer.convert_tokens_to_string([t]).strip())) for i, t in enumerate(tokens)])


@torch.no_grad()
def encode_pooled(module: CSpladeModule, tokenizer: Any, texts: Sequence[str], max_length: int, keep: int,
                  device: str, batch_size: int = 16) -> torch.Tensor:
    """[N, V] pooled vectors, each pruned to its ``keep`` heaviest terms, as the model encodes for the index."""
    was_training = module.training
    module.eval()
    out = []
    for start in range(0, len(texts), batch_size):
        ids, mask = _tokens(tokenizer, texts[start : start + batch_size], max_length, device)
        out.append(keep_top_k(module(ids, mask)[0], keep).cpu())
    module.train(was_training)
    return torch.cat(out)


def known_item_measure(module: CSpladeModule, tokenizer: Any, pages: Sequence[tuple[str, str, str]],
                       config: CspladeConfig, function: torch.Tensor, name_terms: int = 0) -> dict[str, Any]:
    """libreoffice-en known-item search (each English page's title -> the page without it) scored exactly in
    memory: nDCG@10, the share of queries none of whose top 5 terms is a function word (``function``: see
    :func:`function_entries`), and the mean kept terms per query and page; with ``name_terms``, also that many
    of the function words most often in a query's top 5 (as people read them) with their counts."""
    from collections import Counter

    from milco_os.training.gates import ndcg_at_10
    from milco_os.types import pad_vocab, vocab_from_tokenizer

    titles = [title for _, title, _ in pages]
    queries = encode_pooled(module, tokenizer, titles, config.query_max_length, config.query_top_k, config.device)
    docs = encode_pooled(module, tokenizer, [text for _, _, text in pages], config.document_max_length,
                         config.document_top_k, config.device)
    values, top5 = queries.topk(5, dim=1)
    hits = function[top5] & (values > 0)
    result: dict[str, Any] = {"ndcg10": round(ndcg_at_10(queries, docs, range(len(pages))), 4),
                              "function_free": round(float((~hits.any(1)).float().mean()), 4),
                              "q_terms": round(alive(queries), 1), "d_terms": round(alive(docs), 1)}
    if name_terms:
        vocab = pad_vocab(vocab_from_tokenizer(tokenizer, "lm"), len(function))
        counts = Counter(vocab.readable(vocab.tokens[t]) for t in top5[hits].tolist())
        result["function_terms"] = dict(counts.most_common(name_terms))
    return result


def measure_delta(delta: Path, cache_dir: Path, split: str) -> dict[str, Any]:
    """:func:`known_item_measure` of a csplade-mini delta (its adapters merged into the base, its manifest's
    variant, lengths and top-k) on the English pages of ``split``, naming the 10 commonest function words."""
    manifest = csplade_mini.read_manifest(delta)
    lm, tokenizer = csplade_mini.load_base(cache_dir)
    module = CSpladeModule(csplade_mini.merge_delta(lm, delta), variant=manifest["variant"]).eval()
    config = CspladeConfig(output=Path(delta), variant=manifest["variant"],
                           query_max_length=manifest["max_query_length"],
                           document_max_length=manifest["max_document_length"],
                           query_top_k=manifest.get("query_top_k") or 0,
                           document_top_k=manifest.get("document_top_k") or 0)
    size = int(module._head().weight.shape[0])
    pages = english_pages(cache_dir, split)
    return {"split": split, "queries": len(pages),
            **known_item_measure(module, tokenizer, pages, config, function_entries(tokenizer, size), name_terms=10)}


def run_contrastive(config: CspladeConfig, cache_dir: Path, progress: Progress = _no_progress) -> Path:
    """Spec B3.2 for ``config.variant``; the output directory becomes a csplade-mini delta."""
    _setup(config)
    output = Path(config.output)
    queries, passages, groups = contrastive_data(config, cache_dir)
    model, tokenizer = new_model(cache_dir, config, init=config.init)
    module = CSpladeModule(model, variant=config.variant)
    size = int(module._head().weight.shape[0])
    if config.ground_weight:
        q_terms = term_targets(config, cache_dir, tokenizer, queries, config.query_max_length, size,
                               config.query_common_share or config.common_share)
        d_terms = term_targets(config, cache_dir, tokenizer, passages, config.passage_max_length, size,
                               config.common_share)
    penalise_df = config.lambda_df or config.lambda_df_q
    shares = token_shares(tokenizer, passages, size).to(config.device) if penalise_df else None
    dev_pages = english_pages(cache_dir, "dev")
    function = function_entries(tokenizer, size)
    optimizer, schedule = optimizer_and_schedule(model, config.lr, config.steps, config.warmup_ratio)
    checkpoint = Checkpoint(output, model, optimizer, schedule)
    first = checkpoint.restore()
    batches = plan(len(queries), config.batch_size, epochs=-(-config.steps * config.batch_size // len(queries)),
                   seed=config.seed)[: config.steps]
    steps = StepLog(output, f"{config.stage}-{config.variant}", config.steps, every=config.log_every)
    warmup = max(1, int(config.steps * config.flops_warmup))
    g = config.group_size
    log.warning("contrastive (%s): %d queries, %d steps of %d x %d", config.variant, len(queries), config.steps,
                config.batch_size, g)
    start = time.monotonic()

    def measure(step: int) -> dict[str, float]:
        result = known_item_measure(module, tokenizer, dev_pages, config, function)
        steps.file.write(json.dumps({"stage": steps.stage, "step": step, "dev": result}) + "\n")
        steps.file.flush()
        log.warning("dev at step %d: %s", step, result)
        return result

    model.train()
    try:
        for step in range(first, config.steps):
            rows = batches[step]
            q_ids, q_mask = _tokens(tokenizer, [queries[r] for r in rows], config.query_max_length, config.device)
            doc_rows = [int(p) for r in rows for p in groups[r]]
            d_ids, d_mask = _tokens(tokenizer, [passages[p] for p in doc_rows], config.passage_max_length,
                                    config.device)
            q_logits, d_logits = module.pooled_logits(q_ids, q_mask), module.pooled_logits(d_ids, d_mask)
            q_all, d_all = log_saturate(q_logits), log_saturate(d_logits)
            q, d = keep_top_k(q_all, config.query_top_k), keep_top_k(d_all, config.document_top_k)
            scores = q @ d.T / config.temperature  # [B, B*g]: own group + every other query's passages
            target = torch.arange(len(rows), device=scores.device) * g
            rank_loss = F.cross_entropy(scores, target)
            ramp = min(1.0, ((step + 1) / warmup) ** 2)  # quadratic warm-up of lambda (SPLADE)
            reg_q, reg_d = flops(q), flops(d)
            loss = rank_loss + ramp * (config.lambda_q * reg_q + config.lambda_d * reg_d)
            extra = {}
            if config.ground_weight:  # a mean over the batch's texts, queries and passages alike
                q_target = dense_targets(*(t[rows] for t in q_terms), size).to(config.device)
                d_target = dense_targets(*(t[doc_rows] for t in d_terms), size).to(config.device)
                ground = (term_loss(q_logits, q_target, config.query_top_k) * len(rows)
                          + term_loss(d_logits, d_target, config.document_top_k) * len(doc_rows)
                          ) / (len(rows) + len(doc_rows))
                loss = loss + config.ground_weight * ground
                extra["ground"] = ground.item()
            if shares is not None:
                frequent_q, frequent_d = (q * shares).sum(1).mean(), (d * shares).sum(1).mean()
                frequent = (frequent_q + frequent_d) / 2
                loss = loss + ramp * (config.lambda_df * frequent + config.lambda_df_q * frequent_q)
                extra |= {"df": frequent.item(), "df_q": frequent_q.item()}
            update(optimizer, schedule, loss)
            steps.add(step, loss=loss.item(), rank_loss=rank_loss.item(), flops_q=reg_q.item(), flops_d=reg_d.item(),
                      q_terms=alive(q_all), d_terms=alive(d_all), q_kept=alive(q), d_kept=alive(d),
                      top1=float((scores.argmax(1) == target).float().mean()), **extra)
            if config.eval_every and (step + 1) % config.eval_every == 0 and step + 1 < config.steps:
                measure(step + 1)
            if (step + 1) % config.checkpoint_every == 0:
                checkpoint.save(step + 1)
            progress(1)
        checkpoint.save(config.steps)
        dev = measure(config.steps)
    finally:
        steps.close()
    model.save_pretrained(str(output / CONTRASTIVE_DIR))
    init_manifest: dict[str, Any] = {}
    if config.init is not None:
        shutil.copytree(Path(config.init) / ADAPT_DIR, output / ADAPT_DIR, dirs_exist_ok=True)
        init_manifest = json.loads((Path(config.init) / "manifest.json").read_text(encoding="utf-8"))
    _write_json(output / "manifest.json", {
        "name": csplade_mini.NAME, "variant": config.variant, "base": _base_record(),
        "max_query_length": config.query_max_length, "max_document_length": config.document_max_length,
        "query_top_k": config.query_top_k or None, "document_top_k": config.document_top_k or None,
        "training": {**init_manifest.get("training", {}), config.stage: config.model_dump(mode="json")},
        "contrastive": {"queries": len(queries), "seconds": round(time.monotonic() - start)}, "dev": dev,
        "hardware": {**init_manifest.get("hardware", {}), config.stage: hardware_facts(config.device)},
        "torch": torch.__version__,
    })
    return output
