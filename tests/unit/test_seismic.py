"""The SEISMIC layout and its requests (pure): parameters, the index body, vocabulary-id keys, the two-phase body a
SEISMIC search sends, and reading SEISMIC's explanation back into terms."""

from __future__ import annotations

import dataclasses

import pytest

from milco_os.errors import ConfigError, ModelMismatch
from milco_os.layout import SEISMIC_MAX_ID, Seismic, SeismicQuery, read_layout
from milco_os.opensearch.documents import feature_map, index_action
from milco_os.opensearch.engine import ELASTICSEARCH
from milco_os.opensearch.mapping import index_body, spec_of
from milco_os.opensearch.query import Hybrid, contributions_from_seismic, search_body, term_contributions
from milco_os.specs import IndexSpec, TwoPhase
from milco_os.types import DenseInfo, Vocab
from tests.unit.helpers import encoded, model_info

SPEC = IndexSpec(seismic=Seismic(n_postings=500))


def test_parameters_parse_and_refuse_with_the_name() -> None:
    assert Seismic.parse(["n_postings=2000", "cluster_ratio=0.2"]) == Seismic(n_postings=2000, cluster_ratio=0.2)
    assert SeismicQuery.parse(["k=50", "heap_factor=1.5"]) == SeismicQuery(k=50, heap_factor=1.5)
    for pairs, needle in ((["n_post=3"], "NAME one of n_postings"), (["n_postings=x"], "not an integer"),
                          (["cluster_ratio=1.5"], "cluster_ratio must be in (0, 1)"), (["k"], "NAME=VALUE")):
        with pytest.raises(ValueError, match=needle.replace("(", r"\(").replace(")", r"\)")):
            (SeismicQuery if pairs == ["k"] else Seismic).parse(pairs)


def test_the_index_body_puts_the_pivot_view_in_a_seismic_field_and_records_it() -> None:
    body = index_body(model_info(), SPEC)
    props = body["mappings"]["properties"]
    assert props["milco_pivot"] == {"type": "sparse_vector", "method": {
        "name": "seismic", "parameters": dataclasses.asdict(SPEC.seismic)}}
    assert props["milco_echo"] == {"type": "rank_features"}
    assert body["settings"]["index"]["sparse"] is True
    record = body["mappings"]["_meta"]["milco_os"]
    layout = read_layout(record, "i")
    assert (layout.retrieval, layout.sparse, layout.seismic, layout.pivot_keys) == (
        "seismic", "sparse_vector", SPEC.seismic, "ids")
    assert spec_of(record, props, {"number_of_shards": 1, "number_of_replicas": 1}, "i").seismic == SPEC.seismic


def test_what_cannot_hold_a_seismic_index_is_refused() -> None:
    with pytest.raises(ConfigError, match="Elasticsearch has no SEISMIC"):
        index_body(model_info(), SPEC, ELASTICSEARCH)
    with pytest.raises(ConfigError, match="--passages"):
        index_body(model_info(), dataclasses.replace(SPEC, passages=True))
    with pytest.raises(ConfigError, match="--dense"):
        index_body(dataclasses.replace(model_info(), dense=DenseInfo("d", "sha256:d", 4)),
                   dataclasses.replace(SPEC, dense=True))
    big = dataclasses.replace(model_info(), pivot_vocab=Vocab("big", tuple(f"t{i}" for i in range(SEISMIC_MAX_ID + 2))))
    with pytest.raises(ConfigError, match="ids up to 32,767"):
        index_body(big, SPEC)
    record = index_body(model_info(), SPEC)["mappings"]["_meta"]["milco_os"]
    for change, key in (({"units": "passages", "passages": {"path": "p"}}, "units"),
                        ({"seismic": {"n_postings": -1}}, "seismic"), ({"sparse": "rank_features"}, "sparse")):
        with pytest.raises(ModelMismatch, match=f"layout.{key} "):
            read_layout({"layout": record["layout"] | change}, "i")
    exact = index_body(model_info(), IndexSpec())["mappings"]["_meta"]["milco_os"]["layout"]
    with pytest.raises(ModelMismatch, match="layout.retrieval"):
        read_layout({"layout": exact | {"sparse": "sparse_vector"}}, "i")


def test_pivot_keys_are_vocabulary_ids_and_echo_keys_stay_names() -> None:
    enc = encoded({"heart": 1.5, "u.s.": 0.25}, {"▁Herz": 0.5})
    assert feature_map(enc.pivot, "ids") == {"0": 1.5, "2": 0.25}
    source = index_action("i", "1", {}, enc, pivot_field="p", echo_field="e", pivot_keys="ids")["_source"]
    assert source == {"p": {"0": 1.5, "2": 0.25}, "e": {"▁Herz": 0.5}}
    terms = term_contributions(enc, source, alpha=0.5, pivot_field="p", echo_field="e", pivot_keys="ids")
    assert {(t.view, t.term) for t in terms} == {("pivot", "heart"), ("pivot", "u.s."), ("echo", "▁Herz")}


def test_a_seismic_search_retrieves_by_the_pivot_view_and_rescores_the_rest() -> None:
    query = encoded({"heart": 2.0, "attack": 1.0}, {"▁Herz": 0.5})
    seismic = SeismicQuery(k=40, top_n=5)
    body = search_body(query, pivot_field="p", echo_field="e", alpha=0.7, size=10, seismic=seismic,
                       filters=[{"term": {"lang": "de"}}], hybrid=Hybrid("heart", ("text",), 0.5))
    (pivot,) = body["query"]["bool"]["should"]
    clause = pivot["neural_sparse"]["p"]
    assert clause["query_tokens"] == {"0": 2.0, "1": 1.0} and clause["boost"] == 0.7
    assert clause["method_parameters"] == {"k": 40, "top_n": 5, "heap_factor": 1.0,
                                           "filter": {"bool": {"filter": [{"term": {"lang": "de"}}]}}}
    assert body["query"]["bool"]["filter"] == [{"term": {"lang": "de"}}]
    rescore = body["rescore"]
    assert rescore["window_size"] == 40 and rescore["query"]["score_mode"] == "total"
    rest = rescore["query"]["rescore_query"]["bool"]["should"]
    assert rest[0]["rank_feature"]["field"] == "e.▁Herz" and rest[0]["rank_feature"]["boost"] == pytest.approx(0.15)
    assert rest[1]["multi_match"]["boost"] == 0.5
    # A deep page is at least as deep as k; pivot only: nothing to rescore; no pivot terms: the echo view, exactly.
    assert search_body(query, pivot_field="p", echo_field="e", size=30, from_=30, seismic=seismic)[
        "rescore"]["window_size"] == 60
    assert "rescore" not in search_body(query, pivot_field="p", echo_field="e", alpha=1.0, seismic=seismic)
    echo_only = search_body(encoded({}, {"▁Herz": 0.5}), pivot_field="p", echo_field="e", seismic=seismic)
    assert "neural_sparse" not in str(echo_only) and "rescore" not in echo_only
    with pytest.raises(ValueError, match="no two-phase"):
        search_body(query, pivot_field="p", echo_field="e", seismic=seismic, two_phase=TwoPhase())


#: SEISMIC's explanation of a hit as neural-search 3.6 writes it (token 0 is "heart" in the test vocabulary).
EXPLANATION = {"value": 0.54, "description": "sum of:", "details": [
    {"value": 0.54, "description": "sparse_ann score for doc 7 in field 'p'", "details": [
        {"value": 2, "description": "query token pruning: kept all 2 tokens (no pruning occurred)", "details": []},
        {"value": 14450, "description": "raw dot product score (quantized): 14450", "details": [
            {"value": 14450, "description": "token '0' contribution: query_weight=170 * doc_weight=85", "details": []},
        ]},
        {"value": 3.7370242e-05, "description": "quantization rescaling: 0.5000 * 3.00 * 3.00 / 255 / 255 = 0.000069",
         "details": [
             {"value": 0.5, "description": "original boost: 0.5000", "details": []},
             {"value": 3.0, "description": "ceiling_ingest (quantization parameter): 3.00", "details": []},
             {"value": 3.0, "description": "ceiling_search (quantization parameter): 3.00", "details": []},
         ]},
    ]},
]}


def test_seismic_explanations_read_back_as_weights_on_the_models_scale() -> None:
    (term,) = contributions_from_seismic(EXPLANATION, encoded({"heart": 2.0}), alpha=0.5, pivot_field="p",
                                         echo_field="e")
    assert (term.view, term.term) == ("pivot", "heart")
    assert term.query_weight == pytest.approx(2.0) and term.document_weight == pytest.approx(1.0)
    assert term.contribution == pytest.approx(14450 * 3.7370242e-05)
