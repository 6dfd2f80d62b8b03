"""The engines milco-os writes to, and the few things that differ between them: one base (OpenSearch) and a small
subclass per other engine that overrides only what differs, as a web framework's database backends do.

What differs: the client library and its errors, the sparse views' field type (``rank_features`` on OpenSearch, the
core ``sparse_vector`` on Elasticsearch, whose mapper-extras module is not in every distribution), the clause that
scores one term, the dense view's field and k-NN query, the point-in-time API and the server-version call.
Everything else (index bodies, bulk actions, fusion, reindex, the service) is shared and asks the engine only for
those pieces. The engine of an index is in its layout record (:mod:`milco_os.layout`); the engine of a client is
its library's. Only this package imports an engine's client library.
"""

from __future__ import annotations

import re
from functools import cache
from typing import TYPE_CHECKING, Any

from milco_os.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from elasticsearch import Elasticsearch
    from opensearchpy import OpenSearch

    from milco_os.settings import Settings

    #: A client of either engine; the IO layer's functions take either.
    Client = OpenSearch | Elasticsearch

class Engine:
    """OpenSearch: ``rank_features`` views scored by ``rank_feature`` clauses, the k-NN plugin's ``knn_vector``
    (Lucene engine), ``create_pit``/``delete_pit``; its client is opensearch-py."""

    name = "opensearch"
    label = "OpenSearch"
    #: The sparse views' field type.
    sparse = "rank_features"
    #: What Lucene's explanation of one term's score looks like (group ``field`` and ``key``).
    explained_term = re.compile(r"^Linear function on the (?P<field>.+) field for the (?P<key>.+) feature, "
                                r"computed as w \* S")

    # ---- index bodies

    def sparse_mapping(self) -> dict[str, Any]:
        return {"type": "rank_features"}

    def dense_mapping(self, dimensions: int) -> dict[str, Any]:
        from milco_os.layout import DENSE_METHOD

        return {"type": "knn_vector", "dimension": dimensions, "method": DENSE_METHOD}

    def dense_settings(self) -> dict[str, Any]:
        """Index settings an index with a dense view needs."""
        return {"knn": True}

    # ---- queries

    def term_clause(self, field: str, key: str, boost: float) -> dict[str, Any]:
        """Scores ``boost`` times the document's weight of ``key`` in the view ``field``."""
        return {"rank_feature": {"field": f"{field}.{key}", "linear": {}, "boost": boost}}

    def holding(self, field: str, key: str) -> dict[str, Any]:
        """Matches the documents whose view ``field`` holds ``key`` (a filter: its score is not used)."""
        return {"rank_feature": {"field": f"{field}.{key}"}}

    def knn_clause(self, field: str, clause: dict[str, Any], filters: list[dict[str, Any]] | None,
                   kind: str = "knn") -> dict[str, Any]:
        """The k-NN plugin's ``knn`` (or neural-search's ``neural``) query on ``field``: ``clause`` holds
        ``vector`` (or ``query_text`` and ``model_id``) and ``k``; ``filters`` apply while the graph is searched."""
        return {kind: {field: {**clause, "filter": {"bool": {"filter": filters}}} if filters else clause}}

    # ---- the client

    def client(self, settings: Settings) -> Any:
        try:
            return self.client_class()(**self.client_kwargs(settings))
        except ValueError as e:  # e.g. Elastic's client: TLS options on an http:// URL
            msg = f"{self.label}'s client refuses the connection settings: {e}"
            raise ConfigError(msg) from None

    def client_class(self) -> type:
        from opensearchpy import OpenSearch

        return OpenSearch

    def client_kwargs(self, settings: Settings) -> dict[str, Any]:
        """Keyword arguments for the client (pure, so tests can inspect them)."""
        kwargs: dict[str, Any] = {
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
            kwargs["http_auth"] = (settings.opensearch_username, _password(settings))
        if settings.opensearch_api_key:
            kwargs["headers"] = {"Authorization": f"ApiKey {settings.opensearch_api_key.get_secret_value()}"}
        if not settings.opensearch_verify_certs:
            kwargs["ssl_show_warn"] = False
        return kwargs

    def version(self, client: Any) -> str:
        """The server's version number, e.g. ``2.19.6``."""
        return str(client.info()["version"]["number"])

    def timed(self, client: Any, seconds: float) -> tuple[Any, dict[str, Any]]:
        """(client, keyword arguments) for a request that may take ``seconds``, longer than the client's timeout."""
        return client, {"request_timeout": seconds}

    def ping(self, client: Any) -> bool:
        """Whether the cluster answers (a failed request may raise)."""
        return bool(client.ping())

    def streaming_bulk(self) -> Callable[..., Iterator[tuple[bool, dict[str, Any]]]]:
        from opensearchpy.helpers import streaming_bulk

        return streaming_bulk

    # ---- point in time

    #: Reading a whole index (reindex): the sort of its pages and the field its slices are cut by. ``_id`` is the
    #: same in every point in time, so a job resumes with a fresh one.
    scan_sort: tuple[dict[str, str], ...] = ({"_id": "asc"},)
    slice_field: str | None = "_id"
    #: Whether a resumed read needs the point in time it started with (its sort values mean nothing in another).
    resume_needs_same_pit = False

    def open_pit(self, client: Any, index: str, keep_alive: str) -> str:
        return str(client.create_pit(index=index, keep_alive=keep_alive)["pit_id"])

    def close_pit(self, client: Any, pit_id: str) -> None:
        client.delete_pit(body={"pit_id": [pit_id]})

    def __repr__(self) -> str:
        return f"<engine {self.name}>"


class ElasticsearchEngine(Engine):
    """Elasticsearch 8.x: core ``sparse_vector`` views (each term scored by a boosted ``term`` clause, exactly as a
    ``rank_feature`` clause scores), ``dense_vector`` with its own ``knn`` query, ``open_point_in_time``; its client
    is Elastic's ``elasticsearch`` package."""

    name = "elasticsearch"
    label = "Elasticsearch"
    sparse = "sparse_vector"

    def sparse_mapping(self) -> dict[str, Any]:
        # Since 8.19 a new sparse_vector field prunes query terms by default (frequent or light ones): milco-os
        # prunes by its own rules, and a score must be the exact dot product, so that is switched off.
        return {"type": "sparse_vector", "index_options": {"prune": False}}

    def dense_mapping(self, dimensions: int) -> dict[str, Any]:
        # Float HNSW as on OpenSearch (8.x's default quantises to int8); cosine scores a hit (1 + cos) / 2.
        from milco_os.layout import DENSE_METHOD

        return {"type": "dense_vector", "dims": dimensions, "index": True, "similarity": "cosine",
                "index_options": {"type": "hnsw", **DENSE_METHOD["parameters"]}}

    def dense_settings(self) -> dict[str, Any]:
        return {}

    def term_clause(self, field: str, key: str, boost: float) -> dict[str, Any]:
        return {"term": {field: {"value": key, "boost": boost}}}

    def holding(self, field: str, key: str) -> dict[str, Any]:
        return {"term": {field: key}}

    def knn_clause(self, field: str, clause: dict[str, Any], filters: list[dict[str, Any]] | None,
                   kind: str = "knn") -> dict[str, Any]:
        if kind != "knn":
            msg = f"the {kind!r} query is OpenSearch's (neural-search); Elasticsearch has no such query"
            raise ConfigError(msg)
        k = int(clause["k"])
        knn: dict[str, Any] = {"field": field, "query_vector": clause["vector"], "k": k,
                               "num_candidates": max(k, 100)}
        if filters:
            knn["filter"] = filters
        return {"knn": knn}

    def client_class(self) -> type:
        from elasticsearch import Elasticsearch

        return Elasticsearch

    def client_kwargs(self, settings: Settings) -> dict[str, Any]:
        # The same settings under the names Elastic's client gives them.
        kwargs = super().client_kwargs(settings)
        kwargs["request_timeout"] = kwargs.pop("timeout")
        kwargs["connections_per_node"] = kwargs.pop("pool_maxsize")
        if "http_auth" in kwargs:
            kwargs["basic_auth"] = kwargs.pop("http_auth")
        if settings.opensearch_api_key:
            # The same Authorization header, which Elastic's client writes itself; it takes one kind of
            # credentials, and the API key wins, as its header does on OpenSearch.
            del kwargs["headers"]
            kwargs.pop("basic_auth", None)
            kwargs["api_key"] = settings.opensearch_api_key.get_secret_value()
        return kwargs

    def version(self, client: Any) -> str:
        # `GET /` is not answered by every distribution (the integration-test zip says 405); the nodes API is.
        nodes = client.nodes.info(node_id="_local", metric="_none", filter_path="nodes.*.version")["nodes"]
        return str(next(iter(nodes.values()))["version"])

    def timed(self, client: Any, seconds: float) -> tuple[Any, dict[str, Any]]:
        # Elastic's client takes transport options through options(), not as keyword arguments of a request.
        return client.options(request_timeout=seconds), {}

    def ping(self, client: Any) -> bool:
        # `HEAD /` belongs to the rest-root module, which not every distribution has (the integration-test zip).
        self.version(client)
        return True

    def streaming_bulk(self) -> Callable[..., Iterator[tuple[bool, dict[str, Any]]]]:
        from elasticsearch.helpers import streaming_bulk

        return streaming_bulk

    # Elasticsearch 8 refuses fielddata on _id (indices.id_field_data.enabled), so pages are read in the point in
    # time's own order, _shard_doc, whose values mean nothing in another point in time.
    scan_sort = ({"_shard_doc": "asc"},)
    slice_field = None
    resume_needs_same_pit = True

    def open_pit(self, client: Any, index: str, keep_alive: str) -> str:
        return str(client.open_point_in_time(index=index, keep_alive=keep_alive)["id"])

    def close_pit(self, client: Any, pit_id: str) -> None:
        client.close_point_in_time(id=pit_id)


OPENSEARCH = Engine()
ELASTICSEARCH = ElasticsearchEngine()
ENGINES = {e.name: e for e in (OPENSEARCH, ELASTICSEARCH)}


def engine_named(name: str) -> Engine:
    try:
        return ENGINES[name]
    except KeyError:
        msg = f"engine {name!r}: choose {', '.join(ENGINES)}"
        raise ConfigError(msg) from None


def engine_of(client: Any) -> Engine:
    """The engine a client talks to (its library's)."""
    return ELASTICSEARCH if type(client).__module__.startswith("elasticsearch") else OPENSEARCH


def engine_of_record(record: dict[str, Any], index: str = "") -> Engine:
    """The engine an index lives in, from its ``_meta.milco_os`` record."""
    from milco_os.layout import read_layout

    return engine_named(read_layout(record, index).engine)


def _password(settings: Settings) -> str:
    return settings.opensearch_password.get_secret_value() if settings.opensearch_password else ""


# ---- errors, whichever library raised them


@cache
def _errors() -> dict[str, tuple[type[Exception], ...]]:
    import elastic_transport
    import elasticsearch
    import opensearchpy.exceptions as opensearch

    return {
        "not_found": (opensearch.NotFoundError, elasticsearch.NotFoundError),
        "bad_request": (opensearch.RequestError, elasticsearch.BadRequestError),
        # Anything the transport raised: an error response or no response at all.
        "transport": (opensearch.TransportError, elasticsearch.ApiError, elastic_transport.TransportError),
        "connection": (opensearch.ConnectionError, elastic_transport.ConnectionError,
                       elastic_transport.ConnectionTimeout),
    }


def not_found_error() -> tuple[type[Exception], ...]:
    """The exceptions for a 404 (``except not_found_error():``)."""
    return _errors()["not_found"]


def bad_request_error() -> tuple[type[Exception], ...]:
    """The exceptions for a 400."""
    return _errors()["bad_request"]


def transport_error() -> tuple[type[Exception], ...]:
    """The exceptions for any failed request: an error response, or no response (connection, timeout, TLS)."""
    return _errors()["transport"]


def connection_error() -> tuple[type[Exception], ...]:
    """The exceptions for a request that got no response."""
    return _errors()["connection"]


def error_engine(e: Exception) -> Engine:
    """The engine whose client raised ``e`` (by the library that raised it)."""
    return ELASTICSEARCH if type(e).__module__.startswith(("elasticsearch", "elastic_transport")) else OPENSEARCH


def error_status(e: Exception) -> int | None:
    """The HTTP status of a failed request (None: no response)."""
    status = getattr(e, "status_code", None)
    return status if isinstance(status, int) else None
