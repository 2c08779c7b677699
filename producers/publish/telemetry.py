"""Ingest metrics (Prometheus) and the console status line."""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any, TextIO

from prometheus_client import Counter, Gauge, Histogram

LABELS = ("stream_id", "ingest_id")
GOPS = Counter("floodlight_ingest_gops_total", "GOPs published (acknowledged by Kafka).", LABELS)
BYTES = Counter("floodlight_ingest_bytes_total", "Media bytes published (video + audio payloads).", LABELS)
PUBLISH_LATENCY = Histogram(
    "floodlight_ingest_publish_latency_seconds", "Hand-over to Kafka until acknowledged.", LABELS,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
QUEUE_GOPS = Gauge("floodlight_ingest_queue_gops", "GOPs buffered between capture and Kafka.", LABELS)
QUEUE_SECONDS = Gauge("floodlight_ingest_queue_seconds", "Media seconds buffered between capture and Kafka.",
                      LABELS)
DROPPED = Counter("floodlight_ingest_dropped_gops_total", "Oldest GOPs dropped because the buffer was full.",
                  LABELS)
INPUT_BITRATE = Gauge("floodlight_ingest_input_bitrate_bps", "Input bitrate over the last GOPs.", LABELS)
DISCONTINUITIES = Counter("floodlight_ingest_discontinuities_total", "New epochs (timestamp jumps, params).",
                          LABELS)
BAD_INPUT = Counter("floodlight_ingest_bad_input_total", "Refused or unreadable input, by kind.",
                    (*LABELS, "kind"))
SESSIONS = Counter("floodlight_ingest_sessions_total", "Feed sessions opened (connections, files).", LABELS)
NORMALIZING = Gauge("floodlight_ingest_normalizing", "1 while the feed is re-encoded at the venue, by reason "
                    "(open_gop, irregular_gop, long_gop, codec, always).", (*LABELS, "reason"))
NORMALIZE_SWITCHES = Counter("floodlight_ingest_normalize_switches_total", "Switches between passing the feed "
                             "through and re-encoding it (to=normalize|passthrough), by reason.",
                             (*LABELS, "to", "reason"))


class IngestStats:
    """Counts for the status line, and the Prometheus children for one stream/agent."""

    def __init__(self, stream_id: str, ingest_id: str) -> None:
        self.labels = {"stream_id": stream_id, "ingest_id": ingest_id}
        self.stream_id, self.ingest_id = stream_id, ingest_id
        self.chunked = 0
        self.published = 0
        self.dropped = 0
        self.last_index: int | None = None
        self.last_capture_ms = 0
        self._lat: deque[float] = deque(maxlen=200)
        self._rate: deque[tuple[float, int]] = deque(maxlen=8)  # (seconds of media, bytes)
        self.recent_indices: deque[int] = deque(maxlen=10_000)  # chunked gop_index values (tests, debugging)
        self.normalize_kind: str | None = None  # why the feed is re-encoded now (None: passed through)
        self.normalize_switches: deque[tuple[str | None, str]] = deque(maxlen=200)  # (kind, or None: back; reason)
        self._lock = threading.Lock()

    def chunk(self, gop: dict[str, Any]) -> None:
        size = gop_bytes(gop)
        secs = gop["duration"] * gop["time_base_num"] / gop["time_base_den"]
        with self._lock:
            if gop.get("chunk_index", 0) == 0:  # a GOP published in chunks counts once
                self.chunked += 1
                self.recent_indices.append(gop["gop_index"])
            self.last_index = gop["gop_index"]
            self.last_capture_ms = gop["capture_wallclock_ms"]
            self._rate.append((secs, size))
            total_s = sum(s for s, _ in self._rate)
            rate = 8 * sum(b for _, b in self._rate) / total_s if total_s else 0.0
        INPUT_BITRATE.labels(**self.labels).set(rate)

    def published_one(self, gop: dict[str, Any], latency_s: float) -> None:
        with self._lock:
            self.published += 1
            self._lat.append(latency_s)
        GOPS.labels(**self.labels).inc()
        BYTES.labels(**self.labels).inc(gop_bytes(gop))
        PUBLISH_LATENCY.labels(**self.labels).observe(latency_s)

    def dropped_one(self, gop: dict[str, Any]) -> None:
        with self._lock:
            self.dropped += 1
        DROPPED.labels(**self.labels).inc()

    def queue(self, gops: int, seconds: float) -> None:
        QUEUE_GOPS.labels(**self.labels).set(gops)
        QUEUE_SECONDS.labels(**self.labels).set(seconds)

    def discontinuity(self) -> None:
        DISCONTINUITIES.labels(**self.labels).inc()

    def bad_input(self, kind: str) -> None:
        BAD_INPUT.labels(**self.labels, kind=kind).inc()

    def session(self) -> None:
        SESSIONS.labels(**self.labels).inc()

    def normalizing(self, kind: str | None, reason: str) -> None:
        """The feed is now re-encoded for `kind` (open_gop, codec, ...), or passed through (None)."""
        with self._lock:
            before, self.normalize_kind = self.normalize_kind, kind
            self.normalize_switches.append((kind, reason))
        if before is not None:
            NORMALIZING.labels(**self.labels, reason=before).set(0)
        if kind is not None:
            NORMALIZING.labels(**self.labels, reason=kind).set(1)
        NORMALIZE_SWITCHES.labels(**self.labels, to="normalize" if kind else "passthrough",
                                  reason=kind or before or "").inc()

    def normalize_ended(self) -> None:
        """The session that was re-encoded ended: nothing is re-encoded now (not a switch)."""
        with self._lock:
            before, self.normalize_kind = self.normalize_kind, None
        if before is not None:
            NORMALIZING.labels(**self.labels, reason=before).set(0)

    def line(self, queued: int, queued_s: float) -> str:
        with self._lock:
            lat = sorted(self._lat)
            p50 = lat[len(lat) // 2] * 1000 if lat else 0.0
            total_s = sum(s for s, _ in self._rate)
            rate = 8 * sum(b for _, b in self._rate) / total_s / 1e6 if total_s else 0.0
            return (f"[ingest {self.stream_id}/{self.ingest_id}] gops chunked={self.chunked} "
                    f"published={self.published} last={self.last_index} queue={queued} ({queued_s:.1f}s) "
                    f"dropped={self.dropped} in={rate:.2f} Mbit/s publish p50={p50:.0f} ms"
                    + (f" re-encoding ({self.normalize_kind})" if self.normalize_kind else ""))


def gop_bytes(gop: dict[str, Any]) -> int:
    return sum(len(p["data"]) for p in gop["video_packets"]) + sum(len(p["data"]) for p in gop["audio_packets"])


class StatusPrinter:
    """Prints the status line every `interval` seconds until stopped."""

    def __init__(self, stats: IngestStats, publisher: Any, out: TextIO, interval: float = 5.0) -> None:
        self.stats, self.publisher, self.out, self.interval = stats, publisher, out, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ingest-status", daemon=True)

    def start(self) -> StatusPrinter:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        next_t = time.monotonic()
        while not self._stop.wait(max(0.0, next_t - time.monotonic())):
            next_t += self.interval
            self.tick()

    def tick(self) -> None:
        q, qs = self.publisher.queued(), self.publisher.buffered_seconds()
        self.stats.queue(q, qs)
        if self.interval > 0:
            print(self.stats.line(q, qs), file=self.out, flush=True)
