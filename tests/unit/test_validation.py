"""Index names and search filters are checked before anything reaches OpenSearch."""

from __future__ import annotations

import pytest

from milco_os.opensearch.validation import MAX_FILTER_DEPTH, check_filters, check_index_name


@pytest.mark.parametrize("name", ["docs", "docs-2024.01", "wiki_de", "a" * 255, "ü" * 127, ".hidden", "1"])
def test_valid_index_names_pass_through(name: str) -> None:
    assert check_index_name(name) == name


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "non-empty"),
        ("Docs", "lowercase"),
        ("_search", "must not start with '_'"),
        ("-x", "must not start"),
        ("+x", "must not start"),
        (".", "'.' or '..'"),
        ("..", "'.' or '..'"),
        ("a/b", "'/'"),
        ("a\\b", "'\\\\'"),
        ("a*", "'*'"),
        ("a?", "'?'"),
        ('a"b', "'\"'"),
        ("a<b", "'<'"),
        ("a>b", "'>'"),
        ("a|b", "'|'"),
        ("a,b", "','"),
        ("a#b", "'#'"),
        ("a b", "' '"),
        ("cluster:a", "':'"),
        ("a" * 256, "255 bytes"),
        ("ü" * 128, "255 bytes"),  # 256 bytes in UTF-8
    ],
)
def test_invalid_index_names_say_why(name: str, problem: str) -> None:
    with pytest.raises(ValueError, match="^index name ") as e:
        check_index_name(name)
    assert problem in str(e.value)
    assert "\n" not in str(e.value)


def test_allowed_filters_come_back_as_a_tuple() -> None:
    filters = [
        {"term": {"lang": "de"}},
        {"range": {"year": {"gte": 2000}}},
        {"bool": {"must": [{"match": {"text": "tea"}}], "must_not": {"exists": {"field": "deleted"}},
                  "minimum_should_match": 1}},
        {"nested": {"path": "authors", "query": {"terms": {"authors.name": ["a", "b"]}}}},
        {"geo_distance": {"distance": "10km", "location": {"lat": 52.5, "lon": 13.4}}},
    ]
    assert check_filters(filters) == tuple(filters)
    assert check_filters([]) == ()


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"term": {"a": 1}}, "filters: must be a list of query clauses, got dict"),
        (None, "filters: must be a list of query clauses, got NoneType"),
        ([{"bogus": 1}], "filters[0]: unknown query clause 'bogus'"),
        ([{"term": {"a": 1}}, "term"], "filters[1]: a query clause must be an object with exactly one key"),
        ([{}], "filters[0]: a query clause must be an object with exactly one key"),
        ([{"term": {"a": 1}, "range": {}}], "filters[0]: a query clause must be an object with exactly one key"),
        ([{"query_string": {"query": "a*"}}], "filters[0]: unknown query clause 'query_string'"),
        ([{"simple_query_string": {"query": "a"}}], "filters[0]: unknown query clause 'simple_query_string'"),
        # bool and nested hold clauses, which are checked as clauses too.
        ([{"bool": {"filter": [{"term": {}}, {"query_string": {}}]}}],
         "filters[0].bool.filter[1]: unknown query clause 'query_string'"),
        ([{"nested": {"path": "p", "query": {"more_like_this": {}}}}],
         "filters[0].nested.query: unknown query clause 'more_like_this'"),
    ],
)
def test_bad_filters_name_the_path(filters: object, message: str) -> None:
    with pytest.raises(ValueError) as e:
        check_filters(filters)
    assert str(e.value).startswith(message)


@pytest.mark.parametrize(
    ("filters", "path"),
    [
        ([{"script": {"script": {"source": "true"}}}], "filters[0]"),
        ([{"term": {"a": 1}}, {"bool": {"must": [{"script": {"script": "true"}}]}}], "filters[1].bool.must[0]"),
        ([{"bool": {"should": {"function_score": {}}}}], "filters[0].bool.should"),
        ([{"script_score": {"query": {"match_all": {}}, "script": "1"}}], "filters[0]"),
        # A script key anywhere inside an allowed clause.
        ([{"terms_set": {"tags": {"terms": ["a"], "minimum_should_match_script": {"source": "2"}}}}],
         "filters[0].terms_set.tags.minimum_should_match_script"),
        ([{"range": {"year": [{"script": "x"}]}}], "filters[0].range.year[0].script"),
    ],
)
def test_scripts_are_refused_unless_allowed(filters: list, path: str) -> None:
    with pytest.raises(ValueError) as e:
        check_filters(filters)
    assert str(e.value) == (
        f"{path}: script clauses are disabled (set MILCO_OS_ALLOW_SCRIPT_FILTERS=true to allow them)"
    )
    assert check_filters(filters, allow_scripts=True) == tuple(filters)


def test_allowing_scripts_still_refuses_unknown_clauses() -> None:
    with pytest.raises(ValueError, match=r"filters\[0\]: unknown query clause 'percolate'"):
        check_filters([{"percolate": {}}], allow_scripts=True)


def test_deep_filters_are_refused_not_walked() -> None:
    deep: dict = {"match_all": {}}
    for _ in range(MAX_FILTER_DEPTH):
        deep = {"bool": {"filter": deep}}
    with pytest.raises(ValueError, match=f"nested deeper than {MAX_FILTER_DEPTH} levels"):
        check_filters([deep])
    value: dict = {}
    for _ in range(5000):  # deeper than Python's recursion limit
        value = {"x": value}
    with pytest.raises(ValueError, match="nested deeper"):
        check_filters([{"term": value}])
