"""OpenSearch's own ingest and search calling milco-os: ml-commons remote models behind neural-search's
``sparse_encoding`` ingest processor and ``neural_sparse`` query (and, for an index with a dense view, its
``text_embedding`` processor and ``neural`` query).

For one index, :func:`register` creates, per view the index has (pivot, echo, dense) and per kind (``document`` for the
ingest pipeline, ``query`` for search), a connector to the ``/v1/neural-sparse`` route of ``milco-os serve`` and a
remote model on it, all in one model group; then an ingest pipeline (one ``sparse_encoding`` processor per view,
documents pruned as the index's ``_meta`` says) and a search pipeline (``neural_query_enricher`` with the query
models as the fields' defaults, and ``neural_sparse_two_phase_processor`` where asked). It records every id in the
index's ``_meta`` and checks the whole path once (a simulated document, a query). :func:`unregister` removes it.

Scores equal ``milco-os ingest`` + ``milco-os search``: the service encodes with the same model and pruning and
rounds document weights as ingest does; a query's two views are two ``neural_sparse`` clauses boosted by alpha
and 1 - alpha. Every connector carries the fingerprint of the index's model, and the service refuses (409) to
encode for another model, so a service restarted with a different model cannot write meaningless vectors.

The builders are pure; :func:`register`, :func:`unregister` and :func:`cluster_problems` do the IO.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from milco_os.errors import ConfigError, ModelMismatch, SearchIndexError
from milco_os.keys import KEY_SCHEME_VERSION
from milco_os.layout import SeismicQuery, read_layout
from milco_os.opensearch.client import describe_transport_error
from milco_os.opensearch.indices import index_record
from milco_os.opensearch.mapping import META_KEY
from milco_os.opensearch.query import added_in_window, match_nothing
from milco_os.pruning import Pruning
from milco_os.specs import DEFAULT_ALPHA, TwoPhase

if TYPE_CHECKING:
    from milco_os.opensearch.engine import Client

log = logging.getLogger(__name__)
ROUTE = "/v1/neural-sparse"
RECORD_KEY = "ml_commons"  # under _meta.milco_os
KINDS = ("document", "query")
#: Where the ingest pipeline joins an index's text fields (as ``milco-os ingest`` does); removed afterwards.
JOINED_TEXT = "_milco_os_text"
_INPUT = "__MILCO_OS_INPUT__"
ML = "/_plugins/_ml"


@dataclass(frozen=True)
class Target:
    """One remote model: which vectors of which texts, and the ``rank_features`` field they belong to."""

    kind: str  # "document" | "query"
    view: str  # "pivot" | "echo"
    field: str

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.view}"


def targets(record: dict[str, Any]) -> list[Target]:
    """The models an index needs: per kind, one per view its model has (``_meta.vocab``), and one for the dense
    view where the index has one (its layout)."""
    fields = {v: record["fields"][v] for v in ("pivot", "echo") if record["vocab"].get(v)}
    dense = read_layout(record, "").dense
    if dense is not None:
        fields["dense"] = dense.field
    return [Target(kind, view, field) for kind in KINDS for view, field in fields.items()]


# ------------------------------------------------------------------------------------------ pure builders
def connector_body(
    target: Target, *, index: str, service_url: str, prune: str, fingerprint: str, has_key: bool,
    dense: bool = False, model: str | None = None, keys: str = "names",
) -> dict[str, Any]:
    """A connector whose predict action posts the texts to the service's :data:`ROUTE` (``dense``: the index has
    a dense view, so every view's request asks for it and the service encodes each text once for all three).

    ml-commons' default pre-processing puts the texts, as a JSON array, in ``${parameters.input}``; its default
    post-processing hands the service's ``{"response": [...]}`` to neural-search unchanged. The dense view's
    ``{"response": [[...], ...]}`` goes through its default embedding post-processing (``response_filter``
    picks the list), into the tensors neural-search's ``text_embedding`` processor and ``neural`` query read.
    ``model`` names the model that built the index (with its version), so that a service running a newer version
    of that built-in model answers with the index's own (``/v1/neural-sparse``). ``keys="ids"``: the terms come back
    as vocabulary ids (the pivot view of a SEISMIC index)."""
    sent = {"texts": _INPUT, "kind": target.kind, "view": target.view, "prune": prune, "model_fingerprint": fingerprint}
    sent |= ({"dense": True} if dense else {}) | ({"model": model} if model else {})
    sent |= {"keys": keys} if keys != "names" else {}
    request = json.dumps(sent).replace(json.dumps(_INPUT), "${parameters.input}")
    headers = {"Content-Type": "application/json"}
    if has_key:
        headers["Authorization"] = "Bearer ${credential.service_key}"
    action: dict[str, Any] = {
        "action_type": "predict",
        "method": "POST",
        "url": service_url.rstrip("/") + ROUTE,
        "headers": headers,
        "request_body": request,
    }
    if target.view == "dense":
        action["post_process_function"] = "connector.post_process.default.embedding"
    return {
        "name": f"milco-os {index} {target.kind} {target.view}",
        "description": f"milco-os serve: {target.view} vectors of {target.kind}s for index {index}",
        "version": "1",
        "protocol": "http",
        "parameters": {"response_filter": "$.response"} if target.view == "dense" else {},
        # ml-commons needs a credential (it stores it encrypted); it carries the service's key when there is one.
        "credential": {"service_key": "unused"},
        "actions": [action],
    }


def model_body(target: Target, *, index: str, connector_id: str, group_id: str) -> dict[str, Any]:
    return {
        "name": f"milco-os {index} {target.kind} {target.view}",
        "function_name": "remote",
        "model_group_id": group_id,
        "description": f"milco-os: {target.view} vectors of {target.kind}s for index {index}",
        "connector_id": connector_id,
    }


def ingest_pipeline_body(
    text_fields: list[str], models: list[tuple[str, str]], *, index: str, batch_size: int = 32,
    dense: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """``models``: (model id, target field) per sparse view; ``dense``: (model id, field) of the dense view, written
    by a ``text_embedding`` processor. Several text fields are joined with newlines first, as
    ``milco-os ingest`` joins them (a painless ``script`` processor), so both paths encode the same text.
    ``batch_size`` documents of a bulk request go to the service together (``milco-os ingest``'s default
    batch, so both paths encode the same batches)."""
    processors: list[dict[str, Any]] = []
    source = text_fields[0]
    if len(text_fields) > 1:
        source = JOINED_TEXT
        processors.append({"script": {
            "description": "join the text fields as milco-os ingest does",
            "lang": "painless",
            # Painless string literals have no \n escape: the separator comes in as a parameter.
            "params": {"fields": text_fields, "target": JOINED_TEXT, "separator": "\n"},
            "source": (
                "List parts = new ArrayList(); for (String f : params.fields) { def v = ctx[f]; "
                "if (v != null && v.toString().length() > 0) { parts.add(v.toString()); } } "
                "ctx[params.target] = String.join(params.separator, parts);"
            ),
        }})
    for model_id, field in models:
        processors.append({"sparse_encoding": {"model_id": model_id, "field_map": {source: field},
                                               "batch_size": batch_size}})
    if dense is not None:
        processors.append({"text_embedding": {"model_id": dense[0], "field_map": {source: dense[1]},
                                              "batch_size": batch_size}})
    if source == JOINED_TEXT:
        processors.append({"remove": {"field": JOINED_TEXT}})
    return {"description": f"milco-os: encode documents for index {index} through milco-os serve",
            "processors": processors}


def search_pipeline_body(defaults: dict[str, str], two_phase: TwoPhase | None, *, index: str) -> dict[str, Any]:
    """``defaults``: field -> query model id, so ``neural_sparse`` clauses need no ``model_id``."""
    processors: list[dict[str, Any]] = [{"neural_query_enricher": {
        "description": f"milco-os query models of index {index}", "neural_field_default_id": defaults,
    }}]
    if two_phase is not None:
        if two_phase.split != "weight":
            msg = "neural_sparse_two_phase_processor splits query terms by weight only; got a two-phase split by value"
            raise ValueError(msg)
        processors.append({"neural_sparse_two_phase_processor": {
            "description": "milco-os --two-phase",
            "enabled": True,
            "two_phase_parameter": {
                "prune_ratio": two_phase.ratio,
                "expansion_rate": two_phase.expansion,
                "max_window_size": two_phase.max_window,
            },
        }})
    return {"description": f"milco-os: search index {index} through milco-os serve", "request_processors": processors}


def model_query(
    text: str, *, models: dict[str, str] | None = None, pivot_field: str, echo_field: str, alpha: float = DEFAULT_ALPHA,
    fields: tuple[str, ...] = ("pivot", "echo"), seismic: SeismicQuery | None = None, depth: int = 10,
) -> dict[str, Any]:
    """The ``neural_sparse`` query that OpenSearch encodes itself: one clause per view, boosted by alpha and
    1 - alpha. ``models``: view -> query model id; without one, the search pipeline's enricher supplies it.
    Empty text matches nothing (as ``milco-os search``). On a SEISMIC index (``seismic``) the pivot clause carries
    SEISMIC's parameters; :func:`model_search_body` then moves the echo clause into a rescore window."""
    if not 0 <= alpha <= 1:
        msg = f"alpha must be in [0, 1], got {alpha}"
        raise ValueError(msg)
    if not text.strip():
        return match_nothing()
    should = []
    for view, field, boost in (("pivot", pivot_field, alpha), ("echo", echo_field, 1 - alpha)):
        if view in fields and boost > 0:
            clause: dict[str, Any] = {"query_text": text, "boost": boost}
            if models and view in models:
                clause["model_id"] = models[view]
            if view == "pivot" and seismic is not None:
                clause["method_parameters"] = seismic.method_parameters(depth)
            should.append({"neural_sparse": {field: clause}})
    return {"bool": {"should": should}} if should else match_nothing()


def model_search_body(query: dict[str, Any], *, size: int, from_: int = 0, seismic: SeismicQuery | None = None,
                pivot_field: str = "") -> dict[str, Any]:
    """A search body for :func:`model_query`'s query; on a SEISMIC index SEISMIC's top ``k`` by the pivot view, with
    the echo clause added in a rescore window over it (as :func:`milco_os.opensearch.query.seismic_body`)."""
    body: dict[str, Any] = {"query": query, "size": size, "from": from_}
    should = query.get("bool", {}).get("should", [])
    pivot = [c for c in should if pivot_field in c.get("neural_sparse", {})]
    rest = [c for c in should if c not in pivot]
    if seismic is None or not pivot or not rest:
        return body
    body["query"] = {"bool": {"should": pivot, **{k: v for k, v in query["bool"].items() if k != "should"}}}
    body["rescore"] = added_in_window(rest, max(seismic.k, size + from_))
    return body


def _registration(index_meta: dict[str, Any]) -> dict[str, Any]:
    """The ml-commons registration a registered index records in its ``_meta``."""
    reg = index_meta.get(RECORD_KEY)
    if not reg:
        msg = "the index has no ml-commons models; run `milco-os ml-commons register --index NAME` first"
        raise ConfigError(msg)
    return dict(reg)


def record_model(index_meta: dict[str, Any], key: str) -> str:
    """The id of a registered index's ml-commons model ``key`` (e.g. ``query/dense``)."""
    reg = _registration(index_meta)
    if key not in reg["models"]:
        msg = (f"the index's ml-commons registration has no {key} model (registered before the index had it?); "
               "unregister and register again")
        raise ConfigError(msg)
    return str(reg["models"][key])


def record_query(text: str, index_meta: dict[str, Any], *, alpha: float = DEFAULT_ALPHA,
                 seismic: SeismicQuery | None = None, depth: int = 10) -> dict[str, Any]:
    """:func:`model_query` with the query models a registered index records in its ``_meta``."""
    reg = _registration(index_meta)
    models = {key.split("/")[1]: mid for key, mid in reg["models"].items() if key.startswith("query/")}
    return model_query(text, models=models, pivot_field=index_meta["fields"]["pivot"],
                       echo_field=index_meta["fields"]["echo"], alpha=alpha, fields=tuple(models), seismic=seismic,
                       depth=depth)


def cluster_problems(settings: dict[str, Any], service_url: str, ml_nodes: int) -> dict[str, Any]:
    """The ml-commons settings (flat names, as ``_cluster/settings?include_defaults&flat_settings`` gives them)
    that would keep OpenSearch from calling ``service_url``, each with the value that would not."""
    fixes: dict[str, Any] = {}
    url = service_url.rstrip("/") + ROUTE
    patterns = _setting_list(settings, "plugins.ml_commons.trusted_connector_endpoints_regex")
    if not any(_java_regex_matches(p, url) for p in patterns):
        fixes["plugins.ml_commons.trusted_connector_endpoints_regex"] = [
            *patterns, "^" + re.escape(service_url.rstrip("/")) + "/.*$"
        ]
    host = urlsplit(service_url).hostname or ""
    if _private(host) and str(settings.get("plugins.ml_commons.connector.private_ip_enabled", "false")) != "true":
        fixes["plugins.ml_commons.connector.private_ip_enabled"] = True
    if ml_nodes == 0 and str(settings.get("plugins.ml_commons.only_run_on_ml_node", "true")) == "true":
        fixes["plugins.ml_commons.only_run_on_ml_node"] = False
    return fixes


def _setting_list(settings: dict[str, Any], name: str) -> list[str]:
    """A list setting from flat settings: either one JSON list, or ``name.0``, ``name.1``, ..."""
    value = settings.get(name)
    if isinstance(value, list):
        return [str(v) for v in value]
    items = sorted((int(k.rsplit(".", 1)[1]), v) for k, v in settings.items()
                   if k.startswith(name + ".") and k.rsplit(".", 1)[1].isdigit())
    return [str(v) for _, v in items]


def _java_regex_matches(pattern: str, url: str) -> bool:
    try:
        return re.fullmatch(pattern, url) is not None  # ml-commons uses Java's String.matches: whole string
    except re.error:
        return False


def _private(host: str) -> bool:
    """Whether ml-commons would call ``host`` a private address (loopback, private, link-local; a name such as
    ``localhost`` or a container name resolves to one)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host != "" and "." not in host or host.endswith((".local", ".internal"))
    return address.is_private or address.is_loopback or address.is_link_local


# ------------------------------------------------------------------------------------------ IO
def _call(client: Client, method: str, path: str, body: dict[str, Any] | None = None,
          params: dict[str, Any] | None = None, what: str = "") -> Any:
    from opensearchpy.exceptions import TransportError

    try:
        return client.transport.perform_request(method, path, body=body, params=params)
    except TransportError as e:
        if e.status_code == 400 and "no handler found" in str(e.info).lower():
            msg = ("OpenSearch has no ml-commons / neural-search plugins (start a node with them: "
                   "milco-os cluster up --plugins neural-search)")
            raise SearchIndexError(msg) from None
        msg = f"{what or f'{method} {path}'} failed (HTTP {e.status_code}): {describe_transport_error(e)}"
        raise SearchIndexError(msg) from None


def _wait_task(client: Client, task_id: str, what: str, timeout: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        task = _call(client, "GET", f"{ML}/tasks/{task_id}", what=what)
        state = task.get("state")
        if state == "COMPLETED":
            return task
        if state in ("FAILED", "CANCELLED", "COMPLETED_WITH_ERROR"):
            msg = f"{what}: ml-commons task {state}: {task.get('error', '')}"
            raise SearchIndexError(msg)
        if time.monotonic() > deadline:
            msg = f"{what}: ml-commons task still {state} after {timeout:.0f}s"
            raise SearchIndexError(msg)
        time.sleep(0.5)


def _wait_deployed(client: Client, model_id: str, what: str, timeout: float = 60.0) -> None:
    """ml-commons marks the deploy task done before it writes the model's own state, so a caller that reads
    the model right after ``register`` could still see DEPLOYING; wait until the model says DEPLOYED."""
    deadline = time.monotonic() + timeout
    while (state := _call(client, "GET", f"{ML}/models/{model_id}", what=what).get("model_state")) != "DEPLOYED":
        if state == "DEPLOY_FAILED" or time.monotonic() > deadline:
            msg = f"{what}: the model is {state} (expected DEPLOYED)"
            raise SearchIndexError(msg)
        time.sleep(0.5)


def ml_node_count(client: Client) -> int:
    nodes = client.nodes.info(metric="settings")["nodes"].values()
    return sum("ml" in node.get("roles", []) for node in nodes)


def check_cluster(client: Client, service_url: str, *, configure: bool) -> dict[str, Any]:
    """Refuse (one line naming each setting) or, with ``configure``, set what ml-commons needs to call the
    service; returns the settings changed."""
    flat = client.cluster.get_settings(include_defaults=True, flat_settings=True)
    merged = {**flat.get("defaults", {}), **flat.get("persistent", {}), **flat.get("transient", {})}
    fixes = cluster_problems(merged, service_url, ml_node_count(client))
    if fixes and not configure:
        wanted = "; ".join(f"{k}={json.dumps(v)}" for k, v in fixes.items())
        msg = (f"ml-commons would not call {service_url}: set {wanted} "
               "(or pass --configure-cluster to let milco-os set them as persistent cluster settings)")
        raise ConfigError(msg)
    if fixes:
        _call(client, "PUT", "/_cluster/settings", {"persistent": fixes}, what="setting ml-commons cluster settings")
    return fixes


def _put_record(client: Client, index: str, reg: dict[str, Any] | None) -> None:
    """Write (or with None remove) the registration in ``_meta.milco_os``, keeping the rest of ``_meta``."""
    mapping = client.indices.get_mapping(index=index)
    concrete, body = next(iter(mapping.items()))
    meta = body["mappings"].get("_meta") or {}
    record = dict(meta.get(META_KEY) or {})
    if reg is None:
        record.pop(RECORD_KEY, None)
    else:
        record[RECORD_KEY] = reg
    client.indices.put_mapping(index=concrete, body={"_meta": {**meta, META_KEY: record}})


def only_on_opensearch(client: Client) -> None:
    """ml-commons and neural-search are OpenSearch plugins: refuse them on another engine with one line."""
    from milco_os.opensearch.engine import OPENSEARCH, engine_of

    engine = engine_of(client)
    if engine is not OPENSEARCH:
        msg = (f"ml-commons is an OpenSearch plugin; {engine.label} has none (encode with milco-os itself: ingest, "
               "search and the service work on either engine)")
        raise ConfigError(msg)


def register(
    client: Client,
    index: str,
    *,
    service_url: str,
    service_key: str | None = None,
    query_pruning: Pruning | None = None,
    two_phase: TwoPhase | None = None,
    configure_cluster: bool = False,
    name: str | None = None,
    batch_size: int = 32,
    on_step: Any = None,
) -> dict[str, Any]:
    """Create the connectors, models and pipelines for ``index`` (see the module docstring); returns the
    registration recorded in its ``_meta``. Anything created before a failure is removed again."""
    step = on_step or (lambda _msg: None)
    only_on_opensearch(client)
    record = index_record(client, index)
    layout = read_layout(record, index)
    if record.get("key_scheme") != KEY_SCHEME_VERSION:  # the service writes this milco-os's keys
        msg = (f"index {index!r} uses term-key scheme {record.get('key_scheme')}, this milco-os writes scheme "
               f"{KEY_SCHEME_VERSION}; reindex it first")
        raise ModelMismatch(msg, index, record.get("model", {}).get("name"))
    if layout.passages is not None:
        msg = (f"index {index!r} stores passages, which ml-commons' ingest processors do not write (one vector per "
               "document); index it with milco-os ingest, or register an index created without --passages")
        raise ConfigError(msg)
    if two_phase is not None and layout.seismic is not None:
        msg = (f"--two-phase: index {index!r} is a SEISMIC index, already approximate; its query is rescored over "
               "SEISMIC's top k (milco-os search --print-query model shows it)")
        raise ConfigError(msg)
    if record.get(RECORD_KEY):
        msg = (f"index {index!r} is already registered with ml-commons; "
               f"`milco-os ml-commons unregister --index {index}` first")
        raise ConfigError(msg)
    parts = urlsplit(service_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        msg = (f"--service-url {service_url!r}: expected http(s)://HOST[:PORT], the address at which OpenSearch "
               "reaches milco-os serve")
        raise ConfigError(msg)
    if query_pruning is not None and query_pruning.needs_stats:
        msg = "--query-prune selective: the service prunes without the index's document frequencies; use another rule"
        raise ConfigError(msg)
    name = name or f"milco-os-{index}"
    for kind, what in (("_ingest", "an ingest"), ("_search", "a search")):
        if _exists(client, f"/{kind}/pipeline/{name}"):  # never overwrite (nor later delete) someone else's
            msg = f"{what} pipeline named {name!r} exists; choose another --name"
            raise ConfigError(msg)
    step("checking ml-commons settings")
    changed = check_cluster(client, service_url, configure=configure_cluster)
    doc_prune = str(Pruning.from_meta(record["document_pruning"]))
    query_prune = str(query_pruning or Pruning.parse("none"))
    reg: dict[str, Any] = {
        "service_url": service_url, "model_group_id": None, "connectors": {}, "models": {},
        "ingest_pipeline": name, "search_pipeline": name, "query_prune": query_prune,
        "two_phase": None if two_phase is None else {
            "ratio": two_phase.ratio, "expansion": two_phase.expansion, "max_window": two_phase.max_window},
        "cluster_settings_set": sorted(changed),
    }
    try:
        step("creating the model group")
        group = _call(client, "POST", f"{ML}/model_groups/_register", {
            # Unique: ml-commons refuses a second group with a name in use.
            "name": f"milco-os {index} {uuid.uuid4().hex[:8]}",
            "description": f"milco-os remote models for index {index}",
        }, what="creating the model group")
        reg["model_group_id"] = group["model_group_id"]
        for target in targets(record):
            prune = doc_prune if target.kind == "document" else query_prune
            # The dense view is not pruned (it has no terms).
            view_prune = "none" if target.view == "dense" else str(getattr(Pruning.parse(prune), target.view))
            step(f"creating the {target.kind} {target.view} model")
            connector = _call(client, "POST", f"{ML}/connectors/_create", _with_key(connector_body(
                target, index=index, service_url=service_url, prune=view_prune,
                fingerprint=record["model"]["fingerprint"], has_key=bool(service_key),
                dense=layout.dense is not None, model=record["model"].get("name"),
                keys=layout.pivot_keys if target.view == "pivot" else "names"), service_key),
                what=f"creating the {target.key} connector")
            reg["connectors"][target.key] = connector["connector_id"]
            model = _call(client, "POST", f"{ML}/models/_register", model_body(
                target, index=index, connector_id=connector["connector_id"], group_id=reg["model_group_id"]),
                what=f"registering the {target.key} model")
            model_id = model.get("model_id") or _wait_task(client, model["task_id"], "registering")["model_id"]
            reg["models"][target.key] = model_id
            deploy = _call(client, "POST", f"{ML}/models/{model_id}/_deploy", what=f"deploying the {target.key} model")
            if deploy.get("task_id") and deploy.get("status") != "COMPLETED":
                _wait_task(client, deploy["task_id"], f"deploying the {target.key} model")
            _wait_deployed(client, model_id, f"deploying the {target.key} model")
        docs = [(reg["models"][t.key], t.field) for t in targets(record) if t.kind == "document"
                and t.view != "dense"]
        dense = next(((reg["models"][t.key], t.field) for t in targets(record) if t.key == "document/dense"), None)
        step("creating the ingest and search pipelines")
        _call(client, "PUT", f"/_ingest/pipeline/{name}",
              ingest_pipeline_body(record["fields"]["text"], docs, index=index, batch_size=batch_size, dense=dense),
              what="creating the ingest pipeline")
        defaults = {t.field: reg["models"][t.key] for t in targets(record) if t.kind == "query"}
        _call(client, "PUT", f"/_search/pipeline/{name}", search_pipeline_body(defaults, two_phase, index=index),
              what="creating the search pipeline")
        step("checking the path: Client -> milco-os serve -> Client")
        check_path(client, index, name, record)
        _put_record(client, index, reg)
    except BaseException:
        try:
            _remove(client, reg)
        except Exception as e:  # noqa: BLE001 (the first failure is the one to report)
            log.warning("could not remove what a failed register made (%s): %s", e, json.dumps(reg))
        raise
    return reg


def _exists(client: Client, path: str) -> bool:
    from opensearchpy.exceptions import NotFoundError

    try:
        client.transport.perform_request("GET", path)
    except NotFoundError:
        return False
    return True


def _with_key(body: dict[str, Any], key: str | None) -> dict[str, Any]:
    if key:
        body["credential"] = {"service_key": key}
    return body


def check_path(client: Client, index: str, pipeline: str, record: dict[str, Any]) -> None:
    """Simulate the ingest pipeline on one document and run one query through the search pipeline; fail with
    ml-commons' own reason if any part is wrong (service unreachable or refusing, wrong key, another model,
    untrusted endpoint)."""
    text = "milco-os checks the path from OpenSearch to the encoder."
    doc = dict.fromkeys(record["fields"]["text"], text)
    result = _call(client, "POST", f"/_ingest/pipeline/{pipeline}/_simulate", {"docs": [{"_source": doc}]},
                   what="simulating the ingest pipeline")
    outcome = result["docs"][0]
    if "error" in outcome:
        error = outcome["error"]
        reason = (error.get("root_cause") or [error])[0].get("reason", error) if isinstance(error, dict) else error
        msg = f"OpenSearch could not encode through milco-os serve: {' '.join(str(reason).split())[:400]}"
        raise SearchIndexError(msg)
    source = outcome["doc"]["_source"]
    views = [v for v in ("pivot", "echo") if record["vocab"].get(v)]
    empty = [v for v in views if not source.get(record["fields"][v])]
    layout = read_layout(record, index)
    dense = layout.dense
    if dense is not None and len(source.get(dense.field) or []) != dense.dimensions:
        empty.append("dense")
    if empty:
        msg = f"the ingest pipeline wrote no {' or '.join(empty)} vector for a test sentence"
        raise SearchIndexError(msg)
    seismic = SeismicQuery() if layout.seismic is not None else None
    query = model_query(text, pivot_field=record["fields"]["pivot"], echo_field=record["fields"]["echo"],
                        fields=tuple(views), seismic=seismic)
    body = model_search_body(query, size=1, seismic=seismic, pivot_field=record["fields"]["pivot"])
    _call(client, "POST", f"/{index}/_search", body, params={"search_pipeline": pipeline},
          what="a test query through the search pipeline")


def _remove(client: Client, reg: dict[str, Any]) -> list[str]:
    """Delete what ``reg`` names, tolerating what is already gone; returns what was removed."""
    from opensearchpy.exceptions import NotFoundError, TransportError

    removed: list[str] = []

    def attempt(what: str, method: str, path: str) -> None:
        try:
            client.transport.perform_request(method, path)
            removed.append(what)
        except NotFoundError:
            pass
        except TransportError as e:
            if e.status_code != 404:
                raise

    for pipeline_kind, key in (("_search/pipeline", "search_pipeline"), ("_ingest/pipeline", "ingest_pipeline")):
        if reg.get(key):
            attempt(f"{pipeline_kind.split('/')[0].lstrip('_')} pipeline {reg[key]}", "DELETE",
                    f"/{pipeline_kind}/{reg[key]}")
    for key, model_id in reg.get("models", {}).items():
        attempt(f"undeployed {key} model", "POST", f"{ML}/models/{model_id}/_undeploy")
        attempt(f"{key} model {model_id}", "DELETE", f"{ML}/models/{model_id}")
    for key, connector_id in reg.get("connectors", {}).items():
        attempt(f"{key} connector {connector_id}", "DELETE", f"{ML}/connectors/{connector_id}")
    if reg.get("model_group_id"):
        attempt(f"model group {reg['model_group_id']}", "DELETE", f"{ML}/model_groups/{reg['model_group_id']}")
    return removed


def unregister(client: Client, index: str) -> list[str]:
    """Remove the pipelines, models, connectors and model group :func:`register` made for ``index``, and its
    record in ``_meta``; returns what was removed."""
    only_on_opensearch(client)
    record = index_record(client, index)
    reg = record.get(RECORD_KEY)
    if not reg:
        msg = f"index {index!r} is not registered with ml-commons (nothing in _meta.{META_KEY}.{RECORD_KEY})"
        raise ConfigError(msg)
    removed = _remove(client, reg)
    _put_record(client, index, None)
    return removed
