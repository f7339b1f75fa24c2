"""Schema fuzzing of the OpenAPI document with schemathesis: no generated request gets a 5xx."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import schemathesis
from fake_engine import FakeEngine
from fake_prm import FakePRM
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from server.main import create_app
from server.settings import ServerSettings

app = create_app(ServerSettings(models=Path("/nonexistent"), default_budget=200), FakeEngine(), FakePRM())
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_request_gets_a_server_error(case: Any) -> None:
    case.call_and_validate(checks=[not_a_server_error])
