"""Schemathesis fuzzes the HTTP service from its own OpenAPI, in-process, with the real splade-tiny model
and the real OpenSearch node behind it: whatever the request (valid or schema-violating, with or without
the API key), the answer is never a 5xx, and its status code and body are the ones the schema documents.

Bounded and derandomized (no example database either), so CI sends the same requests every run. The
cases come from schemathesis's strategies driven by Hypothesis here, rather than through
``schemathesis.pytest.from_fixture``, which does not run under pytest 9."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from urllib.parse import unquote

import hypothesis
import pytest
import schemathesis
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from milco_os.opensearch.indices import create_index
from milco_os.opensearch.ingest import ingest
from milco_os.opensearch.validation import check_index_name
from milco_os.service.app import create_app
from milco_os.specs import IndexSpec

pytestmark = pytest.mark.integration  # needs the real node, like tests/integration

KEY = "fuzz-key"
OPERATIONS = [
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("POST", "/v1/encode"),
    ("POST", "/v1/neural-sparse"),
    ("POST", "/v1/indices/{name}/documents"),
    ("POST", "/v1/indices/{name}/search"),
    ("DELETE", "/v1/indices/{name}/documents/{doc_id}"),
    ("POST", "/v1/indices/{name}/documents/delete"),
]
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
SETTINGS = hypothesis.settings(
    max_examples=50,
    deadline=None,  # encoding and OpenSearch take what they take on a busy CI machine
    derandomize=True,
    database=None,
    print_blob=False,
    suppress_health_check=[hypothesis.HealthCheck.too_slow],
)

# NDJSON bodies are text: send the generated string as it is.
schemathesis.serializer.alias("application/x-ndjson", "text/plain")


@pytest.fixture(scope="module")
def fuzz_index(client, splade_tiny) -> Iterator[str]:  # noqa: ANN001
    """A real index with a few documents, so generated searches and uploads reach OpenSearch."""
    name = f"fuzz-{uuid.uuid4().hex[:12]}"
    create_index(client, name, splade_tiny.info, IndexSpec(replicas=0))
    docs = [{"id": "a", "text": "heart attack"}, {"id": "b", "text": "green tea", "lang": "en"}]
    ingest(client, name, docs, splade_tiny, refresh=True)
    yield name
    client.indices.delete(index=name, ignore_unavailable=True)


@pytest.fixture(scope="module")
def api(settings) -> schemathesis.BaseSchema:  # noqa: ANN001
    # One app for the module: its lifespan (the model load) runs once, at the first request.
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(settings, service_api_key=KEY))


def test_every_operation_is_fuzzed(api: schemathesis.BaseSchema) -> None:
    found = {(op.ok().method.upper(), op.ok().path) for op in api.get_all_operations()}
    assert found == set(OPERATIONS), "add new routes to OPERATIONS"


def _aim_at_real_index(case: schemathesis.Case, index: str) -> None:
    """A generated name that is a valid index name would only ever get 404; point it at the real index so
    the body gets real work. Invalid names stay, to exercise their 422."""
    name = (case.path_parameters or {}).get("name")
    if isinstance(name, str):
        try:
            check_index_name(unquote(name))  # generated path parameters come percent-encoded
        except ValueError:
            return
        case.path_parameters["name"] = index


# GET routes have no parameters and no body, the DELETE route only free strings in its path: nothing to violate,
# so no negative mode for them.
RUNS = [
    pytest.param(method, path, mode, id=f"{method} {path} {mode}")
    for method, path in OPERATIONS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if method not in ("GET", "DELETE") or mode is GenerationMode.POSITIVE
]


@pytest.mark.parametrize("with_key", [True, False], ids=["key", "no-key"])
@pytest.mark.parametrize(("method", "path", "mode"), RUNS)
def test_no_5xx_and_every_answer_documented(
    api: schemathesis.BaseSchema, fuzz_index: str, method: str, path: str, mode: GenerationMode, with_key: bool
) -> None:
    headers = {"Authorization": f"Bearer {KEY}"} if with_key else {}

    @SETTINGS
    @hypothesis.given(case=api[path][method].as_strategy(generation_mode=mode))
    def fuzz(case: schemathesis.Case) -> None:
        _aim_at_real_index(case, fuzz_index)
        response = case.call_and_validate(headers=headers, checks=CHECKS)
        if path.startswith("/v1") and not with_key:
            assert response.status_code == 401

    fuzz()
