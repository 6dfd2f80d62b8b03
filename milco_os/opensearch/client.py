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


def redact_urls_in(text: str) -> str:
    """``text`` with the credentials of every URL in it replaced (errors may quote a URL)."""
    import re

    return re.sub(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@]+@", r"\1***@", text)


def describe_transport_error(e: Exception) -> str:
    """One line from an opensearch-py error: OpenSearch's own ``type: reason`` where it gave one."""
    info = getattr(e, "info", None)
    error = info.get("error") if isinstance(info, dict) else None
    if isinstance(error, dict):
        root = (error.get("root_cause") or [error])[0]
        text = f"{root.get('type', 'error')}: {root.get('reason', '')}"
    else:
        text = str(getattr(e, "error", None) or e)
    text = " ".join(text.split())
    # Reasons quote the offending value (an id, a query); keep both ends, where the explanation is.
    return text if len(text) <= 500 else f"{text[:240]} ... {text[-240:]}"
