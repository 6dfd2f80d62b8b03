"""Retrieval systems under evaluation. Each turns an eval set into a run (top ``size`` documents per query).

- ``bm25``: OpenSearch full text. Every document goes into the text field of its own language, analysed by
  that language's built-in analyzer (``german``, ``cjk``, ...; ``standard`` where OpenSearch has none);
  a query is a ``multi_match`` over all those fields, so each document is matched by the query analysed
  the way its own language is.
- ``dense``: multilingual-e5-small, exact cosine over the whole corpus in numpy (no index).
- ``sparse``: a milco-os model through the product path: :func:`create_index`, :class:`Ingester`,
  :func:`search`.

The pure request builders (analyzer choice, index body, query body) are separate from the IO so tests can
check them without a node.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from milco_os.errors import SearchIndexError
from milco_os.pruning import PruningConfig
from milco_os.types import Encoded

if TYPE_CHECKING:
    from opensearchpy import OpenSearch

    from milco_os.runtime.encoder import SparseEncoder

log = logging.getLogger(__name__)

#: Documents retrieved per query; Recall@100 needs 100.
DEFAULT_SIZE = 100


class EvalSetLike(Protocol):
    """What the systems need from :class:`milco_os.datasets.libreoffice.EvalSet`."""

    name: str
    corpus: list[dict[str, Any]]  # {"id", "text", "lang"}
    queries: list[dict[str, Any]]  # {"id", "text", "lang"}
    qrels: dict[str, dict[str, int]]


#: ``progress(label, total)`` starts a task and returns ``advance(n)``; the CLI draws a bar with it.
ProgressFn = Callable[[str, "int | None"], Callable[[int], None]]


def no_progress(_label: str, _total: int | None) -> Callable[[int], None]:
    return lambda _n: None


@dataclass
class SystemResult:
    """One system's run and how it was produced."""

    name: str
    kind: str  # bm25 | dense | sparse
    run: dict[str, list[str]]
    config: dict[str, Any]
    timing: dict[str, float] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)


def eval_index_name(dataset: str, system: str) -> str:
    """A fresh, valid index name: ``eval-<dataset>-<system>-<8 hex>``."""
    base = re.sub(r"[^a-z0-9._-]+", "-", f"eval-{dataset}-{system}".lower()).strip("-._")
    return f"{base[:200]}-{uuid.uuid4().hex[:8]}"


def _batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# ------------------------------------------------------------------------------------------ BM25
#: milco-os language codes -> OpenSearch built-in language analyzers (module analysis-common). A code
#: is looked up as given (lower case), then by its part before "-" (``de-ch`` -> ``de``).
LANGUAGE_ANALYZERS: dict[str, str] = {
    "ar": "arabic", "hy": "armenian", "eu": "basque", "bn": "bengali", "pt-br": "brazilian",
    "bg": "bulgarian", "ca": "catalan", "cs": "czech", "da": "danish", "nl": "dutch", "en": "english",
    "et": "estonian", "fi": "finnish", "fr": "french", "gl": "galician", "de": "german", "el": "greek",
    "hi": "hindi", "hu": "hungarian", "id": "indonesian", "ga": "irish", "it": "italian", "lv": "latvian",
    "lt": "lithuanian", "nb": "norwegian", "nn": "norwegian", "no": "norwegian", "fa": "persian",
    "pt": "portuguese", "ro": "romanian", "ru": "russian", "ckb": "sorani", "es": "spanish",
    "sv": "swedish", "tr": "turkish", "th": "thai",
    # CJK: overlapping character bigrams (no dictionary segmenter is built in).
    "ja": "cjk", "ko": "cjk", "zh": "cjk", "zh-cn": "cjk", "zh-tw": "cjk",
}  # fmt: skip
STANDARD = "standard"


def analyzer_for(lang: str) -> str:
    """The built-in analyzer for a language code, ``standard`` when OpenSearch has none."""
    code = lang.strip().lower().replace("_", "-")
    return LANGUAGE_ANALYZERS.get(code) or LANGUAGE_ANALYZERS.get(code.split("-")[0]) or STANDARD


def language_field(lang: str) -> str:
    """The text field holding documents of ``lang``: ``text_de``, ``text_zh_cn``, ..."""
    return "text_" + re.sub(r"[^a-z0-9]+", "_", lang.strip().lower())


def resolve_analyzers(
    langs: Sequence[str], unavailable: Mapping[str, str] | None = None
) -> tuple[dict[str, str], dict[str, str]]:
    """``({lang: analyzer}, {lang: why it fell back to standard})``; ``unavailable`` maps analyzer names
    the node lacks to the reason."""
    unavailable = unavailable or {}
    chosen: dict[str, str] = {}
    fallbacks: dict[str, str] = {}
    for lang in sorted(set(langs)):
        analyzer = analyzer_for(lang)
        if analyzer != STANDARD and analyzer in unavailable:
            fallbacks[lang] = f"analyzer {analyzer!r} unavailable: {unavailable[analyzer]}"
            analyzer = STANDARD
        chosen[lang] = analyzer
    return chosen, fallbacks


def bm25_index_body(analyzers: Mapping[str, str], *, shards: int = 1, replicas: int = 0) -> dict[str, Any]:
    """One text field per language with its analyzer, plus the language as a keyword."""
    properties: dict[str, Any] = {"lang": {"type": "keyword"}}
    for lang, analyzer in sorted(analyzers.items()):
        properties[language_field(lang)] = {"type": "text", "analyzer": analyzer}
    return {
        "settings": {"index": {"number_of_shards": shards, "number_of_replicas": replicas}},
        "mappings": {"dynamic": "strict", "properties": properties},
    }


def bm25_document(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {"lang": doc["lang"], language_field(doc["lang"]): doc["text"]}


def bm25_query_body(text: str, langs: Sequence[str], size: int = DEFAULT_SIZE) -> dict[str, Any]:
    """``multi_match`` over every language field (each analyses the query its own way); a document has
    exactly one of them, so ``best_fields`` scores it by BM25 in its own language."""
    return {
        "size": size,
        "_source": False,
        "query": {
            "multi_match": {
                "query": text,
                "fields": sorted({language_field(lang) for lang in langs}),
                "type": "best_fields",
            }
        },
    }


def unavailable_analyzers(client: OpenSearch, names: Sequence[str]) -> dict[str, str]:
    """Analyzers the node does not know (e.g. a distribution without the analysis-common module)."""
    from opensearchpy.exceptions import TransportError

    missing: dict[str, str] = {}
    for name in sorted(set(names) - {STANDARD}):
        try:
            client.indices.analyze(body={"analyzer": name, "text": "probe"})
        except TransportError as e:
            if e.status_code != 400:
                raise
            reason = e.info.get("error", {}).get("reason") if isinstance(e.info, dict) else None
            missing[name] = str(reason or e.error)
    return missing


def choose_analyzers(client: OpenSearch, langs: Sequence[str]) -> tuple[dict[str, str], dict[str, str]]:
    """:func:`resolve_analyzers` for ``langs`` against what this node has."""
    wanted = {analyzer_for(lang) for lang in langs}
    return resolve_analyzers(langs, unavailable_analyzers(client, sorted(wanted)))


def _create_plain(client: OpenSearch, index: str, body: dict[str, Any]) -> None:
    from opensearchpy.exceptions import TransportError

    try:
        client.indices.create(index=index, body=body)
    except TransportError as e:
        msg = f"OpenSearch refused to create the BM25 index {index!r}: {e.info if e.info else e.error}"
        raise SearchIndexError(msg) from e


def _bulk_plain(client: OpenSearch, index: str, docs: Sequence[Mapping[str, Any]], chunk: int = 500) -> None:
    import json

    for part in _batches(docs, chunk):
        lines = []
        for doc in part:
            lines.append(json.dumps({"index": {"_index": index, "_id": str(doc["id"])}}))
            lines.append(json.dumps(bm25_document(doc), ensure_ascii=False))
        resp = client.bulk(body="\n".join(lines) + "\n")
        if resp.get("errors"):
            bad = [next(iter(i.values())) for i in resp["items"] if next(iter(i.values())).get("error")]
            msg = f"BM25 indexing into {index!r} failed for {len(bad)} documents, first: {bad[0].get('error')}"
            raise SearchIndexError(msg)


def _msearch_ids(client: OpenSearch, index: str, bodies: Sequence[dict[str, Any]]) -> list[list[str]]:
    lines: list[dict[str, Any]] = []
    for body in bodies:
        lines += [{"index": index}, body]
    resp = client.msearch(body=lines)
    out = []
    for item in resp["responses"]:
        if "error" in item:
            msg = f"search on {index!r} failed: {item['error']}"
            raise SearchIndexError(msg)
        out.append([h["_id"] for h in item["hits"]["hits"]])
    return out


def run_bm25(
    client: OpenSearch,
    evalset: EvalSetLike,
    *,
    size: int = DEFAULT_SIZE,
    keep_index: bool = False,
    progress: ProgressFn = no_progress,
    msearch_batch: int = 50,
) -> SystemResult:
    langs = sorted({d["lang"] for d in evalset.corpus} | {q["lang"] for q in evalset.queries})
    analyzers, fallbacks = choose_analyzers(client, langs)
    index = eval_index_name(evalset.name, "bm25")
    config: dict[str, Any] = {
        "analyzer": "language" if any(a != STANDARD for a in analyzers.values()) else STANDARD,
        "analyzers": analyzers,
        "query": "multi_match (best_fields) over the per-language text fields",
        "size": size,
        "index": index if keep_index else None,
    }
    if fallbacks:
        config["analyzer_fallbacks"] = fallbacks
        log.warning("BM25 falls back to the standard analyzer for %s", ", ".join(fallbacks))
    corpus = [d for d in evalset.corpus if d.get("text")]
    start = time.monotonic()
    _create_plain(client, index, bm25_index_body(analyzers))
    try:
        advance = progress("bm25 index", len(corpus))
        for part in _batches(corpus, 500):
            _bulk_plain(client, index, part)
            advance(len(part))
        client.indices.refresh(index=index)
        index_s = time.monotonic() - start
        start = time.monotonic()
        run: dict[str, list[str]] = {}
        advance = progress("bm25 search", len(evalset.queries))
        for part in _batches(evalset.queries, msearch_batch):
            ranked = _msearch_ids(client, index, [bm25_query_body(q["text"], langs, size) for q in part])
            for q, ids in zip(part, ranked, strict=True):
                run[q["id"]] = ids
            advance(len(part))
        search_s = time.monotonic() - start
    finally:
        if not keep_index:
            client.indices.delete(index=index, ignore_unavailable=True)
    return SystemResult(
        name="bm25", kind="bm25", run=run, config=config,
        timing={"index_s": index_s, "search_s": search_s},
        stats={"documents": len(corpus)},
    )


# ------------------------------------------------------------------------------------------ dense
E5_QUERY_PREFIX = "query: "
E5_PASSAGE_PREFIX = "passage: "


class E5Encoder:
    """multilingual-e5 conventions: a prefix per side, mean pooling over the attention mask, L2 norm."""

    def __init__(self, path: Path, *, device: str | None = None, batch_size: int = 64) -> None:
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        from milco_os.models.loading import _quiet_transformers
        from milco_os.runtime.torch_runtime import pick_device

        _quiet_transformers()
        self.path = Path(path)
        self.device = pick_device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.path))
        # e5 mean-pools: no pooler (the converted e5-small has none; loading one would initialise it randomly)
        config = AutoConfig.from_pretrained(str(self.path))
        kwargs = {"add_pooling_layer": False} if config.model_type in ("bert", "roberta", "xlm-roberta") else {}
        self.model = AutoModel.from_pretrained(str(self.path), **kwargs).to(self.device).eval()
        self.batch_size = batch_size

    @property
    def name(self) -> str:
        """The model's name from the provenance record ``build_e5_small`` writes, else the directory's."""
        import json

        try:
            return str(json.loads((self.path / ".complete").read_text(encoding="utf-8"))["model"])
        except (OSError, ValueError, KeyError, TypeError):
            return self.path.name

    @property
    def fingerprint(self) -> str:
        from milco_os.models.loading import WEIGHT_FILES, fingerprint_dir

        weights = [f for f in WEIGHT_FILES if (self.path / f).is_file()][:1]
        return fingerprint_dir(self.path, ["config.json", *weights])

    def encode(
        self, texts: Sequence[str], prefix: str, max_length: int, advance: Callable[[int], None] | None = None
    ) -> np.ndarray:
        """L2-normalised float32 embeddings, one row per text, in input order."""
        import torch

        dim = int(self.model.config.hidden_size)
        out = np.zeros((len(texts), dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))  # similar lengths batch together
        with torch.inference_mode():
            for part in _batches(order, self.batch_size):
                batch = self.tokenizer(
                    [prefix + texts[i] for i in part], max_length=max_length, truncation=True, padding=True,
                    return_tensors="pt",
                ).to(self.device)
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=-1)
                out[list(part)] = pooled.float().cpu().numpy()
                if advance:
                    advance(len(part))
        return out


def top_k_cosine(queries: np.ndarray, docs: np.ndarray, k: int, chunk: int = 256) -> np.ndarray:
    """Row indices of the ``k`` best documents per query, best first (ties: lower index first)."""
    k = min(k, docs.shape[0])
    result = np.zeros((queries.shape[0], k), dtype=np.int64)
    for start in range(0, queries.shape[0], chunk):
        scores = queries[start : start + chunk] @ docs.T
        if k < docs.shape[0]:
            part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        else:
            part = np.tile(np.arange(docs.shape[0]), (scores.shape[0], 1))
        part_scores = np.take_along_axis(scores, part, axis=1)
        order = np.lexsort((part, -part_scores), axis=1)
        result[start : start + chunk] = np.take_along_axis(part, order, axis=1)
    return result


def run_dense(
    evalset: EvalSetLike,
    model_dir: Path,
    *,
    size: int = DEFAULT_SIZE,
    device: str | None = None,
    batch_size: int = 64,
    passage_max_length: int = 256,
    query_max_length: int = 64,
    progress: ProgressFn = no_progress,
) -> SystemResult:
    encoder = E5Encoder(model_dir, device=device, batch_size=batch_size)
    corpus = [d for d in evalset.corpus if d.get("text")]
    start = time.monotonic()
    doc_vecs = encoder.encode(
        [d["text"] for d in corpus], E5_PASSAGE_PREFIX, passage_max_length, progress("dense encode docs", len(corpus))
    )
    index_s = time.monotonic() - start
    start = time.monotonic()
    query_vecs = encoder.encode(
        [q["text"] for q in evalset.queries], E5_QUERY_PREFIX, query_max_length,
        progress("dense encode queries", len(evalset.queries)),
    )
    best = top_k_cosine(query_vecs, doc_vecs, size)
    search_s = time.monotonic() - start
    doc_ids = [str(d["id"]) for d in corpus]
    run = {q["id"]: [doc_ids[j] for j in row] for q, row in zip(evalset.queries, best, strict=True)}
    config = {
        "model": {"name": encoder.name, "path": str(model_dir), "fingerprint": encoder.fingerprint},
        "similarity": "cosine (exact, numpy)",
        "pooling": "mean",
        "prefixes": {"query": E5_QUERY_PREFIX, "passage": E5_PASSAGE_PREFIX},
        "max_length": {"query": query_max_length, "passage": passage_max_length},
        "device": str(encoder.device),
        "size": size,
    }
    return SystemResult(
        name="dense", kind="dense", run=run, config=config,
        timing={"index_s": index_s, "search_s": search_s},
        stats={"documents": len(corpus), "dimensions": int(doc_vecs.shape[1])},
    )


# ------------------------------------------------------------------------------------------ sparse
class MemoEncoder:
    """Remembers every encoding, so the sparse systems of one run (document pruning levels, pivot-only vs
    pivot + echo) encode the corpus and the queries once. Pruning happens after encoding, so sharing is exact."""

    def __init__(self, inner: SparseEncoder) -> None:
        self._inner = inner
        self._documents: dict[str, Encoded] = {}
        self._queries: dict[str, Encoded] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def encode_documents(self, texts: Sequence[str]) -> list[Encoded]:
        return self._memo(texts, self._documents, self._inner.encode_documents)

    def encode_queries(self, texts: Sequence[str]) -> list[Encoded]:
        return self._memo(texts, self._queries, self._inner.encode_queries)

    @staticmethod
    def _memo(texts: Sequence[str], seen: dict[str, Encoded], encode: Callable[[list[str]], list[Encoded]]) -> list[
        Encoded
    ]:
        new = list(dict.fromkeys(t for t in texts if t not in seen))
        if new:
            seen.update(zip(new, encode(new), strict=True))
        return [seen[t] for t in texts]


class _CountingEncoder:
    """Passes documents through unchanged, counting their terms after the index's document pruning."""

    def __init__(self, inner: SparseEncoder, pruning: PruningConfig) -> None:
        self._inner = inner
        self._rules = pruning.rules()
        self.documents = 0
        self.pivot_terms = 0
        self.echo_terms = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def encode_documents(self, texts: Sequence[str]) -> list[Encoded]:
        encoded = self._inner.encode_documents(texts)
        pivot_rule, echo_rule = self._rules
        for enc in encoded:
            self.documents += 1
            self.pivot_terms += len(pivot_rule.apply(enc.pivot))
            self.echo_terms += len(echo_rule.apply(enc.echo))
        return encoded

    def averages(self) -> dict[str, float]:
        n = max(self.documents, 1)
        return {"pivot": self.pivot_terms / n, "echo": self.echo_terms / n}


def _views(alpha: float, has_echo: bool) -> str:
    if alpha == 1.0 or not has_echo:
        return "pivot only"
    return "echo only" if alpha == 0.0 else "pivot + echo"


def run_sparse(
    client: OpenSearch,
    evalset: EvalSetLike,
    encoder: SparseEncoder,
    *,
    name: str = "sparse",
    doc_pruning: PruningConfig | None = None,
    alpha: float = 0.5,
    size: int = DEFAULT_SIZE,
    keep_index: bool = False,
    progress: ProgressFn = no_progress,
    model_ref: str | None = None,
) -> SystemResult:
    """Index the corpus with ``encoder`` (documents pruned by ``doc_pruning``) and search every query with
    :func:`milco_os.opensearch.search.search` (``alpha`` weighs the pivot view; 1.0 is pivot only)."""
    from milco_os.opensearch.indices import create_index
    from milco_os.opensearch.ingest import BulkConfig, Ingester
    from milco_os.opensearch.search import SearchOptions, search

    pruning = doc_pruning or PruningConfig()
    options = SearchOptions(size=size, alpha=alpha)
    info = encoder.info
    index = eval_index_name(evalset.name, name)
    counting = _CountingEncoder(encoder, pruning)
    corpus = [{"id": str(d["id"]), "text": d["text"], "lang": d["lang"]} for d in evalset.corpus if d.get("text")]
    start = time.monotonic()
    create_index(client, index, info, text_fields=["text"], doc_pruning=pruning, bm25=False, replicas=0,
                 vectors_in_source=False)
    try:
        ingester = Ingester(client, index, counting, config=BulkConfig())  # type: ignore[arg-type]
        advance = progress(f"{name} index", len(corpus))
        report = ingester.run(corpus, on_batch=lambda n, _r: advance(n), refresh=True)
        index_s = time.monotonic() - start
        if report.failed:
            first = report.failures[0]
            msg = f"{name}: {report.failed} documents could not be indexed (first: {first[0]}: {first[1]})"
            raise SearchIndexError(msg)
        start = time.monotonic()
        run: dict[str, list[str]] = {}
        advance = progress(f"{name} search", len(evalset.queries))
        for q in evalset.queries:
            result = search(client, index, q["text"], encoder, options)
            run[q["id"]] = [h.id for h in result.hits]
            advance(1)
        search_s = time.monotonic() - start
    finally:
        if not keep_index:
            client.indices.delete(index=index, ignore_unavailable=True)
    config = {
        "model": {"name": info.name, "reference": model_ref or info.name, "family": info.family,
                  "fingerprint": info.fingerprint, "echo": info.echo_vocab is not None},
        "document_pruning": pruning.model_dump(),
        "alpha": alpha,
        "views": _views(alpha, info.echo_vocab is not None),
        "size": size,
        "index": index if keep_index else None,
    }
    return SystemResult(
        name=name, kind="sparse", run=run, config=config,
        timing={"index_s": index_s, "search_s": search_s},
        stats={"documents": report.indexed, "avg_document_terms": counting.averages()},
    )
