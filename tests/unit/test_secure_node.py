"""Pure parts of `cluster up --secure`: certificates, plugin descriptor, configuration text, the admin
password file, what node.json and status report. The real secured node is in tests/integration."""

from __future__ import annotations

import json
import ssl
import stat
import subprocess
import urllib.error
from pathlib import Path

import pytest
import yaml

from milco_os.errors import ClusterError, ConfigError
from milco_os.localnode import (
    ADMIN_DN,
    NODE_DN,
    LocalNode,
    generate_certs,
    internal_users_yml,
    security_plugin_version,
    security_settings,
    widen_descriptor,
)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cert_dir = tmp_path_factory.mktemp("certs")
    generate_certs(cert_dir)
    return cert_dir


def openssl_text(*args: str) -> str:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, check=True).stdout


def test_certificates_have_the_configured_names_and_private_keys(certs: Path) -> None:
    subject = openssl_text("x509", "-in", str(certs / "node.pem"), "-noout", "-subject", "-nameopt", "RFC2253")
    assert subject.strip() == f"subject={NODE_DN}"
    subject = openssl_text("x509", "-in", str(certs / "admin.pem"), "-noout", "-subject", "-nameopt", "RFC2253")
    assert subject.strip() == f"subject={ADMIN_DN}"
    san = openssl_text("x509", "-in", str(certs / "node.pem"), "-noout", "-ext", "subjectAltName")
    assert "DNS:localhost" in san and "IP Address:127.0.0.1" in san
    for name in ("node", "admin"):
        verified = openssl_text("verify", "-CAfile", str(certs / "root-ca.pem"), str(certs / f"{name}.pem"))
        assert verified.strip().endswith(": OK")
    for key in certs.glob("*-key.pem"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert key.read_text().startswith("-----BEGIN PRIVATE KEY-----")  # PKCS#8, as the plugin needs


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_a_strict_tls_client_trusting_the_ca_accepts_the_node(certs: Path, host: str) -> None:
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(certs / "node.pem", certs / "node-key.pem")
    client = ssl.create_default_context(cafile=str(certs / "root-ca.pem"))
    client.verify_flags |= ssl.VERIFY_X509_STRICT  # the default from Python 3.13 on
    handshake(client, server, host)


def test_another_ca_is_refused(certs: Path, tmp_path: Path) -> None:
    other = generate_certs(tmp_path)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(certs / "node.pem", certs / "node-key.pem")
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(ssl.create_default_context(cafile=str(other)), server, "127.0.0.1")


def handshake(client_ctx: ssl.SSLContext, server_ctx: ssl.SSLContext, host: str) -> None:
    """A TLS handshake in memory (no sockets): raises what the client would."""
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=host)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(20):
        for name, end in (("client", client), ("server", server)):
            if not done[name]:
                try:
                    end.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return
    raise AssertionError("the handshake did not finish")


def test_security_plugin_version() -> None:
    assert security_plugin_version("2.19.6") == "2.19.4.0"  # Maven Central has no 2.19.6.0
    assert security_plugin_version("3.4.0") == "3.4.0.0"


DESCRIPTOR = "name=opensearch-security\nversion=2.19.4.0\njava.version=11\nopensearch.version=2.19.4\n"


def test_descriptor_is_widened_only_for_a_later_patch_release() -> None:
    assert widen_descriptor(DESCRIPTOR, "2.19.4") == DESCRIPTOR
    widened = widen_descriptor(DESCRIPTOR, "2.19.6")
    assert 'dependencies={ opensearch: "~2.19.4" }' in widened and "opensearch.version" not in widened
    for node_version in ("2.18.0", "2.19.3", "3.0.0"):
        with pytest.raises(ClusterError, match="cannot run on"):
            widen_descriptor(DESCRIPTOR, node_version)


def test_security_settings_name_the_certificates_and_dns() -> None:
    settings = yaml.safe_load(security_settings())
    assert settings["plugins.security.ssl.http.enabled"] is True
    assert settings["plugins.security.allow_default_init_securityindex"] is True
    assert settings["plugins.security.authcz.admin_dn"] == [ADMIN_DN]
    assert settings["plugins.security.nodes_dn"] == [NODE_DN]
    for layer in ("http", "transport"):
        assert settings[f"plugins.security.ssl.{layer}.pemtrustedcas_filepath"] == "certs/root-ca.pem"
        assert settings[f"plugins.security.ssl.{layer}.pemkey_filepath"] == "certs/node-key.pem"


def test_internal_users_hold_only_admin_with_its_hash() -> None:
    users = yaml.safe_load(internal_users_yml("$2y$12$" + "a" * 53))
    assert set(users) == {"_meta", "admin"}  # none of the plugin's demo users (well-known passwords)
    assert users["admin"]["hash"].startswith("$2y$12$") and users["admin"]["backend_roles"] == ["admin"]


def test_admin_password_is_generated_once_privately(tmp_path: Path) -> None:
    node = LocalNode(tmp_path, 9299)
    path = node._admin_password_file(None)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    password = path.read_text()
    assert len(password.strip()) >= 24
    assert node._admin_password_file(None) == path and path.read_text() == password  # kept across starts


def test_a_given_admin_password_file_must_be_readable_and_not_empty(tmp_path: Path) -> None:
    node = LocalNode(tmp_path, 9299)
    given = tmp_path / "pw"
    given.write_text("s3cret-Value\n")
    assert node._admin_password_file(given) == given.resolve()
    given.write_text("\n")
    with pytest.raises(ConfigError, match="empty") as e:
        node._admin_password_file(given)
    with pytest.raises(ConfigError, match="cannot read"):
        node._admin_password_file(tmp_path / "missing")
    assert "s3cret" not in str(e.value)


def test_admin_password_file_needs_secure(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="add --secure"):
        LocalNode(tmp_path, 9299).up(admin_password_file=tmp_path / "pw")


def test_node_json_of_a_secure_node_gives_https_and_the_ca(tmp_path: Path) -> None:
    node = LocalNode(tmp_path, 9299)
    node.node_dir.mkdir(parents=True)
    old = {"version": "2.19.6", "port": 9299, "pid": 1, "url": "http://127.0.0.1:9299", "home": "h",
           "node_dir": str(node.node_dir), "user": "u", "started_at": 0.0}
    (node.node_dir / "node.json").write_text(json.dumps(old))
    assert node.info() is not None and node.info().secure is False  # written before --secure existed
    assert LocalNode(tmp_path, 9299).url == "http://127.0.0.1:9299"
    secure = old | {"url": "https://127.0.0.1:9299", "secure": True, "ca_certs": "/x/root-ca.pem",
                    "password_file": "/x/admin-password"}
    (node.node_dir / "node.json").write_text(json.dumps(secure))
    again = LocalNode(tmp_path, 9299)
    assert again.url == "https://127.0.0.1:9299"
    status = again.status()  # pid 1 is not an OpenSearch process: not running, but still says how it was set up
    assert status["running"] is False
    assert status["secure"] is True and status["ca_certs"] == "/x/root-ca.pem"


@pytest.mark.parametrize(("answer", "health"), [
    (urllib.error.HTTPError("https://127.0.0.1:9299/", 401, "Unauthorized", {}, None), "unauthorized"),
    (urllib.error.URLError(ConnectionRefusedError(111, "refused")), "unreachable"),
])
def test_status_tells_a_refused_password_from_an_unreachable_node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, answer: Exception, health: str
) -> None:
    node = LocalNode(tmp_path, 9299)

    def refuse(self: LocalNode, path: str, timeout: float) -> dict:
        raise answer

    monkeypatch.setattr(LocalNode, "running_pid", lambda self: 4242)
    monkeypatch.setattr(LocalNode, "_get", refuse)
    status = node.status()
    assert status["running"] is True and status["health"] == health
