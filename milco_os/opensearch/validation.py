"""Pure checks of what users hand to OpenSearch: index names and search filters.

They run before anything is sent, so a mistake is reported as one line naming the field and the problem
(the service turns them into 422s, the CLI into usage errors) instead of an OpenSearch error or a 500.
"""

from __future__ import annotations

from typing import Any

MAX_INDEX_NAME_BYTES = 255
# OpenSearch's own list (MetadataCreateIndexService.validateIndexOrAliasName), plus ':' (remote clusters).
INDEX_NAME_FORBIDDEN = ('\\', "/", "*", "?", '"', "<", ">", "|", ",", "#", " ", ":")

#: Query clauses a filter may use. Left out on purpose: query_string and simple_query_string (a user's
#: syntax can make them very expensive) and everything that runs a script (below).
QUERY_CLAUSES = frozenset({
    "bool", "term", "terms", "terms_set", "range", "exists", "prefix", "wildcard", "regexp", "fuzzy", "ids",
    "match", "match_phrase", "match_phrase_prefix", "match_all", "match_none", "multi_match", "nested",
    "geo_distance", "geo_bounding_box",
})
#: Keys that make OpenSearch run user-supplied code; refused anywhere in a filter unless scripts are allowed.
SCRIPT_KEYS = frozenset({"script", "script_score", "function_score", "minimum_should_match_script"})
SCRIPT_CLAUSES = frozenset({"script", "script_score", "function_score"})
SCRIPTS_DISABLED = "script clauses are disabled (set MILCO_OS_ALLOW_SCRIPT_FILTERS=true to allow them)"
# Deeper filters are refused rather than walked, so a hostile body cannot exhaust the stack.
MAX_FILTER_DEPTH = 64
BOOL_OCCURRENCES = ("must", "should", "filter", "must_not")


def check_index_name(name: str) -> str:
    """``name`` if OpenSearch would accept it as an index name, else ValueError saying why."""
    problem = None
    if not isinstance(name, str) or not name:
        problem = "must be a non-empty string"
    elif name in (".", ".."):
        problem = "must not be '.' or '..'"
    elif name[0] in "_-+":
        problem = "must not start with '_', '-' or '+'"
    elif name != name.lower():
        problem = "must be lowercase"
    elif bad := [c for c in INDEX_NAME_FORBIDDEN if c in name]:
        problem = f"must not contain {bad[0]!r}"
    elif len(name.encode("utf-8")) > MAX_INDEX_NAME_BYTES:
        problem = f"longer than {MAX_INDEX_NAME_BYTES} bytes (UTF-8)"
    if problem:
        raise ValueError(f"index name {name!r}: {problem}")
    return name


def check_filters(filters: Any, *, allow_scripts: bool = False) -> tuple[dict, ...]:
    """``filters`` as a tuple if it is a list of allowed query clauses, else ValueError naming the path."""
    if not isinstance(filters, list):
        raise ValueError(f"filters: must be a list of query clauses, got {type(filters).__name__}")
    for i, clause in enumerate(filters):
        _check_clause(clause, f"filters[{i}]", allow_scripts, depth=1)
    return tuple(filters)


def _check_clause(clause: Any, path: str, allow_scripts: bool, depth: int) -> None:
    if depth > MAX_FILTER_DEPTH:
        raise ValueError(f"{path}: nested deeper than {MAX_FILTER_DEPTH} levels")
    if not isinstance(clause, dict) or len(clause) != 1:
        raise ValueError(f"{path}: a query clause must be an object with exactly one key, e.g. {{\"term\": ...}}")
    ((name, body),) = clause.items()
    if name in SCRIPT_CLAUSES and not allow_scripts:
        raise ValueError(f"{path}: {SCRIPTS_DISABLED}")
    if name not in QUERY_CLAUSES and name not in SCRIPT_CLAUSES:
        raise ValueError(f"{path}: unknown query clause {name!r}")
    path = f"{path}.{name}"
    # Clauses that hold clauses are checked as clauses, so bool cannot smuggle in a clause left out above.
    if name == "bool" and isinstance(body, dict):
        for occurrence in BOOL_OCCURRENCES:
            inner = body.get(occurrence)
            if isinstance(inner, list):
                for i, item in enumerate(inner):
                    _check_clause(item, f"{path}.{occurrence}[{i}]", allow_scripts, depth + 2)
            elif inner is not None:
                _check_clause(inner, f"{path}.{occurrence}", allow_scripts, depth + 1)
    elif name == "nested" and isinstance(body, dict) and "query" in body:
        _check_clause(body["query"], f"{path}.query", allow_scripts, depth + 1)
    if not allow_scripts:
        _refuse_scripts(body, path, depth + 1)


def _refuse_scripts(value: Any, path: str, depth: int) -> None:
    """Refuse a script key anywhere below ``value`` (e.g. terms_set's minimum_should_match_script)."""
    if depth > MAX_FILTER_DEPTH:
        raise ValueError(f"{path}: nested deeper than {MAX_FILTER_DEPTH} levels")
    if isinstance(value, dict):
        for key, inner in value.items():
            if key in SCRIPT_KEYS:
                raise ValueError(f"{path}.{key}: {SCRIPTS_DISABLED}")
            _refuse_scripts(inner, f"{path}.{key}", depth + 1)
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            _refuse_scripts(inner, f"{path}[{i}]", depth + 1)
