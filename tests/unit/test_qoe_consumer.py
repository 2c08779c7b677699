"""The beacon intake replaces a consumer whose commits keep failing (a lost coordinator after a broker
restart) instead of waiting on it for good; nothing read is lost on the way."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from confluent_kafka import KafkaException

from floodlight.settings import Settings
from processors.qoe import consumer as intake
from tests.support import wait_until

pytestmark = pytest.mark.unit


class FakeMessage:
    def __init__(self, offset: int) -> None:
        self._offset = offset

    def error(self) -> None:
        return None

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes:
        return b"s"

    def value(self) -> bytes:
        return b"v"

    def timestamp(self) -> tuple[int, int]:
        return (1, 1000)


class FakeConsumer:
    """Serves offsets from the last commit on; the first consumer's commits always fail."""

    made: list[FakeConsumer] = []
    committed = 0
    lock = threading.Lock()

    def __init__(self, broken: bool) -> None:
        self.broken = broken
        self.next = FakeConsumer.committed
        self.closed = False

    def subscribe(self, topics: list[str], on_revoke: Any = None) -> None:
        pass

    def consume(self, num_messages: int, timeout: float) -> list[FakeMessage]:
        if self.next >= 20:
            return []
        msgs = [FakeMessage(o) for o in range(self.next, min(20, self.next + 5))]
        self.next += len(msgs)
        return msgs

    def commit(self, offsets: list[Any], asynchronous: bool) -> None:
        if self.broken:
            raise KafkaException("Commit failed: Local: Waiting for coordinator")
        with FakeConsumer.lock:
            FakeConsumer.committed = max(FakeConsumer.committed, offsets[0].offset)

    def close(self) -> None:
        self.closed = True


def test_a_consumer_stuck_on_commits_is_replaced_and_every_beacon_is_processed(monkeypatch) -> None:
    FakeConsumer.made, FakeConsumer.committed = [], 0

    def make(*_a: Any, **_k: Any) -> FakeConsumer:
        c = FakeConsumer(broken=not FakeConsumer.made)
        FakeConsumer.made.append(c)
        return c

    monkeypatch.setattr(intake, "make_consumer", make)
    monkeypatch.setattr(intake, "STUCK_COMMIT_S", 0.3)
    settings = Settings(qoe_batch_rows=5, qoe_batch_seconds=0.05, qoe_commit_interval_s=0.05)
    seen: list[int] = []
    c = intake.BeaconConsumer(settings, lambda items: seen.extend(i[3] for i in items), lambda _r: None,
                              lambda: None, group_id="g").start()
    try:
        wait_until(lambda: FakeConsumer.committed == 20, 10, what="every offset committed by a new consumer")
    finally:
        c.stop(5)
    assert len(FakeConsumer.made) >= 2 and FakeConsumer.made[0].closed
    assert set(seen) == set(range(20))  # re-read after the swap: duplicates are skipped downstream
    assert c.error is None
