"""The one place that builds a client (OpenSearch or Elasticsearch): URLs, auth, TLS and timeouts from Settings."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from milco_os.errors import ConfigError
from milco_os.opensearch.engine import ELASTICSEARCH, OPENSEARCH, Engine, engine_named, engine_of
from milco_os.redact import redact_urls_in

if TYPE_CHECKING:
    from milco_os.settings import Settings

log = logging.getLogger(__name__)


def client_kwargs(settings: Settings) -> dict:
    """Keyword arguments for the client of the engine ``settings`` name (OpenSearch when ``auto``; pure, so tests
    can inspect them)."""
    return engine_named("opensearch" if settings.engine == "auto" else settings.engine).client_kwargs(settings)


def make_client(settings: Settings) -> Any:
    """A client for the cluster at ``settings.opensearch_url``: opensearch-py for OpenSearch, Elastic's client for
    Elasticsearch (``settings.engine``; ``auto`` asks the cluster, and takes OpenSearch when it cannot tell)."""
    engine = detect_engine(settings) if settings.engine == "auto" else engine_named(settings.engine)
    return engine.client(settings)


def detect_engine(settings: Settings) -> Engine:
    """The engine at ``settings.opensearch_url``: Elastic's client checks that a cluster says it is Elasticsearch
    (the ``X-Elastic-Product`` header of each response) and refuses any other; OpenSearch when it is not, or when
    no answer tells (unreachable, TLS refused: :func:`connect` then says so)."""
    from elasticsearch import ApiError, UnsupportedProductError

    try:  # Elastic's client refuses some settings opensearch-py takes (TLS options on an http:// URL)
        probe = ELASTICSEARCH.client(settings.model_copy(update={"opensearch_timeout": min(settings.opensearch_timeout,
                                                                                           10.0)}))
    except ConfigError:
        return OPENSEARCH
    try:
        probe.options(max_retries=0).cluster.health()
    except UnsupportedProductError:
        return OPENSEARCH
    except ApiError as e:  # an error answer (refused credentials ...): Elasticsearch's own media type tells
        headers = e.meta.headers
        elastic = (headers.get("x-elastic-product") == "Elasticsearch"
                   or str(headers.get("content-type", "")).startswith("application/vnd.elasticsearch"))
        return ELASTICSEARCH if elastic else OPENSEARCH
    except Exception:  # noqa: BLE001 (no answer tells the engine: the first real request reports the problem)
        log.debug("engine detection got no answer from %s", redact_urls_in(settings.opensearch_url))
        return OPENSEARCH
    finally:
        probe.close()
    return ELASTICSEARCH


class ConnectionProblem(ConfigError):
    """The cluster did not answer a first request; ``hint`` says which setting to look at."""

    def __init__(self, msg: str, hint: str) -> None:
        super().__init__(msg)
        self.hint = hint


def connect(settings: Settings) -> Any:
    """A client that has answered a first request, or a :class:`ConnectionProblem` naming the URL (without
    its credentials) and what went wrong."""
    client = make_client(settings)
    where = redact_urls_in(settings.opensearch_url)
    label = engine_of(client).label
    try:
        engine_of(client).version(client)
    except Exception as e:  # noqa: BLE001 (any transport or auth failure: report it as one clear line)
        status = getattr(e, "status_code", None)
        what = f"HTTP {status}" if isinstance(status, int) else type(e).__name__
        detail = str(e)
        if status in (401, 403):
            problem = ConnectionProblem(f"{label} at {where} refused the credentials ({what})",
                                        "check --username/--password-file or --api-key-file")
        elif "CERTIFICATE_VERIFY_FAILED" in detail:
            problem = ConnectionProblem(
                f"TLS certificate verification failed for {where}",
                "pass --ca-certs / MILCO_OS_OPENSEARCH_CA_CERTS with the CA that signed the cluster's certificate")
        elif "SSL" in what or "ssl" in detail.lower():
            problem = ConnectionProblem(f"TLS handshake with {label} at {where} failed ({what})",
                                        "check the URL's scheme and --ca-certs")
        elif where.startswith("http://") and "RemoteDisconnected" in detail:
            # A TLS port closes a plain-HTTP connection without a response.
            problem = ConnectionProblem(f"{label} at {where} closed the connection without a response",
                                        "if it uses TLS, use an https:// URL")
        else:
            problem = ConnectionProblem(f"cannot reach {label} at {where} ({what})",
                                        "check --url / MILCO_OS_OPENSEARCH_URL and that it is up")
        raise problem from None
    return client


def reachable(client: Any) -> bool:
    """Whether the cluster answers a ping (any transport failure: no)."""
    try:
        return engine_of(client).ping(client)
    except Exception:  # noqa: BLE001 (readiness: every failure means "not reachable")
        return False


def close(client: Any) -> None:
    """Release the client's connections (e.g. when the service shuts down)."""
    client.close()


def describe_transport_error(e: Exception) -> str:
    """One line from a client's error: the engine's own ``type: reason`` where it gave one."""
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
