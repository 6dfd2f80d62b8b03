"""Index lifecycle, the pure parts: model versions and which one an index gets, the options an index is re-created
with, the upgrade's new index name, delete actions and ids files."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from milco_os import loading
from milco_os.cli_index import size_text
from milco_os.errors import ConfigError, ModelError
from milco_os.models.sources import milco_mini
from milco_os.models.sources.versions import split_ref, version_dir, versions
from milco_os.opensearch.bulk import delete_actions
from milco_os.opensearch.delete import read_ids
from milco_os.opensearch.mapping import index_body, spec_of
from milco_os.opensearch.upgrade import dest_name
from milco_os.pruning import Pruning
from milco_os.specs import IndexSpec
from milco_os.types import DenseInfo
from tests.unit.helpers import model_info


@pytest.fixture
def shipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """milco-mini with versions 1, 2 and 10 shipped (a directory without a manifest is none)."""
    for version in ("1", "2", "10", "3-draft"):
        (tmp_path / version).mkdir()
        if version.isdigit():
            (tmp_path / version / "manifest.json").write_text("{}")
    (tmp_path / "4").mkdir()
    monkeypatch.setattr(milco_mini, "DELTA_ROOT", tmp_path)
    return tmp_path


def test_versions_are_numbered_directories_and_the_bare_name_is_the_newest(shipped: Path) -> None:
    assert versions(shipped) == ["1", "2", "10"] and versions(shipped / "none") == []
    assert version_dir(shipped, "milco-mini", None) == (shipped / "10", "10")
    assert version_dir(shipped, "milco-mini", "2") == (shipped / "2", "2")
    assert split_ref("milco-mini@02") == ("milco-mini", "2") and split_ref("some/dir") == ("some/dir", None)
    assert [loading.pinned(m) for m in ("milco-mini", "milco-mini@1", "splade-tiny", "./x@1")] == [
        "milco-mini@10", "milco-mini@1", "splade-tiny", "./x@1"]
    for ref, message in (("milco-mini@4", "no such version; shipped: milco-mini@1, milco-mini@2, milco-mini@10"),
                         ("milco-mini@new", "a version after '@' is a number"),
                         ("milco-mini@", "a version after '@' is a number")):
        with pytest.raises(ModelError, match=message):
            loading.pinned(ref)


def test_a_bare_name_follows_the_index_to_its_version_and_nothing_else_does(shipped: Path) -> None:
    follow = loading.model_for_index
    assert follow("milco-mini", "milco-mini@2") == "milco-mini@2"
    assert follow("milco-mini", "milco-mini") == "milco-mini@1"  # a record from before versions
    assert follow("milco-mini", "milco-mini@7") == "milco-mini"  # not shipped: the fingerprint check refuses
    assert follow("milco-mini@10", "milco-mini@2") == "milco-mini@10"  # pinned: told otherwise
    assert follow("milco-mini", "splade-tiny") == "milco-mini"
    assert follow("splade-tiny", "milco-mini@2") == "splade-tiny"
    assert follow("milco-mini", None) == "milco-mini"


@pytest.mark.parametrize("spec", [
    IndexSpec(),
    IndexSpec(text_fields=("title", "body"), pivot_field="p", echo_field="e",
              doc_pruning=Pruning.parse("top_k:64,mass:0.9"), bm25=False, vectors_in_source=False,
              shards=3, replicas=0),
    IndexSpec(passages=True, passages_field="parts", dense=True, dense_field="vec", bm25=False),
    IndexSpec(dense=True),
], ids=["defaults", "every-option", "passages-dense", "dense"])
def test_an_index_is_recreated_with_the_options_it_was_created_with(spec: IndexSpec) -> None:
    info = dataclasses.replace(model_info(), dense=DenseInfo("e5", "sha256:dense", 4))
    body = index_body(info, spec)
    settings = {k: str(v) for k, v in body["settings"]["index"].items()}  # OpenSearch answers settings as strings
    mappings = body["mappings"]
    assert spec_of(mappings["_meta"]["milco_os"], mappings["properties"], settings, "docs") == spec


def test_the_new_index_is_named_after_the_name_and_the_model() -> None:
    assert dest_name("docs", "milco-mini@2") == "docs-milco-mini-2"
    assert dest_name("docs", "Owner/Some.Model") == "docs-owner-some-model"


def test_delete_actions_and_ids_files(tmp_path: Path) -> None:
    assert list(delete_actions("docs", ["a", 7])) == [{"_op_type": "delete", "_index": "docs", "_id": "a"},
                                                      {"_op_type": "delete", "_index": "docs", "_id": "7"}]
    ids = tmp_path / "ids.jsonl"
    ids.write_text('"a"\n7\n{"id": "b", "text": "x"}\n'
                   '{"_milco_os_dead_letter": true, "id": "c", "reason": "r", "document": {"id": "c"}}\n')
    assert list(read_ids(ids)) == ["a", "7", "b", "c"]
    for line, problem in (('{"text": "no id"}', "expected an id"), ("true", "expected an id"), ('""', "expected an id"),
                          ("{oops", "invalid JSON")):
        ids.write_text(f'"a"\n{line}\n')
        with pytest.raises(ConfigError, match=f"line 2: {problem}"):
            list(read_ids(ids))
    with pytest.raises(ConfigError, match="no such file"):
        list(read_ids(tmp_path / "missing.jsonl"))


def test_sizes_read_as_people_read_them() -> None:
    assert [size_text(n) for n in (0, 1023, 1536, 5 * 1024**2, 3 * 1024**4)] == [
        "0 B", "1,023 B", "1.5 KiB", "5.0 MiB", "3,072.0 GiB"]
