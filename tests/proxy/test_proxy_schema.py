"""Schemathesis over the proxy's OpenAPI schema: no generated input makes it answer 5xx.

Cases are drawn per operation with hypothesis and sent to a live proxy (real
uvicorn, real embedder) in front of the engine simulator.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.app import create_app
from proxy.settings import ProxySettings

ADMIN = "schema-admin"
POLICIES = "defaults: {threshold: 0.9}\ncategories:\n  default: {}\n"


def _settings(tmp: Path, upstream: str) -> ProxySettings:
    (tmp / "policies.yaml").write_text(POLICIES)
    return ProxySettings(upstreams=[upstream], sqlite_path=tmp / "cache.db", policies=tmp / "policies.yaml",
                         admin_token=ADMIN, log_level="warning")


# The schema does not depend on the lifespan: build it from an app that is never started.
_SCHEMA = schemathesis.openapi.from_dict(create_app(_settings(Path("/tmp"), "http://unused/v1")).openapi())
_OPERATIONS = [result.ok() for result in _SCHEMA.get_all_operations()]


@pytest.fixture(scope="module")
def proxy_url(tmp_path_factory, live_server, engine_sim):
    app = create_app(_settings(tmp_path_factory.mktemp("schema"), f"{engine_sim.url}/v1"))
    with live_server(app) as server:
        yield server.url


@pytest.mark.parametrize("operation", _OPERATIONS, ids=lambda op: op.label)
def test_no_input_gives_a_server_error(proxy_url, operation):
    @given(data=st.data())
    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(data):
        case = data.draw(operation.as_strategy())
        response = case.call(base_url=proxy_url, headers={"authorization": f"Bearer {ADMIN}"}, timeout=30)
        assert response.status_code < 500, f"{case.method} {case.path}: {response.status_code} {response.text[:300]}"
        if response.status_code >= 400 and case.path.startswith("/v1"):
            assert set(response.json()["error"]) >= {"message", "type", "param", "code"}

    check()


def test_the_schema_covers_the_routes():
    paths = {op.path for op in _OPERATIONS}
    assert {"/v1/chat/completions", "/v1/completions", "/v1/models", "/v1/embeddings",
            "/admin/policies", "/admin/invalidate", "/healthz", "/readyz"} <= paths
