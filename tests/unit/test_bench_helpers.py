"""The benchmark scripts' pure parts: percentiles, the corpus sampler, the encodings cache format,
request bodies per latency variant, and the Pareto front of the quality chart."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import common  # noqa: E402
import evaluate  # noqa: E402
import growth  # noqa: E402
import latency  # noqa: E402
import quality  # noqa: E402

from milco_os.datasets.libreoffice import Page  # noqa: E402
from milco_os.opensearch import measure  # noqa: E402
from milco_os.types import Encoded, SparseVector, Vocab  # noqa: E402

VOCAB = Vocab("test", tuple(f"t{i}" for i in range(100)))


def vec(weights: dict[int, float]) -> SparseVector:
    return SparseVector(np.array(list(weights), dtype=np.int64), np.array(list(weights.values()), np.float32), VOCAB)


def test_nearest_rank_percentiles() -> None:
    values = [float(v) for v in range(100, 0, -1)]  # 1..100, unsorted
    assert common.percentile(values, 50) == 50
    assert common.percentile(values, 99) == 99
    assert common.percentile(values, 100) == 100
    assert common.percentile([7.0], 99) == 7
    summary = common.summary_ms(values)
    assert summary["p50"] <= summary["p95"] <= summary["p99"]
    with pytest.raises(ValueError, match="empty"):
        common.percentile([], 50)


def test_paragraph_corpus_is_distinct_round_robin_and_deterministic() -> None:
    long = "a paragraph long enough to count"
    pages = {
        "de": {"a.html": Page("a.html", "de", "T", {"p1": long + " de1", "p2": long + " de1", "p3": "short"}),
               "b.html": Page("b.html", "de", "T", {"p1": long + " de2"})},
        "fr": {"a.html": Page("a.html", "fr", "T", {"p1": long + " fr1", "p2": long + " fr2"})},
    }
    docs = common.paragraph_corpus(pages, 4)
    assert len({d.text for d in docs}) == 4  # duplicates and short labels left out
    assert [d.lang for d in docs] == ["de", "fr", "de", "fr"]
    assert docs == common.paragraph_corpus(pages, 4)
    assert all(d.id.startswith(f"{d.lang}:") and "#" in d.id for d in docs)
    with pytest.raises(SystemExit, match="only 4 distinct paragraphs"):
        common.paragraph_corpus(pages, 5)


def test_encodings_survive_the_cache_format() -> None:
    encoded = [Encoded(vec({3: 0.5, 7: 1.25}), vec({1: 2.0})), Encoded(vec({}), vec({}))]
    encoder = SimpleNamespace(info=SimpleNamespace(pivot_vocab=VOCAB, echo_vocab=VOCAB))
    back = common.unpack(common.pack(encoded), encoder)
    assert [e.pivot.to_terms() for e in back] == [e.pivot.to_terms() for e in encoded]
    assert [e.echo.to_terms() for e in back] == [e.echo.to_terms() for e in encoded]
    assert common.mean_terms(encoded) == {"pivot": 1.0, "echo": 0.5, "total": 1.5}


def test_prune_all_takes_one_rule_or_one_per_view() -> None:
    encoded = [Encoded(vec({1: 1.0, 2: 2.0, 3: 3.0}), vec({4: 1.0, 5: 0.5}))]
    both = common.prune_all(encoded, "top_k:1")
    assert both[0].pivot.to_terms() == {"t3": 3.0} and both[0].echo.to_terms() == {"t4": 1.0}
    pivot_only = common.prune_all(encoded, "top_k:2,none")
    assert set(pivot_only[0].pivot.to_terms()) == {"t2", "t3"} and len(pivot_only[0].echo) == 2
    with pytest.raises(ValueError, match="invalid pruning"):
        common.prune_all(encoded, "top_k:0")


def test_measure_request_builders() -> None:
    body = measure.text_index_body()
    assert body == {"settings": {"index": {"number_of_shards": 1, "number_of_replicas": 0}},
                    "mappings": {"properties": {"text": {"type": "text"}}}}
    assert set(measure.text_index_body(["title", "text"])["mappings"]["properties"]) == {"title", "text"}
    assert measure.match_body("words", 5) == {"query": {"match": {"text": "words"}}, "size": 5}
    sent = json.loads(measure.timed_request({"query": {"match_all": {}}, "size": 3, "_source": True}))
    assert sent == {"query": {"match_all": {}}, "size": 3, "_source": False, "track_total_hits": False}
    assert "ü" in measure.timed_request(measure.match_body("Tabelle einfügen", 1))  # sent as UTF-8, not escaped


def test_latency_variants_build_the_intended_requests() -> None:
    weights = {i: float(i + 1) for i in range(40)}
    query = Encoded(vec(weights), vec({1: 1.0, 2: 0.2}))
    corpus = [Encoded(vec({i: 1.0 for i in range(n)}), vec({1: 1.0})) for n in (5, 20, 40)]  # term i in few docs
    stats = latency.ArrayStats(corpus, 64, 64)
    bodies, terms = latency.variant_bodies([common.Doc("q0", "some words", "en-us")], [query], stats, size=10)
    parsed = {name: json.loads(b[0]) for name, b in bodies.items()}
    assert parsed["bm25 match"]["query"] == {"match": {"text": "some words"}}
    assert all(body["_source"] is False and body["size"] == 10 for body in parsed.values())
    assert len(parsed["milco full"]["query"]["bool"]["should"]) == 42
    assert len(parsed["milco q-top_k:8"]["query"]["bool"]["should"]) == 8 + 2
    assert terms["milco q-top_k:8"] == {"pivot": 8.0, "echo": 2.0, "total": 10.0}
    # selective: terms 0-4 are in all 3 documents (value w * ln 2), 20-39 in one (w * ln 4): at 0.5 of the best
    # (40 * ln 4) the terms of weight >= 20 stay (20-39); echo term 2 is in no document.
    assert terms["milco q-selective:0.5"] == {"pivot": 20.0, "echo": 1.0, "total": 21.0}
    assert "rescore" in parsed["milco two-phase"] and "rescore" not in parsed["milco full"]
    hybrid_clauses = parsed["milco hybrid"]["query"]["bool"]["should"]
    assert {"multi_match": {"query": "some words", "fields": ["text"], "boost": 1.0}} in hybrid_clauses


def test_pareto_front_keeps_only_undominated_points() -> None:
    def point(terms: float, ms: float, ndcg: float) -> dict:
        return {"doc_terms": {"total": terms}, "latency_ms": {"p50": ms}, "ndcg@10": ndcg}

    a, b, c, d = point(10, 5, 0.30), point(20, 1, 0.35), point(30, 2, 0.32), point(40, 3, 0.40)
    assert quality.pareto([d, c, b, a], "doc_terms") == [a, b, d]
    assert quality.pareto([d, c, b, a], "latency") == [b, d]


def test_interleaved_runs_rotate_the_variants_and_keep_the_first_rounds_ranking() -> None:
    sent: list[str] = []

    class Client:
        def search(self, index: str, body: str, filter_path: str) -> dict:
            sent.append(body)
            return {"took": 1, "hits": {"hits": [{"_id": f"{body}/{len(sent)}"}]}}

    variants = {"a": ["a0", "a1", "a2"], "b": ["b0", "b1", "b2"]}
    results = measure.run_interleaved(Client(), "i", variants, concurrency=1, repeat=2)
    assert sent[:6] == ["a0", "b0", "b1", "a1", "a2", "b2"] and sent[6:] == sent[:6]
    assert all(len(r.client_ms) == 6 and len(r.took_ms) == 6 for r in results.values())
    assert [ids[0].split("/")[0] for ids in results["b"].ranked] == ["b0", "b1", "b2"]
    assert all(int(ids[0].split("/")[1]) <= 6 for ids in results["a"].ranked), "ranking from the first round"
    assert results["a"].qps == pytest.approx(1000 * 6 / sum(results["a"].client_ms))


def test_growth_corpus_serves_real_documents_then_deterministic_perturbed_copies() -> None:
    docs = [common.Doc("a", "eins zwei drei vier fünf sechs sieben acht", "de"),
            common.Doc("b", "表を挿入する方法", "ja")]
    encoded = [Encoded(vec({i: float(i + 1) for i in range(30)}), vec({1: 1.0, 2: 3.0})),
               Encoded(vec({5: 2.0}), vec({}))]
    corpus = growth.Corpus(docs, encoded, 50)
    assert len(corpus) == 50 and corpus[1] == (docs[1], encoded[1])
    copies = [corpus[j] for j in range(2, 50)]
    assert [c[0].id for c in copies] == [corpus[j][0].id for j in range(2, 50)], "deterministic"
    assert all(c[0].id.startswith(f"copy{j}:") for j, c in enumerate(copies, 2))
    for doc, enc in copies:
        source_doc, source = (docs[0], encoded[0]) if doc.id.endswith(":a") else (docs[1], encoded[1])
        assert set(enc.pivot.ids.tolist()) <= set(source.pivot.ids.tolist())
        assert int(source.pivot.ids[np.argmax(source.pivot.weights)]) in enc.pivot.ids.tolist(), "heaviest kept"
        assert doc.text and set(doc.text) <= set(source_doc.text) and len(doc.text) <= len(source_doc.text)
    kept = [len(c[1].pivot) for c in copies if c[0].id.endswith(":a")]
    assert 0.6 * 30 < np.mean(kept) < 0.95 * 30, "about 80% of the terms stay"


def test_an_evaluation_report_is_stale_when_a_model_it_measured_loads_with_another_fingerprint() -> None:
    def system(kind: str, reference: str | None, fingerprint: str) -> dict:
        model = {"name": reference or "e5", "fingerprint": fingerprint}
        if reference:
            model["reference"] = reference
        return {"kind": kind, "config": {"model": model}}

    report = {"systems": [{"kind": "bm25", "config": {"analyzer": "language"}}, system("dense", None, "sha256:e5"),
                          system("sparse", "milco-mini", "sha256:v1"), system("fused", "milco-mini", "sha256:v1"),
                          system("sparse", "splade-tiny", "sha256:st")]}
    run = evaluate.RUNS["titles-clir-dev"]
    assert run.models == ("milco-mini", "splade-tiny")

    def loaded(**fingerprints: str) -> dict:  # what load would give; load itself is never called when preloaded
        return {name.replace("_", "-"): SimpleNamespace(info=SimpleNamespace(fingerprint=f))
                for name, f in fingerprints.items()}

    def no_load(*_: object) -> None:
        pytest.fail("loaded a model that was already loaded")

    same = loaded(milco_mini="sha256:v1", splade_tiny="sha256:st")
    assert evaluate.changed_models(report, run, same, Path("."), no_load) == []
    new = loaded(milco_mini="sha256:v2", splade_tiny="sha256:st")
    assert evaluate.changed_models(report, run, new, Path("."), no_load) == ["milco-mini"]
