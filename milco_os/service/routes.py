"""The routes: each parses its body into the library's specs and calls :mod:`milco_os.opensearch`.

The encoder, the OpenSearch client and the settings come from ``app.state`` (set by the app's lifespan)
through the dependencies below, so a test can swap any of them (``app.dependency_overrides``). Routes are
plain ``def`` (FastAPI runs them in its thread pool) because encoding is blocking work; the documents
route reads its body itself (JSON array or NDJSON) and then hands the work to the thread pool. Routes raise
the library's exceptions as they are: the app maps each type to its HTTP status.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from milco_os.errors import ModelMismatch
from milco_os.opensearch.bulk import BulkConfig
from milco_os.opensearch.client import reachable as opensearch_reachable
from milco_os.opensearch.validation import check_filters, check_index_name
from milco_os.pruning import Pruning
from milco_os.runtime.encoder import SparseEncoder
from milco_os.service.recent import RecentEncodings
from milco_os.service.schemas import (
    DOCUMENTS_BODY,
    ERROR_MEANINGS,
    MAX_DOCUMENTS,
    RETRY_AFTER,
    AsciiJSONResponse,
    DeleteRequest,
    DeleteResponse,
    EncodeRequest,
    EncodeResponse,
    ErrorResponse,
    IngestResponse,
    NeuralSparseRequest,
    NeuralSparseResponse,
    Readiness,
    SearchRequest,
    SearchResponse,
    errors,
    invalid,
    problem,
)
from milco_os.settings import Settings
from milco_os.specs import SearchOptions, TwoPhase

if TYPE_CHECKING:
    from milco_os.opensearch.engine import Client as EngineClient

T = TypeVar("T")

# Dependencies. Plain attribute reads, so ``async``: no trip through the thread pool.


async def get_encoder(request: Request) -> SparseEncoder:
    return request.app.state.encoder


async def get_client(request: Request) -> EngineClient:
    return request.app.state.client


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def index_name(name: str) -> str:
    """The ``{name}`` path parameter, checked (422 naming ``["path", "name"]``)."""
    try:
        return check_index_name(name)
    except ValueError as e:
        raise invalid(["path", "name"], str(e)) from None


async def documents_body(request: Request) -> list[Any]:
    """The documents route's body, read and parsed here (FastAPI solves dependencies in parameter order, so
    a body that is too large or unreadable is refused before the client or encoder is asked for)."""
    body = await request.body()  # at most MAX_BODY_BYTES: GuardV1 refuses more while it arrives
    return parse_documents(body, request.headers.get("content-type", ""))


Encoder = Annotated[SparseEncoder, Depends(get_encoder)]
Client = Annotated[Any, Depends(get_client)]  # either engine's client, used only through the library
ServiceSettings = Annotated[Settings, Depends(get_settings)]
IndexName = Annotated[str, Depends(index_name)]
Documents = Annotated[list[Any], Depends(documents_body)]

router = APIRouter()
#: A request waits for its writes and deletes: fewer, shorter retries than a batch job's.
SERVICE_BULK = BulkConfig(max_retries=2, initial_backoff=0.5)


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", response_model=Readiness,
            responses={503: {"model": Readiness, "description": "not ready (Retry-After)"}})
def readyz(request: Request) -> JSONResponse:
    # Not the dependencies: readiness reports a missing encoder or client instead of failing on it.
    encoder = getattr(request.app.state, "encoder", None)
    client = getattr(request.app.state, "client", None)
    reachable = client is not None and opensearch_reachable(client)
    body = {"model_loaded": encoder is not None, "opensearch_reachable": reachable}
    if encoder is not None and reachable:
        return JSONResponse(status_code=200, content=body)
    return JSONResponse(status_code=503, content=body, headers=RETRY_AFTER)


@router.post("/v1/encode", response_model=EncodeResponse, responses=errors(400, 401, 413, 422))
def encode(req: EncodeRequest, encoder: Encoder) -> dict[str, Any]:
    encode_fn = encoder.encode_queries if req.kind == "query" else encoder.encode_documents
    return {
        "model": encoder.info.name,
        "results": [{"pivot": e.pivot.readable_terms(), "echo": e.echo.readable_terms()} for e in encode_fn(req.texts)],
    }


async def get_recent(request: Request) -> RecentEncodings:
    return request.app.state.recent_encodings


@router.post(
    "/v1/neural-sparse", response_model=NeuralSparseResponse, response_class=AsciiJSONResponse,
    responses=errors(400, 401, 409, 413, 422),
)
def neural_sparse(
    req: NeuralSparseRequest, encoder: Encoder, recent: Annotated[RecentEncodings, Depends(get_recent)],
    request: Request,
) -> dict[str, Any]:
    """For ml-commons remote models: ``{"response": [{feature name: weight}, ...]}``, one map per text, the one
    shape neural-search's ``sparse_encoding`` processor and ``neural_sparse`` query read without a script; the
    dense view: ``{"response": [[float, ...], ...]}``, one embedding per text."""
    from milco_os.opensearch.documents import dense_values, feature_map
    from milco_os.opensearch.query import query_tokens

    if req.model_fingerprint is not None and req.model_fingerprint != encoder.info.fingerprint:
        # A connector registered for an index built with an older shipped version of the service's model.
        encoder = version_encoder(request, encoder, req.model) or encoder
    info = encoder.info
    if req.model_fingerprint not in (None, info.fingerprint):
        msg = (
            f"the connector was registered for model fingerprint {req.model_fingerprint}, but this service runs "
            f"{info.name!r} ({info.fingerprint}); mixing models gives meaningless scores"
        )
        raise HTTPException(409, msg)
    if req.view == "echo" and info.echo_vocab is None:
        raise invalid(["body", "view"], f"model {info.name!r} has no echo view")
    dense = req.dense or req.view == "dense"
    if dense and info.dense is None:
        raise invalid(["body", "view" if req.view == "dense" else "dense"], f"model {info.name!r} has no dense view")
    try:
        pruning = Pruning.parse(req.prune)
    except ValueError as e:
        raise invalid(["body", "prune"], str(e)) from None
    if pruning.needs_stats:
        raise invalid(["body", "prune"], "selective pruning needs an index's document frequencies")
    encoded = [pruning.apply(e) for e in recent.encode(encoder, req.kind, req.texts, dense=dense)]
    if req.view == "dense":  # as `milco-os ingest` writes it and `milco-os search` sends it (an empty text: zeros)
        return {"response": [dense_values(e.dense) if e.dense is not None else [0.0] * info.dense.dimensions
                             for e in encoded]}
    if req.kind == "query":  # queries keep full precision, as `milco-os search` sends them
        return {"response": [query_tokens(getattr(e, req.view), keys=req.keys) for e in encoded]}
    # Rounded exactly as `milco-os ingest` writes them, so both paths store the same values.
    return {"response": [feature_map(getattr(e, req.view), req.keys) for e in encoded]}


@router.post(
    "/v1/indices/{name}/documents",
    response_model=IngestResponse,
    responses={
        207: {"model": IngestResponse, "description": "some documents failed; they are in `failed`"},
        **errors(400, 401, 404, 409, 413, 422),
        503: {
            "model": IngestResponse | ErrorResponse,
            "description": ERROR_MEANINGS[503] + " (after some documents were sent: what was written and what not)",
        },
    },
    openapi_extra=DOCUMENTS_BODY,
)
async def add_documents(
    name: IndexName, docs: Documents, client: Client, encoder: Encoder, request: Request
) -> JSONResponse:
    """Index a JSON array of documents, or NDJSON (one document per line)."""
    return await run_in_threadpool(for_index, request, encoder,
                                   lambda chosen: ingest_documents(client, chosen, name, docs))


@router.delete(
    "/v1/indices/{name}/documents/{doc_id:path}",
    response_model=DeleteResponse,
    responses={404: {"model": ErrorResponse, "description": "the index, or the document, does not exist"},
               **errors(400, 401, 409, 413, 422, 503)},
)
def delete_document(name: IndexName, doc_id: str, client: Client) -> JSONResponse:
    """Delete one document by id."""
    from milco_os.opensearch.delete import delete_documents

    report = delete_documents(client, name, [doc_id], config=SERVICE_BULK)
    if report.not_found:
        raise HTTPException(404, f"document {doc_id!r} is not in index {name!r}")
    return delete_response(report)


@router.post(
    "/v1/indices/{name}/documents/delete",
    response_model=DeleteResponse,
    responses={207: {"model": DeleteResponse, "description": "some ids could not be deleted; they are in `failed`"},
               **errors(400, 401, 404, 409, 413, 422, 503)},
)
def delete_documents_by_id(name: IndexName, req: DeleteRequest, client: Client) -> JSONResponse:
    """Delete documents by id (ids the index does not hold are listed in ``not_found``, not an error)."""
    from milco_os.opensearch.delete import delete_documents

    return delete_response(delete_documents(client, name, req.ids, config=SERVICE_BULK))


def delete_response(report: Any) -> JSONResponse:
    """200 when every id was deleted or not there, 207 when some failed, 503 with Retry-After when every failure
    was OpenSearch being unavailable."""
    content = {"deleted": report.deleted, "not_found": report.not_found,
               "failed": [{"id": doc_id, "reason": reason} for doc_id, reason in report.failed],
               "retried": report.retried}
    if report.failed and len(report.unavailable) == len(report.failed):
        return JSONResponse(status_code=503, content=content, headers=RETRY_AFTER)
    return JSONResponse(status_code=207 if report.failed else 200, content=content)


@router.post(
    "/v1/indices/{name}/search",
    response_model=SearchResponse,
    responses=errors(400, 401, 404, 409, 413, 422, 503),
)
def search_index(
    name: IndexName, req: SearchRequest, client: Client, encoder: Encoder, settings: ServiceSettings, request: Request
) -> dict[str, Any]:
    from milco_os.opensearch.search import search

    options = search_options(req, settings)
    stats = cached_stats(request, client, name, options)
    return for_index(request, encoder, lambda chosen: search(client, name, req.query, chosen, options,
                                                              stats=stats).to_dict())


def for_index(request: Request, encoder: SparseEncoder, work: Callable[[SparseEncoder], T]) -> T:
    """``work(encoder)``; when the index was built with another shipped version of the service's model, ``work``
    again with that version (:func:`version_encoder`). The library refuses a model that does not fit before it
    writes or searches anything, so the second call repeats nothing."""
    try:
        return work(encoder)
    except ModelMismatch as e:
        other = version_encoder(request, encoder, e.index_model)
        if other is None:
            raise
        return work(other)


def version_encoder(request: Request, encoder: SparseEncoder, index_model: str | None) -> SparseEncoder | None:
    """The shipped version of the service's model that built an index (its ``_meta`` names ``index_model``), loaded
    on first need and kept; None when the service's model does not follow it (a pinned version, another model, a
    directory) or already is it."""
    from milco_os.loading import load_encoder, model_for_index

    state = request.app.state
    wanted = model_for_index(state.settings.model, index_model)
    if wanted in (state.settings.model, encoder.info.name):
        return None
    with state.encoders_lock:  # one load per version, however many requests ask at once
        if wanted not in state.encoders:
            state.encoders[wanted] = load_encoder(wanted, state.settings.cache_dir)
        return state.encoders[wanted]


#: Seconds the service keeps an index's document frequencies before it reads them again.
STATS_TTL_S = 300.0
#: Indices whose document frequencies the service keeps at once (the least recently searched go first).
STATS_INDICES = 64


def cached_stats(request: Request, client: EngineClient, index: str, options: SearchOptions) -> Any:
    """The index's term statistics for ``selective`` pruning and two-phase, kept per index for STATS_TTL_S (None
    when the options need none)."""
    from milco_os.opensearch.indices import index_record
    from milco_os.opensearch.search import needs_term_stats, term_stats

    if not needs_term_stats(options):
        return None
    kept = request.app.state.term_stats
    stats = kept.pop(index, None)
    if stats is None:
        stats = term_stats(client, index, index_record(client, index), options)
    elif stats.age_s > STATS_TTL_S:
        stats.refresh()
    kept[index] = stats  # most recent last
    while len(kept) > STATS_INDICES:
        del kept[next(iter(kept))]
    return stats


def search_options(req: SearchRequest, settings: Settings) -> SearchOptions:
    """The request's options as the library's spec; a bad value is a 422 naming its field."""
    try:
        pruning = Pruning.parse(req.query_prune)
    except ValueError as e:
        raise invalid(["body", "query_prune"], str(e)) from None
    try:
        filters = check_filters(req.filters, allow_scripts=settings.allow_script_filters)
    except ValueError as e:
        raise invalid(["body", "filters"], str(e)) from None
    try:
        return SearchOptions(
            size=req.size, from_=req.from_, alpha=req.alpha, query_pruning=pruning, filters=tuple(filters),
            two_phase=TwoPhase() if req.two_phase else None, hybrid_weight=req.hybrid, hybrid_norm=req.hybrid_norm,
            dense_weight=req.dense, passage_score=req.passage_score, explain=req.explain,
        )
    except ValueError as e:
        raise invalid(["body"], str(e)) from None


def ingest_documents(client: EngineClient, encoder: SparseEncoder, name: str, docs: list[Any]) -> JSONResponse:
    """Validate every document first (422 listing the problems, nothing written), then ingest them all.

    200 when all were written, 207 when some failed (``failed`` says why), 503 with Retry-After when every
    failed document failed only because OpenSearch was unavailable. ``indexed`` lists exactly the ids written.
    """
    from milco_os.opensearch.ingest import Ingester, validate_document

    ingester = Ingester(client, name, encoder, config=SERVICE_BULK)
    problems = []
    first_at: dict[str, int] = {}  # id -> position of the first document with it
    for i, doc in enumerate(docs):
        if reason := validate_document(doc, ingester.text_fields):
            problems.append(problem(["body", i], reason))
        elif (doc_id := str(doc["id"])) in first_at:
            # A second write of one id would overwrite the first yet count twice.
            msg = f"duplicate id {doc_id!r}: documents {first_at[doc_id]} and {i} both use it"
            problems.append(problem(["body", i, "id"], msg))
        else:
            first_at[doc_id] = i
    if problems:
        raise HTTPException(422, problems)
    report = ingester.run(docs)
    failed_ids = {doc_id for doc_id, _ in report.failures}
    content = {
        "indexed": [doc_id for doc_id in first_at if doc_id not in failed_ids],
        "failed": [{"id": doc_id, "reason": reason} for doc_id, reason in report.failures],
        "retried": report.retried,
    }
    if failed_ids and failed_ids <= set(report.unavailable):
        return JSONResponse(status_code=503, content=content, headers=RETRY_AFTER)
    return JSONResponse(status_code=207 if failed_ids else 200, content=content)


def parse_documents(body: bytes, content_type: str) -> list[Any]:
    """A documents body (a JSON array, or NDJSON) -> its documents; 422 if it cannot be read, 413 if too many."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise invalid(["body"], f"not valid UTF-8 (byte {e.start})") from None
    if "ndjson" in content_type or "jsonlines" in content_type:
        docs = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    docs.append(json.loads(line))
                except (ValueError, RecursionError) as e:  # RecursionError: nested too deeply
                    raise invalid(["body"], f"line {number}: invalid JSON ({e})") from None
    else:
        try:
            docs = json.loads(text)
        except (ValueError, RecursionError) as e:
            raise invalid(["body"], f"invalid JSON ({e})") from None
        if not isinstance(docs, list):
            raise invalid(["body"], "expected a JSON array of documents (or NDJSON)")
    if not docs:
        raise invalid(["body"], "no documents")
    if len(docs) > MAX_DOCUMENTS:
        raise HTTPException(413, f"{len(docs)} documents; at most {MAX_DOCUMENTS} per request")
    return docs
