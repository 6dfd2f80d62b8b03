"""FastAPI app: encode and search over HTTP. The encoder is loaded once, in the lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from milco_os import __version__
from milco_os.errors import EncodingError, MilcoError, SearchIndexError
from milco_os.settings import Settings

MAX_TEXTS = 256
MAX_TEXT_CHARS = 100_000


class EncodeRequest(BaseModel):
    texts: list[str] = Field(..., min_length=1, max_length=MAX_TEXTS)
    kind: str = Field("document", pattern="^(query|document)$")


class SearchRequest(BaseModel):
    query: str = Field(..., max_length=MAX_TEXT_CHARS)
    size: int = Field(10, ge=1, le=1000)
    alpha: float = Field(0.5, ge=0, le=1)
    explain: bool = False


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from milco_os.models.loading import load_encoder
        from milco_os.opensearch.client import make_client

        app.state.encoder = load_encoder(settings.model, settings.cache_dir)
        app.state.client = make_client(settings)
        yield

    app = FastAPI(title="milco-os", version=__version__, lifespan=lifespan)

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
        ready = encoder is not None and reachable
        body = {"model_loaded": encoder is not None, "opensearch_reachable": reachable}
        if ready:
            return JSONResponse(status_code=200, content=body)
        return JSONResponse(status_code=503, content=body, headers={"Retry-After": "5"})

    @app.post("/v1/encode")
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

    @app.post("/v1/indices/{name}/search")
    def search_index(name: str, req: SearchRequest, request: Request) -> dict[str, Any]:
        from opensearchpy.exceptions import ConnectionError as OSConnectionError

        from milco_os.opensearch.search import search

        try:
            result = search(
                request.app.state.client, name, req.query, request.app.state.encoder,
                size=req.size, alpha=req.alpha, explain=req.explain,
            )
        except OSConnectionError as e:
            raise HTTPException(503, "OpenSearch is unavailable", headers={"Retry-After": "5"}) from e
        except MilcoError:
            raise
        return {
            "took_ms": result.took_ms,
            "hits": [
                {"id": h.id, "score": h.score, "source": h.source, "terms": [t.__dict__ for t in h.terms]}
                for h in result.hits
            ],
        }

    return app
