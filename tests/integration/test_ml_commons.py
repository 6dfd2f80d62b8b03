"""milco-os inside OpenSearch, on real plugins: `cluster up --plugins neural-search` (neural-search, ml-commons, knn,
job-scheduler from Maven Central, painless and ingest-common assembled), `milco-os serve` (milco-mini, with a
service key) as an ml-commons remote model, `milco-os ml-commons register`. Raw text bulk-indexed through the
registered ingest pipeline stores the vectors `milco-os ingest` stores, and `neural_sparse` queries (with the
registered query models, and with query_tokens) rank and score as `milco-os search`, two-phase included.

The node (port 9290) and the service are started once for this module."""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from milco_os.errors import ConfigError
from milco_os.layout import Seismic
from milco_os.localnode import LocalNode
from milco_os.opensearch.bulk import BulkConfig
from milco_os.opensearch.indices import create_index, index_record
from milco_os.opensearch.ingest import Ingester
from milco_os.opensearch.measure import bulk_through_pipeline
from milco_os.opensearch.mlcommons import ML, record_query, register, search_pipeline_body, unregister
from milco_os.opensearch.search import query_request, search
from milco_os.pruning import Pruning
from milco_os.settings import Settings
from milco_os.specs import DEFAULT_DENSE_WEIGHT, DEFAULT_FUSION, PLUGIN_TWO_PHASE, IndexSpec, SearchOptions

PORT = 9290
#: The node's version: the default (2.x), or OpenSearch 3.x in the test command's 3.x suite.
VERSION = os.environ.get("MILCO_OS_TEST_ML_VERSION") or None
DATA = Path(__file__).resolve().parents[2] / "milco_os" / "data"
SPEC = IndexSpec(text_fields=("title", "text"), doc_pruning=Pruning.parse("top_k:64"), replicas=0)


@dataclass(frozen=True)
class Stack:
    url: str
    service_url: str
    key: str
    client: object
    encoder: object
    cache_dir: Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def stack(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    from milco_os.loading import load_encoder
    from milco_os.opensearch.client import make_client

    node = LocalNode(cache_dir, PORT)
    node.down()
    service = None
    log = (tmp_path_factory.mktemp("service") / "serve.log").open("w")
    try:
        info = node.up(fresh=True, timeout=240, plugins=("neural-search",), version=VERSION)
        key = secrets.token_urlsafe(16)
        key_file = tmp_path_factory.mktemp("service") / "key"
        key_file.write_text(key, encoding="utf-8")
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("MILCO_OS_")}
        env |= {"MILCO_OS_OPENSEARCH_URL": info.url, "MILCO_OS_CACHE_DIR": str(cache_dir),
                "MILCO_OS_SERVICE_API_KEY_FILE": str(key_file)}
        service = subprocess.Popen(
            [sys.executable, "-m", "milco_os.cli", "serve", "--port", str(port), "--model", "milco-mini"],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        service_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(service_url + "/readyz", timeout=5) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            assert service.poll() is None and time.monotonic() < deadline, "milco-os serve did not become ready"
            time.sleep(1)
        settings = Settings(opensearch_url=info.url, cache_dir=cache_dir, model="milco-mini")
        yield Stack(info.url, service_url, key, make_client(settings), load_encoder("milco-mini", cache_dir),
                    cache_dir)
    finally:
        if service is not None:
            service.terminate()
            service.wait(30)
        log.close()
        node.down()


def documents() -> list[dict]:
    return [json.loads(line) for line in (DATA / "demo_documents.jsonl").read_text(encoding="utf-8").splitlines()]


def queries() -> list[str]:
    return [q["text"] for q in json.loads((DATA / "demo_queries.json").read_text(encoding="utf-8"))]


def bulk_raw_documents(client, index: str, pipeline: str) -> None:  # noqa: ANN001
    """The sample documents as raw text, in one bulk request through ``pipeline`` (any item error fails)."""
    docs = [(doc["id"], {k: v for k, v in doc.items() if k != "id"}) for doc in documents()]
    bulk_through_pipeline(client, index, pipeline, docs, chunk=len(docs))


def all_sources(client, index: str) -> dict[str, dict]:  # noqa: ANN001
    hits = client.search(index=index, body={"size": 1000, "query": {"match_all": {}}})["hits"]["hits"]
    return {h["_id"]: h["_source"] for h in hits}


def ranked(hits: list[dict]) -> list[tuple[str, float]]:
    return [(h["_id"], h["_score"]) for h in hits]


def assert_same_ranking(expected: list[tuple[str, float]], got: list[tuple[str, float]], what: str) -> None:
    assert [i for i, _ in got] == [i for i, _ in expected], what
    for (doc, a), (_, b) in zip(expected, got, strict=True):
        assert abs(a - b) <= 1e-4, f"{what}: {doc} scored {b}, milco-os search {a}"


def tie_groups(hits: list[tuple[str, float]]) -> list[set[str]]:
    """The ids of a ranking grouped by equal score (within 1e-5), best first."""
    groups: list[tuple[float, set[str]]] = []
    for doc, score in hits:
        if groups and abs(groups[-1][0] - score) <= 1e-5:
            groups[-1][1].add(doc)
        else:
            groups.append((score, {doc}))
    return [ids for _, ids in groups]


def milco_cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MILCO_OS_")}
    env |= {"MILCO_OS_CACHE_DIR": str(stack.cache_dir), "MILCO_OS_OPENSEARCH_URL": stack.url,
            "MILCO_OS_SERVICE_API_KEY": stack.key}
    return subprocess.run([sys.executable, "-m", "milco_os.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300)


@pytest.fixture(scope="module")
def indices(stack: Stack) -> Iterator[tuple[str, str, dict]]:
    """(index written by milco-os ingest, index written by OpenSearch through the pipeline, its registration)."""
    client = stack.client
    ours, theirs = f"ingest-{uuid.uuid4().hex[:8]}", f"pipeline-{uuid.uuid4().hex[:8]}"
    for name in (ours, theirs):
        create_index(client, name, stack.encoder.info, SPEC)
    # Batches of 32 on both paths (ingest's default and the pipeline's): they then compute the same floats
    # (another batching changes the last bits, and rounding to 5 digits can show them).
    Ingester(client, ours, stack.encoder, config=BulkConfig(encode_batch=32)).run(documents(), refresh=True)
    result = milco_cli(stack, "ml-commons", "register", "--index", theirs, "--service-url", stack.service_url)
    assert result.returncode == 0, result.stderr
    reg = json.loads(result.stdout)
    assert stack.key not in result.stdout + result.stderr
    bulk_raw_documents(client, theirs, reg["ingest_pipeline"])
    yield ours, theirs, reg
    for name in (ours, theirs):
        client.indices.delete(index=name, ignore_unavailable=True)


def test_cluster_status_lists_the_plugins(stack: Stack) -> None:
    result = milco_cli(stack, "cluster", "status", "--port", str(PORT), "--json")
    assert result.returncode == 0, result.stderr
    plugins = json.loads(result.stdout)["plugins"]
    assert {"opensearch-neural-search", "opensearch-ml", "opensearch-knn", "opensearch-job-scheduler"} <= set(plugins)


def test_register_records_models_deployed_behind_both_pipelines(stack: Stack, indices) -> None:  # noqa: ANN001
    _, theirs, reg = indices
    assert set(reg["models"]) == {"document/pivot", "document/echo", "query/pivot", "query/echo"}
    assert index_record(stack.client, theirs)["ml_commons"] == reg
    for model_id in reg["models"].values():
        model = stack.client.transport.perform_request("GET", f"{ML}/models/{model_id}")
        assert model["model_state"] == "DEPLOYED" and model["algorithm"] == "REMOTE"
    pipeline = stack.client.ingest.get_pipeline(id=reg["ingest_pipeline"])[reg["ingest_pipeline"]]
    assert [next(iter(p)) for p in pipeline["processors"]] == ["script", "sparse_encoding", "sparse_encoding", "remove"]


def test_documents_written_by_the_pipeline_store_what_milco_os_ingest_stores(stack: Stack, indices) -> None:  # noqa: ANN001
    ours, theirs, _ = indices
    expected, got = all_sources(stack.client, ours), all_sources(stack.client, theirs)
    assert set(got) == set(expected) and len(got) == len(documents())
    for doc_id, source in expected.items():
        assert "_milco_os_text" not in got[doc_id]
        for field in ("milco_pivot", "milco_echo"):
            want, have = source[field], got[doc_id][field]
            assert set(have) == set(want), f"{doc_id} {field}: other terms"
            assert all(abs(have[k] - want[k]) <= 1e-4 * max(1.0, want[k]) for k in want), f"{doc_id} {field}"


def test_neural_sparse_queries_rank_and_score_as_milco_os_search(stack: Stack, indices) -> None:  # noqa: ANN001
    ours, theirs, reg = indices
    options = SearchOptions(size=10)
    record = index_record(stack.client, theirs)
    checked = 0
    for text in queries():
        expected = [(h.id, h.score) for h in search(stack.client, ours, text, stack.encoder, options).hits]
        assert expected, text
        # OpenSearch encodes the text through the registered query models.
        body = {"query": record_query(text, record), "size": 10}
        via_model = stack.client.search(index=theirs, body=body)["hits"]["hits"]
        assert_same_ranking(expected, ranked(via_model), f"model_id, {text!r}")
        # The same with the model ids left to the search pipeline's neural_query_enricher.
        plain = query_request(stack.client, theirs, text, None, options, form="model")
        for clause in plain["query"]["bool"]["should"]:
            next(iter(clause["neural_sparse"].values())).pop("model_id")
        enriched = stack.client.search(index=theirs, body=plain, params={"search_pipeline": reg["search_pipeline"]})
        assert_same_ranking(expected, ranked(enriched["hits"]["hits"]), f"enricher, {text!r}")
        # Raw query_tokens built by milco-os (index keys, alpha applied).
        tokens = query_request(stack.client, theirs, text, stack.encoder, options, form="neural_sparse")
        assert_same_ranking(expected, ranked(stack.client.search(index=theirs, body=tokens)["hits"]["hits"]),
                            f"query_tokens, {text!r}")
        checked += 1
    assert checked >= 5


def test_two_phase_through_the_plugin_processor_equals_milco_os_two_phase(stack: Stack, indices) -> None:  # noqa: ANN001
    ours, theirs, reg = indices
    name = f"two-phase-{uuid.uuid4().hex[:6]}"
    defaults = {"milco_pivot": reg["models"]["query/pivot"], "milco_echo": reg["models"]["query/echo"]}
    stack.client.transport.perform_request("PUT", f"/_search/pipeline/{name}",
                                           body=search_pipeline_body(defaults, PLUGIN_TWO_PHASE, index=theirs))
    try:
        options = SearchOptions(size=10, two_phase=PLUGIN_TWO_PHASE)
        for text in queries()[:4]:
            expected = [(h.id, h.score) for h in search(stack.client, ours, text, stack.encoder, options).hits]
            body = query_request(stack.client, theirs, text, None, SearchOptions(size=10), form="model")
            got = stack.client.search(index=theirs, body=body, params={"search_pipeline": name})["hits"]["hits"]
            assert_same_ranking(expected, ranked(got), f"two-phase, {text!r}")
    finally:
        stack.client.transport.perform_request("DELETE", f"/_search/pipeline/{name}")


@pytest.mark.parametrize(("norm", "weight"), [("minmax", 1.0), ("minmax", 0.3), ("rrf", 1.0)])
def test_hybrid_fused_by_neural_search_ranks_as_milco_os_fusion(
    stack: Stack, indices, norm: str, weight: float  # noqa: ANN001
) -> None:
    ours, _, _ = indices
    options = SearchOptions(size=10, hybrid_weight=weight, hybrid_norm=norm)
    for text in queries()[:6]:
        expected = [(h.id, h.score) for h in search(stack.client, ours, text, stack.encoder, options).hits]
        for form in ("rank_feature", "neural_sparse"):
            body = query_request(stack.client, ours, text, stack.encoder, options, form=form)
            assert "hybrid" in body["query"] and body["search_pipeline"]["phase_results_processors"]
            got = ranked(stack.client.search(index=ours, body=body)["hits"]["hits"])
            assert [i for i, _ in got] == [i for i, _ in expected], f"{norm} W={weight} {form}, {text!r}"
            # min-max: OpenSearch's weighted mean is milco-os's sum / (1 + W); RRF: the same reciprocal ranks.
            scale = 1 / (1 + weight) if norm == "minmax" else 1.0
            for (doc, a), (_, b) in zip(expected, got, strict=True):
                assert abs(a * scale - b) <= 2e-3, f"{norm} {form} {text!r}: {doc} scored {b}, expected {a * scale}"
    with pytest.raises(ConfigError, match="weighs every list alike"):
        query_request(stack.client, ours, "x", stack.encoder, SearchOptions(hybrid_weight=0.5, hybrid_norm="rrf"))


def test_a_dense_view_is_served_by_ml_commons_and_fused_by_neural_search_as_milco_os_fuses(stack: Stack) -> None:
    """An index with a dense view: register adds a document and a query model for it (all three views from one
    pass of the service), the pipeline writes the vectors milco-os ingest writes, and neural-search's hybrid query
    of the registered models (``--print-query model``) ranks as milco-os's own fused search."""
    client = stack.client
    spec = dataclasses.replace(SPEC, dense=True)
    ours, theirs = f"dense-ingest-{uuid.uuid4().hex[:6]}", f"dense-pipeline-{uuid.uuid4().hex[:6]}"
    try:
        for name in (ours, theirs):
            create_index(client, name, stack.encoder.info, spec)
        Ingester(client, ours, stack.encoder, config=BulkConfig(encode_batch=32)).run(documents(), refresh=True)
        reg = register(client, theirs, service_url=stack.service_url, service_key=stack.key)
        assert {"document/dense", "query/dense"} <= set(reg["models"])
        pipeline = client.ingest.get_pipeline(id=reg["ingest_pipeline"])[reg["ingest_pipeline"]]
        assert [next(iter(p)) for p in pipeline["processors"]][-2:] == ["text_embedding", "remove"]
        bulk_raw_documents(client, theirs, reg["ingest_pipeline"])
        options = SearchOptions(size=10)
        for text in queries()[:5]:
            expected = search(client, ours, text, stack.encoder, options)
            assert expected.lists == ("sparse", "dense"), text
            body = query_request(client, theirs, text, None, options, form="model")
            assert "neural" in json.dumps(body["query"]["hybrid"]["queries"][-1])
            got = ranked(client.search(index=theirs, body=body)["hits"]["hits"])
            # min-max: neural-search's weighted arithmetic mean is milco-os's weighted sum / the weights' sum.
            scale = 1 / (1 + DEFAULT_DENSE_WEIGHT) if DEFAULT_FUSION == "minmax" else 1.0
            want = [(h.id, h.score * scale) for h in expected.hits]
            assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=1e-5), text
            # Exact ties (RRF: ranks 3 and 5 give what 5 and 3 give) are broken by id in milco-os and by document
            # order in OpenSearch: the same documents per tied score.
            assert tie_groups(got) == tie_groups(want), text
    finally:
        if client.indices.exists(index=theirs) and index_record(client, theirs).get("ml_commons"):
            unregister(client, theirs)
        client.indices.delete(index=f"{ours},{theirs}", ignore_unavailable=True)


def test_empty_and_all_pruned_queries_match_nothing_on_every_path(stack: Stack, indices) -> None:  # noqa: ANN001
    ours, theirs, _ = indices
    record = index_record(stack.client, theirs)
    assert search(stack.client, ours, "", stack.encoder).hits == []
    for form in ("model", "neural_sparse"):
        body = query_request(stack.client, theirs, "", stack.encoder, SearchOptions(), form=form)
        assert stack.client.search(index=theirs, body=body)["hits"]["hits"] == [], form
    pruned_away = SearchOptions(query_pruning=Pruning.parse("abs_value:1000"))
    body = query_request(stack.client, theirs, "heart attack", stack.encoder, pruned_away, form="neural_sparse")
    assert stack.client.search(index=theirs, body=body)["hits"]["hits"] == []
    assert search(stack.client, ours, "heart attack", stack.encoder, pruned_away).hits == []
    # The model form is pruned as registered: another pruning asked for here is refused, the CLI default passes.
    with pytest.raises(ConfigError, match="pruned as registered"):
        query_request(stack.client, theirs, "x", None, SearchOptions(query_pruning=Pruning.parse("top_k:8")),
                      form="model")
    assert query_request(stack.client, theirs, "x", None, SearchOptions(query_pruning=Pruning.parse("selective:0.2")),
                         form="model")["query"]["bool"]["should"]
    # A query model that prunes every term returns {} for the text: the plugin then matches nothing too.
    tokens = {"query": {"neural_sparse": {record["fields"]["pivot"]: {"query_tokens": {}}}}}
    assert stack.client.search(index=theirs, body=tokens)["hits"]["hits"] == []


def test_a_service_with_another_model_or_key_is_refused_and_leaves_nothing_behind(stack: Stack) -> None:
    from milco_os.errors import SearchIndexError
    from milco_os.loading import load_encoder

    client = stack.client
    before = client.transport.perform_request("POST", f"{ML}/models/_search",
                                              body={"query": {"match_all": {}}, "size": 0})["hits"]["total"]["value"]
    other = f"other-model-{uuid.uuid4().hex[:6]}"
    create_index(client, other, load_encoder("splade-tiny", stack.cache_dir).info, IndexSpec(replicas=0))
    try:
        with pytest.raises(SearchIndexError, match="registered for model fingerprint"):
            register(client, other, service_url=stack.service_url, service_key=stack.key)
        with pytest.raises(SearchIndexError, match="401|Bearer|API key"):
            register(client, other, service_url=stack.service_url, service_key="wrong-key")
        after = client.transport.perform_request("POST", f"{ML}/models/_search",
                                                 body={"query": {"match_all": {}}, "size": 0})["hits"]["total"]["value"]
        assert after == before, "a failed register removes the models it made"
        assert "ml_commons" not in index_record(client, other)
        # Someone else's pipeline of the default name is neither overwritten nor deleted.
        theirs = {"description": "not milco-os", "processors": []}
        client.ingest.put_pipeline(id=f"milco-os-{other}", body=theirs)
        with pytest.raises(ConfigError, match="pipeline named .* exists; choose another --name"):
            register(client, other, service_url=stack.service_url, service_key=stack.key)
        assert client.ingest.get_pipeline(id=f"milco-os-{other}")[f"milco-os-{other}"]["description"] == "not milco-os"
        client.ingest.delete_pipeline(id=f"milco-os-{other}")
    finally:
        client.indices.delete(index=other, ignore_unavailable=True)


def test_unregister_removes_models_connectors_and_pipelines(stack: Stack) -> None:
    client = stack.client
    name = f"unregister-{uuid.uuid4().hex[:6]}"
    create_index(client, name, stack.encoder.info, IndexSpec(replicas=0))
    try:
        reg = register(client, name, service_url=stack.service_url, service_key=stack.key, two_phase=PLUGIN_TWO_PHASE)
        processors = client.transport.perform_request("GET", f"/_search/pipeline/{reg['search_pipeline']}")
        assert "neural_sparse_two_phase_processor" in json.dumps(processors)
        result = milco_cli(stack, "ml-commons", "unregister", "--index", name)
        assert result.returncode == 0, result.stderr
        for model_id in reg["models"].values():
            status = client.transport.perform_request("GET", f"{ML}/models/{model_id}", params={"ignore": 404})
            assert status.get("status") == 404 or "model_state" not in status
        for connector_id in reg["connectors"].values():
            status = client.transport.perform_request("GET", f"{ML}/connectors/{connector_id}", params={"ignore": 404})
            assert status.get("status") == 404 or "actions" not in status
        assert client.ingest.get_pipeline(id=reg["ingest_pipeline"], ignore=404) in ({}, {"status": 404})
        assert "ml_commons" not in index_record(client, name)
        again = milco_cli(stack, "ml-commons", "unregister", "--index", name)
        assert again.returncode != 0 and "not registered" in again.stderr
    finally:
        client.indices.delete(index=name, ignore_unavailable=True)


def test_a_seismic_index_through_ml_commons(stack: Stack) -> None:
    """On a 3.x node: OpenSearch writes the pivot view as vocabulary ids through the pipeline, and its own query
    (SEISMIC's top k, the echo view rescored) ranks as milco-os search on a milco-os-ingested copy. On 2.x the index
    cannot exist: refused with one line naming the node to start."""
    client = stack.client
    spec = dataclasses.replace(SPEC, seismic=Seismic())
    ours, theirs = f"ingest-seismic-{uuid.uuid4().hex[:8]}", f"pipeline-seismic-{uuid.uuid4().hex[:8]}"
    if client.info()["version"]["number"].startswith("2."):
        with pytest.raises(ConfigError, match=r"3\.3 or newer"):
            create_index(client, ours, stack.encoder.info, spec)
        return
    try:
        for name in (ours, theirs):
            create_index(client, name, stack.encoder.info, spec)
        Ingester(client, ours, stack.encoder, config=BulkConfig(encode_batch=32)).run(documents(), refresh=True)
        with pytest.raises(ConfigError, match="--two-phase"):
            register(client, theirs, service_url=stack.service_url, service_key=stack.key, two_phase=PLUGIN_TWO_PHASE)
        reg = register(client, theirs, service_url=stack.service_url, service_key=stack.key)
        bulk_raw_documents(client, theirs, reg["ingest_pipeline"])
        client.indices.refresh(index=theirs)
        written, expected = all_sources(client, theirs), all_sources(client, ours)
        assert {d: s["milco_pivot"] for d, s in written.items()} == {d: s["milco_pivot"] for d, s in expected.items()}
        assert all(key.isdigit() for s in written.values() for key in s["milco_pivot"])
        for text in queries():
            body = query_request(client, theirs, text, None, SearchOptions(size=5), form="model")
            assert "rescore" in body and "method_parameters" in json.dumps(body["query"])
            got = client.search(index=theirs, body=body, params={"search_pipeline": reg["search_pipeline"]})
            mine = search(client, ours, text, stack.encoder, SearchOptions(size=5))
            assert [h["_id"] for h in got["hits"]["hits"]][:1] == [h.id for h in mine.hits][:1], text
    finally:
        for name in (ours, theirs):
            try:
                unregister(client, name)
            except ConfigError:
                pass
            client.indices.delete(index=name, ignore_unavailable=True)
