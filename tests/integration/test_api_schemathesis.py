"""Property-based run over the api's own OpenAPI document (schemathesis): no input makes it answer 500."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from api.auth import mint_jwt
from api.server import BackgroundServer
from floodlight.registry import new_stream_record, publish_stream
from floodlight.settings import Settings

EXAMPLES = 20


@pytest.fixture(scope="module")
def api_server(broker: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundServer]:

    from floodlight.kafka import make_producer
    from floodlight.topics import apply_topics, delete_prefixed_topics

    tmp = tmp_path_factory.mktemp("schemathesis")
    prefix = f"t{uuid.uuid4().hex[:8]}."
    s = broker.model_copy(update={"topic_prefix": prefix, "topic_partitions": 1, "store_url": (tmp / "store").as_uri(),
                                  "stack_dir": tmp / "stack", "api_block_timeout_s": 0.5})
    apply_topics(s)
    publish_stream(make_producer(s), s, new_stream_record("demo", "Demo", public=True, status="LIVE"))
    with BackgroundServer(s) as srv:
        yield srv
    delete_prefixed_topics(s)


LEGIT_503 = {"/readyz", "/live/{sid}/{rendition}/{name}", "/vod/{sid}/{rendition}/{name}",
             "/api/v1/analytics/streams/{stream_id}/qoe"}


def test_no_input_makes_the_api_fail(api_server: BackgroundServer) -> None:
    schema = schemathesis.openapi.from_url(f"{api_server.base_url}/openapi.json")
    token = mint_jwt(api_server.settings.jwt_secret, "fuzzer", roles=["admin"], entitlements=["premium"])
    failures: list[str] = []
    calls = 0
    paths: set[str] = set()
    for result in schema.get_all_operations():
        op = result.ok()

        @given(case=op.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case) -> None:  # noqa: ANN001 - a schemathesis Case
            nonlocal calls
            calls += 1
            paths.add(case.operation.path)
            response = case.call(headers={"Authorization": f"Bearer {token}"}, timeout=30)
            status = response.status_code
            if status >= 500 and not (status == 503 and case.operation.path in LEGIT_503):
                failures.append(f"{case.method} {case.formatted_path} -> {status}: {response.text[:200]}")

        check()
    assert calls > 100
    assert "/api/v1/qoe/beacons" in paths  # the whole document, beacons included (issue 13)
    assert not failures, "\n".join(failures[:20])
