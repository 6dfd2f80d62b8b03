"""Index lifecycle on a real node: delete documents by id and by file (CLI and service), list and delete indices,
and an index built with an older pinned version of milco-mini that keeps answering after the default moves, until
`milco-os upgrade` re-encodes it and moves its name (every document once)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from milco_os.cli import app
from milco_os.errors import ConfigError, SearchIndexError
from milco_os.opensearch.bulk import BulkConfig
from milco_os.opensearch.delete import delete_documents, read_ids
from milco_os.opensearch.indices import create_index, delete_milco_index, list_indices
from milco_os.opensearch.ingest import ingest
from milco_os.service.app import create_app
from milco_os.service.routes import get_client
from milco_os.specs import IndexSpec
from tests.fakes import BulkDown

DOCS = [
    {"id": "heart", "text": "A heart attack is caused by a blocked coronary artery.", "lang": "en"},
    {"id": "tea", "text": "Green tea should be brewed with water below boiling.", "lang": "en"},
    {"id": "chart", "text": "Ein Diagramm in eine Tabelle einfügen: Einfügen - Diagramm wählen.", "lang": "de"},
    {"id": "print", "text": "Imprimer un document : choisissez Fichier - Imprimer.", "lang": "fr"},
    {"id": "bike", "text": "Fix a flat bicycle tyre with a patch kit and a pump.", "lang": "en"},
    {"id": "a/b", "text": "An id with a slash in it, deleted through the service path.", "lang": "en"},
]


def cli(*args: str, settings, env: dict[str, str] | None = None):  # noqa: ANN001, ANN201 (click Result)
    """``milco-os ARGS`` in this process (so a test's monkeypatching holds), against the test node."""
    return CliRunner().invoke(app, [*args, "--url", settings.opensearch_url],
                              env={"MILCO_OS_CACHE_DIR": str(settings.cache_dir), **(env or {})})


def ids_in(client, index: str) -> list[str]:  # noqa: ANN001
    client.indices.refresh(index=index)
    hits = client.search(index=index, body={"size": 100, "query": {"match_all": {}}, "_source": False})
    return sorted(h["_id"] for h in hits["hits"]["hits"])


@pytest.fixture
def filled(client, splade_tiny, index_name: str) -> str:  # noqa: ANN001
    create_index(client, index_name, splade_tiny.info, IndexSpec(replicas=0))
    assert ingest(client, index_name, DOCS, splade_tiny, refresh=True).indexed == len(DOCS)
    return index_name


# ------------------------------------------------------------------------------------------ delete documents
def test_delete_by_id_and_by_file_from_the_cli(settings, client, filled: str, tmp_path: Path) -> None:  # noqa: ANN001
    result = cli("delete", "--index", filled, "heart", "nope", "heart", settings=settings)
    assert result.exit_code == 0, result.stderr
    assert "deleted 1, not found 1, failed 0" in result.stdout and "nope" in result.stderr
    assert ids_in(client, filled) == ["a/b", "bike", "chart", "print", "tea"]
    found = cli("search", "heart attack", "--index", filled, "--json", "--model", "splade-tiny", settings=settings)
    assert "heart" not in [h["id"] for h in json.loads(found.stdout)["hits"]]  # gone from search at once

    ids = tmp_path / "ids.jsonl"
    ids.write_text('"tea"\n\n{"id": "chart", "text": "a whole document works too"}\n')
    result = cli("delete", "--index", filled, "--ids-file", str(ids), settings=settings)
    assert result.exit_code == 0 and "deleted 2, not found 0" in result.stdout, result.stderr
    assert ids_in(client, filled) == ["a/b", "bike", "print"]

    ids.write_text('"print"\n[1, 2]\n')  # a bad line: refused before anything is deleted
    result = cli("delete", "--index", filled, "--ids-file", str(ids), settings=settings)
    assert result.exit_code == 1 and result.stderr.count("\n") == 1
    assert f"{ids} line 2: expected an id" in result.stderr
    assert ids_in(client, filled) == ["a/b", "bike", "print"]
    for args, fragment in ((["bike", "--ids-file", str(ids)], "not both"), ([], "not both"),
                           (["--index", "no-such-index-here", "x"], "does not exist")):
        full = args if "--index" in args else ["--index", filled, *args]
        result = cli("delete", *full, settings=settings)
        assert result.exit_code == 1 and fragment in result.stderr, result.stderr


def test_ids_that_could_not_be_deleted_are_dead_lettered_and_read_back(client, filled: str, tmp_path: Path) -> None:  # noqa: ANN001
    dead = tmp_path / "dead.jsonl"
    report = delete_documents(BulkDown(client), filled, ["tea", "bike"], dead_letter=dead,
                              config=BulkConfig(max_retries=1, initial_backoff=0.01))
    assert report.deleted == [] and [i for i, _ in report.failed] == ["tea", "bike"] == report.unavailable
    assert "gave up after 1 retries" in report.failed[0][1] and report.retried == 2
    assert list(read_ids(dead)) == ["tea", "bike"]  # the dead-letter file is an ids file as it is
    assert delete_documents(client, filled, read_ids(dead)).deleted == ["tea", "bike"]
    assert ids_in(client, filled) == ["a/b", "chart", "heart", "print"]
    with pytest.raises(ConfigError, match="line 1: invalid JSON"):
        (tmp_path / "bad.jsonl").write_text("{oops\n")
        list(read_ids(tmp_path / "bad.jsonl"))


def test_delete_through_the_service(settings, client, filled: str) -> None:  # noqa: ANN001
    base = f"/v1/indices/{filled}/documents"
    with TestClient(create_app(settings)) as http:
        one = http.delete(f"{base}/a/b")
        assert one.status_code == 200 and one.json()["deleted"] == ["a/b"], one.text
        again = http.delete(f"{base}/a/b")
        assert again.status_code == 404 and "'a/b' is not in index" in again.json()["detail"]
        bulk = http.post(f"{base}/delete", json={"ids": ["tea", "zzz", "bike"]})
        assert bulk.status_code == 200, bulk.text
        assert bulk.json() == {"deleted": ["tea", "bike"], "not_found": ["zzz"], "failed": [], "retried": 0}
        assert ids_in(client, filled) == ["chart", "heart", "print"]
        for body in ({"ids": []}, {"ids": [""]}, {"ids": "tea"}, {}):
            bad = http.post(f"{base}/delete", json=body)
            assert bad.status_code == 422 and "ids" in str(bad.json()["detail"]), (body, bad.text)
        assert http.post("/v1/indices/no-such-index-here/documents/delete", json={"ids": ["x"]}).status_code == 404
        http.app.dependency_overrides[get_client] = lambda: BulkDown(client)
        down = http.post(f"{base}/delete", json={"ids": ["heart"]})
        assert down.status_code == 503 and down.headers["retry-after"] == "5", down.text
        assert down.json()["deleted"] == [] and down.json()["failed"][0]["id"] == "heart"
    assert ids_in(client, filled) == ["chart", "heart", "print"]


# ------------------------------------------------------------------------------------------ list and delete indices
def test_list_shows_what_exists_and_delete_asks_and_refuses(settings, client, splade_tiny, filled: str) -> None:  # noqa: ANN001
    passages = filled + "-passages"
    foreign = filled + "-foreign"
    alias = filled + "-live"
    try:
        create_index(client, passages, splade_tiny.info, IndexSpec(replicas=0, passages=True))
        client.indices.create(index=foreign)
        client.indices.put_alias(index=passages, name=alias)
        rows = {row["index"]: row for row in list_indices(client)}
        assert foreign not in rows
        assert rows[filled] == {"index": filled, "aliases": [], "model": "splade-tiny", "layout": "merged",
                                "documents": len(DOCS), "size_bytes": rows[filled]["size_bytes"]}
        assert rows[filled]["size_bytes"] > 0
        assert rows[passages]["aliases"] == [alias] and rows[passages]["layout"] == "passages"
        listed = cli("index", "list", "--json", settings=settings)
        assert listed.exit_code == 0 and {json.loads(line)["index"] for line in listed.stdout.splitlines()} >= {
            filled, passages}
        table = cli("index", "list", settings=settings)
        assert filled in table.stdout and "splade-tiny" in table.stdout

        for name, fragment in ((alias, "is an alias"), (passages, f"target of alias {alias}"),
                               (foreign, "not created by milco-os"), ("no-such-index-here", "does not exist")):
            result = cli("index", "delete", name, "--yes", settings=settings)
            assert result.exit_code == 1 and fragment in result.stderr, result.stderr
        # No terminal and no --yes: nothing is deleted, and the line says why.
        result = cli("index", "delete", filled, settings=settings)
        assert result.exit_code == 1 and "not without --yes" in result.stderr
        assert client.indices.exists(index=filled)
        result = cli("index", "delete", filled, "--yes", settings=settings)
        assert result.exit_code == 0 and not client.indices.exists(index=filled), result.stderr
        assert delete_milco_index(client, passages, with_aliases=True) == [alias]
        assert not client.indices.exists(index=passages) and not client.indices.exists_alias(name=alias)
    finally:
        client.indices.delete(index=f"{passages},{foreign}", ignore_unavailable=True)


# ------------------------------------------------------------------------------------------ versions and upgrade
@pytest.fixture
def versions_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """milco-mini's shipped versions as the package has them (version 1, the real delta), in a directory a test
    can add a version to: the default moving, as when the next delta is committed."""
    from milco_os.models.sources import milco_mini

    root = tmp_path / "milco_mini"
    root.mkdir()
    (root / "1").symlink_to(milco_mini.DELTA_ROOT / "1", target_is_directory=True)
    monkeypatch.setattr(milco_mini, "DELTA_ROOT", root)
    return root


def ship_version_2(root: Path) -> None:
    """A second delta: version 1 with its echo scale changed (another model, with another fingerprint)."""
    from safetensors.torch import load_file, save_file

    state = load_file(str(root / "1" / "delta.safetensors"))
    state["scale"] = state["scale"] * 1.25
    (root / "2").mkdir()
    save_file(state, str(root / "2" / "delta.safetensors"))
    (root / "2" / "manifest.json").write_bytes((root / "1" / "manifest.json").read_bytes())


def test_an_index_keeps_its_version_until_upgrade_moves_it(settings, client, versions_root: Path,  # noqa: ANN001
                                                           index_name: str, tmp_path: Path) -> None:
    plain, aliased, alias = index_name, index_name + "-v1", index_name + "-live"
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    bare = {"MILCO_OS_MODEL": "milco-mini"}
    try:
        assert cli("index", "create", plain, "--replicas", "0", settings=settings, env=bare).exit_code == 0
        created = cli("index", "create", aliased, "--replicas", "0", "--passages", "--no-bm25", "--doc-prune",
                      "top_k:64", settings=settings, env=bare)
        assert created.exit_code == 0 and "milco-mini@1" in created.stdout, created.stderr
        client.indices.put_alias(index=aliased, name=alias)
        for name in (plain, alias):
            assert cli("ingest", str(docs), "--index", name, settings=settings, env=bare).exit_code == 0
        before = cli("search", "Diagramm einfügen", "--index", plain, "--json", settings=settings, env=bare)
        assert json.loads(before.stdout)["model"] == "milco-mini@1" and before.stderr == ""

        ship_version_2(versions_root)  # the default moves: milco-mini is now milco-mini@2
        after = cli("search", "Diagramm einfügen", "--index", plain, "--json", settings=settings, env=bare)
        assert after.exit_code == 0, after.stderr
        assert json.loads(after.stdout) | {"took_ms": 0} == json.loads(before.stdout) | {"took_ms": 0}
        assert f"index {plain!r} was built with milco-mini@1: encoding with it (milco-mini is now milco-mini@2" \
            in after.stderr
        pinned = cli("search", "x", "--index", plain, settings=settings, env={"MILCO_OS_MODEL": "milco-mini@2"})
        assert pinned.exit_code == 1 and "built with model 'milco-mini@1'" in pinned.stderr  # told otherwise
        more = tmp_path / "more.jsonl"
        more.write_text(json.dumps({"id": "later", "text": "Written after the default moved."}) + "\n")
        assert cli("ingest", str(more), "--index", alias, settings=settings, env=bare).exit_code == 0
        with TestClient(create_app(settings.model_copy(update={"model": "milco-mini"}))) as http:
            found = http.post(f"/v1/indices/{plain}/search", json={"query": "Diagramm einfügen"})
            assert found.status_code == 200 and found.json()["model"] == "milco-mini@1", found.text
            assert found.json()["hits"][0]["id"] == "chart"
            written = http.post(f"/v1/indices/{plain}/documents", json=[{"id": "later", "text": "Written later."}])
            assert written.status_code == 200, written.text

        # Upgrade through an alias: the alias moves, the old index stays.
        result = cli("upgrade", alias, "--json", settings=settings, env=bare)
        assert result.exit_code == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["before"] | {"size_bytes": 0} == {"index": aliased, "model": "milco-mini@1", "documents": 7,
                                                         "size_bytes": 0}
        assert report["after"]["model"] == "milco-mini@2" and report["after"]["documents"] == 7
        assert report["moved"] and report["old_index_kept"]
        new = report["after"]["index"]
        assert new == f"{alias}-milco-mini-2" and list(client.indices.get_alias(name=alias)) == [new]
        assert ids_in(client, new) == sorted([d["id"] for d in DOCS] + ["later"])  # every document, once
        meta = client.indices.get_mapping(index=new)[new]["mappings"]["_meta"]["milco_os"]
        old_meta = client.indices.get_mapping(index=aliased)[aliased]["mappings"]["_meta"]["milco_os"]
        assert {k: v for k, v in meta.items() if k not in ("model", "milco_os_version")} == {
            k: v for k, v in old_meta.items() if k not in ("model", "milco_os_version")}  # same options
        searched = cli("search", "Diagramm einfügen", "--index", alias, "--json", settings=settings, env=bare)
        assert json.loads(searched.stdout)["model"] == "milco-mini@2" and searched.stderr == ""
        again = cli("upgrade", alias, settings=settings, env=bare)
        assert again.exit_code == 0 and "already uses milco-mini@2; nothing to do" in again.stdout

        # Upgrade an index by its own name: asked first; then its name becomes an alias of the new index.
        refused = cli("upgrade", plain, settings=settings, env=bare)
        assert refused.exit_code == 1 and "not without --yes" in refused.stderr
        assert client.indices.exists(index=plain) and not client.indices.exists_alias(name=plain)
        result = cli("upgrade", plain, "--yes", settings=settings, env=bare)
        assert result.exit_code == 0, result.stderr
        assert "milco-mini@1 -> milco-mini@2; documents 7 -> 7" in result.stdout
        assert list(client.indices.get_alias(name=plain)) == [f"{plain}-milco-mini-2"]
        assert ids_in(client, plain) == sorted([d["id"] for d in DOCS] + ["later"])
    finally:
        client.indices.delete(index=f"{plain}*", ignore_unavailable=True)


def test_upgrade_refuses_what_it_cannot_do(settings, client, splade_tiny, filled: str) -> None:  # noqa: ANN001
    from milco_os.opensearch.upgrade import plan_upgrade

    two = filled + "-two"
    alias = filled + "-both"
    try:
        create_index(client, two, splade_tiny.info, IndexSpec(replicas=0))
        client.indices.update_aliases(body={"actions": [{"add": {"index": filled, "alias": alias}},
                                                        {"add": {"index": two, "alias": alias}}]})
        with pytest.raises(SearchIndexError, match="points at 2 indices"):
            plan_upgrade(client, alias, "milco-mini@2")
        with pytest.raises(ConfigError, match="a name of its own"):
            plan_upgrade(client, filled, "milco-mini@2", dest=filled)
        same = cli("upgrade", filled, "--model", "splade-tiny", settings=settings)
        assert same.exit_code == 0 and "already uses splade-tiny" in same.stdout
        client.indices.create(index=two + "-foreign")
        foreign = cli("upgrade", two + "-foreign", settings=settings)
        assert foreign.exit_code == 1 and "not created by milco-os" in foreign.stderr
    finally:
        client.indices.delete(index=f"{two}*", ignore_unavailable=True)
