"""Property-based requests generated from /openapi.json: the API never answers 5xx.

schemathesis needs the schema when the module is collected, before the session's database
exists; the app is built then and pointed at the test database by a fixture.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import positive_data_acceptance

from dispatch_pipeline.api import create_app
from dispatch_pipeline.api.auth import TokenTable
from dispatch_pipeline.api.dependencies import Database

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

APP = create_app("postgresql+psycopg://postgres@127.0.0.1:5432/not_opened_before_the_fixture_runs")
TOKEN = "fuzz-token"
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.fixture(autouse=True)
def _point_app_at_test_database(database_url):
    APP.state.database = Database(database_url)
    # With authentication on, schemathesis also checks that calls without the token get 401.
    APP.state.tokens = TokenTable.parse(TOKEN)


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_never_answers_5xx(case):
    # Every other check stays on. A schema-valid body may still break rules JSON Schema cannot
    # state (array lengths against the local day, soc ordering): those 422s are correct.
    case.call_and_validate(
        headers={"Authorization": f"Bearer {TOKEN}"}, excluded_checks=[positive_data_acceptance]
    )
