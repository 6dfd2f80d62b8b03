"""The one place that builds an OpenSearch client: URLs, auth, TLS and timeouts from Settings."""

from __future__ import annotations

from typing import TYPE_CHECKING

from milco_os.errors import ConfigError
from milco_os.redact import redact_urls_in

if TYPE_CHECKING:
    from opensearchpy import OpenSearch

    from milco_os.settings import Settings


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


class ConnectionProblem(ConfigError):
    """OpenSearch did not answer a first request; ``hint`` says which setting to look at."""

    def __init__(self, msg: str, hint: str) -> None:
        super().__init__(msg)
        self.hint = hint


def connect(settings: Settings) -> OpenSearch:
    """A client that has answered a first request, or a :class:`ConnectionProblem` naming the URL (without
    its credentials) and what went wrong."""
    client = make_client(settings)
    where = redact_urls_in(settings.opensearch_url)
    try:
        client.info()
    except Exception as e:  # noqa: BLE001 (any transport or auth failure: report it as one clear line)
        status = getattr(e, "status_code", None)
        what = f"HTTP {status}" if isinstance(status, int) else type(e).__name__
        detail = str(e)
        if status in (401, 403):
            problem = ConnectionProblem(f"OpenSearch at {where} refused the credentials ({what})",
                                        "check --username/--password-file or --api-key-file")
        elif "CERTIFICATE_VERIFY_FAILED" in detail:
            problem = ConnectionProblem(
                f"TLS certificate verification failed for {where}",
                "pass --ca-certs / MILCO_OS_OPENSEARCH_CA_CERTS with the CA that signed the cluster's certificate")
        elif "SSL" in what or "ssl" in detail.lower():
            problem = ConnectionProblem(f"TLS handshake with OpenSearch at {where} failed ({what})",
                                        "check the URL's scheme and --ca-certs")
        elif where.startswith("http://") and "RemoteDisconnected" in detail:
            # A TLS port closes a plain-HTTP connection without a response.
            problem = ConnectionProblem(f"OpenSearch at {where} closed the connection without a response",
                                        "if it uses TLS, use an https:// URL")
        else:
            problem = ConnectionProblem(f"cannot reach OpenSearch at {where} ({what})",
                                        "check --url / MILCO_OS_OPENSEARCH_URL and that it is up")
        raise problem from None
    return client


def reachable(client: OpenSearch) -> bool:
    """Whether OpenSearch answers a ping (any transport failure: no)."""
    try:
        return bool(client.ping())
    except Exception:  # noqa: BLE001 (readiness: every failure means "not reachable")
        return False


def close(client: OpenSearch) -> None:
    """Release the client's connections (e.g. when the service shuts down)."""
    client.close()


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
