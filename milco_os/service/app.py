"""FastAPI app: encode, ingest and search over HTTP. The encoder is loaded once, in the lifespan.

The app is a thin shell: the routes (:mod:`milco_os.service.routes`, on an ``APIRouter``) get the encoder,
the OpenSearch client and the settings from ``app.state`` through FastAPI dependencies, turn each body into
the library's specs and call :mod:`milco_os.opensearch`. Before FastAPI reads a /v1 body, :class:`GuardV1`
checks the API key (401) and the body size (413). Errors, each ``{"detail": ...}``, are mapped by exception
type, never by message: invalid input (and ``ConfigError``/``EncodingError``) -> 422 listing the problems,
each naming its field in ``loc``; OpenSearch refusing the request -> 400 with its reason; ``IndexNotFound``
-> 404; any other ``SearchIndexError`` (``ModelMismatch``: not a milco-os index, or another model or key
scheme; ``IndexExists``) -> 409; OpenSearch unavailable or overloaded (``OpenSearchUnavailable``, or a
transport error with no answer, 401/403/429 or 5xx) -> 503 with Retry-After. An ingest whose failed
documents all failed only because OpenSearch was unavailable is a 503 too (some other failure: 207), and
its body lists exactly the ids that were written, so nothing is acknowledged that is not in the index.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from milco_os import __version__
from milco_os.errors import (
    ConfigError,
    EncodingError,
    IndexNotFound,
    OpenSearchUnavailable,
    SearchIndexError,
)
from milco_os.opensearch.client import describe_transport_error
from milco_os.opensearch.engine import error_engine, error_status, transport_error
from milco_os.quiet import quiet_third_party
from milco_os.redact import redact_urls_in
from milco_os.service.recent import RecentEncodings
from milco_os.service.routes import router
from milco_os.service.schemas import (  # noqa: F401 (the limits are part of this module's interface)
    ERROR_MEANINGS,
    MAX_BODY_BYTES,
    MAX_DOCUMENTS,
    MAX_JSON_BYTES,
    MAX_TEXT_CHARS,
    MAX_TEXTS,
    RETRY_AFTER,
    error_response,
    problem,
)
from milco_os.settings import Settings

log = logging.getLogger(__name__)


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


# Exception type -> HTTP status. Starlette picks the handler of the nearest class in the exception's MRO,
# so IndexNotFound gets its own 404 and every other SearchIndexError the 409.


def one_line(exc: BaseException) -> str:
    """An exception's message as one line, without credentials (a transport error may quote a URL)."""
    return " ".join(redact_urls_in(str(exc)).split())


async def index_not_found(_: Request, exc: IndexNotFound) -> JSONResponse:
    return error_response(404, one_line(exc))


async def index_conflict(_: Request, exc: SearchIndexError) -> JSONResponse:
    """``ModelMismatch`` (not a milco-os index, another model or key scheme), ``IndexExists``, or an index
    name that is not exactly one index."""
    return error_response(409, one_line(exc))


async def opensearch_unavailable(_: Request, exc: OpenSearchUnavailable) -> JSONResponse:
    return error_response(503, one_line(exc), headers=RETRY_AFTER)


async def unprocessable(_: Request, exc: ConfigError | EncodingError) -> JSONResponse:
    """``ConfigError``/``EncodingError``: the request's content cannot be used, in the 422 list form."""
    return error_response(422, [problem(["body"], one_line(exc))])


async def opensearch_error(_: Request, exc: Exception) -> JSONResponse:
    """A request the cluster (either engine) refused or did not answer."""
    status = error_status(exc) or 0  # no HTTP answer
    label = error_engine(exc).label
    reason = describe_transport_error(exc)
    # A 4xx is about the request (a bad filter, from + size over the result window, ...); but 401/403
    # mean our own credentials or a cluster block, and 429 an overloaded cluster: not the client's doing.
    if 400 <= status < 500 and status not in (401, 403, 429):
        code = 404 if getattr(exc, "error", None) == "index_not_found_exception" else 400
        return error_response(code, f"{label} refused the request: {reason}")
    detail = f"{label} is unavailable: {type(exc).__name__}" if status == 0 else (
        f"{label} failed (HTTP {status}): {reason}"
    )
    return error_response(503, detail, headers=RETRY_AFTER)


EXCEPTION_HANDLERS: dict[Any, Any] = {
    IndexNotFound: index_not_found,
    SearchIndexError: index_conflict,
    OpenSearchUnavailable: opensearch_unavailable,
    ConfigError: unprocessable,
    EncodingError: unprocessable,
    **dict.fromkeys(transport_error(), opensearch_error),
}


def create_app(settings: Settings, *, service_api_key: str | None = None) -> FastAPI:
    """The app. With ``service_api_key`` every /v1 route needs ``Authorization: Bearer <key>``."""
    quiet_third_party()  # the lifespan loads a model: its libraries' known notices stay out of the log

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from milco_os.loading import load_encoder
        from milco_os.opensearch.client import close, make_client

        if not service_api_key:
            log.warning("no MILCO_OS_SERVICE_API_KEY: /v1 routes are open to anyone who can reach this port")
        app.state.encoder = load_encoder(settings.model, settings.cache_dir)
        app.state.client = client = make_client(settings)
        try:
            yield
        finally:
            close(client)

    app = FastAPI(title="milco-os", version=__version__, lifespan=lifespan, exception_handlers=EXCEPTION_HANDLERS)
    # Known without any IO, so set here: the settings dependency works even outside the lifespan.
    app.state.settings = settings
    app.state.recent_encodings = RecentEncodings()
    app.state.term_stats = {}  # index -> IndexTermStats, for `selective` query pruning
    app.state.encoders = {}  # other shipped versions of the model, loaded for the indices they built
    app.state.encoders_lock = threading.Lock()
    app.add_middleware(GuardV1, api_key=service_api_key)
    app.include_router(router)
    return app
