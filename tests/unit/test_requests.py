"""Request bodies built by pure functions: index body, documents, queries, explanations."""

from __future__ import annotations

import pytest

from milco_os.errors import ModelMismatch
from milco_os.keys import KEY_SCHEME_VERSION
from milco_os.opensearch.documents import index_action
from milco_os.opensearch.mapping import check_meta, index_body
from milco_os.opensearch.query import expansion_query, search_body, term_contributions
from milco_os.pruning import Pruning
from milco_os.specs import IndexSpec
from tests.unit.helpers import ECHO, PIVOT, encoded, model_info


def test_index_body_has_rank_features_and_meta() -> None:
    spec = IndexSpec(text_fields=("title", "text"), doc_pruning=Pruning.parse("top_k:64,none"))
    body = index_body(model_info(), spec)
    props = body["mappings"]["properties"]
    assert props["milco_pivot"] == {"type": "rank_features"}
    assert props["milco_echo"] == {"type": "rank_features"}
    assert props["title"]["type"] == "text"
    meta = body["mappings"]["_meta"]["milco_os"]
    assert meta["model"]["fingerprint"] == "sha256:abc"
    assert meta["vocab"]["pivot"]["fingerprint"] == PIVOT.fingerprint
    assert meta["vocab"]["echo"]["fingerprint"] == ECHO.fingerprint
    assert meta["key_scheme"] == KEY_SCHEME_VERSION
    assert meta["document_pruning"] == {"pivot": "top_k:64", "echo": "none"}
    assert meta["fields"] == {"text": ["title", "text"], "pivot": "milco_pivot", "echo": "milco_echo"}


def test_vectors_can_be_kept_out_of_source() -> None:
    body = index_body(model_info(), IndexSpec(vectors_in_source=False))
    assert body["mappings"]["_source"] == {"excludes": ["milco_pivot", "milco_echo"]}


def test_field_name_clash_is_refused() -> None:
    with pytest.raises(ValueError, match="must differ"):
        IndexSpec(text_fields=("milco_pivot",))
    with pytest.raises(ValueError, match="at least one"):
        IndexSpec(text_fields=())


def test_meta_mismatch_is_refused_with_the_fix() -> None:
    meta = index_body(model_info("sha256:old"), IndexSpec())["mappings"]["_meta"]
    with pytest.raises(ModelMismatch, match="was built with model 'test-model' \\(sha256:old\\)") as refused:
        check_meta(meta, model_info("sha256:new"), "docs")
    assert refused.value.index_model == "test-model" and refused.value.index == "docs"
    assert check_meta(meta, model_info("sha256:old"), "docs")["model"]["name"] == "test-model"


def test_document_action_escapes_keys_and_drops_empty_echo() -> None:
    action = index_action(
        "idx", "7", {"text": "x"}, encoded({"u.s.": 1.5, "heart": 0.25}), pivot_field="p", echo_field="e"
    )
    assert action["_id"] == "7" and action["_op_type"] == "index"
    assert action["_source"] == {"text": "x", "p": {"u%2Es%2E": 1.5, "heart": 0.25}}


def test_expansion_query_weights_views_by_alpha() -> None:
    q = encoded({"heart": 2.0}, {"▁Herz": 1.0})
    query = expansion_query(q, alpha=0.25, pivot_field="p", echo_field="e")
    should = query["bool"]["should"]
    assert {"rank_feature": {"field": "p.heart", "linear": {}, "boost": 0.5}} in should
    assert {"rank_feature": {"field": "e.▁Herz", "linear": {}, "boost": 0.75}} in should
    pivot_only = expansion_query(q, alpha=1.0, pivot_field="p", echo_field="e")
    assert len(pivot_only["bool"]["should"]) == 1


def test_on_elasticsearch_each_term_is_a_boosted_term_clause_on_its_sparse_vector_view() -> None:
    from milco_os.opensearch.engine import ELASTICSEARCH
    from milco_os.opensearch.stats import count_body

    q = encoded({"heart": 2.0, "u.s.": 1.0}, {"▁Herz": 1.0})
    should = expansion_query(q, alpha=0.25, pivot_field="p", echo_field="e", engine=ELASTICSEARCH)["bool"]["should"]
    assert {"term": {"p": {"value": "heart", "boost": 0.5}}} in should
    assert {"term": {"p": {"value": "u%2Es%2E", "boost": 0.25}}} in should  # the key the index stores
    assert {"term": {"e": {"value": "▁Herz", "boost": 0.75}}} in should
    # two-phase: the rescore window's query is built the same way
    from milco_os.specs import TwoPhase

    two_phase = TwoPhase(ratio=0.9, split="weight")
    body = search_body(q, pivot_field="p", echo_field="e", two_phase=two_phase, engine=ELASTICSEARCH)
    rescore = body["rescore"]["query"]["rescore_query"]["bool"]["should"]
    assert all("term" in clause for clause in rescore + body["query"]["bool"]["should"])
    counted = count_body("p", "heart", engine=ELASTICSEARCH)["query"]
    assert counted == {"constant_score": {"filter": {"term": {"p": "heart"}}}}


def test_empty_query_matches_nothing() -> None:
    body = search_body(encoded({}), pivot_field="p", echo_field="e")
    assert body["query"] == {"bool": {"must_not": [{"match_all": {}}]}}
    assert body["track_total_hits"] is False


def test_alpha_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="alpha"):
        expansion_query(encoded({"heart": 1.0}), alpha=1.5, pivot_field="p", echo_field="e")


def test_term_contributions_from_stored_vectors() -> None:
    q = encoded({"heart": 2.0, "u.s.": 1.0, "tea": 0.5}, {"▁Herz": 1.0})
    source = {"p": {"heart": 3.0, "u%2Es%2E": 0.5}, "e": {"▁Herz": 4.0}}
    terms = term_contributions(q, source, alpha=0.5, pivot_field="p", echo_field="e")
    assert [(t.view, t.term, t.contribution) for t in terms] == [
        ("pivot", "heart", 3.0),
        ("echo", "▁Herz", 2.0),
        ("pivot", "u.s.", 0.25),
    ]
