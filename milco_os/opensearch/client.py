"""The one place that builds an OpenSearch client: URLs, auth, TLS and timeouts from Settings."""

from __future__ import annotations

from typing import TYPE_CHECKING

from milco_os.settings import Settings

if TYPE_CHECKING:
    from opensearchpy import OpenSearch


def client_kwargs(settings: Settings) -> dict:
    """Keyword arguments for ``opensearchpy.OpenSearch`` (pure, so tests can inspect them)."""
    kwargs: dict = {
        "hosts": settings.opensearch_urls,
        "timeout": settings.opensearch_timeout,
        "verify_certs": settings.opensearch_verify_certs,
        "retry_on_timeout": True,
        "max_retries": 2,
        "http_compress": True,
        # Ingest, reindex slices and the service use one client from several threads.
        "pool_maxsize": 16,
    }
    if settings.opensearch_ca_certs:
        kwargs["ca_certs"] = str(settings.opensearch_ca_certs)
    if settings.opensearch_username:
        password = settings.opensearch_password.get_secret_value() if settings.opensearch_password else ""
        kwargs["http_auth"] = (settings.opensearch_username, password)
    if settings.opensearch_api_key:
        kwargs["headers"] = {"Authorization": f"ApiKey {settings.opensearch_api_key.get_secret_value()}"}
    if not settings.opensearch_verify_certs:
        kwargs["ssl_show_warn"] = False
    return kwargs


def make_client(settings: Settings) -> OpenSearch:
    from opensearchpy import OpenSearch

    return OpenSearch(**client_kwargs(settings))
