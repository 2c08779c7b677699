"""Shared fixtures: the real local broker (started by ./run test) and isolated topic prefixes."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from floodlight.settings import Settings


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests by folder so `-m unit` etc. work without decorating every test."""
    for item in items:
        for marker in ("unit", "integration", "security", "e2e", "chaos"):
            if f"/tests/{marker}/" in str(item.fspath):
                item.add_marker(getattr(pytest.mark, marker))


@pytest.fixture(scope="session")
def base_settings() -> Settings:
    return Settings()


@pytest.fixture(scope="session")
def broker(base_settings: Settings) -> Settings:
    """The real Kafka broker; ./run test starts it, a bare pytest run starts it too."""
    from floodlight.kafka import wait_for_broker
    from ops import stack

    try:
        wait_for_broker(base_settings, 3)
    except TimeoutError:
        stack.up(base_settings)
    return base_settings


@pytest.fixture
def isolated(broker: Settings, tmp_path) -> Iterator[Settings]:
    """Settings with a topic prefix of its own (topics created), a private store and chDB dir."""
    from floodlight.topics import apply_topics

    prefix = f"t{uuid.uuid4().hex[:8]}."
    s = broker.model_copy(update={
        "topic_prefix": prefix,
        "topic_partitions": 3,
        "store_url": (tmp_path / "store").as_uri(),
        "clickhouse_dsn": f"chdb://{tmp_path / 'chdb'}",
    })
    apply_topics(s)
    yield s
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": s.kafka_bootstrap, "log_level": 0})
    names = [n for n in admin.list_topics(timeout=10).topics if n.startswith(prefix)]
    if names and not os.environ.get("FLOODLIGHT_KEEP_TOPICS"):
        for fut in admin.delete_topics(names, operation_timeout=10).values():
            try:
                fut.result()
            except Exception:  # noqa: BLE001 - best-effort clean-up
                pass

