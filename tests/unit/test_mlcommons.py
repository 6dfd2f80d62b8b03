"""Pure parts of the ml-commons interop: request bodies, the queries OpenSearch encodes itself, the settings
check, the service's /v1/neural-sparse route (fake encoder) and the plugin closure of `cluster up --plugins`."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from milco_os.errors import ConfigError
from milco_os.localnode import PLUGIN_MODULES, PLUGINS, plugin_closure, plugin_descriptor
from milco_os.opensearch.mlcommons import (
    JOINED_TEXT,
    ROUTE,
    Target,
    cluster_problems,
    connector_body,
    ingest_pipeline_body,
    model_query,
    record_query,
    search_pipeline_body,
    targets,
)
from milco_os.opensearch.query import neural_sparse_query, query_tokens
from milco_os.service.app import create_app
from milco_os.service.routes import get_encoder
from milco_os.settings import Settings
from milco_os.specs import PLUGIN_TWO_PHASE, TwoPhase
from milco_os.types import Encoded, SparseVector, Vocab

RECORD = {
    "model": {"name": "milco-mini", "fingerprint": "sha256:abc"},
    "vocab": {"pivot": {"name": "bert"}, "echo": {"name": "xlmr"}},
    "fields": {"text": ["title", "text"], "pivot": "milco_pivot", "echo": "milco_echo"},
    "document_pruning": {"pivot": "top_k:64", "echo": "none"},
}


def test_targets_cover_both_kinds_and_only_the_views_the_model_has() -> None:
    assert [t.key for t in targets(RECORD)] == ["document/pivot", "document/echo", "query/pivot", "query/echo"]
    pivot_only = {**RECORD, "vocab": {"pivot": {"name": "bert"}, "echo": None}}
    assert [(t.key, t.field) for t in targets(pivot_only)] == [("document/pivot", "milco_pivot"),
                                                                ("query/pivot", "milco_pivot")]


def test_connector_posts_the_texts_with_kind_view_pruning_and_fingerprint() -> None:
    body = connector_body(Target("document", "echo", "milco_echo"), index="docs", service_url="http://10.0.0.5:8080/",
                          prune="top_k:64", fingerprint="sha256:abc", has_key=True)
    action = body["actions"][0]
    assert action["url"] == "http://10.0.0.5:8080" + ROUTE and action["method"] == "POST"
    assert action["headers"]["Authorization"] == "Bearer ${credential.service_key}"
    # ml-commons substitutes a JSON array of the texts for ${parameters.input}: the result must be JSON.
    sent = json.loads(action["request_body"].replace("${parameters.input}", json.dumps(["a", "b \"c\""])))
    assert sent == {"texts": ["a", "b \"c\""], "kind": "document", "view": "echo", "prune": "top_k:64",
                    "model_fingerprint": "sha256:abc"}
    no_key = connector_body(Target("query", "pivot", "p"), index="docs", service_url="http://h:1", prune="none",
                            fingerprint="f", has_key=False, model="milco-mini@1")
    assert "Authorization" not in no_key["actions"][0]["headers"]
    assert json.loads(no_key["actions"][0]["request_body"].replace("${parameters.input}", "[]"))["model"] == \
        "milco-mini@1"
    assert no_key["credential"], "ml-commons refuses a connector without a credential"


def test_ingest_pipeline_joins_several_text_fields_as_ingest_does_and_removes_the_join() -> None:
    body = ingest_pipeline_body(["title", "text"], [("m1", "milco_pivot"), ("m2", "milco_echo")], index="docs")
    kinds = [next(iter(p)) for p in body["processors"]]
    assert kinds == ["script", "sparse_encoding", "sparse_encoding", "remove"]
    script = body["processors"][0]["script"]
    assert script["params"]["fields"] == ["title", "text"] and script["params"]["separator"] == "\n"
    assert "\\n" not in script["source"], "painless string literals have no \\n escape"
    assert body["processors"][1]["sparse_encoding"] == {"model_id": "m1", "field_map": {JOINED_TEXT: "milco_pivot"},
                                                        "batch_size": 32}
    single = ingest_pipeline_body(["body"], [("m1", "milco_pivot")], index="docs", batch_size=8)
    assert single["processors"] == [{"sparse_encoding": {"model_id": "m1", "field_map": {"body": "milco_pivot"},
                                                         "batch_size": 8}}]


def test_search_pipeline_sets_default_models_and_optional_two_phase() -> None:
    plain = search_pipeline_body({"milco_pivot": "q1"}, None, index="docs")
    assert plain["request_processors"] == [{"neural_query_enricher": {
        "description": "milco-os query models of index docs", "neural_field_default_id": {"milco_pivot": "q1"}}}]
    two = search_pipeline_body({"milco_pivot": "q1"}, PLUGIN_TWO_PHASE, index="docs")["request_processors"][1]
    assert two["neural_sparse_two_phase_processor"]["two_phase_parameter"] == {
        "prune_ratio": 0.2, "expansion_rate": 5.0, "max_window_size": 10000}
    with pytest.raises(ValueError, match="by weight only"):
        search_pipeline_body({"milco_pivot": "q1"}, TwoPhase(), index="docs")


def test_model_query_boosts_views_by_alpha_and_empty_text_matches_nothing() -> None:
    q = model_query("Herzinfarkt", models={"pivot": "qp", "echo": "qe"}, pivot_field="p", echo_field="e", alpha=0.7)
    clauses = q["bool"]["should"]
    assert clauses[0] == {"neural_sparse": {"p": {"query_text": "Herzinfarkt", "boost": 0.7, "model_id": "qp"}}}
    assert clauses[1]["neural_sparse"]["e"]["boost"] == pytest.approx(0.3)
    only_pivot = model_query("x", pivot_field="p", echo_field="e", alpha=1.0)
    (clause,) = only_pivot["bool"]["should"]
    assert "model_id" not in clause["neural_sparse"]["p"], "the search pipeline's enricher supplies it"
    for empty in ("", "   "):
        assert model_query(empty, pivot_field="p", echo_field="e") == {"bool": {"must_not": [{"match_all": {}}]}}
    with pytest.raises(ValueError, match="alpha"):
        model_query("x", pivot_field="p", echo_field="e", alpha=1.5)


def test_record_query_uses_the_registered_query_models() -> None:
    registered = {**RECORD, "ml_commons": {"models": {"document/pivot": "d", "query/pivot": "qp", "query/echo": "qe"}}}
    clauses = record_query("x", registered)["bool"]["should"]
    ids = [c["neural_sparse"][f]["model_id"] for c, f in zip(clauses, ("milco_pivot", "milco_echo"), strict=True)]
    assert ids == ["qp", "qe"]
    with pytest.raises(ConfigError, match="ml-commons register"):
        record_query("x", RECORD)


def test_cluster_problems_name_each_setting_to_change() -> None:
    defaults = {"plugins.ml_commons.trusted_connector_endpoints_regex": ["^https://api\\.openai\\.com/.*$"],
                "plugins.ml_commons.connector.private_ip_enabled": "false",
                "plugins.ml_commons.only_run_on_ml_node": "true"}
    fixes = cluster_problems(defaults, "http://127.0.0.1:8080", ml_nodes=0)
    regexes = fixes["plugins.ml_commons.trusted_connector_endpoints_regex"]
    assert regexes[0] == "^https://api\\.openai\\.com/.*$", "existing trusted endpoints are kept"
    import re

    assert re.fullmatch(regexes[-1], "http://127.0.0.1:8080" + ROUTE)
    assert fixes["plugins.ml_commons.connector.private_ip_enabled"] is True
    assert fixes["plugins.ml_commons.only_run_on_ml_node"] is False
    ready = {"plugins.ml_commons.trusted_connector_endpoints_regex.0": "^http://127\\.0\\.0\\.1:8080/.*$",
             "plugins.ml_commons.connector.private_ip_enabled": "true",
             "plugins.ml_commons.only_run_on_ml_node": "true"}
    assert cluster_problems(ready, "http://127.0.0.1:8080", ml_nodes=1) == {}
    public = cluster_problems({"plugins.ml_commons.trusted_connector_endpoints_regex": [".*"]},
                              "https://encoder.example.com", ml_nodes=1)
    assert public == {}


def vocab() -> Vocab:
    return Vocab("v", ("u.s.", "heart", "100%"))


def test_neural_sparse_tokens_use_index_keys_with_alpha_and_no_terms_match_nothing() -> None:
    v = vocab()
    q = Encoded(SparseVector.from_terms({"u.s.": 2.0, "heart": 1.0}, v), SparseVector.from_terms({"100%": 1.0}, v))
    body = neural_sparse_query(q, pivot_field="p", echo_field="e", alpha=0.25)
    assert body["bool"]["should"][0]["neural_sparse"]["p"]["query_tokens"] == {"u%2Es%2E": 0.5, "heart": 0.25}
    assert body["bool"]["should"][1]["neural_sparse"]["e"]["query_tokens"] == {"100%25": 0.75}
    assert query_tokens(q.pivot) == {"u%2Es%2E": 2.0, "heart": 1.0}
    empty = Encoded(SparseVector.from_terms({}, v), SparseVector.from_terms({}, v))
    assert neural_sparse_query(empty, pivot_field="p", echo_field="e") == {"bool": {"must_not": [{"match_all": {}}]}}


@pytest.fixture
def http() -> TestClient:
    from tests.fakes import FakeEncoder

    client = TestClient(create_app(Settings(opensearch_url="http://127.0.0.1:9")))
    client.app.dependency_overrides[get_encoder] = lambda: FakeEncoder(fingerprint="sha256:fake")
    return client


def test_route_answers_one_map_per_text_in_the_shape_neural_search_reads(http: TestClient) -> None:
    from milco_os.opensearch.documents import feature_map
    from tests.fakes import FakeEncoder

    texts = ["Herzinfarkt", "heart attack symptoms", "a"]
    resp = http.post(ROUTE, json={"texts": texts, "kind": "document", "view": "pivot", "prune": "top_k:3",
                                  "model_fingerprint": "sha256:fake"})
    assert resp.status_code == 200, resp.text
    maps = resp.json()["response"]
    assert len(maps) == 3 and all(0 < len(m) <= 3 for m in maps)
    expected = [feature_map(e.pivot) for e in FakeEncoder().encode_documents(texts)]
    for got, want in zip(maps, expected, strict=True):
        assert all(got[k] == want[k] for k in got), "document weights are rounded exactly as ingest writes them"
    query = http.post(ROUTE, json={"texts": texts[:1], "kind": "query", "view": "echo"}).json()["response"]
    assert query[0] and all(w == 0.5 for w in query[0].values())
    # A SEISMIC index's pivot view: the same weights under vocabulary ids.
    ids = http.post(ROUTE, json={"texts": texts, "kind": "document", "view": "pivot", "prune": "top_k:3",
                                 "keys": "ids"}).json()["response"]
    vocab = FakeEncoder().info.pivot_vocab.tokens
    assert [{vocab[int(k)]: w for k, w in m.items()} for m in ids] == maps
    bad = http.post(ROUTE, json={"texts": texts, "kind": "query", "view": "pivot", "keys": "tokens"})
    assert bad.status_code == 422


def test_route_answers_in_ascii_so_a_split_chunk_cannot_break_a_character(http: TestClient) -> None:
    # ml-commons decodes each chunk of the body as UTF-8 on its own: a 3-byte "▁" split across two came back as
    # three replacement characters.
    resp = http.post(ROUTE, json={"texts": ["Größe ▁forme ça"], "kind": "document", "view": "echo"})
    assert resp.status_code == 200, resp.text
    assert resp.content.isascii()
    terms = set(resp.json()["response"][0])
    assert any("▁" in t for t in terms) and any(not t.isascii() for t in terms - {"▁"}), terms


def test_route_refuses_another_model_a_bad_view_or_pruning(http: TestClient) -> None:
    other = http.post(ROUTE, json={"texts": ["x"], "kind": "query", "view": "pivot", "model_fingerprint": "sha256:x"})
    assert other.status_code == 409 and "sha256:x" in other.json()["detail"]
    bad_view = http.post(ROUTE, json={"texts": ["x"], "kind": "query", "view": "both"})
    assert bad_view.status_code == 422 and bad_view.json()["detail"][0]["loc"] == ["body", "view"]
    bad_prune = http.post(ROUTE, json={"texts": ["x"], "kind": "query", "view": "pivot", "prune": "top_k:-1"})
    assert bad_prune.status_code == 422 and bad_prune.json()["detail"][0]["loc"][-1] == "prune"


def test_route_answers_with_the_shipped_version_a_connector_was_registered_for(http: TestClient) -> None:
    """The service runs the bare milco-mini (a newer version); a connector of an index built with milco-mini@1
    names it, and is answered with that version (loaded on first need and kept: here, already kept)."""
    from tests.fakes import FakeEncoder

    http.app.state.settings = Settings(opensearch_url="http://127.0.0.1:9", model="milco-mini")
    http.app.state.encoders["milco-mini@1"] = FakeEncoder(fingerprint="sha256:v1")
    sent = {"texts": ["heart"], "kind": "query", "view": "pivot", "model_fingerprint": "sha256:v1"}
    assert http.post(ROUTE, json=sent | {"model": "milco-mini@1"}).status_code == 200
    for model in (None, "milco-mini@7", "splade-tiny"):  # not said, not shipped, another model: refused
        refused = http.post(ROUTE, json=sent | ({"model": model} if model else {}))
        assert refused.status_code == 409 and "sha256:v1" in refused.json()["detail"], model


def test_plugin_closure_installs_what_each_plugin_needs_first() -> None:
    assert plugin_closure(["neural-search"]) == ["job-scheduler", "ml-commons", "knn", "neural-search"]
    assert plugin_closure(["ml-commons", "ml-commons"]) == ["job-scheduler", "ml-commons"]
    assert plugin_closure([]) == []
    with pytest.raises(ConfigError, match="--plugins nope: unknown plugin"):
        plugin_closure(["nope"])
    assert all(PLUGINS[name].artifact.endswith(".0:zip") for name in PLUGINS)


def test_added_modules_declare_what_they_extend() -> None:
    painless, ingest_common = PLUGIN_MODULES
    assert "extended.plugins=\n" in plugin_descriptor(painless, "2.19.6")
    assert "extended.plugins=lang-painless\n" in plugin_descriptor(ingest_common, "2.19.6")
    assert painless.policy and "createClassLoader" in painless.policy


def test_recent_encodings_encode_a_text_once_for_both_views_and_stay_bounded() -> None:
    from milco_os.service.recent import RecentEncodings
    from tests.fakes import FakeEncoder

    class Counting(FakeEncoder):
        calls: list[list[str]] = []

        def encode_documents(self, texts):  # noqa: ANN001, ANN201
            self.calls.append(list(texts))
            return super().encode_documents(texts)

    encoder, recent = Counting(), RecentEncodings(size=3, max_chars=100)
    first = recent.encode(encoder, "document", ["a b", "c", "a b"])
    again = recent.encode(encoder, "document", ["c", "a b"])
    assert encoder.calls == [["a b", "c"]], "duplicates and the second view are not encoded again"
    assert again[0] is first[1] and again[1] is first[0]
    recent.encode(encoder, "query", ["c"])  # another kind: encoded apart
    recent.encode(encoder, "document", ["x" * 99])
    assert len(recent._items) <= 3 and recent._chars <= 100


def test_plugins_with_security_are_refused_before_anything_starts(tmp_path) -> None:  # noqa: ANN001
    from milco_os.localnode import LocalNode

    with pytest.raises(ConfigError, match="--plugins with --secure"):
        LocalNode(tmp_path, 9399).up(secure=True, plugins=("ml-commons",))
    with pytest.raises(ConfigError, match="unknown plugin"):
        LocalNode(tmp_path, 9399).up(plugins=("security",))
    assert not (tmp_path / "opensearch" / "dist").exists(), "nothing downloaded or unpacked"


def test_concurrent_requests_for_one_text_encode_it_once() -> None:
    import threading
    import time

    from milco_os.service.recent import RecentEncodings
    from tests.fakes import FakeEncoder

    class Slow(FakeEncoder):
        calls: list[list[str]] = []

        def encode_queries(self, texts):  # noqa: ANN001, ANN201
            self.calls.append(list(texts))
            time.sleep(0.3)
            return super().encode_queries(texts)

    encoder, recent = Slow(), RecentEncodings()
    results: list = []
    threads = [threading.Thread(target=lambda: results.append(recent.encode(encoder, "query", ["Herzinfarkt"])))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert encoder.calls == [["Herzinfarkt"]], "the second view's request waited for the first one's encoding"
    assert results[0][0] is results[1][0]

    class Failing(FakeEncoder):
        def encode_queries(self, texts):  # noqa: ANN001, ANN201
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        recent.encode(Failing(fingerprint="other"), "query", ["x"])
    assert not recent._pending, "a failed encoding leaves no one waiting"


def test_a_seismic_index_gets_ids_for_its_pivot_view_and_a_rescored_query() -> None:
    from milco_os.layout import SeismicQuery
    from milco_os.opensearch.mlcommons import Target, connector_body, model_query, model_search_body

    pivot = connector_body(Target("document", "pivot", "p"), index="i", service_url="http://127.0.0.1:8000",
                           prune="none", fingerprint="sha256:x", has_key=False, keys="ids")
    assert json.loads(pivot["actions"][0]["request_body"].replace("${parameters.input}", "[]"))["keys"] == "ids"
    echo = connector_body(Target("document", "echo", "e"), index="i", service_url="http://127.0.0.1:8000",
                          prune="none", fingerprint="sha256:x", has_key=False)
    assert "keys" not in echo["actions"][0]["request_body"]
    seismic = SeismicQuery(k=30)
    query = model_query("heart", models={"pivot": "m1", "echo": "m2"}, pivot_field="p", echo_field="e",
                        seismic=seismic)
    body = model_search_body(query, size=10, seismic=seismic, pivot_field="p")
    (first,) = body["query"]["bool"]["should"]
    assert first["neural_sparse"]["p"]["method_parameters"] == {"k": 30, "top_n": 10, "heap_factor": 1.0}
    (rest,) = body["rescore"]["query"]["rescore_query"]["bool"]["should"]
    assert rest["neural_sparse"]["e"]["model_id"] == "m2" and body["rescore"]["window_size"] == 30
    exact = model_query("heart", pivot_field="p", echo_field="e")
    assert model_search_body(exact, size=10, pivot_field="p") == {"query": exact, "size": 10, "from": 0}
