"""The QoE app end to end: real broker, `floodlight qoe` as a process, the real ClickHouse engine (chDB).

100,000 generated beacons over 3 streams -> raw rows match exactly, aggregates match a reference
computed here; absurd beacons are dropped with reasons; kill -9 mid-stream loses and doubles nothing.
"""

from __future__ import annotations

import io
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

import fastavro
import pytest

from floodlight.analytics import AnalyticsClient
from floodlight.kafka import make_producer
from floodlight.registry import new_stream_record, publish_stream
from floodlight.settings import Settings
from schemas import codec
from tests.support import wait_until

STREAMS = ("qoe-a", "qoe-b", "qoe-c")
FLOODLIGHT = str(Path(sys.executable).parent / "floodlight")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Encoder:
    """codec.encode's framing with a pre-parsed schema (fast enough to make 100k beacons quickly)."""

    def __init__(self) -> None:
        sample = {"event_time": 0, "stream_id": "x", "session_id": "y"}
        self.header = codec.encode("QoeBeacon", {**_defaults(), **sample})[: codec.HEADER_LEN]
        self.schema = fastavro.parse_schema(codec.schema("QoeBeacon"))

    def __call__(self, beacon: dict) -> bytes:
        buf = io.BytesIO()
        buf.write(self.header)
        fastavro.schemaless_writer(buf, self.schema, beacon)
        return buf.getvalue()


def _defaults() -> dict:
    return {f["name"]: f["default"] for f in codec.schema("QoeBeacon")["fields"] if "default" in f}


def make_beacons(n: int, now_ms: int, seed: int = 7) -> list[dict]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        stream = STREAMS[i % 3]
        out.append({
            "event_time": now_ms - rnd.randint(0, 240_000), "stream_id": stream,
            "session_id": f"{stream}-s{rnd.randint(0, 999)}", "user_id": f"u{rnd.randint(0, 5000)}",
            "device_type": rnd.choice(("web", "android", "ios", "tv")),
            "quality": rnd.choice(("1080p", "720p", "480p")), "buffer_events": rnd.choice((0, 0, 0, 1, 2)),
            "stall_ms": 0, "bytes_downloaded": rnd.randint(10_000, 5_000_000),
            "cdn_pop": rnd.choice(("bom1", "del1", "maa1")), "latency_ms": rnd.randint(800, 9000),
            "startup_ms": rnd.randint(300, 4000) if rnd.random() < 0.1 else None,
            "bitrate_kbps": rnd.choice((8000, 4000, 2000)), "dropped_frames": rnd.randint(0, 3),
            "error_code": "E_NET" if rnd.random() < 0.01 else None, "event_type": "heartbeat",
            "watch_ms": rnd.randint(5000, 10_000),
        })
        out[-1]["stall_ms"] = out[-1]["buffer_events"] * rnd.randint(100, 2000)
    return out


def bad_beacons(now_ms: int) -> tuple[list[bytes], dict[str, int]]:
    enc = Encoder()
    good = make_beacons(1, now_ms, seed=99)[0]
    cases = {
        "negative_stall_ms": dict(good, stall_ms=-500),
        "event_time_in_future": dict(good, event_time=now_ms + 3 * 86_400_000),
        "event_time_too_old": dict(good, event_time=now_ms - 5 * 86_400_000),
        "unknown_stream": dict(good, stream_id="no-such-stream"),
    }
    values = [enc(b) for b in cases.values() for _ in range(25)] + [b"\xc3\x01garbage-garbage"] * 25
    return values, {**{k: 25 for k in cases}, "undecodable": 25}


def produce(settings: Settings, values: list[tuple[bytes, bytes]]) -> None:
    p = make_producer(settings, **{"linger.ms": 20})
    topic = settings.topic("qoe")
    for key, value in values:
        while True:
            try:
                p.produce(topic, key=key, value=value)
                break
            except BufferError:  # local queue full: let deliveries drain
                p.poll(0.5)
    assert p.flush(60) == 0


class QoeProcess:
    """`floodlight qoe` with the isolated settings; stderr kept in a file for assertions."""

    def __init__(self, settings: Settings, tmp: Path, **extra: str) -> None:
        self.settings = settings
        self.port, self.metrics_port = free_port(), free_port()
        self.env = dict(os.environ, FLOODLIGHT_TOPIC_PREFIX=settings.topic_prefix,
                        FLOODLIGHT_TOPIC_PARTITIONS=str(settings.topic_partitions),
                        FLOODLIGHT_KAFKA_BOOTSTRAP=settings.kafka_bootstrap,
                        FLOODLIGHT_CLICKHOUSE_DSN=settings.clickhouse_dsn, FLOODLIGHT_STACK_DIR=str(tmp / "stack"),
                        FLOODLIGHT_QOE_PORT=str(self.port), FLOODLIGHT_METRICS_PORT=str(self.metrics_port),
                        FLOODLIGHT_LOG_LEVEL="INFO", **extra)
        self.tmp = tmp
        self.runs = 0
        self.proc: subprocess.Popen | None = None

    def start(self) -> QoeProcess:
        self.runs += 1
        self.log = self.tmp / f"qoe-{self.runs}.log"
        self.proc = subprocess.Popen([FLOODLIGHT, "qoe"], env=self.env, stdout=subprocess.DEVNULL,
                                     stderr=self.log.open("wb"))
        return self

    def client(self) -> AnalyticsClient:
        return AnalyticsClient(self.settings.model_copy(update={"qoe_port": self.port}))

    def count(self) -> int:
        try:
            return self.client().query("SELECT count() AS n FROM stream_analytics")[0]["n"]
        except Exception:  # noqa: BLE001 - not up yet
            assert self.proc is not None and self.proc.poll() is None, self.log.read_text()[-3000:]
            return -1

    def metrics(self) -> str:
        return urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).read().decode()

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)


@pytest.fixture
def qoe_settings(isolated: Settings) -> Settings:
    p = make_producer(isolated)
    for sid in STREAMS:
        publish_stream(p, isolated, new_stream_record(sid, f"QoE test {sid}"))
    return isolated


def read_dead_letters(settings: Settings, n: int) -> list[dict]:
    from confluent_kafka import Consumer

    c = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"t-{time.time()}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([settings.topic("dlq")])
    out: list[dict] = []
    try:
        deadline = time.monotonic() + 30
        while len(out) < n and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and not m.error():
                out.append(codec.decode(m.value(), expect="DeadLetter"))
    finally:
        c.close()
    assert len(out) == n, f"{len(out)} dead letters, expected {n}"
    return out


def metric(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{{want}}} ") or (not labels and line.startswith(f"{name} ")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_hundred_thousand_beacons_match_a_reference(qoe_settings: Settings, tmp_path: Path):
    n = 100_000
    now_ms = int(time.time() * 1000)
    beacons = make_beacons(n, now_ms)
    enc = Encoder()
    bad, bad_reasons = bad_beacons(now_ms)
    values = [(b["session_id"].encode(), enc(b)) for b in beacons]
    values[5000:5000] = [(b"bad", v) for v in bad]  # bad ones in the middle of the stream
    produce(qoe_settings, values)

    qoe = QoeProcess(qoe_settings, tmp_path, FLOODLIGHT_QOE_VIEWER_WINDOW_S="600").start()
    try:
        t0 = time.monotonic()
        wait_until(lambda: qoe.count() == n, 150, interval=0.5, what="all 100k beacons in stream_analytics")
        elapsed = time.monotonic() - t0
        client = qoe.client()
        wait_until(lambda: client.query("SELECT sum(beacons) AS b FROM qoe_minute")[0]["b"] == n, 30,
                   what="qoe_minute to hold every beacon")
        assert client.query("SELECT count() AS n FROM stream_analytics WHERE stream_id NOT IN "
                            "('qoe-a', 'qoe-b', 'qoe-c') OR stall_ms > 3600000")[0]["n"] == 0

        # reference, per stream, from the same beacons
        for sid in STREAMS:
            mine = [b for b in beacons if b["stream_id"] == sid]
            got = client.qoe_series(sid, now_ms - 600_000, now_ms + 60_000)
            summ = got["summary"]
            assert summ["beacons"] == len(mine)
            sessions = {b["session_id"] for b in mine}
            assert abs(summ["sessions"] - len(sessions)) <= 0.01 * len(sessions)
            assert summ["stall_count"] == sum(b["buffer_events"] for b in mine)
            stall, watch = sum(b["stall_ms"] for b in mine), sum(b["watch_ms"] for b in mine)
            assert summ["rebuffering_ratio"] == pytest.approx(stall / (stall + watch), abs=2e-6)
            assert summ["bytes"] == sum(b["bytes_downloaded"] for b in mine)
            assert summ["errors"] == sum(1 for b in mine if b["error_code"])
            lat = sorted(b["latency_ms"] for b in mine)
            assert summ["latency_ms"]["avg"] == pytest.approx(sum(lat) / len(lat), abs=1e-3)
            # p95 from a sampling sketch: its rank must be within 2 points of 95
            assert lat[int(0.93 * len(lat))] <= summ["latency_ms"]["p95"] <= lat[int(0.97 * len(lat))]
            # per minute: beacons and sessions
            per_min: dict[int, list[dict]] = defaultdict(list)
            for b in mine:
                per_min[b["event_time"] // 60_000 * 60_000].append(b)
            series = {p["minute_ms"]: p for p in got["series"]}
            assert set(series) == set(per_min)
            for minute, bs in per_min.items():
                assert series[minute]["beacons"] == len(bs)
                exp = len({b["session_id"] for b in bs})
                assert abs(series[minute]["sessions"] - exp) <= 0.01 * exp
            # live viewers (window 600 s in this test): every session of the stream
            wait_until(lambda sid=sid, exp=len(sessions): client.viewers(sid) == exp, 15,
                       what=f"viewers of {sid}")

        text = qoe.metrics()
        for reason, count in bad_reasons.items():
            assert metric(text, "floodlight_qoe_dropped_total", reason=reason) == count, reason
        assert metric(text, "floodlight_qoe_beacons_total", outcome="inserted") == n
        letters = read_dead_letters(qoe_settings, sum(bad_reasons.values()))
        assert all(d["stage"] == "qoe" and d["original_topic"] == qoe_settings.topic("qoe") for d in letters)
        assert all(d["offset"] >= 0 and d["value"] for d in letters)
        assert sum("unknown_stream" in d["reason"] for d in letters) == bad_reasons["unknown_stream"]
        assert sum(d["reason"].startswith("undecodable") for d in letters) == bad_reasons["undecodable"]

        # the analyst CLI: a SELECT runs, anything else is refused
        env = dict(qoe.env)
        out = subprocess.run([FLOODLIGHT, "analytics", "query", "--format", "json",
                              "SELECT quality, count() AS n FROM stream_analytics GROUP BY quality ORDER BY quality"],
                             env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert sum(r["n"] for r in json.loads(out.stdout)) == n
        refused = subprocess.run([FLOODLIGHT, "analytics", "query", "DROP TABLE stream_analytics"], env=env,
                                 capture_output=True, text=True, timeout=60)
        assert refused.returncode == 2 and "only SELECT" in refused.stderr
        assert qoe.count() == n
        print(f"100k beacons visible in {elapsed:.1f} s after start")
    finally:
        assert qoe.stop() == 0, qoe.log.read_text()[-3000:]


def test_kill_9_mid_stream_loses_and_doubles_nothing(qoe_settings: Settings, tmp_path: Path):
    n = 20_000
    now_ms = int(time.time() * 1000)
    enc = Encoder()
    produce(qoe_settings, [(b["session_id"].encode(), enc(b)) for b in make_beacons(n, now_ms, seed=3)])
    # Offsets are committed only every 60 s here: whatever the first run inserted is uncommitted.
    qoe = QoeProcess(qoe_settings, tmp_path, FLOODLIGHT_QOE_BATCH_ROWS="1000",
                     FLOODLIGHT_QOE_COMMIT_INTERVAL_S="60").start()
    try:
        wait_until(lambda: qoe.count() >= 2000, 90, interval=0.2, what="first batches inserted")
        qoe.stop(signal.SIGKILL)
        qoe.env["FLOODLIGHT_QOE_COMMIT_INTERVAL_S"] = "1"
        qoe.start()
        wait_until(lambda: qoe.count() == n, 120, interval=0.5, what="all beacons after the restart")
        client = qoe.client()
        row = client.query("SELECT count() AS n, uniqExact(kafka_partition, kafka_offset) AS distinct_offsets "
                           "FROM stream_analytics")[0]
        assert row == {"n": n, "distinct_offsets": n}
        # the view's part commits just after the raw part: wait for it rather than read in between
        wait_until(lambda: client.query("SELECT sum(beacons) AS b FROM qoe_minute")[0]["b"] == n, 30,
                   what="qoe_minute to hold every beacon once")
        log = qoe.log.read_text()
        assert "skipped beacons already stored" in log, "the restart did not meet the stored batches"
        assert metric(qoe.metrics(), "floodlight_qoe_beacons_total", outcome="already_stored") >= 1000
    finally:
        qoe.stop()


def test_live_viewers_survive_a_restart(qoe_settings: Settings, tmp_path: Path):
    """The viewers table is rebuilt from its changelog: after a restart with nothing to replay, same count."""
    now_ms = int(time.time() * 1000)
    beacons = [b for b in make_beacons(900, now_ms, seed=5) if b["stream_id"] == "qoe-a"]
    enc = Encoder()
    produce(qoe_settings, [(b["session_id"].encode(), enc(b)) for b in beacons])
    expected = len({b["session_id"] for b in beacons})
    qoe = QoeProcess(qoe_settings, tmp_path, FLOODLIGHT_QOE_VIEWER_WINDOW_S="3600").start()
    try:
        client = qoe.client()
        wait_until(lambda: qoe.count() == len(beacons), 90, interval=0.3, what="rows")
        wait_until(lambda: client.viewers("qoe-a") == expected, 30, what="viewers before restart")
        assert client.viewers("qoe-b") == 0
        assert qoe.stop() == 0
        qoe.start()
        wait_until(lambda: qoe.count() == len(beacons), 90, interval=0.3, what="qoe app back")
        wait_until(lambda: client.viewers("qoe-a") == expected, 60, what="viewers restored from the changelog")
        assert "skipped beacons already stored" not in qoe.log.read_text()  # offsets were committed
    finally:
        qoe.stop()
