"""Property-based tests of the served OpenAPI schema (schemathesis): for generated
requests to every operation, the server never answers 500, and every response matches
the schema (status codes, content types, bodies).

Driven through schemathesis' Python API with hypothesis directly: its pytest plugin's
lazy loader (``from_fixture``) touches a pytest internal that pytest 9 removed.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from _server import API_KEY, Served, make_store, serve
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

OPERATIONS = [
    ("GET", "/healthz"), ("GET", "/v1/info"), ("GET", "/v1/models"), ("GET", "/v1/checkpoints"), ("GET", "/v1/reps"),
    ("POST", "/v1/compare"), ("GET", "/v1/results"), ("POST", "/v1/sql"), ("GET", "/v1/plot/heatmap.png"),
    ("GET", "/v1/plot/trajectory.png"), ("GET", "/v1/reps/{rep_id}/rows"), ("GET", "/v1/reps/{rep_id}/tokens"),
    ("POST", "/v1/probe"),
]
EXAMPLES = 25  # per operation (8 for plots); the whole file runs in ~20 s
# Not checked: "positive_data_acceptance" (every schema-valid request gets a 2xx). Filter
# strings, SQL and subset predicates have a grammar richer than a JSON schema, so a
# schema-valid `layer=:::` or `SELECT 1 FROM nowhere` is rightly a 400 with a message.


@pytest.fixture(scope="module")
def schema_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    store = make_store(tmp_path_factory.mktemp("schema") / "s")
    yield from serve(store, api_key=API_KEY, sql_max_rows=50, sql_timeout=0.5, compare_max_values=200)


@pytest.fixture(scope="module")
def api_schema(schema_server: Served):  # type: ignore[no-untyped-def]
    return schemathesis.openapi.from_url(schema_server.url + "/openapi.json", headers={"X-API-Key": API_KEY})


def test_every_operation_is_fuzzed(api_schema):  # type: ignore[no-untyped-def]
    served = sorted((r.ok().method.upper(), r.ok().path) for r in api_schema.get_all_operations())
    assert served == sorted(OPERATIONS)


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_no_server_errors_and_responses_match_the_schema(api_schema, schema_server, method, path):  # type: ignore[no-untyped-def]
    operation = api_schema[path][method]

    @given(case=operation.as_strategy())
    # a plot renders a figure (slower): fewer examples
    @settings(max_examples=8 if "/plot/" in path else EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    def check(case):  # type: ignore[no-untyped-def]
        case.call_and_validate(base_url=schema_server.url, headers={"X-API-Key": API_KEY},
                               excluded_checks=[positive_data_acceptance])

    check()
