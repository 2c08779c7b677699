"""Turning a batch of Kafka beacons into one idempotent ClickHouse insert (pure).

Idempotency has two parts:
- every raw row keeps its (kafka_topic, kafka_partition, kafka_offset); at start the writer reads
  the highest stored offset per partition (the watermark) and skips anything at or below it, so a
  batch that was inserted but not committed before a crash is not inserted again;
- the insert carries `insert_deduplication_token` = topic + the offset ranges it covers, so a retry
  of the same batch (a timeout after the server stored it) is dropped by the engine.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from floodlight.clickhouse import RAW_COLUMNS


@dataclass
class Batch:
    """Accepted beacons of one flush, as columns, plus the offsets they came from."""
    topic: str
    columns: dict[str, list[Any]] = field(default_factory=lambda: {c: [] for c in RAW_COLUMNS})
    ranges: dict[int, tuple[int, int]] = field(default_factory=dict)  # partition -> (first, last) seen

    def __len__(self) -> int:
        return len(self.columns["stream_id"])

    def see(self, partition: int, offset: int) -> None:
        first, last = self.ranges.get(partition, (offset, offset))
        self.ranges[partition] = (min(first, offset), max(last, offset))

    def add(self, beacon: dict[str, Any], partition: int, offset: int) -> None:
        cols = self.columns
        ms = beacon["event_time"]
        cols["event_time"].append(ms // 1000)
        cols["event_time_ms"].append(ms)
        for name in ("stream_id", "session_id", "user_id", "device_type", "quality", "event_type",
                     "buffer_events", "stall_ms", "watch_ms", "bytes_downloaded", "cdn_pop", "latency_ms",
                     "startup_ms", "bitrate_kbps", "dropped_frames"):
            cols[name].append(beacon[name])
        cols["error_code"].append(beacon["error_code"] or "")
        cols["kafka_topic"].append(self.topic)
        cols["kafka_partition"].append(partition)
        cols["kafka_offset"].append(offset)

    def token(self) -> str:
        """Deterministic for the same offsets: topic|p:first-last,... (hashed when long)."""
        spans = ",".join(f"{p}:{a}-{b}" for p, (a, b) in sorted(self.ranges.items()))
        raw = f"{self.topic}|{spans}"
        return raw if len(raw) <= 200 else f"{self.topic}|sha256:{hashlib.sha256(raw.encode()).hexdigest()}"


def already_stored(watermarks: dict[int, int], partition: int, offset: int) -> bool:
    return offset <= watermarks.get(partition, -1)


def advance(watermarks: dict[int, int], ranges: Iterable[tuple[int, tuple[int, int]]]) -> None:
    for p, (_first, last) in ranges:
        if last > watermarks.get(p, -1):
            watermarks[p] = last
