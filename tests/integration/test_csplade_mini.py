"""csplade-mini (CSPLADE on the package-shipped SmolLM2-135M + the committed LoRA delta) end to end: the CLI
prints English terms, its own default pruning holds, and OpenSearch's inverted index retrieves with it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from milco_os.opensearch.indices import create_index
from milco_os.opensearch.ingest import Ingester
from milco_os.opensearch.search import search
from milco_os.specs import SearchOptions

DOCS = [
    {"id": "toc", "text": "To insert a table of contents, choose Insert - Table of Contents and Index. The table of "
                          "contents lists the headings of the document with their page numbers."},
    {"id": "chart", "text": "A chart shows the values of a spreadsheet range as bars, lines or pie slices. "
                            "Double-click the chart to edit its axes, legend and colours."},
    {"id": "print", "text": "Printing a document: choose File - Print, select the printer and the page range, and set "
                            "the number of copies."},
]


@pytest.fixture(scope="module")
def csplade_mini(cache_dir):  # noqa: ANN001, ANN201
    from milco_os.loading import load_encoder

    return load_encoder("csplade-mini", cache_dir)


def test_encode_cli_prints_english_terms(cache_dir) -> None:  # noqa: ANN001
    result = subprocess.run(
        [sys.executable, "-m", "milco_os.cli", "encode", "--model", "csplade-mini", "--cache-dir", str(cache_dir),
         "--kind", "document", DOCS[0]["text"]],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    terms = list(json.loads(result.stdout.strip())["pivot"])
    # Readable: a word's first piece as the word, a piece inside a word marked ##, never byte-level markers.
    assert not any("\u0120" in t or "\u00c3" in t for t in terms), terms[:20]
    words = {t.lower() for t in terms[:20]}
    assert len({"table", "contents", "headings", "insert", "index"} & words) >= 2, terms[:20]


def test_default_pruning_and_retrieval_through_opensearch(csplade_mini, client, index_name) -> None:  # noqa: ANN001
    info = csplade_mini.info
    assert info.family == "csplade" and info.document_top_k and info.query_top_k
    encoded = csplade_mini.encode_documents([d["text"] for d in DOCS])
    assert all(0 < len(e.pivot) <= info.document_top_k for e in encoded)
    create_index(client, index_name, info)
    report = Ingester(client, index_name, csplade_mini).run(DOCS, refresh=True)
    assert report.indexed == len(DOCS) and not report.failed
    for query, wanted in (("table of contents", "toc"), ("bar chart legend", "chart"), ("File Print printer", "print")):
        hits = search(client, index_name, query, csplade_mini, SearchOptions(size=3, explain=True)).hits
        assert hits and hits[0].id == wanted, (query, [h.id for h in hits])
        assert hits[0].terms and not any("\u0120" in t.term for t in hits[0].terms)  # explain reads as words too


def test_onnx_int8_is_refused_with_its_reason(cache_dir) -> None:  # noqa: ANN001
    """onnxruntime's dynamic int8 ruins csplade-mini's terms (docs/csplade.md): refused before anything loads."""
    for args in (["encode", "--model", "csplade-mini", "--runtime", "onnx", "--quantize", "int8", "x"],
                 ["export-onnx", "--model", "csplade-mini", "--quantize", "int8", "--out", str(cache_dir / "never")]):
        result = subprocess.run([sys.executable, "-m", "milco_os.cli", *args, "--cache-dir", str(cache_dir)],
                                capture_output=True, text=True, timeout=600)
        assert result.returncode != 0
        assert "int8 is refused for csplade models" in result.stderr and "fp16" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert not (cache_dir / "never").exists()


def test_a_question_leads_with_its_content_words(csplade_mini) -> None:  # noqa: ANN001
    """Issue 34's example: version 1 answered it with `is, does, happens, causes, are` and no `heart`."""
    from milco_os.evaluation.function_words import is_function_term

    top5 = list(csplade_mini.encode_queries(["what causes heart attacks"])[0].pivot.readable_terms())[:5]
    assert not any(is_function_term(t) for t in top5), top5
    assert "heart" in {t.lower() for t in top5}, top5
