"""Each engine computes milco-os scores exactly: alpha-weighted pivot + echo dot products, two-phase
rescoring, explanations (OpenSearch's rank_features and Elasticsearch's sparse_vector alike)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from milco_os.opensearch.documents import index_action
from milco_os.opensearch.engine import engine_of
from milco_os.opensearch.mapping import index_body
from milco_os.opensearch.query import (
    TwoPhase,
    contributions_from_explanation,
    search_body,
    term_contributions,
)
from milco_os.specs import PLUGIN_TWO_PHASE, IndexSpec
from milco_os.types import Encoded, ModelInfo, SparseVector, Vocab

PRECISION = 0.005  # Lucene keeps 9 significant bits of a feature value
PIVOT = Vocab("pivot", tuple([f"w{i}" for i in range(300)] + ["u.s.", "##.", ".net", "100%", "a%2Eb"]))
ECHO = Vocab("echo", tuple([f"▁p{i}" for i in range(300)] + ["▁Herz", "心臓", "🙂", "▁."]))
INFO = ModelInfo("random", "milco", "sha256:random", PIVOT, ECHO)


def random_vector(rng: random.Random, vocab: Vocab, n: int) -> SparseVector:
    ids = np.array(rng.sample(range(len(vocab)), n), dtype=np.int64)
    weights = np.array([rng.uniform(0.01, 3.0) for _ in ids], dtype=np.float32)
    return SparseVector(ids, weights, vocab)


def build_index(client, name: str, rng: random.Random, n_docs: int = 150) -> dict[str, Encoded]:  # noqa: ANN001
    client.indices.create(index=name, body=index_body(INFO, IndexSpec(replicas=0), engine_of(client)))
    docs = {
        f"d{i}": Encoded(random_vector(rng, PIVOT, rng.randint(5, 60)), random_vector(rng, ECHO, rng.randint(0, 20)))
        for i in range(n_docs)
    }
    lines = []
    for doc_id, enc in docs.items():
        action = index_action(name, doc_id, {"text": doc_id}, enc, pivot_field="milco_pivot", echo_field="milco_echo")
        lines.append({"index": {"_index": name, "_id": doc_id}})
        lines.append(action["_source"])
    client.bulk(body=lines, refresh=True)
    return docs


def views(client) -> dict:  # noqa: ANN001
    """The search builders' view arguments for an index of :func:`build_index` in ``client``'s engine."""
    return {"pivot_field": "milco_pivot", "echo_field": "milco_echo", "engine": engine_of(client)}


def exact(q: Encoded, d: Encoded, alpha: float) -> float:
    return alpha * q.pivot.dot(d.pivot) + (1 - alpha) * q.echo.dot(d.echo)


@pytest.mark.parametrize("alpha", [0.5, 0.2, 1.0])
def test_scores_equal_weighted_dot_products(engine_client, engine_index: str, alpha: float) -> None:
    rng = random.Random(11)
    docs = build_index(engine_client, engine_index, rng)
    for _ in range(5):
        q = Encoded(random_vector(rng, PIVOT, 40), random_vector(rng, ECHO, 8))
        body = search_body(q, **views(engine_client), alpha=alpha, size=200)
        hits = engine_client.search(index=engine_index, body=body)["hits"]["hits"]
        expected = {doc_id: exact(q, d, alpha) for doc_id, d in docs.items()}
        assert {h["_id"] for h in hits} == {k for k, v in expected.items() if v > 0}
        for h in hits:
            assert h["_score"] == pytest.approx(expected[h["_id"]], rel=PRECISION)
        ranked = [expected[h["_id"]] for h in hits]
        assert all(a >= b * (1 - 2 * PRECISION) for a, b in zip(ranked, ranked[1:], strict=False))


@pytest.mark.parametrize("two_phase", [TwoPhase(), PLUGIN_TWO_PHASE], ids=["by value", "by weight"])
def test_two_phase_gives_the_same_top_10_and_scores(engine_client, engine_index: str, two_phase: TwoPhase) -> None:
    from milco_os.opensearch.stats import IndexTermStats

    rng = random.Random(5)
    build_index(engine_client, engine_index, rng, n_docs=300)
    stats = IndexTermStats(engine_client, engine_index, engine_client.indices.get_mapping(
        index=engine_index)[engine_index]["mappings"]["_meta"]["milco_os"])
    for _ in range(5):
        q = Encoded(random_vector(rng, PIVOT, 60), random_vector(rng, ECHO, 10))
        full = search_body(q, **views(engine_client), size=10)
        two = search_body(q, **views(engine_client), size=10, two_phase=two_phase,
                          stats=stats)
        assert "rescore" in two and len(two["query"]["bool"]["should"]) < len(full["query"]["bool"]["should"])
        a = engine_client.search(index=engine_index, body=full)["hits"]["hits"]
        b = engine_client.search(index=engine_index, body=two)["hits"]["hits"]
        assert [h["_id"] for h in a] == [h["_id"] for h in b]
        for x, y in zip(a, b, strict=True):
            assert y["_score"] == pytest.approx(x["_score"], rel=1e-4)


def test_explanations_from_source_and_from_the_engine_agree(engine_client, engine_index: str) -> None:
    rng = random.Random(3)
    build_index(engine_client, engine_index, rng, n_docs=60)
    q = Encoded(random_vector(rng, PIVOT, 80), random_vector(rng, ECHO, 15))
    body = search_body(q, **views(engine_client), alpha=0.4, size=5, explain=True)
    for hit in engine_client.search(index=engine_index, body=body)["hits"]["hits"]:
        stored = term_contributions(q, hit["_source"], alpha=0.4, pivot_field="milco_pivot", echo_field="milco_echo")
        explained = contributions_from_explanation(hit["_explanation"], alpha=0.4, **views(engine_client))
        assert {(t.view, t.term) for t in stored} == {(t.view, t.term) for t in explained}
        assert sum(t.contribution for t in explained) == pytest.approx(hit["_score"], rel=1e-5)
        assert sum(t.contribution for t in stored) == pytest.approx(hit["_score"], rel=PRECISION)
        by_term = {(t.view, t.term): t for t in explained}
        for t in stored:
            assert by_term[(t.view, t.term)].query_weight == pytest.approx(t.query_weight, rel=1e-5)
            assert by_term[(t.view, t.term)].document_weight == pytest.approx(t.document_weight, rel=PRECISION)
