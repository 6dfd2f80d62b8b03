"""The index-layout record (pure): what index create writes, what every reader accepts and refuses."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from milco_os.errors import ConfigError, ModelMismatch
from milco_os.layout import LAYOUT_VERSION, LEGACY, read_layout
from milco_os.opensearch.documents import index_action
from milco_os.opensearch.mapping import check_meta, index_body
from milco_os.specs import IndexSpec
from milco_os.types import DenseInfo, Encoded
from tests.unit.helpers import encoded, model_info

DENSE = DenseInfo("e5-small (mean pooling)", "sha256:dense", 4)


def with_dense(dense: DenseInfo | None = DENSE):  # noqa: ANN201
    return dataclasses.replace(model_info(), dense=dense)


def test_a_dense_index_has_a_knn_field_kept_out_of_source_and_says_so_in_its_layout() -> None:
    body = index_body(with_dense(), IndexSpec(dense=True))
    field = body["mappings"]["properties"]["milco_dense"]
    assert field["type"] == "knn_vector" and field["dimension"] == 4
    assert field["method"]["engine"] == "lucene" and field["method"]["space_type"] == "cosinesimil"
    assert body["settings"]["index"]["knn"] is True
    assert body["mappings"]["_source"] == {"excludes": ["milco_dense"]}
    layout = read_layout(body["mappings"]["_meta"]["milco_os"], "docs")
    assert layout.dense is not None and layout.dense.model == {"name": DENSE.name, "fingerprint": DENSE.fingerprint}
    assert (layout.engine, layout.sparse, layout.units, layout.retrieval) == ("opensearch", "rank_features",
                                                                               "merged", "exact")


def test_a_sparse_index_records_todays_layout_and_an_old_index_reads_as_it() -> None:
    meta = index_body(with_dense(), IndexSpec())["mappings"]["_meta"]["milco_os"]
    assert meta["layout"] == {"version": LAYOUT_VERSION, "engine": "opensearch", "sparse": "rank_features",
                              "units": "merged", "retrieval": "exact", "dense": None, "passages": None}
    assert "knn" not in index_body(with_dense(), IndexSpec())["settings"]["index"]
    del meta["layout"]  # an index made before the record existed
    assert read_layout(meta, "old") == LEGACY and LEGACY.dense is None


@pytest.mark.parametrize(("key", "value"), [
    ("version", LAYOUT_VERSION + 1), ("engine", "solr"), ("sparse", "dense_vector"),  # no sparse field type
    ("units", "sentences"), ("retrieval", "approximate"), ("dense", {"field": "v"}),
    ("passages", {"path": "milco_passages"}),  # passages where the units are merged
])
def test_a_layout_this_milco_os_cannot_serve_is_refused_with_one_line_naming_the_key(key: str, value: object) -> None:
    meta = index_body(with_dense(), IndexSpec(dense=True))["mappings"]["_meta"]["milco_os"]
    meta["layout"][key] = value
    refused = rf"index 'docs': _meta\.milco_os\.layout\.{key} is .*upgrade milco-os"
    with pytest.raises(ModelMismatch, match=refused) as e:
        read_layout(meta, "docs")
    assert "\n" not in str(e.value)


def test_dense_needs_a_model_with_a_dense_view_and_the_same_one_later() -> None:
    with pytest.raises(ConfigError, match="--dense: model 'test-model' has no dense view"):
        index_body(with_dense(None), IndexSpec(dense=True))
    meta = index_body(with_dense(), IndexSpec(dense=True))["mappings"]["_meta"]
    assert check_meta(meta, with_dense(), "docs")["layout"]["dense"]["dimensions"] == 4
    for other in (None, dataclasses.replace(DENSE, fingerprint="sha256:other")):
        with pytest.raises(ModelMismatch, match="has a dense view from"):
            check_meta(meta, with_dense(other), "docs")
    # A sparse-only index does not care about the model's dense view.
    check_meta(index_body(with_dense(), IndexSpec())["mappings"]["_meta"], with_dense(None), "docs")


def test_documents_carry_the_dense_view_only_into_an_index_that_has_one() -> None:
    base = encoded({"heart": 1.0})
    enc = Encoded(base.pivot, base.echo, np.array([0.123456789, -0.5, 0.0, 1.0], np.float32))
    with_field = index_action("i", "1", {}, enc, pivot_field="p", echo_field="e", dense_field="v")["_source"]
    assert with_field["v"] == [0.1234568, -0.5, 0.0, 1.0]
    assert "v" not in index_action("i", "1", {}, enc, pivot_field="p", echo_field="e")["_source"]
    empty = Encoded(base.pivot, base.echo, None)
    assert "v" not in index_action("i", "1", {}, empty, pivot_field="p", echo_field="e", dense_field="v")["_source"]


def test_the_dense_field_name_must_differ_from_the_others() -> None:
    with pytest.raises(ValueError, match="dense 'milco_pivot'"):
        IndexSpec(dense=True, dense_field="milco_pivot")
    IndexSpec(dense=False, dense_field="milco_pivot")  # not used without dense


def test_the_fusion_plan_follows_the_layout_and_the_options() -> None:
    from milco_os.opensearch.search import fusion_plan
    from milco_os.specs import DEFAULT_DENSE_WEIGHT, DEFAULT_FUSION, SearchOptions

    dense = index_body(with_dense(), IndexSpec(dense=True))["mappings"]["_meta"]["milco_os"]
    sparse = index_body(with_dense(), IndexSpec())["mappings"]["_meta"]["milco_os"]
    plan = fusion_plan(dense, "docs", SearchOptions())  # an index with a dense view is searched fused
    assert plan is not None and plan.weights == {"sparse": 1.0, "dense": DEFAULT_DENSE_WEIGHT}
    assert plan.norm == DEFAULT_FUSION and plan.dense_field == "milco_dense"
    assert fusion_plan(dense, "docs", SearchOptions(dense_weight=0)) is None
    both = fusion_plan(dense, "docs", SearchOptions(hybrid_weight=0.2, hybrid_norm="rrf", dense_weight=2.0))
    assert both is not None and both.weights == {"sparse": 1.0, "bm25": 0.2, "dense": 2.0} and both.norm == "rrf"
    assert fusion_plan(sparse, "docs", SearchOptions()) is None
    assert fusion_plan(sparse, "docs", SearchOptions(hybrid_weight=0.2)) is None  # BM25 joins the sparse sum
    with pytest.raises(ConfigError, match="--dense: index 'docs' has no dense view"):
        fusion_plan(sparse, "docs", SearchOptions(dense_weight=1.0))
    with pytest.raises(ConfigError, match="--hybrid-norm: nothing to fuse"):
        fusion_plan(sparse, "docs", SearchOptions(hybrid_norm="minmax"))


def test_alpha_not_given_is_the_one_of_the_model_that_built_the_index() -> None:
    from milco_os.opensearch.search import options_for
    from milco_os.specs import DEFAULT_ALPHA, EARLIER_ALPHAS, SearchOptions

    def record(name: str) -> dict:
        info = dataclasses.replace(model_info(), name=name)
        return index_body(info, IndexSpec())["mappings"]["_meta"]["milco_os"]

    assert EARLIER_ALPHAS["milco-mini@1"] != DEFAULT_ALPHA
    earlier = EARLIER_ALPHAS["milco-mini@1"]
    assert options_for(record("milco-mini@1"), "docs", SearchOptions()).alpha == earlier
    assert options_for(record("milco-mini"), "docs", SearchOptions()).alpha == earlier  # recorded before versions
    assert options_for(record("milco-mini@2"), "docs", SearchOptions()).alpha == DEFAULT_ALPHA
    assert options_for(record("/models/mine"), "docs", SearchOptions()).alpha == DEFAULT_ALPHA
    assert options_for(record("milco-mini@1"), "docs", SearchOptions(alpha=0.9)).alpha == 0.9  # given: kept


def test_an_elasticsearch_index_has_sparse_vector_views_that_never_prune_and_a_float_hnsw_dense_vector() -> None:
    from milco_os.opensearch.engine import ELASTICSEARCH

    body = index_body(with_dense(), IndexSpec(dense=True), ELASTICSEARCH)
    properties = body["mappings"]["properties"]
    for view in ("milco_pivot", "milco_echo"):
        # exact dot products: 8.19's default query-term pruning is off
        assert properties[view] == {"type": "sparse_vector", "index_options": {"prune": False}}
    dense = properties["milco_dense"]
    assert (dense["type"], dense["dims"], dense["similarity"], dense["index_options"]["type"]) == (
        "dense_vector", 4, "cosine", "hnsw")
    assert "knn" not in body["settings"]["index"]  # an OpenSearch setting Elasticsearch refuses
    layout = read_layout(body["mappings"]["_meta"]["milco_os"], "docs")
    assert (layout.engine, layout.sparse) == ("elasticsearch", "sparse_vector")


def test_an_elasticsearch_layout_with_rank_features_is_refused_naming_the_sparse_key() -> None:
    from milco_os.opensearch.engine import ELASTICSEARCH

    meta = index_body(with_dense(), IndexSpec(), ELASTICSEARCH)["mappings"]["_meta"]["milco_os"]
    meta["layout"]["sparse"] = "rank_features"
    with pytest.raises(ModelMismatch, match=r"layout\.sparse is 'rank_features'.*knows sparse_vector"):
        read_layout(meta, "docs")
