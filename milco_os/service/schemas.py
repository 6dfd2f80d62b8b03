"""The HTTP contract: limits, request and response bodies, and the error body every failure answers with.

Everything here is declared so that /docs (and the fuzz suite) know each route's input and every answer's
shape; the routes (:mod:`milco_os.service.routes`) only translate these bodies to the library's specs.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from milco_os.opensearch.validation import QUERY_CLAUSES
from milco_os.specs import (
    ALPHA_DEFAULT_TEXT,
    DEFAULT_DENSE_WEIGHT,
    DEFAULT_FUSION,
    DEFAULT_PASSAGE_SCORE,
    DEFAULT_QUERY_PRUNE,
    MAX_HYBRID_WEIGHT,
)

MAX_TEXTS = 256
MAX_TEXT_CHARS = 100_000
MAX_BODY_BYTES = 32 * 1024 * 1024  # a documents request (bulk upload)
MAX_JSON_BYTES = 1024 * 1024  # an encode or search request
MAX_DOCUMENTS = 5_000
_RULE = r"(none|(top_k|mass|mass_percentile|max_ratio|abs_value|selective):[0-9.eE+-]+)"
#: ``PIVOT[,ECHO]`` (see :meth:`milco_os.pruning.Pruning.parse`): one rule prunes both views alike.
PRUNE_PATTERN = rf"^{_RULE}(,{_RULE})?$"


class EncodeRequest(BaseModel):
    texts: list[Annotated[str, Field(max_length=MAX_TEXT_CHARS)]] = Field(..., min_length=1, max_length=MAX_TEXTS)
    kind: str = Field("document", pattern="^(query|document)$")


class NeuralSparseRequest(BaseModel):
    """What an ml-commons connector sends (see :mod:`milco_os.opensearch.mlcommons`): its texts, and which
    vectors the model it stands for returns."""

    texts: list[Annotated[str, Field(max_length=MAX_TEXT_CHARS)]] = Field(..., min_length=1, max_length=MAX_TEXTS)
    kind: str = Field(..., pattern="^(query|document)$")
    view: str = Field(..., pattern="^(pivot|echo|dense)$")
    dense: bool = Field(
        False, description="the index has a dense view: encode with it, so its three models share one pass")
    prune: str = Field(
        "none", description="pruning of the view's vectors (KIND:VALUE or none), as the index's _meta says for "
                            "documents", json_schema_extra={"pattern": PRUNE_PATTERN},
    )
    model_fingerprint: str | None = Field(
        None, description="the fingerprint of the model that built the index; 409 when the loaded model differs",
    )
    model: str | None = Field(
        None, max_length=512, description="the name of the model that built the index (with its version): a service "
                                          "running a bare built-in name encodes with that shipped version")
    keys: str = Field(
        "names", pattern="^(names|ids)$", description="how terms are named: names (escaped vocabulary entries), or "
                                                      "ids (vocabulary ids: the pivot view of a SEISMIC index)")


class NeuralSparseResponse(BaseModel):
    """The shape ml-commons hands to neural-search unchanged: one ``{feature name: weight}`` per text, in order,
    under ``response`` (feature names as the index stores them: ``.`` escaped as ``%2E``); for the dense view one
    embedding per text (ml-commons' default embedding post-processing reads them)."""

    response: list[dict[str, float]] | list[list[float]]


class SearchRequest(BaseModel):
    """The options of ``milco-os search``, with the same names and defaults."""

    query: str = Field(..., max_length=MAX_TEXT_CHARS)
    size: int = Field(10, ge=1, le=1000)
    from_: int = Field(0, ge=0, alias="from")
    alpha: float | None = Field(
        None, ge=0, le=1,
        description=f"weight of the pivot view (echo: 1 - alpha); default: {ALPHA_DEFAULT_TEXT}",
    )
    # The schema extras document the formats; the checks (with their one-line reasons) are in the route.
    query_prune: str = Field(
        DEFAULT_QUERY_PRUNE,
        description="query pruning PIVOT[,ECHO], each KIND:VALUE or none (see milco_os.pruning): one rule "
                    "prunes both views, e.g. top_k:64, mass:0.9 or selective:0.2 (terms whose w*ln(1+N/df) is "
                    "at least 0.2 of the best); top_k:64,none prunes only the pivot view; none: the full query",
        json_schema_extra={"pattern": PRUNE_PATTERN},
    )
    two_phase: bool = False
    hybrid: float | None = Field(None, gt=0, le=MAX_HYBRID_WEIGHT)
    hybrid_norm: str | None = Field(
        None, pattern="^(minmax|rrf)$",
        description="how result lists are fused, each normalised first (minmax, or rrf: reciprocal ranks): with "
                    "hybrid, BM25 becomes a list of its own (without it BM25 is added to the sparse sum); on an "
                    f"index with a dense view its k-NN list joins too (default there: {DEFAULT_FUSION})",
    )
    dense: float | None = Field(
        None, ge=0, le=MAX_HYBRID_WEIGHT,
        description=f"on an index with a dense view: weight of its k-NN list (default {DEFAULT_DENSE_WEIGHT:g}); "
                    "0 searches the sparse views only",
    )
    passage_score: str = Field(
        DEFAULT_PASSAGE_SCORE, pattern="^(max|sum|avg)$",
        description="on an index with passages: a document scores as its best passage (max), or the sum or mean "
                    "(avg) of its passages' scores",
    )
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


class Listed(BaseModel):
    rank: int
    score: float


class Passage(BaseModel):
    start: int = Field(description="offset of the passage's first character in the text fields joined by newlines")
    end: int = Field(description="offset after its last character")
    text: str
    score: float = Field(description="the passage's score in the list it came from")
    list: str = Field(description="sparse, or dense for a hit only the dense view found")


class Hit(BaseModel):
    id: str
    score: float
    source: dict[str, Any]
    terms: list[TermContribution]
    lists: dict[str, Listed] | None = Field(
        None, description="fused search: the hit's rank and score in each list that held it (sparse, bm25, dense)")
    dense_similarity: float | None = Field(
        None, description="fused search: cosine of the query's and the document's dense views (null: not in the "
                          "dense list)")
    passage: Passage | None = Field(
        None, description="on an index with passages: the passage that scored the hit (terms are its terms)")


class SearchResponse(BaseModel):
    took_ms: int
    model: str = Field(description="the model that encoded the query: the index's own version of a built-in model "
                                   "when the service runs a newer one")
    query: Terms
    hits: list[Hit]


class FailedDocument(BaseModel):
    id: str
    reason: str


class IngestResponse(BaseModel):
    indexed: list[str] = Field(description="ids written, in request order")
    failed: list[FailedDocument]
    retried: int


class DeleteRequest(BaseModel):
    ids: list[Annotated[str, Field(min_length=1, max_length=512)]] = Field(
        min_length=1, max_length=MAX_DOCUMENTS, description=f"ids of the documents to delete (at most {MAX_DOCUMENTS})")


class DeleteResponse(BaseModel):
    deleted: list[str] = Field(description="ids deleted, in request order")
    not_found: list[str] = Field(description="ids the index does not hold")
    failed: list[FailedDocument]
    retried: int


class Readiness(BaseModel):
    model_loaded: bool
    opensearch_reachable: bool


ERROR_MEANINGS = {
    400: "OpenSearch refused the request (its reason in detail), or the body could not be parsed",
    401: "missing or wrong API key (Authorization: Bearer <key>)",
    404: "the index does not exist",
    409: "the index was not built by milco-os, or with another model or term-key scheme (or the name is an "
         "alias of several indices); or the loaded model is not the one a connector was registered for",
    413: "request body too large",
    422: "invalid request: detail lists the problems, each naming its field in loc",
    503: "OpenSearch is unavailable or overloaded; try again after Retry-After seconds",
}
RETRY_AFTER = {"Retry-After": "5"}


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


class AsciiJSONResponse(JSONResponse):
    """JSON with every non-ASCII character written as a ``\\u`` escape. ml-commons' HTTP client decodes each chunk
    of a connector's response as UTF-8 on its own, so a term such as ``▁forme`` (3 bytes for ``▁``) that straddles
    two chunks came back as ``\ufffd\ufffd\ufffdforme``; ASCII has no character to split."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def error_response(status: int, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": detail}, headers=headers)


def problem(loc: list[str | int], msg: str) -> dict[str, Any]:
    """One entry of a 422's list, in the form of FastAPI's own validation errors."""
    return {"loc": loc, "msg": msg, "type": "value_error"}


def invalid(loc: list[str | int], msg: str) -> HTTPException:
    """A 422 naming one problem."""
    return HTTPException(422, [problem(loc, msg)])
