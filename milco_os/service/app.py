"""FastAPI app: encode, ingest and search over HTTP. The encoder is loaded once, in the lifespan.

Routes are plain ``def`` (FastAPI runs them in its thread pool) because encoding is blocking work.
Errors: invalid input -> 422 naming the field; unknown index -> 404; model/index mismatch -> 409;
OpenSearch unavailable -> 503 with Retry-After, and an ingest response lists exactly the documents that
were written, so nothing is acknowledged that is not in the index.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from milco_os import __version__
from milco_os.errors import EncodingError, SearchIndexError
from milco_os.settings import Settings

MAX_TEXTS = 256
MAX_TEXT_CHARS = 100_000
MAX_BODY_BYTES = 32 * 1024 * 1024
MAX_DOCUMENTS = 5_000


class EncodeRequest(BaseModel):
    texts: list[str] = Field(..., min_length=1, max_length=MAX_TEXTS)
    kind: str = Field("document", pattern="^(query|document)$")


class SearchRequest(BaseModel):
    query: str = Field(..., max_length=MAX_TEXT_CHARS)
    size: int = Field(10, ge=1, le=1000)
    from_: int = Field(0, ge=0, alias="from")
    alpha: float = Field(0.5, ge=0, le=1)
    query_prune: str = "none"
    two_phase: bool = False
    hybrid: float | None = Field(None, gt=0)
    filters: list[dict[str, Any]] = Field(default_factory=list)
    explain: bool = False


def _unavailable(e: Exception) -> HTTPException:
    return HTTPException(503, f"OpenSearch is unavailable: {type(e).__name__}", headers={"Retry-After": "5"})


def create_app(settings: Settings, *, service_api_key: str | None = None) -> FastAPI:
    """The app. With ``service_api_key`` every /v1 route needs ``Authorization: Bearer <key>``."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from milco_os.models.loading import load_encoder
        from milco_os.opensearch.client import make_client

        app.state.encoder = load_encoder(settings.model, settings.cache_dir)
        app.state.client = make_client(settings)
        yield

    def require_key(request: Request) -> None:
        if service_api_key is None:
            return
        given = request.headers.get("authorization", "")
        if not secrets.compare_digest(given.encode(), f"Bearer {service_api_key}".encode()):
            raise HTTPException(401, "missing or wrong API key (Authorization: Bearer <key>)")

    app = FastAPI(title="milco-os", version=__version__, lifespan=lifespan)
    v1 = [Depends(require_key)]

    @app.exception_handler(SearchIndexError)
    async def index_error(request: Request, exc: SearchIndexError) -> JSONResponse:
        status = 404 if "does not exist" in str(exc) else 409
        return JSONResponse(status_code=status, content={"detail": str(exc)})

    @app.exception_handler(EncodingError)
    async def encoding_error(request: Request, exc: EncodingError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": str(exc)})

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz(request: Request) -> JSONResponse:
        encoder = getattr(request.app.state, "encoder", None)
        try:
            reachable = bool(request.app.state.client.ping())
        except Exception:  # noqa: BLE001 (any transport failure means "not ready")
            reachable = False
        body = {"model_loaded": encoder is not None, "opensearch_reachable": reachable}
        if encoder is not None and reachable:
            return JSONResponse(status_code=200, content=body)
        return JSONResponse(status_code=503, content=body, headers={"Retry-After": "5"})

    @app.post("/v1/encode", dependencies=v1)
    def encode(req: EncodeRequest, request: Request) -> dict[str, Any]:
        for i, text in enumerate(req.texts):
            if len(text) > MAX_TEXT_CHARS:
                raise HTTPException(422, f"texts[{i}]: longer than {MAX_TEXT_CHARS} characters")
        encoder = request.app.state.encoder
        encode_fn = encoder.encode_queries if req.kind == "query" else encoder.encode_documents
        return {
            "model": encoder.info.name,
            "results": [{"pivot": e.pivot.to_terms(), "echo": e.echo.to_terms()} for e in encode_fn(req.texts)],
        }

    @app.post("/v1/indices/{name}/documents", dependencies=v1)
    async def add_documents(name: str, request: Request) -> JSONResponse:
        """Index a JSON array of documents, or NDJSON (one document per line)."""
        from starlette.concurrency import run_in_threadpool

        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            raise HTTPException(413, f"request body over {MAX_BODY_BYTES} bytes; split it into smaller requests")
        docs = _parse_documents(body, request.headers.get("content-type", ""))
        return await run_in_threadpool(_ingest, request, name, docs)

    def _ingest(request: Request, name: str, docs: list[Any]) -> JSONResponse:
        from opensearchpy.exceptions import ConnectionError as TransportConnectionError

        from milco_os.opensearch.ingest import BulkConfig, Ingester, validate_document

        try:
            ingester = Ingester(
                request.app.state.client, name, request.app.state.encoder,
                config=BulkConfig(max_retries=2, initial_backoff=0.5),
            )
        except TransportConnectionError as e:
            raise _unavailable(e) from e
        problems = [
            {"loc": ["body", i], "msg": problem}
            for i, doc in enumerate(docs)
            if (problem := validate_document(doc, ingester.text_fields))
        ]
        if problems:
            raise HTTPException(422, problems)
        report = ingester.run(docs)
        failed = [{"id": doc_id, "reason": reason} for doc_id, reason in report.failures]
        content = {"indexed": report.indexed, "failed": failed, "retried": report.retried}
        if failed and all("unreachable" in f["reason"] for f in failed):
            return JSONResponse(status_code=503, content=content, headers={"Retry-After": "5"})
        return JSONResponse(status_code=200 if not failed else 207, content=content)

    @app.post("/v1/indices/{name}/search", dependencies=v1)
    def search_index(name: str, req: SearchRequest, request: Request) -> dict[str, Any]:
        from opensearchpy.exceptions import ConnectionError as TransportConnectionError

        from milco_os.opensearch.query import TwoPhase
        from milco_os.opensearch.search import SearchOptions, search
        from milco_os.pruning import Prune

        try:
            rule = Prune.parse(req.query_prune)
            options = SearchOptions(
                size=req.size, from_=req.from_, alpha=req.alpha, pivot_pruning=rule, echo_pruning=rule,
                filters=tuple(req.filters), two_phase=TwoPhase() if req.two_phase else None,
                hybrid_weight=req.hybrid, explain=req.explain,
            )
        except ValueError as e:
            raise HTTPException(422, [{"loc": ["body", "query_prune"], "msg": str(e)}]) from e
        try:
            result = search(request.app.state.client, name, req.query, request.app.state.encoder, options)
        except TransportConnectionError as e:
            raise _unavailable(e) from e
        return result.to_dict()

    return app


def _parse_documents(body: bytes, content_type: str) -> list[Any]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise HTTPException(422, f"body is not valid UTF-8 (byte {e.start})") from e
    if "ndjson" in content_type or "jsonlines" in content_type:
        docs = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    docs.append(json.loads(line))
                except ValueError as e:
                    raise HTTPException(422, f"line {number}: invalid JSON ({e})") from e
    else:
        try:
            docs = json.loads(text)
        except ValueError as e:
            raise HTTPException(422, f"body: invalid JSON ({e})") from e
        if not isinstance(docs, list):
            raise HTTPException(422, "body: expected a JSON array of documents (or NDJSON)")
    if not docs:
        raise HTTPException(422, "body: no documents")
    if len(docs) > MAX_DOCUMENTS:
        raise HTTPException(413, f"{len(docs)} documents; at most {MAX_DOCUMENTS} per request")
    return docs
