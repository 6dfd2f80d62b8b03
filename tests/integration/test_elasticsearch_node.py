"""A local Elasticsearch node (`cluster up --engine elasticsearch`) as a user runs it: health and version over
plain HTTP, `cluster status` and `cluster up` knowing the engine from node.json; a secure node (x-pack security):
TLS verified with the generated CA, basic auth for `elastic` with the password file, 401 for a wrong password, API
keys where the node can keep them; `cluster down` by its port alone. The password shows up in no output.

The plain node is the session's ``elasticsearch_url`` (MILCO_OS_TEST_ES_URL, or the node conftest starts); the
secure node (port 9255) is started once for this module, through the CLI."""

from __future__ import annotations

import base64
import json
import os
import secrets
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from milco_os.localnode import ELASTICSEARCH_VERSION, LocalNode, generate_certs
from tests.support.processes import node_processes

pytestmark = pytest.mark.elasticsearch  # the test command runs this module in its Elasticsearch suite

SECURE_PORT = 9255
#: Every CLI output of this module, checked for the password at the end.
OUTPUTS: list[str] = []


def milco_os(*args: str, cache_dir: Path, **env_vars: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, MILCO_OS_CACHE_DIR=str(cache_dir), **env_vars)
    result = subprocess.run([sys.executable, "-m", "milco_os.cli", *args], capture_output=True, text=True, env=env,
                            timeout=300)
    OUTPUTS.append(result.stdout + result.stderr)
    return result


def get(url: str, context: ssl.SSLContext | None = None, headers: dict[str, str] | None = None,
        body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    with urllib.request.urlopen(request, timeout=20, context=context) as resp:
        return json.loads(resp.read())


def elasticsearch_servers(port: int) -> list[str]:
    """Command lines of Elasticsearch server JVMs of ``port``'s node directory."""
    return node_processes("org.elasticsearch.bootstrap.Elasticsearch", f"/elasticsearch/nodes/{port}/")


# ------------------------------------------------------------------------------------------ the plain node
def test_health_and_version(elasticsearch_url: str) -> None:
    health = get(f"{elasticsearch_url}/_cluster/health")
    assert health["status"] in ("green", "yellow")
    nodes = get(f"{elasticsearch_url}/_nodes/_local?filter_path=nodes.*.version,nodes.*.build_flavor")["nodes"]
    (node,) = nodes.values()
    assert node["version"].startswith("8.") and node["build_flavor"] == "default"
    if not os.environ.get("MILCO_OS_TEST_ES_URL"):
        assert node["version"] == ELASTICSEARCH_VERSION


def test_status_and_up_know_the_engine(elasticsearch_url: str, cache_dir: Path) -> None:
    port = urlsplit(elasticsearch_url).port
    assert port is not None
    if LocalNode(cache_dir, port, "elasticsearch").info() is None:
        pytest.skip(f"MILCO_OS_TEST_ES_URL: not a node `cluster up` started with this cache ({cache_dir})")
    status = milco_os("cluster", "status", "--port", str(port), cache_dir=cache_dir)  # no --engine: node.json's
    assert status.returncode == 0, status.stdout + status.stderr
    assert f"Elasticsearch {ELASTICSEARCH_VERSION} at {elasticsearch_url}: " in status.stdout
    assert "green" in status.stdout or "yellow" in status.stdout
    as_json = milco_os("cluster", "status", "--engine", "elasticsearch", "--port", str(port), "--json",
                       cache_dir=cache_dir)
    assert json.loads(as_json.stdout)["engine"] == "elasticsearch"
    opensearch = milco_os("cluster", "status", "--engine", "opensearch", "--port", str(port), cache_dir=cache_dir)
    assert opensearch.returncode == 1 and "no milco-os OpenSearch node is running" in opensearch.stdout

    again = milco_os("cluster", "up", "--engine", "elasticsearch", "--port", str(port), cache_dir=cache_dir)
    assert again.returncode == 0 and again.stdout.strip().splitlines()[-1] == elasticsearch_url  # idempotent
    assert len(elasticsearch_servers(port)) == 1
    taken = milco_os("cluster", "up", "--port", str(port), cache_dir=cache_dir)  # OpenSearch on its port
    assert taken.returncode == 1 and f"port {port} runs a milco-os Elasticsearch node" in taken.stderr


# ------------------------------------------------------------------------------------------ the secure node
@dataclass(frozen=True)
class SecureNode:
    url: str
    ca: Path
    password_file: Path
    password: str


@pytest.fixture(scope="module")
def secure_node(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureNode]:
    password = f"Milco-{secrets.token_urlsafe(18)}"
    password_file = tmp_path_factory.mktemp("secure-es") / "admin-password"
    password_file.write_text(password + "\n", encoding="utf-8")
    node = LocalNode(cache_dir, SECURE_PORT, "elasticsearch")
    node.down()  # one left behind by an interrupted run
    try:
        up = milco_os("cluster", "up", "--engine", "elasticsearch", "--port", str(SECURE_PORT), "--secure",
                      "--admin-password-file", str(password_file), "--heap", "512m", "--fresh", "--timeout", "150",
                      cache_dir=cache_dir)
        assert up.returncode == 0, up.stderr
        url = up.stdout.strip().splitlines()[-1]
        assert url == f"https://127.0.0.1:{SECURE_PORT}"
        assert "export MILCO_OS_OPENSEARCH_USERNAME=elastic" in up.stderr
        info = node.info()
        assert info is not None and info.ca_certs and info.engine == "elasticsearch"
        yield SecureNode(url, Path(info.ca_certs), password_file, password)
    finally:
        node.down()


def basic(password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"elastic:{password}".encode()).decode()}


def test_tls_is_verified_with_the_generated_ca(secure_node: SecureNode, tmp_path: Path) -> None:
    verified = ssl.create_default_context(cafile=secure_node.ca)
    health = get(f"{secure_node.url}/_cluster/health", verified, basic(secure_node.password))
    assert health["status"] in ("green", "yellow")
    me = get(f"{secure_node.url}/_security/_authenticate", verified, basic(secure_node.password))
    assert me["username"] == "elastic" and "superuser" in me["roles"]
    other_ca = generate_certs(tmp_path / "other")
    for context in (ssl.create_default_context(), ssl.create_default_context(cafile=other_ca)):
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            get(f"{secure_node.url}/_cluster/health", context, basic(secure_node.password))
    with pytest.raises((urllib.error.URLError, ConnectionError)):  # no plain HTTP on the TLS port
        get(f"http://127.0.0.1:{SECURE_PORT}/_cluster/health")


def test_a_wrong_password_gets_401(secure_node: SecureNode) -> None:
    verified = ssl.create_default_context(cafile=secure_node.ca)
    for headers in (basic("not-" + secure_node.password), {}):
        with pytest.raises(urllib.error.HTTPError) as refused:
            get(f"{secure_node.url}/_cluster/health", verified, headers)
        refused.value.close()  # it holds the response's socket
        assert refused.value.code == 401


def test_api_key_can_be_created_and_used(secure_node: SecureNode) -> None:
    verified = ssl.create_default_context(cafile=secure_node.ca)
    modules = get(f"{secure_node.url}/_nodes/_local/plugins?filter_path=nodes.*.modules.name", verified,
                  basic(secure_node.password))["nodes"]
    if "analysis-common" not in {m["name"] for node in modules.values() for m in node["modules"]}:
        # Maven Central's integration-test zip: API keys live in the .security index, whose mapping needs
        # analysis-common's pattern_capture filter. Make sure that is the only reason, then say so.
        with pytest.raises(urllib.error.HTTPError) as refused:
            get(f"{secure_node.url}/_security/api_key", verified, basic(secure_node.password), {"name": "t"})
        with refused.value as answer:  # it holds the response's socket
            assert answer.code == 400 and "pattern_capture" in answer.read().decode()
        pytest.skip("no analysis-common module (integration-test zip): the .security index, which holds API keys, "
                    "cannot be created")
    key = get(f"{secure_node.url}/_security/api_key", verified, basic(secure_node.password), {"name": "milco-os-test"})
    api_key = {"Authorization": f"ApiKey {key['encoded']}"}
    assert get(f"{secure_node.url}/_security/_authenticate", verified, api_key)["api_key"]["name"] == "milco-os-test"


def test_milco_os_ingests_and_searches_over_tls_with_the_password_and_says_what_is_wrong_otherwise(
    secure_node: SecureNode, cache_dir: Path, tmp_path: Path,
) -> None:
    docs = tmp_path / "docs.jsonl"
    docs.write_text('{"id": "a", "text": "A heart attack is caused by a blocked artery."}\n'
                    '{"id": "b", "text": "Green tea is brewed below boiling."}\n', encoding="utf-8")
    env = {"MILCO_OS_OPENSEARCH_URL": secure_node.url, "MILCO_OS_OPENSEARCH_USERNAME": "elastic",
           "MILCO_OS_OPENSEARCH_PASSWORD_FILE": str(secure_node.password_file),
           "MILCO_OS_OPENSEARCH_CA_CERTS": str(secure_node.ca), "MILCO_OS_MODEL": "splade-tiny"}
    for args in (("index", "create", "secure-docs", "--replicas", "0"),
                 ("ingest", "--index", "secure-docs", str(docs))):
        done = milco_os(*args, cache_dir=cache_dir, **env)
        assert done.returncode == 0, done.stderr
    found = milco_os("search", "--index", "secure-docs", "heart attack", "--json", cache_dir=cache_dir, **env)
    assert found.returncode == 0 and json.loads(found.stdout)["hits"][0]["id"] == "a", found.stderr

    wrong = tmp_path / "wrong-password"
    wrong.write_text("not-the-password\n", encoding="utf-8")
    for change, expected in (
        ({"MILCO_OS_OPENSEARCH_PASSWORD_FILE": str(wrong)}, "Elasticsearch at https://127.0.0.1:9255 refused the "
                                                            "credentials (HTTP 401)"),
        ({"MILCO_OS_OPENSEARCH_CA_CERTS": str(generate_certs(tmp_path / "other"))}, "TLS certificate verification "
                                                                                    "failed for https://127.0.0.1:9255"),
    ):
        refused = milco_os("index", "list", cache_dir=cache_dir, **{**env, **change})
        lines = refused.stderr.strip().splitlines()
        assert refused.returncode == 1 and len(lines) == 1 and expected in lines[0], refused.stderr


def test_status_and_down_by_port_alone(secure_node: SecureNode, cache_dir: Path) -> None:
    status = milco_os("cluster", "status", "--port", str(SECURE_PORT), cache_dir=cache_dir)
    assert status.returncode == 0, status.stdout + status.stderr
    assert f"Elasticsearch {ELASTICSEARCH_VERSION} at {secure_node.url}: " in status.stdout
    assert f"TLS, CA {secure_node.ca}" in status.stdout

    down = milco_os("cluster", "down", "--port", str(SECURE_PORT), cache_dir=cache_dir)
    assert down.returncode == 0 and f"stopped the Elasticsearch node on port {SECURE_PORT}" in down.stdout
    assert elasticsearch_servers(SECURE_PORT) == []
    after = milco_os("cluster", "status", "--port", str(SECURE_PORT), cache_dir=cache_dir)
    assert after.returncode == 1
    assert f"no milco-os Elasticsearch node is running on port {SECURE_PORT}" in after.stdout
    assert all(secure_node.password not in output for output in OUTPUTS)
