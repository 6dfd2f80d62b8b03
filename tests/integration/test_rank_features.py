"""OpenSearch's own inverted index computes our scores: rank_feature/linear clauses with per-term boosts
sum to the exact dot product (within Lucene's stored-feature precision)."""

from __future__ import annotations

import random

import pytest

# Lucene stores feature values with 9 significant bits (~0.4% relative error).
FEATURE_PRECISION = 0.005


def test_linear_rank_feature_scores_equal_dot_products(client, index_name: str) -> None:
    client.indices.create(
        index=index_name,
        body={
            "settings": {"number_of_shards": 1, "number_of_replicas": 0},
            "mappings": {"properties": {"vec": {"type": "rank_features"}}},
        },
    )
    rng = random.Random(7)
    vocabulary = [f"term{i}" for i in range(40)] + ["u%2Es%2E", "▁Hund", "心臓", "##ing"]
    docs = {
        f"d{i}": {t: round(rng.uniform(0.01, 5.0), 4) for t in rng.sample(vocabulary, rng.randint(3, 15))}
        for i in range(60)
    }
    for doc_id, features in docs.items():
        client.index(index=index_name, id=doc_id, body={"vec": features})
    client.indices.refresh(index=index_name)

    query = {t: round(rng.uniform(0.05, 3.0), 3) for t in rng.sample(vocabulary, 12)}
    body = {
        "size": 100,
        "query": {
            "bool": {
                "should": [
                    {"rank_feature": {"field": f"vec.{t}", "linear": {}, "boost": w}} for t, w in query.items()
                ]
            }
        },
    }
    hits = client.search(index=index_name, body=body)["hits"]["hits"]

    expected = {
        doc_id: sum(w * features[t] for t, w in query.items() if t in features) for doc_id, features in docs.items()
    }
    matching = {d for d, s in expected.items() if s > 0}
    assert {h["_id"] for h in hits} == matching
    for h in hits:
        assert h["_score"] == pytest.approx(expected[h["_id"]], rel=FEATURE_PRECISION), h["_id"]
    # Ranking: OpenSearch's order agrees with the exact scores wherever they differ by more than precision.
    scores = [expected[h["_id"]] for h in hits]
    for better, worse in zip(scores, scores[1:], strict=False):
        assert better >= worse * (1 - 2 * FEATURE_PRECISION)
    assert scores[0] == max(expected.values())
