"""Plausibility rules for QoE beacons: schema-valid but absurd beacons are dropped with a reason.

Pure: the caller passes the Kafka message timestamp (when the api accepted the beacon), so a
replay of the topic days later judges every beacon exactly as the first run did.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

HOUR_MS = 3600 * 1000


@dataclass(frozen=True)
class Limits:
    max_past_ms: int = 24 * HOUR_MS      # event_time older than the accept time by more than this
    max_future_ms: int = 5 * 60 * 1000   # event_time ahead of the accept time by more than this
    max_interval_ms: int = HOUR_MS       # stall_ms / watch_ms between two beacons
    max_latency_ms: int = 10 * 60 * 1000
    max_startup_ms: int = 10 * 60 * 1000
    max_bitrate_kbps: int = 1_000_000
    max_bytes: int = 100 * 1024**3

NON_NEGATIVE = ("buffer_events", "stall_ms", "watch_ms", "bytes_downloaded", "latency_ms", "bitrate_kbps",
                "dropped_frames")


def check(beacon: dict[str, Any], accepted_ms: int, known_stream: Callable[[str], bool],
          limits: Limits = Limits()) -> str | None:
    """None when the beacon is plausible, else a short machine-friendly reason."""
    if not beacon["stream_id"]:
        return "empty_stream_id"
    if not beacon["session_id"]:
        return "empty_session_id"
    for name in NON_NEGATIVE:
        if beacon[name] < 0:
            return f"negative_{name}"
    startup = beacon.get("startup_ms")
    if startup is not None and startup < 0:
        return "negative_startup_ms"
    skew = beacon["event_time"] - accepted_ms
    if skew > limits.max_future_ms:
        return "event_time_in_future"
    if -skew > limits.max_past_ms:
        return "event_time_too_old"
    if beacon["stall_ms"] > limits.max_interval_ms or beacon["watch_ms"] > limits.max_interval_ms:
        return "interval_too_long"
    if beacon["latency_ms"] > limits.max_latency_ms:
        return "latency_too_high"
    if startup is not None and startup > limits.max_startup_ms:
        return "startup_too_long"
    if beacon["bitrate_kbps"] > limits.max_bitrate_kbps:
        return "bitrate_too_high"
    if beacon["bytes_downloaded"] > limits.max_bytes:
        return "bytes_too_large"
    if not known_stream(beacon["stream_id"]):
        return "unknown_stream"
    return None
