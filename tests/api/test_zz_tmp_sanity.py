from typing import Any
import pytest
from fastapi.testclient import TestClient
from fyp.engine import Engine
from test_schemathesis import test_no_generated_request_gets_a_server_error as t

def test_catches(client: TestClient, catalog: list[dict[str, Any]], engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*a: Any, **k: Any) -> Any:
        raise RuntimeError("boom")
    monkeypatch.setattr(engine, "why", boom)
    with pytest.raises(AssertionError) as info:
        t(client, catalog)
    print(str(info.value)[:600])
