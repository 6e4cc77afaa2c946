"""Schema-driven fuzzing of the HTTP API: for every operation in the app's OpenAPI
schema, requests generated from it (valid ones and deliberately invalid ones) never get
a 5xx. Every request goes through the ``client`` fixture, so whatever it sets (default
headers such as an API key) applies.

Cases come from ``APIOperation.as_strategy`` under plain ``hypothesis.given`` rather than
``schemathesis.pytest.from_fixture(...).parametrize()``: the lazy loader of schemathesis
4.32 sets ``request.node._nodeid``, which pytest 9.2 no longer has (AttributeError before
any case runs)."""

from __future__ import annotations

from typing import Any

import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok

EXAMPLES_PER_MODE = 30  # per operation, for valid and for invalid requests each


def send(client: TestClient, case: schemathesis.Case[Any]) -> None:
    kwargs = case.as_transport_kwargs(base_url=str(client.base_url))
    # What the client sets by default (its API key) wins over what was generated for the
    # same header (a random bearer token from the security scheme): otherwise most cases
    # would stop at the 401 and never reach a handler. Bad keys are tests/api/test_auth.py's.
    headers = {k: v for k, v in (kwargs.get("headers") or {}).items() if k not in client.headers}
    if kwargs.get("cookies"):  # httpx deprecates per-request cookies: send the header
        headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in kwargs["cookies"].items())
    try:
        response = client.request(
            kwargs["method"],
            kwargs["url"],
            params=kwargs.get("params"),
            headers=headers,
            json=kwargs.get("json"),
            content=kwargs.get("data"),
        )
    except Exception as err:  # the app raised (the client re-raises it): name the request
        raise AssertionError(f"{err!r} from\n    {case.as_curl_command()}") from err
    case.validate_response(response, checks=[not_a_server_error])


def test_no_generated_request_gets_a_server_error(
    client: TestClient, catalog: list[dict[str, Any]]
) -> None:
    # The catalog is seeded so that generated ids sometimes hit a real video and
    # requests get past the 404s.
    spec = client.get("/openapi.json")
    assert spec.status_code == 200, spec.text
    schema = schemathesis.openapi.from_dict(spec.json())
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), f"the app's schema is invalid: {result.err()}"
        operations.append(result.ok())
    assert len(operations) >= 10  # every route, not a schema that lost most of them
    failures: list[str] = []
    for operation in operations:
        modes = [schemathesis.GenerationMode.POSITIVE]
        takes_input = any(
            len(part) for part in (operation.path_parameters, operation.query, operation.headers)
        ) or len(operation.body)
        if takes_input:  # an operation with no inputs has no invalid request to make
            modes.append(schemathesis.GenerationMode.NEGATIVE)
        for mode in modes:

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=EXAMPLES_PER_MODE,
                deadline=None,
                database=None,  # each run starts from the schema, not from old failures
                suppress_health_check=list(HealthCheck),
            )
            def run(case: schemathesis.Case[Any]) -> None:
                send(client, case)

            try:
                run()
            except Exception as err:  # collected: one run reports every failing operation
                failures.append(f"{operation.label} ({mode.value}):\n{err}")
    assert not failures, "\n\n".join(failures)
