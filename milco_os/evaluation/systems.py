"""Retrieval systems under evaluation. Each turns an eval set into a run (top ``size`` documents per query).

- ``bm25``: OpenSearch full text, one analyzed text field per language (the requests are built by
  :mod:`milco_os.opensearch.bm25`).
- ``dense``: multilingual-e5-small, exact cosine over the whole corpus in numpy (no index).
- ``sparse``: a milco-os model through the product path: :func:`create_index`, :class:`Ingester`,
  :func:`search`.
- ``fused``: the same with the model's dense view stored beside the sparse ones and fused at search time
  (docs/dense.md); ``dense-view``: that dense view's k-NN list alone.
- ``seismic``: ``sparse`` on a SEISMIC index (OpenSearch 3.3+ with neural-search; docs/seismic.md).

All OpenSearch IO goes through :mod:`milco_os.opensearch`: nothing here builds requests or calls the client directly.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from milco_os.errors import OpenSearchUnavailable, SearchIndexError
from milco_os.layout import Seismic, read_layout
from milco_os.opensearch.bm25 import (
    DEFAULT_SIZE,
    STANDARD,
    bm25_documents,
    bm25_index_body,
    bm25_query_body,
    choose_analyzers,
)
from milco_os.opensearch.bulk import BulkConfig, write_documents
from milco_os.opensearch.documents import dense_values
from milco_os.opensearch.engine import engine_of_record
from milco_os.opensearch.hybrid import knn_body
from milco_os.opensearch.indices import create_index, create_plain_index, delete_index, index_record, refresh
from milco_os.opensearch.ingest import Ingester, batches
from milco_os.opensearch.mapping import written_fields
from milco_os.opensearch.measure import force_merge, store_bytes
from milco_os.opensearch.search import msearch_ids, passage_query, search
from milco_os.pruning import Pruning
from milco_os.specs import DEFAULT_ALPHA, IndexSpec, SearchOptions
from milco_os.types import Encoded, Passage

if TYPE_CHECKING:
    from milco_os.opensearch.engine import Client
    from milco_os.runtime.encoder import SparseEncoder

log = logging.getLogger(__name__)

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


# ------------------------------------------------------------------------------------------ BM25
def _write_or_raise(client: Client, index: str, docs: Sequence[Mapping[str, Any]]) -> None:
    """Write BM25 documents; any document not written stops the run (an incomplete index would skew it)."""
    outcome = write_documents(client, index, bm25_documents(docs))
    if outcome.failed:
        first_id, reason = outcome.failed[0]
        first_id = first_id if len(first_id) <= 80 else first_id[:77] + "..."
        msg = f"BM25 indexing into {index!r} failed for {len(outcome.failed)} documents, first: {first_id}: {reason}"
        raise SearchIndexError(msg)
    if outcome.unavailable:
        msg = f"BM25 indexing into {index!r}: {outcome.unavailable[0][1]}"
        raise OpenSearchUnavailable(msg, outcome.unavailable)


def run_bm25(
    client: Client,
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
    create_plain_index(client, index, bm25_index_body(analyzers))
    try:
        advance = progress("bm25 index", len(corpus))
        for part in batches(corpus, 500):
            _write_or_raise(client, index, part)
            advance(len(part))
        refresh(client, index)
        index_s = time.monotonic() - start
        index_bytes = merged_size(client, index)
        start = time.monotonic()
        run: dict[str, list[str]] = {}
        advance = progress("bm25 search", len(evalset.queries))
        for part in batches(evalset.queries, msearch_batch):
            ranked = msearch_ids(client, index, [bm25_query_body(q["text"], langs, size) for q in part])
            for q, ids in zip(part, ranked, strict=True):
                run[q["id"]] = ids
            advance(len(part))
        search_s = time.monotonic() - start
    finally:
        if not keep_index:
            delete_index(client, index)
    return SystemResult(
        name="bm25", kind="bm25", run=run, config=config,
        timing={"index_s": index_s, "search_s": search_s},
        stats={"documents": len(corpus), "index_bytes": index_bytes},
    )


def merged_size(client: Client, index: str, source_filtered: bool = False) -> int:
    """The index's primary store in bytes after a merge to one segment (comparable across systems; with a
    filtered ``_source``, after OpenSearch dropped its transient recovery copy: see ``force_merge``)."""
    force_merge(client, index, source_filtered=source_filtered, wait_s=90)
    return store_bytes(client, index)


# ------------------------------------------------------------------------------------------ dense
E5_QUERY_PREFIX = "query: "
E5_PASSAGE_PREFIX = "passage: "


class E5Encoder:
    """multilingual-e5 conventions: a prefix per side, mean pooling over the attention mask, L2 norm."""

    def __init__(self, path: Path, *, device: str | None = None, batch_size: int = 64) -> None:
        from milco_os.models.files import quiet_transformers
        from milco_os.runtime.torch_runtime import pick_device

        quiet_transformers()
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        self.path = Path(path)
        self.device = pick_device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.path))
        # e5 mean-pools: no pooler (the converted e5-small has none; loading one would initialise it randomly)
        config = AutoConfig.from_pretrained(str(self.path))
        kwargs = {"add_pooling_layer": False} if config.model_type in ("bert", "roberta", "xlm-roberta") else {}
        self.model = AutoModel.from_pretrained(str(self.path), **kwargs).to(self.device).eval()
        self.batch_size = batch_size
        # Embeddings already computed, by (prefix, max_length, text): runs that share a corpus encode it once.
        self._seen: dict[tuple[str, int, str], np.ndarray] = {}

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
        from milco_os.models.files import fingerprint_dir, weight_file

        weights = weight_file(self.path)
        return fingerprint_dir(self.path, ["config.json", *([weights] if weights else [])])

    def encode(
        self, texts: Sequence[str], prefix: str, max_length: int, advance: Callable[[int], None] | None = None
    ) -> np.ndarray:
        """L2-normalised float32 embeddings, one row per text, in input order (texts this encoder has embedded
        before, with the same prefix and length, are not embedded again)."""
        new = list(dict.fromkeys(t for t in texts if (prefix, max_length, t) not in self._seen))
        if advance:
            advance(len(texts) - len(new))
        self.remember(new, prefix, max_length, self._embed(new, prefix, max_length, advance))
        dim = int(self.model.config.hidden_size)
        return np.stack([self._seen[prefix, max_length, t] for t in texts]) if texts else np.zeros((0, dim), np.float32)

    def remember(self, texts: Sequence[str], prefix: str, max_length: int, embeddings: np.ndarray) -> None:
        """Take embeddings made elsewhere (read back from a cache) as this encoder's own."""
        for text, row in zip(texts, embeddings, strict=True):
            self._seen[prefix, max_length, text] = row

    def _embed(
        self, texts: Sequence[str], prefix: str, max_length: int, advance: Callable[[int], None] | None = None
    ) -> np.ndarray:
        import torch

        dim = int(self.model.config.hidden_size)
        out = np.zeros((len(texts), dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))  # similar lengths batch together
        with torch.inference_mode():
            for part in batches(order, self.batch_size):
                batch = self.tokenizer(
                    [prefix + texts[i] for i in part], max_length=max_length, truncation=True, padding=True,
                    return_tensors="pt",
                ).to(self.device)
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=-1)
                out[part] = pooled.float().cpu().numpy()
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
    model_dir: Path | E5Encoder,
    *,
    size: int = DEFAULT_SIZE,
    device: str | None = None,
    batch_size: int = 64,
    passage_max_length: int = 256,
    query_max_length: int = 64,
    progress: ProgressFn = no_progress,
) -> SystemResult:
    encoder = model_dir if isinstance(model_dir, E5Encoder) else E5Encoder(model_dir, device=device,
                                                                            batch_size=batch_size)
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
        "model": {"name": encoder.name, "path": str(encoder.path), "fingerprint": encoder.fingerprint},
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
NO_PRUNING = Pruning()


class MemoEncoder:
    """Remembers every encoding, so the sparse systems of one run (document pruning levels, pivot-only vs
    pivot + echo) encode the corpus and the queries once. Pruning happens after encoding, so sharing is exact."""

    def __init__(self, inner: SparseEncoder) -> None:
        self._inner = inner
        self._documents: dict[str, Encoded] = {}
        self._queries: dict[str, Encoded] = {}
        self._passages: dict[str, list[Passage]] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def encode_documents(self, texts: Sequence[str], *, dense: bool = False) -> list[Encoded]:
        return self._memo(texts, self._documents, self._inner.encode_documents, dense)

    def remember_documents(self, texts: Sequence[str], encoded: Sequence[Encoded]) -> None:
        """Take encodings made elsewhere (read back from a cache) as this encoder's own."""
        self._documents.update(zip(texts, encoded, strict=True))

    def encode_queries(self, texts: Sequence[str], *, dense: bool = False) -> list[Encoded]:
        return self._memo(texts, self._queries, self._inner.encode_queries, dense)

    def encode_passages(self, texts: Sequence[str], *, dense: bool = False) -> list[list[Passage]]:
        return self._memo(texts, self._passages, self._inner.encode_passages, dense,
                          lacks_dense=lambda passages: any(p.encoded.dense is None for p in passages))

    def remember_passages(self, texts: Sequence[str], passages: Sequence[list[Passage]]) -> None:
        """Take passage encodings made elsewhere (read back from a cache) as this encoder's own."""
        self._passages.update(zip(texts, passages, strict=True))

    @staticmethod
    def _memo(texts: Sequence[str], seen: dict[str, Any], encode: Callable[..., list[Any]], dense: bool,
              lacks_dense: Callable[[Any], bool] = lambda e: e.dense is None) -> list[Any]:
        """An encoding with the dense view also serves a request without it (the sparse views are the same); one
        without it is made again when the dense view is asked for (an empty text has none to make)."""
        new = list(dict.fromkeys(t for t in texts if t not in seen or (dense and t and lacks_dense(seen[t]))))
        if new:
            seen.update(zip(new, encode(new, dense=dense), strict=True))
        return [seen[t] for t in texts]


class _CountingEncoder:
    """Passes documents through unchanged, counting their terms after the index's document pruning."""

    def __init__(self, inner: SparseEncoder, pruning: Pruning) -> None:
        self._inner = inner
        self._pruning = pruning
        self.documents = 0
        self.passages = 0
        self.pivot_terms = 0
        self.echo_terms = 0
        self.queries = 0
        self.query_terms = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def encode_documents(self, texts: Sequence[str], *, dense: bool = False) -> list[Encoded]:
        encoded = self._inner.encode_documents(texts, dense=dense)
        for enc in encoded:
            pruned = self._pruning.apply(enc)
            self.documents += 1
            self.pivot_terms += len(pruned.pivot)
            self.echo_terms += len(pruned.echo)
        return encoded

    def encode_passages(self, texts: Sequence[str], *, dense: bool = False) -> list[list[Passage]]:
        """A document's terms are its passages' terms, all counted (what the index stores)."""
        documents = self._inner.encode_passages(texts, dense=dense)
        for passages in documents:
            self.documents += 1
            self.passages += len(passages)
            for p in passages:
                pruned = self._pruning.apply(p.encoded)
                self.pivot_terms += len(pruned.pivot)
                self.echo_terms += len(pruned.echo)
        return documents

    def encode_queries(self, texts: Sequence[str], *, dense: bool = False) -> list[Encoded]:
        encoded = self._inner.encode_queries(texts, dense=dense)
        self.queries += len(encoded)
        self.query_terms += sum(len(enc.pivot) + len(enc.echo) for enc in encoded)
        return encoded

    def averages(self) -> dict[str, float]:
        n = max(self.documents, 1)
        return {"pivot": self.pivot_terms / n, "echo": self.echo_terms / n}

    def query_average(self) -> float:
        """Terms per query as encoded (both views; the search's query pruning, if any, comes after)."""
        return self.query_terms / max(self.queries, 1)


def _views(alpha: float, has_echo: bool) -> str:
    if alpha == 1.0 or not has_echo:
        return "pivot only"
    return "echo only" if alpha == 0.0 else "pivot + echo"


def run_sparse(
    client: Client,
    evalset: EvalSetLike,
    encoder: SparseEncoder,
    *,
    name: str = "sparse",
    doc_pruning: Pruning = NO_PRUNING,
    alpha: float = DEFAULT_ALPHA,
    size: int = DEFAULT_SIZE,
    keep_index: bool = False,
    progress: ProgressFn = no_progress,
    model_ref: str | None = None,
    fusion: tuple[str, float] | None = None,
    dense_only: bool = False,
    passages: bool = False,
    seismic: Seismic | None = None,
) -> SystemResult:
    """Index the corpus with ``encoder`` (documents pruned by ``doc_pruning``) and search every query with
    :func:`milco_os.opensearch.search.search` (``alpha`` weighs the pivot view; 1.0 is pivot only).

    ``fusion`` (normalisation, weight): the index also holds the model's dense view, and search fuses its k-NN
    list with the sparse one; ``dense_only``: the dense view's k-NN list alone (the ``dense-view`` system);
    ``passages``: the index stores each document's passages, and a document scores as its best; ``seismic``: a
    SEISMIC index with these build parameters, searched with SEISMIC's default query."""
    dense = fusion is not None or dense_only
    options = SearchOptions(size=size, alpha=alpha, dense_weight=fusion[1] if fusion else 0,
                            hybrid_norm=fusion[0] if fusion else None)
    info = encoder.info
    index = eval_index_name(evalset.name, name)
    counting = _CountingEncoder(encoder, doc_pruning)
    corpus = [{"id": str(d["id"]), "text": d["text"], "lang": d["lang"]} for d in evalset.corpus if d.get("text")]
    start = time.monotonic()
    spec = IndexSpec(bm25=False, replicas=0, vectors_in_source=False, doc_pruning=doc_pruning, dense=dense,
                     passages=passages, seismic=seismic)
    create_index(client, index, info, spec)
    try:
        ingester = Ingester(client, index, counting, config=BulkConfig())  # type: ignore[arg-type]
        advance = progress(f"{name} index", len(corpus))
        report = ingester.run(corpus, on_batch=lambda n, _r: advance(n), refresh=True)
        index_s = time.monotonic() - start
        index_bytes = merged_size(client, index)
        if report.failed:
            first = report.failures[0]
            msg = f"{name}: {report.failed} documents could not be indexed (first: {first[0]}: {first[1]})"
            raise SearchIndexError(msg)
        start = time.monotonic()
        run: dict[str, list[str]] = {}
        advance = progress(f"{name} search", len(evalset.queries))
        if dense_only:
            vectors = counting.encode_queries([q["text"] for q in evalset.queries], dense=True)
            record = index_record(client, index)
            layout = read_layout(record, index)
            assert layout.dense is not None
            nested = passage_query(record, options, name="dense")
            excludes = written_fields(record, index)
            bodies = [knn_body(dense_values(v.dense), layout.dense.field, size, None, excludes, passages=nested,
                               engine=engine_of_record(record, index)) for v in vectors]
            for part in batches(list(zip(evalset.queries, bodies, strict=True)), 100):
                for (q, _), ids in zip(part, msearch_ids(client, index, [b for _, b in part]), strict=True):
                    run[q["id"]] = ids
                advance(len(part))
        else:
            for q in evalset.queries:
                result = search(client, index, q["text"], counting, options)  # type: ignore[arg-type]
                run[q["id"]] = [h.id for h in result.hits]
                advance(1)
        search_s = time.monotonic() - start
    finally:
        if not keep_index:
            delete_index(client, index)
    config = {
        "model": {"name": info.name, "reference": model_ref or info.name, "family": info.family,
                  "fingerprint": info.fingerprint, "echo": info.echo_vocab is not None},
        "document_pruning": doc_pruning.to_meta(),
        "alpha": alpha,
        "views": "dense only" if dense_only else _views(alpha, info.echo_vocab is not None),
        "dense": None if not dense else {"model": asdict(info.dense) if info.dense else None,
                                         "fusion": {"norm": fusion[0], "weight": fusion[1]} if fusion else None},
        "size": size,
        "units": "passages" if passages else "merged",
        **({"seismic": asdict(seismic)} if seismic is not None else {}),
        "index": index if keep_index else None,
    }
    return SystemResult(
        name=name, kind="dense-view" if dense_only else "fused" if fusion else "seismic" if seismic else "sparse",
        run=run, config=config,
        timing={"index_s": index_s, "search_s": search_s},
        stats={"documents": report.indexed, "avg_document_terms": counting.averages(),
               "avg_query_terms": counting.query_average(), "index_bytes": index_bytes,
               **({"passages": counting.passages} if passages else {})},
    )
