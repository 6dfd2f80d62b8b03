"""Pure parts of "nothing lost, nothing leaked": checkpoint and dead-letter files, input limits, messages."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from pydantic import ValidationError

from milco_os.errors import ConfigError
from milco_os.opensearch.client import describe_transport_error
from milco_os.opensearch.ingest import (
    DEAD_LETTER_MARK,
    MAX_ID_BYTES,
    DeadLetter,
    UnreadableLine,
    unwrap_dead_letter,
    validate_document,
)
from milco_os.paths import atomic_file, write_text_atomic
from milco_os.redact import redact_urls_in
from milco_os.settings import Settings


def test_atomic_write_never_follows_a_planted_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    target = tmp_path / "job.json"
    # The names the old implementation (and obvious ones) would use for the temporary file.
    for name in ("job.json.tmp", ".job.json.tmp"):
        (tmp_path / name).symlink_to(victim)
    write_text_atomic(target, '{"line": 3}')
    assert victim.read_text() == "precious"
    assert json.loads(target.read_text()) == {"line": 3}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".job.json.") and not p.is_symlink()]


def test_atomic_write_replaces_a_symlinked_target_instead_of_writing_through_it(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    target = tmp_path / "job.json"
    target.symlink_to(victim)
    write_text_atomic(target, "new")
    assert victim.read_text() == "precious" and not target.is_symlink() and target.read_text() == "new"


def test_an_atomic_file_that_fails_leaves_the_old_file_and_no_temporary_one(tmp_path: Path) -> None:
    target = tmp_path / "cache.pt"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_file(target) as f:
        f.write(b"half of the new")
        raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["cache.pt"]


def plant_symlinks(directory: Path, name: str) -> Path:
    """A file an attacker wants overwritten, linked from the temporary names a writer of ``name`` could predict."""
    victim = directory / "victim"
    victim.write_text("precious")
    for planted in (f"{name}.tmp", f".{name}.tmp"):
        (directory / planted).symlink_to(victim)
    return victim


def test_training_caches_and_checkpoints_never_write_through_a_predictable_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from milco_os.training import csplade
    from milco_os.training.pipeline import _cached

    victim = plant_symlinks(tmp_path, "states.pt")
    assert torch.equal(_cached(tmp_path / "states.pt", lambda: torch.ones(3)), torch.ones(3))
    assert victim.read_text() == "precious"
    assert torch.equal(torch.load(tmp_path / "states.pt", weights_only=True), torch.ones(3))

    # A LoRA checkpoint, its adapter's state stubbed (no model needed to write it).
    monkeypatch.setattr("peft.get_peft_model_state_dict", lambda model: {"w": torch.zeros(1)})
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    checkpoint = csplade.Checkpoint(tmp_path, None, optimizer, schedule)
    victim = plant_symlinks(tmp_path, "checkpoint.pt")
    checkpoint.save(7)
    assert victim.read_text() == "precious"
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == 7


def test_the_help_pages_cache_never_writes_through_a_predictable_name(tmp_path: Path) -> None:
    from milco_os.datasets.libreoffice import help_dir_name, load_pages

    text = tmp_path / "usr" / "share" / "libreoffice" / "help" / help_dir_name("de") / "text"
    text.mkdir(parents=True)
    (text / "page.html").write_text("<html><head><title>Seite</title></head><body><p>Text</p></body></html>")
    victim = plant_symlinks(tmp_path, "pages-de.json.gz")
    assert "page.html" in load_pages(tmp_path, "de")
    assert victim.read_text() == "precious" and (tmp_path / "pages-de.json.gz").is_file()


def test_dead_letter_rotates_per_run_and_appends_on_resume(tmp_path: Path) -> None:
    path = tmp_path / "dead.jsonl"
    for run in range(3):
        dead = DeadLetter(path)
        dead.write({"id": str(run), "text": "x"}, str(run), "why")
        dead.close()
    assert [json.loads(path.read_text())["id"]] == ["2"]
    assert json.loads((tmp_path / "dead.jsonl.1").read_text())["id"] == "1"
    assert json.loads((tmp_path / "dead.jsonl.2").read_text())["id"] == "0"
    resumed = DeadLetter(path, append=True)
    resumed.write({"id": "3"}, "3", "why")
    resumed.close()
    assert [json.loads(x)["id"] for x in path.read_text().splitlines()] == ["2", "3"]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600  # whole documents: private


def test_dead_letter_refuses_a_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    path = tmp_path / "dead.jsonl"
    path.symlink_to(victim)
    dead = DeadLetter(path, append=True)
    with pytest.raises(ConfigError, match="symbolic link"):
        dead.write({"id": "1"}, "1", "why")
    assert victim.read_text() == "precious\n"


def test_dead_letter_lines_read_back_as_documents() -> None:
    record = {DEAD_LETTER_MARK: True, "id": "7", "reason": "r", "document": {"id": "7", "text": "t"}}
    assert unwrap_dead_letter(record) == {"id": "7", "text": "t"}


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({"id": "x" * (MAX_ID_BYTES + 1), "text": "t"}, f"longer than {MAX_ID_BYTES} bytes"),
        ({"id": "é" * (MAX_ID_BYTES // 2 + 1), "text": "t"}, "bytes"),  # bytes, not characters
        ({"id": "1", "text": "y" * 11}, "11 characters, over the limit of 10"),
        (UnreadableLine(4, "invalid JSON (Expecting value)", "{oops"), "line 4: invalid JSON"),
    ],
)
def test_documents_over_the_limits_are_refused_with_the_reason(doc: object, expected: str) -> None:
    problem = validate_document(doc, ["text"], max_chars=10)
    assert problem is not None and expected in problem


def test_documents_within_the_limits_pass() -> None:
    assert validate_document({"id": "x" * MAX_ID_BYTES, "text": "y" * 10}, ["text"], max_chars=10) is None


def test_credentials_are_removed_from_urls_and_messages() -> None:
    assert redact_urls_in("http://admin:s3cret@host:9200/x") == "http://***@host:9200/x"
    assert redact_urls_in("https://host:9200") == "https://host:9200"
    text = "cannot reach https://u:p%40ss@a:1 or http://v:w@b:2/path"
    assert "p%40ss" not in redact_urls_in(text) and "v:w" not in redact_urls_in(text)
    assert redact_urls_in(text) == "cannot reach https://***@a:1 or http://***@b:2/path"


def test_opensearch_errors_are_described_with_their_root_cause() -> None:
    from opensearchpy.exceptions import RequestError

    info = {"error": {"root_cause": [{"type": "illegal_argument_exception", "reason": "Result window is too\nlarge"}],
                      "type": "search_phase_execution_exception", "reason": "all shards failed"}, "status": 400}
    e = RequestError(400, "search_phase_execution_exception", info)
    assert describe_transport_error(e) == "illegal_argument_exception: Result window is too large"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("not a url", "http:// or https://"),
        ("ftp://host:9200", "http:// or https://"),
        ("http://127.0.0.1:99999", "between 1 and 65535"),
        ("http://127.0.0.1:0", "scheme://host"),
        ("http://:9200", "scheme://host"),
        ("http://ok:9200,gopher://x", "http:// or https://"),
    ],
)
def test_bad_opensearch_urls_are_refused(url: str, problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        Settings(opensearch_url=url)


def test_url_errors_do_not_echo_credentials() -> None:
    with pytest.raises(ValidationError) as info:
        Settings(opensearch_url="ftp://admin:hunter2@host")
    assert "hunter2" not in str(info.value.errors()[0]["msg"])


def test_good_urls_pass() -> None:
    s = Settings(opensearch_url="http://a:9200, https://b")
    assert s.opensearch_urls == ["http://a:9200", "https://b"]
