"""Passages (pure): the encoder's windows kept apart with their spans, the nested mapping and documents, and the
requests that score a document by its passages."""

from __future__ import annotations

import numpy as np
import pytest

from milco_os.layout import read_layout
from milco_os.opensearch.documents import index_action
from milco_os.opensearch.hybrid import knn_body
from milco_os.opensearch.mapping import index_body, written_fields
from milco_os.opensearch.query import PassageQuery, match_nothing, search_body
from milco_os.opensearch.stats import count_body
from milco_os.runtime.encoder import SparseEncoder
from milco_os.specs import IndexSpec, SearchOptions, TwoPhase
from milco_os.types import DenseInfo, Encoded, ModelInfo, Passage, vocab_from_tokenizer
from tests.unit.helpers import encoded
from tests.unit.test_layout import with_dense
from tests.unit.tiny_models import multilingual_tokenizer


class PieceEncoder(SparseEncoder):
    """A fake runtime: a window's pivot weight of a piece is how often it occurs there, its echo weight 1 per
    position, its dense view one-hot on its first piece (mod 4)."""

    def __init__(self, top_k: int | None = None) -> None:
        tok = multilingual_tokenizer()
        vocab = vocab_from_tokenizer(tok, "pieces")
        info = ModelInfo("fake", "milco", "sha256:fake", vocab, vocab, 8, 12, document_top_k=top_k,
                         dense=DenseInfo("fake-dense", "sha256:dense", 4))
        super().__init__(info, tok)

    def _forward(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pivot = np.zeros((input_ids.shape[0], len(self.info.pivot_vocab)), np.float32)
        for r in range(input_ids.shape[0]):
            np.add.at(pivot[r], input_ids[r][attention_mask[r] > 0], 1.0)
        return pivot, attention_mask.astype(np.float32)

    def _forward_dense(self, input_ids: np.ndarray, attention_mask: np.ndarray):  # noqa: ANN202
        pivot, echo = self._forward(input_ids, attention_mask)
        dense = np.zeros((input_ids.shape[0], 4), np.float32)
        dense[np.arange(input_ids.shape[0]), input_ids[:, 1] % 4] = 1.0
        return pivot, echo, dense


TEXT = ("Tables hold rows and columns. Charts show the data as bars. "
        "Printing sends the pages to a printer. Die Ränder stellt man im Seitenformat ein.")


def test_passages_are_the_windows_with_the_spans_they_cover_and_merge_to_the_document() -> None:
    enc = PieceEncoder()
    passages, short, empty = enc.encode_passages([TEXT, "Tables.", ""], dense=True)
    assert len(passages) > 2 and len(short) == 1 and empty == []
    assert passages[0].start == 0 and passages[-1].end == len(TEXT)
    assert [p.start for p in passages] == sorted(p.start for p in passages)
    for before, after in zip(passages, passages[1:], strict=False):
        assert after.start < before.end  # windows overlap: no text falls between two passages
    ids = enc.tokenizer([TEXT[p.start:p.end] for p in passages], add_special_tokens=False)["input_ids"]
    for p, own in zip(passages, ids, strict=True):  # a passage's pivot view is exactly the pieces of its span
        assert set(p.encoded.pivot.ids.tolist()) == set(own) | set(enc._prefix + enc._suffix)
    merged = enc.encode_documents([TEXT], dense=True)[0]
    pivot: dict[str, float] = {}
    for p in passages:
        for term, weight in p.encoded.pivot.to_terms().items():
            pivot[term] = max(pivot.get(term, 0.0), weight)
    assert pivot == merged.pivot.to_terms()
    mean = sum(p.encoded.dense for p in passages)
    assert np.allclose(mean / np.linalg.norm(mean), merged.dense)
    # The model's own top-k applies to each passage.
    assert all(len(p.encoded.pivot) <= 3 for p in PieceEncoder(top_k=3).encode_passages([TEXT])[0])


def test_an_index_with_passages_nests_the_views_and_says_so_in_its_layout() -> None:
    body = index_body(with_dense(), IndexSpec(passages=True, dense=True, vectors_in_source=False))
    nested = body["mappings"]["properties"]["milco_passages"]
    assert nested["type"] == "nested"
    assert {k: v["type"] for k, v in nested["properties"].items()} == {
        "start": "integer", "end": "integer", "milco_pivot": "rank_features", "milco_echo": "rank_features",
        "milco_dense": "knn_vector"}
    assert "milco_pivot" not in body["mappings"]["properties"]
    assert body["mappings"]["_source"]["excludes"] == [
        "milco_passages.milco_pivot", "milco_passages.milco_echo", "milco_passages.milco_dense"]
    record = body["mappings"]["_meta"]["milco_os"]
    layout = read_layout(record, "docs")
    assert layout.units == "passages" and layout.passages is not None and layout.passages.path == "milco_passages"
    assert layout.dense is not None and layout.dense.field == "milco_passages.milco_dense"
    assert record["fields"]["pivot"] == "milco_passages.milco_pivot"
    assert written_fields(record, "docs") == ["milco_passages"]
    assert written_fields(index_body(with_dense(), IndexSpec(dense=True))["mappings"]["_meta"]["milco_os"], "d") == [
        "milco_pivot", "milco_echo", "milco_dense"]
    with pytest.raises(ValueError, match="passages field"):
        IndexSpec(passages=True, passages_field="a.b")


def test_a_document_with_passages_is_one_nested_object_per_passage() -> None:
    first = Encoded(encoded({"heart": 1.5}).pivot, encoded({}, {"▁Herz": 0.5}).echo, np.array([1.0, 0.0]))
    second = encoded({"tea": 2.0})
    action = index_action("i", "7", {"text": "x"}, [Passage(0, 10, first), Passage(8, 20, second)],
                          pivot_field="p", echo_field="e", dense_field="d", passages_field="milco_passages")
    assert action["_source"] == {"text": "x", "milco_passages": [
        {"start": 0, "end": 10, "p": {"heart": 1.5}, "e": {"▁Herz": 0.5}, "d": [1.0, 0.0]},
        {"start": 8, "end": 20, "p": {"tea": 2.0}}]}


PASSAGES = PassageQuery("milco_passages", "max", name="sparse")
FIELDS = {"pivot_field": "milco_passages.p", "echo_field": "milco_passages.e"}


def test_a_query_scores_documents_by_their_passages_with_filters_and_bm25_outside() -> None:
    from milco_os.opensearch.query import Hybrid

    query = encoded({"heart": 2.0}, {"▁Herz": 1.0})
    body = search_body(query, **FIELDS, alpha=0.5, filters=[{"term": {"lang": "de"}}], passages=PASSAGES,
                       hybrid=Hybrid("Herz", ("text",), 0.3))
    nested, bm25 = body["query"]["bool"]["should"]
    assert body["query"]["bool"]["filter"] == [{"term": {"lang": "de"}}]
    assert nested["nested"]["path"] == "milco_passages" and nested["nested"]["score_mode"] == "max"
    clauses = nested["nested"]["query"]["bool"]["should"]
    assert {c["rank_feature"]["field"] for c in clauses} == {"milco_passages.p.heart", "milco_passages.e.▁Herz"}
    assert nested["nested"]["inner_hits"] == {"name": "sparse", "size": 1,
                                              "_source": ["milco_passages.start", "milco_passages.end"]}
    assert bm25["multi_match"]["boost"] == 0.3
    # A query without terms still matches nothing.
    assert search_body(Encoded(encoded({}).pivot, encoded({}).echo), **FIELDS, passages=PASSAGES)["query"] == (
        match_nothing())


def test_two_phase_on_passages_rescores_the_window_with_the_full_query() -> None:
    query = encoded({"heart": 2.0, "tea": 0.1}, {})
    body = search_body(query, **FIELDS, alpha=1.0, two_phase=TwoPhase(split="weight"), passages=PASSAGES)
    first = body["query"]["bool"]["should"][0]["nested"]["query"]["bool"]["should"]
    assert [c["rank_feature"]["field"] for c in first] == ["milco_passages.p.heart"]
    rescore = body["rescore"]["query"]
    assert (rescore["query_weight"], rescore["rescore_query_weight"]) == (0.0, 1.0)
    full = rescore["rescore_query"]["bool"]["should"][0]["nested"]
    assert len(full["query"]["bool"]["should"]) == 2 and "inner_hits" not in full


def test_the_dense_list_on_passages_is_a_nested_knn_with_the_filters_outside() -> None:
    dense = PassageQuery("milco_passages", name="dense")
    body = knn_body([1.0, 0.0], "milco_passages.d", 50, [{"term": {"lang": "de"}}], None, passages=dense)
    nested = body["query"]["bool"]["must"][0]["nested"]
    assert nested["query"] == {"knn": {"milco_passages.d": {"vector": [1.0, 0.0], "k": 50}}}
    assert nested["inner_hits"]["name"] == "dense" and body["query"]["bool"]["filter"] == [{"term": {"lang": "de"}}]


def test_document_frequencies_on_passages_count_passages() -> None:
    body = count_body("milco_passages.p", "tea", "milco_passages")
    assert body["aggs"]["passages"]["nested"] == {"path": "milco_passages"}
    holding = body["aggs"]["passages"]["aggs"]["holding"]
    assert holding == {"filter": {"rank_feature": {"field": "milco_passages.p.tea"}}}


def test_a_passage_score_other_than_max_sum_or_avg_is_refused() -> None:
    with pytest.raises(ValueError, match="passage score 'median'"):
        SearchOptions(passage_score="median")
