"""Beacon validation against the QoeBeacon schema, and the per-session rate limit (pure)."""

from __future__ import annotations

import pytest

from api.beacons import BURST, SessionRateLimiter, validate_beacon
from schemas import codec

GOOD = {"event_time": 1_795_000_000_000, "stream_id": "demo", "session_id": "s1", "quality": "720p",
        "latency_ms": 2100, "startup_ms": None}


def test_valid_beacon_is_completed_with_schema_defaults_and_encodes() -> None:
    b = validate_beacon(dict(GOOD, unknown_field=1))
    assert b["device_type"] == "unknown" and b["event_type"] == "heartbeat" and b["watch_ms"] == 0
    assert "unknown_field" not in b
    assert codec.decode(codec.encode("QoeBeacon", b), expect="QoeBeacon") == b


@pytest.mark.parametrize(("patch", "needle"), [
    ({"event_time": None}, "event_time"),
    ({"event_time": "now"}, "event_time"),
    ({"latency_ms": 2**40}, "latency_ms"),
    ({"latency_ms": True}, "latency_ms"),
    ({"stall_ms": -5}, "stall_ms"),
    ({"quality": 720}, "quality"),
    ({"stream_id": "../etc"}, "stream_id"),
    ({"session_id": ""}, "session_id"),
    ({"cdn_pop": "x" * 300}, "cdn_pop"),
    ({"error_code": 5}, "error_code"),
])
def test_invalid_beacons_name_the_field(patch: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        validate_beacon({**GOOD, **patch})


def test_missing_required_field_and_non_object() -> None:
    with pytest.raises(ValueError, match="session_id"):
        validate_beacon({"event_time": 1, "stream_id": "demo"})
    with pytest.raises(ValueError, match="object"):
        validate_beacon(["not", "a", "beacon"])


def test_rate_limiter_allows_a_burst_then_the_rate() -> None:
    now = [0.0]
    rl = SessionRateLimiter(rate=10.0, clock=lambda: now[0])
    assert all(rl.allow("a") for _ in range(int(BURST)))
    assert not rl.allow("a")
    assert rl.allow("b")  # sessions are independent
    now[0] += 0.1  # one token back at 10/s
    assert rl.allow("a")
    assert not rl.allow("a")

