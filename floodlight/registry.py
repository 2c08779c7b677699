"""The stream registry: StreamRecords on the compacted topic floodlight.streams.

Every role materialises it in memory (RegistryView: reads to the end, then follows, with the kernel's
one follow loop, floodlight.follow), and the
api writes it. Kept here because ingest (stream keys), encoder (ladder, preset), packager (DVR,
encryption, latency mode) and api all read the same records.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Producer

from floodlight import ids
from floodlight.follow import Follower, Record
from floodlight.settings import Settings
from schemas import codec

log = logging.getLogger("floodlight.registry")


# The brief's ladder, highest first.
DEFAULT_LADDER: list[dict[str, Any]] = [
    {"name": "1080p", "width": 1920, "height": 1080, "bitrate_kbps": 8000},
    {"name": "720p", "width": 1280, "height": 720, "bitrate_kbps": 4000},
    {"name": "480p", "width": 854, "height": 480, "bitrate_kbps": 2000},
    {"name": "240p", "width": 426, "height": 240, "bitrate_kbps": 500},
]


def new_stream_record(stream_id: str, title: str, **fields: Any) -> dict[str, Any]:
    """A complete StreamRecord with the schema's defaults; fields override."""
    ids.check_stream_id(stream_id)
    now = int(time.time() * 1000)
    record: dict[str, Any] = {
        "stream_id": stream_id, "title": title, "description": None, "category": None,
        "status": "SCHEDULED", "scheduled_start_ms": None, "actual_start_ms": None, "ended_at_ms": None,
        "is_premium": False, "drm_required": False, "public": False, "ladder": [],
        "latency_mode": "STANDARD", "encoder_preset": None, "dvr_window_seconds": 7200,
        "key_rotation_segments": 10, "allowed_countries": [], "ingest_endpoints": [],
        "taken_down_ms": None, "steering_drained": [], "steering_pinned": None,
        "created_ms": now, "updated_ms": now,
    }
    unknown = set(fields) - set(record)
    if unknown:
        raise ValueError(f"unknown StreamRecord fields {sorted(unknown)}")
    record.update(fields)
    return record


def ladder_of(record: dict[str, Any]) -> list[dict[str, Any]]:
    return record.get("ladder") or DEFAULT_LADDER


def publish_stream(producer: Producer, settings: Settings, record: dict[str, Any]) -> None:
    """Produce a StreamRecord (keyed by stream_id) and wait for the ack."""
    errors: list[Any] = []
    producer.produce(settings.topic("streams"), key=record["stream_id"].encode(),
                     value=codec.encode("StreamRecord", record), on_delivery=lambda e, m: errors.append(e))
    producer.flush(30)
    if errors != [None]:
        raise RuntimeError(f"registry write for {record['stream_id']} failed: {errors}")


class RegistryView:
    """In-memory view of floodlight.streams, kept current by a background thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._streams: dict[str, dict[str, Any]] = {}
        self._lock = threading.Condition()
        self._listeners: list[Callable[[str, dict[str, Any] | None], None]] = []
        self._follower = Follower(settings, {settings.topic("streams"): "StreamRecord"}, self._take,
                                  name="registry", group_id="registry-view-unused", tombstones=True,
                                  on_bad=self._bad, logger=log)
        self._caught_up = self._follower.caught_up
        self.version = 0

    def start(self) -> RegistryView:
        self._follower.start()
        return self

    def stop(self) -> None:
        self._follower.stop()

    def on_change(self, fn: Callable[[str, dict[str, Any] | None], None]) -> None:
        self._listeners.append(fn)

    def wait_caught_up(self, timeout: float = 30.0) -> bool:
        return self._caught_up.wait(timeout)

    @property
    def caught_up(self) -> bool:
        return self._caught_up.is_set()

    def get(self, stream_id: str) -> dict[str, Any] | None:
        with self._lock:
            return self._streams.get(stream_id)

    def all(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._streams.values())

    def wait_for(self, pred: Callable[[dict[str, Any] | None], bool], stream_id: str, timeout: float) -> bool:
        """Block until pred(record) holds (read-your-writes after a publish)."""
        end = time.monotonic() + timeout
        with self._lock:
            while not pred(self._streams.get(stream_id)):
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(left)
            return True

    @staticmethod
    def _bad(rec: Record, exc: codec.CodecError) -> None:
        log.warning("skipping bad registry record", extra={"stream_id": (rec.key or b"").decode("utf-8", "replace"),
                                                           "reason": str(exc)})

    def _take(self, rec: Record) -> None:
        self._apply((rec.key or b"").decode("utf-8", "replace"), rec.value)

    def _apply(self, key: str, record: dict[str, Any] | None) -> None:
        """A decoded StreamRecord (None: a tombstone) for `key`."""
        with self._lock:
            if record is None:
                self._streams.pop(key, None)
            else:
                self._streams[key] = record
            self.version += 1
            self._lock.notify_all()
        for fn in self._listeners:
            try:
                fn(key, record)
            except Exception:  # noqa: BLE001 - a listener must not stop the view
                log.exception("registry listener failed")
