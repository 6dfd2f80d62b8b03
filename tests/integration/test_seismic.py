"""SEISMIC indices on a real OpenSearch 3.x node with neural-search: the approximate path is what runs, its results
agree with the exact index's, explain shows the matched terms, reindex moves into and out of it, BM25 joins it (summed
or fused), and what cannot work is refused with one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from milco_os.errors import ConfigError
from milco_os.layout import Seismic, SeismicQuery, read_layout
from milco_os.opensearch.indices import create_index, index_record
from milco_os.opensearch.ingest import ingest
from milco_os.opensearch.reindex import reindex
from milco_os.opensearch.search import query_request, search
from milco_os.settings import Settings
from milco_os.specs import IndexSpec, SearchOptions, TwoPhase

DATA = Path(__file__).resolve().parents[2] / "milco_os" / "data"
#: Every segment approximate (milco-os's default), so the test runs SEISMIC's own path on a few documents.
SEISMIC = Seismic()


def demo_documents() -> list[dict]:
    return [json.loads(line) for line in (DATA / "demo_documents.jsonl").read_text(encoding="utf-8").splitlines()]


def demo_queries() -> list[str]:
    return [q["text"] for q in json.loads((DATA / "demo_queries.json").read_text(encoding="utf-8"))]


@pytest.fixture(scope="module")
def seismic_settings(seismic_url: str, cache_dir: Path) -> Settings:
    return Settings(opensearch_url=seismic_url, cache_dir=cache_dir, model="milco-mini")


@pytest.fixture(scope="module")
def seismic_client(seismic_settings: Settings):  # noqa: ANN201
    from milco_os.opensearch.client import make_client

    return make_client(seismic_settings)


@pytest.fixture(scope="module")
def milco_mini(cache_dir: Path):  # noqa: ANN201
    from milco_os.loading import load_encoder

    return load_encoder("milco-mini", cache_dir)


def built(client, encoder, spec: IndexSpec) -> str:  # noqa: ANN001
    name = f"test-seismic-{uuid.uuid4().hex[:10]}"
    create_index(client, name, encoder.info, spec)
    report = ingest(client, name, demo_documents(), encoder, refresh=True)
    assert report.indexed == len(demo_documents())
    client.indices.forcemerge(index=name, max_num_segments=1)  # one segment: SEISMIC's clustered postings
    client.indices.refresh(index=name)
    return name


@pytest.fixture(scope="module")
def pair(seismic_client, milco_mini) -> Iterator[tuple[str, str]]:  # noqa: ANN001
    """(an exact index, a SEISMIC index) of the demo documents, on the same node."""
    spec = IndexSpec(text_fields=("title", "text"), replicas=0)
    names = (built(seismic_client, milco_mini, spec), built(seismic_client, milco_mini, IndexSpec(
        text_fields=("title", "text"), replicas=0, seismic=SEISMIC)))
    yield names
    for name in names:
        seismic_client.indices.delete(index=name, ignore_unavailable=True)


def test_layout_and_mapping(seismic_client, pair) -> None:  # noqa: ANN001
    _, approx = pair
    record = index_record(seismic_client, approx)
    layout = read_layout(record, approx)
    assert (layout.retrieval, layout.sparse, layout.pivot_keys) == ("seismic", "sparse_vector", "ids")
    assert layout.seismic == SEISMIC
    props = seismic_client.indices.get_mapping(index=approx)[approx]["mappings"]["properties"]
    assert props["milco_pivot"]["type"] == "sparse_vector"
    assert props["milco_pivot"]["method"]["name"] == "seismic"
    assert props["milco_echo"]["type"] == "rank_features"  # echo ids exceed what sparse_vector takes
    stored = seismic_client.get(index=approx, id="heart-en")["_source"]["milco_pivot"]
    assert stored and all(key.isdigit() and int(key) < 30522 for key in stored)


def test_seismic_finds_what_the_exact_query_finds(seismic_client, milco_mini, pair) -> None:  # noqa: ANN001
    exact, approx = pair
    full = SearchOptions(size=5)
    overlaps = []
    for text in demo_queries():
        truth = [h.id for h in search(seismic_client, exact, text, milco_mini, full).hits]
        found = search(seismic_client, approx, text, milco_mini, full)
        overlaps.append(len(set(truth) & {h.id for h in found.hits}) / len(truth))
        assert "neural_sparse" in json.dumps(found.body["query"])  # SEISMIC, not an exact clause
        assert found.hits[0].id == truth[0], text  # the best page is the same
    assert sum(overlaps) / len(overlaps) >= 0.9


def test_approximate_path_runs(seismic_client, milco_mini) -> None:  # noqa: ANN001
    """With one document per posting list SEISMIC keeps one holder per term, so it finds fewer documents than an
    exact search could: proof that the approximate index, not a brute-force scan, answered."""
    name = built(seismic_client, milco_mini, IndexSpec(text_fields=("title", "text"), replicas=0,
                                                       seismic=Seismic(n_postings=1)))
    try:
        options = SearchOptions(size=30, alpha=1.0)  # the pivot view only: SEISMIC's part
        pivot_hits = len(search(seismic_client, name, "heart attack", milco_mini, options).hits)
        wide = Seismic()
        other = built(seismic_client, milco_mini, IndexSpec(text_fields=("title", "text"), replicas=0, seismic=wide))
        try:
            assert pivot_hits < len(search(seismic_client, other, "heart attack", milco_mini, options).hits)
        finally:
            seismic_client.indices.delete(index=other)
    finally:
        seismic_client.indices.delete(index=name)


@pytest.mark.parametrize("in_source", [True, False])
def test_explain(seismic_client, milco_mini, in_source: bool) -> None:  # noqa: ANN001
    name = built(seismic_client, milco_mini, IndexSpec(text_fields=("title", "text"), replicas=0, seismic=SEISMIC,
                                                       vectors_in_source=in_source))
    try:
        result = search(seismic_client, name, "Herzinfarkt", milco_mini, SearchOptions(size=3, explain=True))
        top = result.hits[0]
        assert top.id.startswith("heart-")
        views = {t.view for t in top.terms}
        assert "pivot" in views  # the SEISMIC view's terms, named as words, not ids
        assert all(not t.term.isdigit() for t in top.terms if t.view == "pivot")
        # The terms add up to the hit's score: exactly from the stored vectors, within SEISMIC's byte
        # quantisation from its explanation.
        assert sum(t.contribution for t in top.terms) == pytest.approx(top.score, rel=0.05)
    finally:
        seismic_client.indices.delete(index=name)


def test_hybrid_fusion_and_filters(seismic_client, milco_mini, pair) -> None:  # noqa: ANN001
    _, name = pair
    hybrid = search(seismic_client, name, "volcano", milco_mini, SearchOptions(size=4, hybrid_weight=1.0))
    assert "multi_match" in json.dumps(hybrid.body["rescore"])  # BM25 joins the rescored window
    assert hybrid.hits[0].id.startswith("volcano-")
    fused = search(seismic_client, name, "Vulkanausbruch", milco_mini,
                   SearchOptions(size=4, hybrid_weight=1.0, hybrid_norm="rrf"))
    assert set(fused.lists) == {"sparse", "bm25"} and fused.hits[0].id.startswith("volcano-")
    only_de = SearchOptions(size=10, filters=({"term": {"lang": "de"}},))
    hits = search(seismic_client, name, "volcano", milco_mini, only_de).hits
    assert hits and all(h.source["lang"] == "de" for h in hits)
    printed = query_request(seismic_client, name, "volcano", milco_mini, SearchOptions())
    assert "neural_sparse" in json.dumps(printed)


def test_reindex_into_and_out_of_seismic(seismic_client, milco_mini, pair, tmp_path: Path) -> None:  # noqa: ANN001
    exact, _ = pair
    approx, back = (f"test-seismic-{uuid.uuid4().hex[:10]}" for _ in range(2))
    alias = f"test-alias-{uuid.uuid4().hex[:8]}"
    try:
        spec = IndexSpec(text_fields=("title", "text"), replicas=0, seismic=SEISMIC)
        report = reindex(seismic_client, exact, approx, milco_mini, spec=spec, checkpoint_path=tmp_path / "in.json",
                         alias=alias)
        assert report.verified and report.dest_count == len(demo_documents())
        assert read_layout(index_record(seismic_client, alias), alias).retrieval == "seismic"
        seismic_client.indices.refresh(index=approx)
        assert search(seismic_client, alias, "heart attack", milco_mini).hits[0].id.startswith("heart-")
        out = IndexSpec(text_fields=("title", "text"), replicas=0)
        report = reindex(seismic_client, alias, back, milco_mini, spec=out, checkpoint_path=tmp_path / "out.json",
                         alias=alias)
        assert report.verified and report.dest_count == len(demo_documents())
        assert read_layout(index_record(seismic_client, alias), alias).retrieval == "exact"
    finally:
        seismic_client.indices.delete(index=f"{approx},{back}", ignore_unavailable=True)


def test_refusals(seismic_client, milco_mini, pair, client) -> None:  # noqa: ANN001
    _, approx = pair
    with pytest.raises(ConfigError, match="--two-phase"):
        search(seismic_client, approx, "x", milco_mini, SearchOptions(two_phase=TwoPhase()))
    with pytest.raises(ConfigError, match="selective"):
        from milco_os.pruning import Pruning

        search(seismic_client, approx, "x", milco_mini, SearchOptions(query_pruning=Pruning.parse("selective:0.5")))
    with pytest.raises(ConfigError, match="not a SEISMIC index"):
        search(seismic_client, pair[0], "x", milco_mini, SearchOptions(seismic=SeismicQuery(k=5)))
    with pytest.raises(ConfigError, match="--passages"):
        create_index(seismic_client, "never-made", milco_mini.info, IndexSpec(passages=True, seismic=SEISMIC))
    with pytest.raises(ConfigError, match="--dense: OpenSearch refuses"):
        create_index(seismic_client, "never-made", milco_mini.info, IndexSpec(dense=True, seismic=SEISMIC))


def test_cli_create_search_and_bad_input(seismic_url: str, cache_dir: Path) -> None:
    """The README's three commands, and bad input: one line naming the fix, non-zero exit."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MILCO_OS_")}
    env |= {"MILCO_OS_CACHE_DIR": str(cache_dir), "MILCO_OS_OPENSEARCH_URL": seismic_url}
    name = f"test-seismic-{uuid.uuid4().hex[:10]}"

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "milco_os.cli", *args], capture_output=True, text=True, env=env,
                              timeout=300)

    try:
        assert cli("index", "create", name, "--ann", "seismic", "--replicas", "0").returncode == 0
        assert cli("ingest", "--index", name, str(DATA / "demo_documents.jsonl")).returncode == 0
        found = cli("search", "--index", name, "Herzinfarkt", "--json", "--ann-param", "heap_factor=1.2")
        assert found.returncode == 0, found.stderr
        assert json.loads(found.stdout)["hits"][0]["id"].startswith("heart-")
        for args, needle in ((("index", "create", name + "-x", "--ann", "seismic", "--ann-param", "n_post=3"),
                              "n_postings"),
                             (("index", "create", name + "-x", "--ann", "hnsw"), "choose seismic"),
                             (("search", "--index", name, "x", "--ann-param", "k=0"), "k must be >= 1")):
            bad = cli(*args)
            assert bad.returncode != 0 and needle in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    finally:
        cli("index", "delete", name, "--yes")


def test_seismic_needs_a_node_that_has_it(client, milco_mini, index_name: str) -> None:  # noqa: ANN001
    """On the suite's own node: refused with one line naming the fix below OpenSearch 3.3 or without neural-search
    (the 2.x suite), created where both are there (the 3.x suite, whose node has neural-search)."""
    version = client.info()["version"]["number"]
    plugins = {row["component"] for row in client.cat.plugins(format="json")}
    spec = IndexSpec(replicas=0, seismic=SEISMIC)
    if version.startswith("2."):
        with pytest.raises(ConfigError, match=r"3\.3 or newer.*cluster up --version 3\.6\.0 --plugins neural-search"):
            create_index(client, index_name, milco_mini.info, spec)
    elif "opensearch-neural-search" not in plugins:
        with pytest.raises(ConfigError, match="neural-search plugin on every node"):
            create_index(client, index_name, milco_mini.info, spec)
    else:
        create_index(client, index_name, milco_mini.info, spec)
        assert read_layout(index_record(client, index_name), index_name).retrieval == "seismic"


#: A plain OpenSearch 3.x node (no plugins) for the refusal below, started and stopped by the test.
PLAIN_3X_PORT = 9256


def test_a_3x_node_without_neural_search_is_refused_with_the_fix(seismic_url: str, cache_dir: Path) -> None:
    """`cluster up --version 3.6.0` without plugins, then `index create --ann seismic` against it: one line, naming
    the plugin and the command that starts a node with it. (``seismic_url``: run in the 3.x suite.)"""
    from milco_os.localnode import OPENSEARCH_3_VERSION, LocalNode

    node = LocalNode(cache_dir, PLAIN_3X_PORT)
    node.down()
    try:
        info = node.up(version=OPENSEARCH_3_VERSION, fresh=True, heap="512m", timeout=240)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MILCO_OS_")}
        env |= {"MILCO_OS_CACHE_DIR": str(cache_dir), "MILCO_OS_OPENSEARCH_URL": info.url}
        result = subprocess.run([sys.executable, "-m", "milco_os.cli", "index", "create", "never-made", "--ann",
                                 "seismic"], capture_output=True, text=True, env=env, timeout=300)
        assert result.returncode != 0
        assert "neural-search plugin on every node" in result.stderr and "--plugins neural-search" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    finally:
        node.down()


def test_the_service_ingests_and_searches_a_seismic_index(seismic_settings: Settings, seismic_client,
                                                          pair) -> None:  # noqa: ANN001
    from fastapi.testclient import TestClient

    from milco_os.service.app import create_app

    _, name = pair
    with TestClient(create_app(seismic_settings)) as http:
        written = http.post(f"/v1/indices/{name}/documents", json=[
            {"id": "svc-1", "title": "Zugspitze", "text": "Die Zugspitze ist der höchste Berg Deutschlands."}])
        assert written.status_code == 200, written.text
        seismic_client.indices.refresh(index=name)
        found = http.post(f"/v1/indices/{name}/search", json={"query": "highest mountain in Germany", "explain": True,
                                                                "size": 3})
        assert found.status_code == 200, found.text
        hits = found.json()["hits"]
        assert "svc-1" in [h["id"] for h in hits]
        assert all(not t["term"].isdigit() for h in hits for t in h["terms"])
    seismic_client.delete(index=name, id="svc-1", refresh=True)
