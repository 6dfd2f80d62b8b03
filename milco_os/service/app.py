"""FastAPI app: encode, ingest and search over HTTP. The encoder is loaded once, in the lifespan.

Routes are plain ``def`` (FastAPI runs them in its thread pool) because encoding is blocking work.
Before FastAPI reads a /v1 body, :class:`GuardV1` checks the API key (401) and the body size (413).
Errors, each ``{"detail": ...}``: invalid input -> 422 listing the problems, each naming its field in
``loc``; OpenSearch refusing the request -> 400 with its reason; unknown index -> 404; model/index
mismatch -> 409; OpenSearch unavailable or overloaded -> 503 with Retry-After, and an ingest response
lists exactly the ids that were written, so nothing is acknowledged that is not in the index.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from milco_os import __version__
from milco_os.errors import EncodingError, SearchIndexError
from milco_os.opensearch.search import MAX_HYBRID_WEIGHT
from milco_os.opensearch.validation import QUERY_CLAUSES, check_filters, check_index_name
from milco_os.settings import Settings

log = logging.getLogger(__name__)

MAX_TEXTS = 256
MAX_TEXT_CHARS = 100_000
MAX_BODY_BYTES = 32 * 1024 * 1024  # a documents request (bulk upload)
MAX_JSON_BYTES = 1024 * 1024  # an encode or search request
MAX_DOCUMENTS = 5_000
PRUNE_PATTERN = r"^(none|(top_k|mass|mass_percentile|max_ratio|abs_value):[0-9.eE+-]+)$"


class EncodeRequest(BaseModel):
    texts: list[Annotated[str, Field(max_length=MAX_TEXT_CHARS)]] = Field(..., min_length=1, max_length=MAX_TEXTS)
    kind: str = Field("document", pattern="^(query|document)$")


class SearchRequest(BaseModel):
    query: str = Field(..., max_length=MAX_TEXT_CHARS)
    size: int = Field(10, ge=1, le=1000)
    from_: int = Field(0, ge=0, alias="from")
    alpha: float = Field(0.5, ge=0, le=1)
    # The schema extras document the formats; the checks (with their one-line reasons) are in the route.
    query_prune: str = Field(
        "none", description="KIND:VALUE, e.g. top_k:64 or mass:0.9 (see milco_os.pruning), or none",
        json_schema_extra={"pattern": PRUNE_PATTERN},
    )
    two_phase: bool = False
    hybrid: float | None = Field(None, gt=0, le=MAX_HYBRID_WEIGHT)
    filters: list[dict[str, Any]] = Field(
        default_factory=list,
        description="OpenSearch query clauses, all of which a hit must match; `script` clauses only with "
                    "MILCO_OS_ALLOW_SCRIPT_FILTERS=true",
        json_schema_extra={"items": {
            "type": "object", "minProperties": 1, "maxProperties": 1,
            "propertyNames": {"enum": sorted(QUERY_CLAUSES)},
        }},
    )
    explain: bool = False


# Response bodies, declared so that /docs (and the fuzz suite) know every answer's shape.


class Problem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ErrorResponse(BaseModel):
    """Every error. ``detail`` is one line, or for a 422 the list of problems, each naming its field."""

    detail: str | list[Problem]


class Terms(BaseModel):
    pivot: dict[str, float]
    echo: dict[str, float]


class EncodeResponse(BaseModel):
    model: str
    results: list[Terms]


class TermContribution(BaseModel):
    view: str
    term: str
    query_weight: float
    document_weight: float
    contribution: float


class Hit(BaseModel):
    id: str
    score: float
    source: dict[str, Any]
    terms: list[TermContribution]


class SearchResponse(BaseModel):
    took_ms: int
    query: Terms
    hits: list[Hit]


class FailedDocument(BaseModel):
    id: str
    reason: str


class IngestResponse(BaseModel):
    indexed: list[str] = Field(description="ids written, in request order")
    failed: list[FailedDocument]
    retried: int


class Readiness(BaseModel):
    model_loaded: bool
    opensearch_reachable: bool


ERROR_MEANINGS = {
    400: "OpenSearch refused the request (its reason in detail), or the body could not be parsed",
    401: "missing or wrong API key (Authorization: Bearer <key>)",
    404: "the index does not exist",
    409: "the index was built with another model",
    413: "request body too large",
    422: "invalid request: detail lists the problems, each naming its field in loc",
    503: "OpenSearch is unavailable or overloaded; try again after Retry-After seconds",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorResponse, "description": ERROR_MEANINGS[code]} for code in codes}


DOCUMENTS_BODY = {
    "requestBody": {
        "required": True,
        "description": f"at most {MAX_DOCUMENTS} documents and {MAX_BODY_BYTES} bytes",
        "content": {
            "application/json": {
                "schema": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["id"],
                        "properties": {
                            "id": {"anyOf": [{"type": "string", "minLength": 1}, {"type": "integer"}]},
                            "text": {"type": "string", "description": "the index's text field(s); `text` unless "
                                                                      "the index was created with others"},
                        },
                        "additionalProperties": True,
                    },
                },
                "example": [{"id": "1", "text": "A heart attack is caused by a blocked coronary artery."}],
            },
            "application/x-ndjson": {
                "schema": {"type": "string", "description": "one JSON document per line"},
            },
        },
    }
}


def body_limit(path: str) -> int:
    """Bytes a /v1 request body may have: documents are bulk uploads, everything else is a small JSON."""
    return MAX_BODY_BYTES if path.endswith("/documents") else MAX_JSON_BYTES


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body over {limit} bytes; split it into smaller requests")


class GuardV1:
    """Pure ASGI middleware for /v1, run before FastAPI reads (and parses) a body, so that neither an
    unauthenticated nor an oversized body costs more than its headers: the API key first (401), then a
    declared Content-Length over the route's limit (413, nothing read), and a streamed body is counted as
    it arrives (413 once over the limit, via the HTTPException raised from ``receive``)."""

    def __init__(self, app: ASGIApp, api_key: str | None) -> None:
        self.app = app
        self.expected = f"Bearer {api_key}".encode() if api_key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])  # ASGI header names are lowercase bytes
        given = headers.get(b"authorization", b"")
        if self.expected is not None and not secrets.compare_digest(given, self.expected):
            reply = error_response(401, ERROR_MEANINGS[401], headers={"WWW-Authenticate": "Bearer"})
            await reply(scope, receive, send)
            return
        limit = body_limit(scope["path"])
        if (declared := headers.get(b"content-length")) is not None:
            try:
                too_large = int(declared) > limit
            except ValueError:
                await error_response(400, "Content-Length: not a number")(scope, receive, send)
                return
            if too_large:
                await error_response(413, BodyTooLarge(limit).detail)(scope, receive, send)
                return
        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, counted_receive, send)


def error_response(status: int, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": detail}, headers=headers)


def invalid(loc: list[str | int], msg: str) -> HTTPException:
    """A 422 in the same list form as FastAPI's own validation errors."""
    return HTTPException(422, [{"loc": loc, "msg": msg, "type": "value_error"}])


def check_name(name: str) -> str:
    try:
        return check_index_name(name)
    except ValueError as e:
        raise invalid(["path", "name"], str(e)) from None


def create_app(settings: Settings, *, service_api_key: str | None = None) -> FastAPI:
    """The app. With ``service_api_key`` every /v1 route needs ``Authorization: Bearer <key>``."""
    from opensearchpy.exceptions import TransportError

    from milco_os.opensearch.client import describe_transport_error

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from milco_os.models.loading import load_encoder
        from milco_os.opensearch.client import make_client

        if not service_api_key:
            log.warning("no MILCO_OS_SERVICE_API_KEY: /v1 routes are open to anyone who can reach this port")
        app.state.encoder = load_encoder(settings.model, settings.cache_dir)
        app.state.client = make_client(settings)
        yield

    app = FastAPI(title="milco-os", version=__version__, lifespan=lifespan)
    app.add_middleware(GuardV1, api_key=service_api_key)

    @app.exception_handler(SearchIndexError)
    async def index_error(request: Request, exc: SearchIndexError) -> JSONResponse:
        return error_response(404 if "does not exist" in str(exc) else 409, str(exc))

    @app.exception_handler(EncodingError)
    async def encoding_error(request: Request, exc: EncodingError) -> JSONResponse:
        return error_response(422, [{"loc": ["body"], "msg": str(exc), "type": "value_error"}])

    @app.exception_handler(TransportError)
    async def opensearch_error(request: Request, exc: TransportError) -> JSONResponse:
        status = exc.status_code if isinstance(exc.status_code, int) else 0  # "N/A": no HTTP answer
        reason = describe_transport_error(exc)
        # A 4xx is about the request (a bad filter, from + size over the result window, ...); but 401/403
        # mean our own credentials or a cluster block, and 429 an overloaded cluster: not the client's doing.
        if 400 <= status < 500 and status not in (401, 403, 429):
            code = 404 if exc.error == "index_not_found_exception" else 400
            return error_response(code, f"OpenSearch refused the request: {reason}")
        detail = f"OpenSearch is unavailable: {type(exc).__name__}" if status == 0 else (
            f"OpenSearch failed (HTTP {status}): {reason}"
        )
        return error_response(503, detail, headers={"Retry-After": "5"})

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", response_model=Readiness,
             responses={503: {"model": Readiness, "description": "not ready (Retry-After)"}})
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

    @app.post("/v1/encode", response_model=EncodeResponse, responses=errors(400, 401, 413, 422))
    def encode(req: EncodeRequest, request: Request) -> dict[str, Any]:
        encoder = request.app.state.encoder
        encode_fn = encoder.encode_queries if req.kind == "query" else encoder.encode_documents
        return {
            "model": encoder.info.name,
            "results": [{"pivot": e.pivot.to_terms(), "echo": e.echo.to_terms()} for e in encode_fn(req.texts)],
        }

    @app.post(
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
    async def add_documents(name: str, request: Request) -> JSONResponse:
        """Index a JSON array of documents, or NDJSON (one document per line)."""
        from starlette.concurrency import run_in_threadpool

        check_name(name)
        body = await request.body()  # at most MAX_BODY_BYTES: GuardV1 refuses more while it arrives
        docs = _parse_documents(body, request.headers.get("content-type", ""))
        return await run_in_threadpool(_ingest, request, name, docs)

    def _ingest(request: Request, name: str, docs: list[Any]) -> JSONResponse:
        from milco_os.opensearch.ingest import BulkConfig, Ingester, validate_document

        ingester = Ingester(
            request.app.state.client, name, request.app.state.encoder,
            config=BulkConfig(max_retries=2, initial_backoff=0.5),
        )
        problems = []
        first_at: dict[str, int] = {}  # id -> position of the first document with it
        for i, doc in enumerate(docs):
            if problem := validate_document(doc, ingester.text_fields):
                problems.append({"loc": ["body", i], "msg": problem, "type": "value_error"})
            elif (doc_id := str(doc["id"])) in first_at:
                # A second write of one id would overwrite the first yet count twice.
                msg = f"duplicate id {doc_id!r}: documents {first_at[doc_id]} and {i} both use it"
                problems.append({"loc": ["body", i, "id"], "msg": msg, "type": "value_error"})
            else:
                first_at[doc_id] = i
        if problems:
            raise HTTPException(422, problems)
        report = ingester.run(docs)
        failed = [{"id": doc_id, "reason": reason} for doc_id, reason in report.failures]
        failed_ids = {doc_id for doc_id, _ in report.failures}
        written = [doc_id for doc_id in first_at if doc_id not in failed_ids]
        content = {"indexed": written, "failed": failed, "retried": report.retried}
        if failed and all("unreachable" in f["reason"] for f in failed):
            return JSONResponse(status_code=503, content=content, headers={"Retry-After": "5"})
        return JSONResponse(status_code=200 if not failed else 207, content=content)

    @app.post(
        "/v1/indices/{name}/search",
        response_model=SearchResponse,
        responses=errors(400, 401, 404, 409, 413, 422, 503),
    )
    def search_index(name: str, req: SearchRequest, request: Request) -> dict[str, Any]:
        from milco_os.opensearch.query import TwoPhase
        from milco_os.opensearch.search import SearchOptions, search
        from milco_os.pruning import Prune

        check_name(name)
        try:
            rule = Prune.parse(req.query_prune)
        except ValueError as e:
            raise invalid(["body", "query_prune"], str(e)) from None
        try:
            filters = check_filters(req.filters, allow_scripts=settings.allow_script_filters)
        except ValueError as e:
            raise invalid(["body", "filters"], str(e)) from None
        try:
            options = SearchOptions(
                size=req.size, from_=req.from_, alpha=req.alpha, pivot_pruning=rule, echo_pruning=rule,
                filters=filters, two_phase=TwoPhase() if req.two_phase else None,
                hybrid_weight=req.hybrid, explain=req.explain,
            )
        except ValueError as e:
            raise invalid(["body"], str(e)) from None
        return search(request.app.state.client, name, req.query, request.app.state.encoder, options).to_dict()

    return app


def _parse_documents(body: bytes, content_type: str) -> list[Any]:
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
