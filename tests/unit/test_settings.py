from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from milco_os.errors import ConfigError
from milco_os.opensearch.client import client_kwargs
from milco_os.settings import Settings


def test_env_prefix_and_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MILCO_OS_OPENSEARCH_URL", "https://a:9200, https://b:9200")
    monkeypatch.setenv("MILCO_OS_OPENSEARCH_TIMEOUT", "12.5")
    s = Settings()
    assert s.opensearch_urls == ["https://a:9200", "https://b:9200"]
    assert s.opensearch_timeout == 12.5
    assert s.opensearch_verify_certs is True


def test_password_from_file_and_never_in_repr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "pw"
    secret.write_text("hunter2\n")
    monkeypatch.setenv("MILCO_OS_OPENSEARCH_USERNAME", "admin")
    monkeypatch.setenv("MILCO_OS_OPENSEARCH_PASSWORD_FILE", str(secret))
    s = Settings()
    assert s.opensearch_password is not None
    assert s.opensearch_password.get_secret_value() == "hunter2"
    assert "hunter2" not in repr(s) and "hunter2" not in str(s.model_dump())
    assert client_kwargs(s)["http_auth"] == ("admin", "hunter2")


def test_password_and_password_file_conflict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "pw"
    secret.write_text("x")
    monkeypatch.setenv("MILCO_OS_OPENSEARCH_PASSWORD", "y")
    monkeypatch.setenv("MILCO_OS_OPENSEARCH_PASSWORD_FILE", str(secret))
    with pytest.raises(ConfigError, match="both set"):
        Settings()


def test_unreadable_secret_file_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MILCO_OS_OPENSEARCH_API_KEY_FILE", "/nonexistent/key")
    with pytest.raises(ConfigError, match="MILCO_OS_OPENSEARCH_API_KEY_FILE"):
        Settings()


def test_tls_verification_is_on_by_default_and_ca_is_passed() -> None:
    kwargs = client_kwargs(Settings(opensearch_ca_certs=Path("/etc/ca.pem")))
    assert kwargs["verify_certs"] is True
    assert kwargs["ca_certs"] == "/etc/ca.pem"
    assert "http_auth" not in kwargs


def test_elasticsearchs_client_gets_the_same_settings_under_its_own_names() -> None:
    from milco_os.opensearch.engine import ELASTICSEARCH

    settings = Settings(opensearch_url="https://127.0.0.1:9400", engine="elasticsearch", opensearch_username="elastic",
                        opensearch_password="pw",
                        opensearch_ca_certs=Path("/etc/ca.pem"), opensearch_timeout=7)
    kwargs = client_kwargs(settings)
    assert kwargs["basic_auth"] == ("elastic", "pw") and "http_auth" not in kwargs
    assert kwargs["request_timeout"] == 7 and kwargs["ca_certs"] == "/etc/ca.pem" and kwargs["verify_certs"] is True
    with_key = settings.model_copy(update={"opensearch_api_key": SecretStr("a2V5")})
    kwargs = ELASTICSEARCH.client_kwargs(with_key)
    assert kwargs["api_key"] == "a2V5" and "basic_auth" not in kwargs and "headers" not in kwargs  # one kind only
    ELASTICSEARCH.client(with_key).close()  # Elastic's client takes them (it refuses two kinds of credentials)
