"""A secured local node (`cluster up --secure`): TLS with CA verification and basic auth end to end, through the
Python API and the CLI; plain HTTP, a wrong CA, a wrong password and a missing CA fail with one clear line
(`cluster status` says unauthorized); the password shows up in no output and no log line.

The node (security plugin, generated certificates, port 9260) is started once for this module."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from milco_os.localnode import LocalNode, generate_certs
from milco_os.settings import Settings
from milco_os.specs import IndexSpec

PORT = 9260
#: Every CLI output of this module, checked for the password at the end.
OUTPUTS: list[str] = []


@dataclass(frozen=True)
class SecureNode:
    url: str
    ca: Path
    password_file: Path
    password: str
    node_dir: Path


@pytest.fixture(scope="module")
def secure_node(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureNode]:
    password = f"Milco-{secrets.token_urlsafe(18)}"
    password_file = tmp_path_factory.mktemp("secure") / "admin-password"
    password_file.write_text(password + "\n", encoding="utf-8")
    node = LocalNode(cache_dir, PORT)
    node.down()  # one left behind by an interrupted run would keep its old password
    try:
        info = node.up(heap="512m", fresh=True, timeout=150, secure=True, admin_password_file=password_file)
        assert info.url == f"https://127.0.0.1:{PORT}" and info.ca_certs
        yield SecureNode(info.url, Path(info.ca_certs), password_file, password, node.node_dir)
    finally:
        node.down()


def secure_settings(node: SecureNode, **overrides: object) -> Settings:
    values: dict = {
        "opensearch_url": node.url,
        "opensearch_username": "admin",
        "opensearch_password": node.password,
        "opensearch_ca_certs": node.ca,
        "opensearch_timeout": 20,
    }
    return Settings(**(values | overrides))


def milco_os(*args: str, cache_dir: Path) -> subprocess.CompletedProcess[str]:
    # Only the flags connect: no MILCO_OS_OPENSEARCH_* from the caller's environment.
    env = {k: v for k, v in os.environ.items() if not k.startswith("MILCO_OS_OPENSEARCH")}
    env["MILCO_OS_CACHE_DIR"] = str(cache_dir)
    cmd = [sys.executable, "-m", "milco_os.cli", *args]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=180)
    OUTPUTS.append(result.stdout + result.stderr)
    return result


def connect_flags(node: SecureNode, *, url: str | None = None, password_file: Path | None = None,
                  ca: Path | None = None) -> list[str]:
    password_file = password_file or node.password_file
    flags = ["--url", url or node.url, "--username", "admin", "--password-file", str(password_file)]
    return [*flags, "--ca-certs", str(ca)] if ca else flags


def assert_one_line_error(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1, result.stdout + result.stderr
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for text in expected:
        assert text in lines[0], lines[0]


def test_python_api_over_tls_with_basic_auth(secure_node: SecureNode, splade_tiny) -> None:  # noqa: ANN001
    from milco_os.opensearch.client import make_client
    from milco_os.opensearch.indices import create_index
    from milco_os.opensearch.ingest import Ingester
    from milco_os.opensearch.search import search

    client = make_client(secure_settings(secure_node))
    name = f"secure-{uuid.uuid4().hex[:8]}"
    create_index(client, name, splade_tiny.info, IndexSpec(replicas=0))
    docs = [
        {"id": "tea", "text": "green tea is brewed from the leaves of the tea plant"},
        {"id": "volcano", "text": "a volcano erupts molten lava and ash"},
        {"id": "dog", "text": "the dog barked at the postman"},
    ]
    report = Ingester(client, name, splade_tiny).run(docs, refresh=True)
    assert report.indexed == 3 and report.failed == 0
    result = search(client, name, "lava eruption", splade_tiny)
    assert result.hits[0].id == "volcano"
    client.indices.delete(index=name)


def test_cli_index_ingest_search_over_tls(secure_node: SecureNode, cache_dir: Path, tmp_path: Path) -> None:
    name = f"secure-cli-{uuid.uuid4().hex[:8]}"
    flags = connect_flags(secure_node, ca=secure_node.ca)
    created = milco_os("index", "create", name, "--replicas", "0", "--model", "splade-tiny", *flags,
                       cache_dir=cache_dir)
    assert created.returncode == 0, created.stderr
    docs = tmp_path / "docs.jsonl"
    docs.write_text(
        json.dumps({"id": "tea", "text": "green tea is brewed from tea leaves"}) + "\n"
        + json.dumps({"id": "volcano", "text": "a volcano erupts molten lava"}) + "\n",
        encoding="utf-8",
    )
    ingested = milco_os("-v", "ingest", str(docs), "--index", name, "--model", "splade-tiny", *flags,
                        cache_dir=cache_dir)
    assert ingested.returncode == 0, ingested.stderr
    found = milco_os("search", "lava", "--index", name, "--json", "--model", "splade-tiny", *flags,
                     cache_dir=cache_dir)
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)["hits"][0]["id"] == "volcano"


def test_cluster_up_secure_tells_how_to_connect(secure_node: SecureNode, cache_dir: Path) -> None:
    # The node is running: `cluster up --secure` only reports it (and must not print the password).
    up = milco_os("cluster", "up", "--secure", "--port", str(PORT), "--admin-password-file",
                  str(secure_node.password_file), cache_dir=cache_dir)
    assert up.returncode == 0, up.stderr
    assert up.stdout.strip().splitlines()[-1] == secure_node.url
    for line in (
        f"MILCO_OS_OPENSEARCH_URL={secure_node.url}",
        "MILCO_OS_OPENSEARCH_USERNAME=admin",
        f"MILCO_OS_OPENSEARCH_PASSWORD_FILE={secure_node.password_file}",
        f"MILCO_OS_OPENSEARCH_CA_CERTS={secure_node.ca}",
    ):
        assert line in up.stderr, up.stderr
    # Asking for a plain node on the secure node's port is refused rather than silently ignored.
    plain = milco_os("cluster", "up", "--port", str(PORT), cache_dir=cache_dir)
    assert_one_line_error(plain, "running with security")

    status = milco_os("cluster", "status", "--port", str(PORT), "--json", cache_dir=cache_dir)
    assert status.returncode == 0, status.stdout + status.stderr
    reported = json.loads(status.stdout)
    assert reported["secure"] is True and reported["ca_certs"] == str(secure_node.ca)
    assert reported["url"] == secure_node.url and reported["health"] in ("green", "yellow")


def test_plain_http_fails(secure_node: SecureNode, cache_dir: Path) -> None:
    result = milco_os("index", "info", "any", *connect_flags(secure_node, url=f"http://127.0.0.1:{PORT}"),
                      cache_dir=cache_dir)
    assert_one_line_error(result, "https://")


def test_wrong_ca_fails(secure_node: SecureNode, cache_dir: Path, tmp_path: Path) -> None:
    other_ca = generate_certs(tmp_path / "other")  # a valid CA, just not the one that signed the node
    result = milco_os("index", "info", "any", *connect_flags(secure_node, ca=other_ca), cache_dir=cache_dir)
    assert_one_line_error(result, "TLS certificate verification failed", "--ca-certs")


def test_wrong_password_fails(secure_node: SecureNode, cache_dir: Path, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password\n", encoding="utf-8")
    result = milco_os("index", "info", "any", *connect_flags(secure_node, password_file=wrong, ca=secure_node.ca),
                      cache_dir=cache_dir)
    assert_one_line_error(result, "refused the credentials", "401")


def test_cluster_status_says_unauthorized_when_the_node_refuses_the_password(secure_node: SecureNode,
                                                                             cache_dir: Path) -> None:
    # `cluster status` reads the password file node.json names; the node now refuses what the file holds.
    secure_node.password_file.write_text("not-the-password\n", encoding="utf-8")
    try:
        status = milco_os("cluster", "status", "--port", str(PORT), cache_dir=cache_dir)
        as_json = milco_os("cluster", "status", "--port", str(PORT), "--json", cache_dir=cache_dir)
    finally:
        secure_node.password_file.write_text(secure_node.password + "\n", encoding="utf-8")
    assert status.returncode == 1, status.stdout + status.stderr
    assert f"{secure_node.url}: unauthorized" in status.stdout and "unreachable" not in status.stdout
    assert f"refused the admin password in {secure_node.password_file}" in status.stdout
    assert as_json.returncode == 1 and json.loads(as_json.stdout)["health"] == "unauthorized"


def test_insecure_works_without_ca_but_is_not_the_default(secure_node: SecureNode, cache_dir: Path,
                                                           splade_tiny) -> None:  # noqa: ANN001
    from milco_os.opensearch.client import make_client
    from milco_os.opensearch.indices import create_index

    name = f"secure-info-{uuid.uuid4().hex[:8]}"
    create_index(make_client(secure_settings(secure_node)), name, splade_tiny.info, IndexSpec(replicas=0))
    verified_by_default = milco_os("index", "info", name, *connect_flags(secure_node), cache_dir=cache_dir)
    assert_one_line_error(verified_by_default, "TLS certificate verification failed")
    insecure = milco_os("index", "info", name, *connect_flags(secure_node), "--insecure", cache_dir=cache_dir)
    assert insecure.returncode == 0, insecure.stderr
    assert json.loads(insecure.stdout)["index"] == name


def test_password_appears_in_no_output_and_no_log(secure_node: SecureNode, cache_dir: Path) -> None:
    # Verbose runs too (they log requests); OUTPUTS also holds every CLI run of the tests above.
    milco_os("-v", "cluster", "status", "--port", str(PORT), cache_dir=cache_dir)
    milco_os("-v", "index", "info", "any", *connect_flags(secure_node, ca=secure_node.ca), cache_dir=cache_dir)
    assert not [out for out in OUTPUTS if secure_node.password in out]
    logged = [p for p in (secure_node.node_dir / "logs").rglob("*") if p.is_file()
              and secure_node.password in p.read_text(encoding="utf-8", errors="replace")]
    assert logged == []
    # The node's configuration holds only a bcrypt hash of it.
    users = (secure_node.node_dir / "config" / "opensearch-security" / "internal_users.yml").read_text()
    assert secure_node.password not in users and "$2" in users
