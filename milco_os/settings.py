"""Settings from the environment (prefix ``MILCO_OS_``), overridable by CLI flags.

Secrets (password, API key) come only from the environment or from files named by the ``*_FILE``
variables; they are held as ``SecretStr`` so they never show up in logs or reprs.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from milco_os.errors import ConfigError
from milco_os.redact import redact_urls_in as _shown  # URLs in messages lose their user:password

#: The model used when none is named. A built-in name (see ``milco-os models``), a local directory or a
#: Hugging Face hub id.
DEFAULT_MODEL = "milco-mini"


def default_cache_dir() -> Path:
    """Where downloads, built models and local OpenSearch nodes live.

    Root gets ``/var/cache/milco-os`` rather than ``/root/.cache``: the local OpenSearch node runs as an
    unprivileged user, which must be able to read its files, and ``/root`` is closed to other users.
    """
    if os.geteuid() == 0:
        return Path("/var/cache/milco-os")
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "milco-os"


class Settings(BaseSettings):
    """Every knob milco-os reads from the environment. Field ``x`` is read from ``MILCO_OS_X``."""

    model_config = SettingsConfigDict(env_prefix="MILCO_OS_", extra="ignore")

    opensearch_url: str = Field(
        "http://127.0.0.1:9200", description="OpenSearch or Elasticsearch URL; several may be given, comma-separated"
    )
    engine: Literal["auto", "opensearch", "elasticsearch"] = Field(
        "auto", description="the engine at the URL; auto: asked with the first request"
    )
    opensearch_username: str | None = None
    opensearch_password: SecretStr | None = None
    opensearch_password_file: Path | None = None
    opensearch_api_key: SecretStr | None = None
    opensearch_api_key_file: Path | None = None
    opensearch_ca_certs: Path | None = Field(None, description="CA bundle for TLS verification")
    opensearch_verify_certs: bool = Field(True, description="verify TLS certificates (keep on)")
    opensearch_timeout: float = Field(30.0, gt=0, description="request timeout in seconds")

    service_api_key: SecretStr | None = Field(None, description="if set, the HTTP service requires it")
    service_api_key_file: Path | None = None
    allow_script_filters: bool = Field(
        False, description="let search filters contain `script` clauses (arbitrary code on the cluster); off by default"
    )

    model: str = Field(DEFAULT_MODEL, description="default model: built-in name, directory or hub id")
    cache_dir: Path = Field(default_factory=default_cache_dir)

    @field_validator("opensearch_url")
    @classmethod
    def _valid_urls(cls, value: str) -> str:
        from urllib.parse import urlsplit

        urls = [u.strip() for u in value.split(",") if u.strip()]
        if not urls:
            msg = "no URL given"
            raise ValueError(msg)
        for url in urls:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https"):
                msg = f"{_shown(url)}: expected an http:// or https:// URL"
                raise ValueError(msg)
            try:
                parts.port  # noqa: B018 (raises for a port outside 0-65535 or not a number)
            except ValueError:
                msg = f"{_shown(url)}: the port must be a number between 1 and 65535"
                raise ValueError(msg) from None
            if not parts.hostname or parts.port == 0:
                msg = f"{_shown(url)}: expected scheme://host[:port]"
                raise ValueError(msg)
        return value

    @model_validator(mode="after")
    def _read_secret_files(self) -> Settings:
        for value_field, file_field in (
            ("opensearch_password", "opensearch_password_file"),
            ("opensearch_api_key", "opensearch_api_key_file"),
            ("service_api_key", "service_api_key_file"),
        ):
            path = getattr(self, file_field)
            if path is None:
                continue
            if getattr(self, value_field) is not None:
                env = f"MILCO_OS_{value_field.upper()}"
                msg = f"{env} and {env}_FILE are both set; set only one"
                raise ConfigError(msg)
            try:
                secret = Path(path).read_text(encoding="utf-8").strip()
            except OSError as e:
                msg = f"MILCO_OS_{file_field.upper()}: cannot read {path}: {e.strerror}"
                raise ConfigError(msg) from e
            setattr(self, value_field, SecretStr(secret))
        return self

    @property
    def opensearch_urls(self) -> list[str]:
        return [u.strip() for u in self.opensearch_url.split(",") if u.strip()]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
