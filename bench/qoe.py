"""bench/qoe: beacons/s end to end (api endpoint -> Kafka -> Faust QoE app -> ClickHouse) and row visibility.

  .venv/bin/python -m bench.qoe [--seconds 20] [--connections 8] [--batch 100]

One api process (`floodlight api`) and one qoe app (`floodlight qoe`, embedded chDB) run as
subprocesses on a private topic prefix. Load: N keep-alive connections POST pre-built batches of
beacons to /api/v1/qoe/beacons for --seconds; a probe beacon stamped with the send time goes in
every 0.5 s. Reports:
- accepted beacons/s at the api (target 20,000/s on one process),
- end-to-end beacons/s (load start -> every accepted beacon is a row) and the drain time after load,
- visibility delay of the probes (row inserted_at - send time) p50/p95/max (target 5 s),
- anchor, same run: beacons/s that one Python producer pushes straight to Kafka (codec + produce),
  so the api figure reads as a ratio of what this machine can put on the topic at all.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

FLOODLIGHT = str(Path(sys.executable).parent / "floodlight")
STREAMS = ("bench-a", "bench-b", "bench-c")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def beacon(i: int, now_ms: int, rnd: random.Random) -> dict:
    return {"event_time": now_ms, "stream_id": STREAMS[i % 3], "session_id": f"bench-{i % 20000}",
            "device_type": rnd.choice(("web", "android", "tv")), "quality": rnd.choice(("1080p", "720p")),
            "buffer_events": rnd.choice((0, 0, 1)), "stall_ms": 0, "bytes_downloaded": 1_000_000,
            "cdn_pop": rnd.choice(("bom1", "del1")), "latency_ms": rnd.randint(1000, 6000),
            "bitrate_kbps": 4000, "event_type": "heartbeat", "watch_ms": 10_000}


async def post_loop(host: str, port: int, bodies: list[bytes], until: float, stats: dict) -> None:
    """Keep-alive HTTP/1.1 POSTs on one raw connection (a pooled client costs more CPU than the api)."""
    reader, writer = await asyncio.open_connection(host, port)
    i = random.randrange(len(bodies))
    while time.monotonic() < until:
        body = bodies[i % len(bodies)]
        i += 1
        writer.write(b"POST /api/v1/qoe/beacons HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        head = await reader.readuntil(b"\r\n\r\n")
        length = int([h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:")][0].split(b":")[1])
        resp = json.loads(await reader.readexactly(length))
        stats["accepted"] += resp.get("accepted", 0)
        stats["requests"] += 1
        if head.split(b" ")[1] != b"200":
            stats["non200"] += 1
    writer.close()


async def probes(host: str, port: int, until: float, stats: dict) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    rnd = random.Random(1)
    n = 0
    while time.monotonic() < until:
        b = beacon(0, int(time.time() * 1000), rnd)
        b["session_id"] = f"probe-{n}"
        body = json.dumps({"beacons": [b]}).encode()
        writer.write(b"POST /api/v1/qoe/beacons HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        head = await reader.readuntil(b"\r\n\r\n")
        length = int([h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:")][0].split(b":")[1])
        stats["accepted"] += json.loads(await reader.readexactly(length)).get("accepted", 0)
        n += 1
        await asyncio.sleep(0.5)
    writer.close()


def anchor_direct_produce(settings, seconds: float = 5.0) -> float:
    from floodlight.kafka import make_producer
    from schemas import codec

    p = make_producer(settings, **{"linger.ms": 20})
    rnd = random.Random(2)
    now = int(time.time() * 1000)
    full = [{**{"user_id": "", "startup_ms": None, "dropped_frames": 0, "error_code": None}, **beacon(i, now, rnd)}
            for i in range(1000)]
    topic = settings.topic("anchor")
    n = 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        for b in full:
            p.produce(topic, key=b["session_id"].encode(), value=codec.encode("QoeBeacon", b))
        p.poll(0)
        n += len(full)
    p.flush(60)
    return n / (time.monotonic() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--batch", type=int, default=100)
    args = ap.parse_args()

    from confluent_kafka.admin import AdminClient, NewTopic

    from floodlight.kafka import make_producer
    from floodlight.registry import new_stream_record, publish_stream
    from floodlight.settings import Settings
    from floodlight.topics import apply_topics

    tmp = Path(tempfile.mkdtemp(prefix="bench-qoe-"))
    prefix = f"bq{uuid.uuid4().hex[:6]}."
    settings = Settings(topic_prefix=prefix, topic_partitions=6, stack_dir=tmp / "stack",
                        store_url=(tmp / "store").as_uri(), clickhouse_dsn=f"chdb://{tmp / 'chdb'}")
    apply_topics(settings)
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    for fut in admin.create_topics([NewTopic(settings.topic("anchor"), 6, 1)]).values():
        fut.result()
    prod = make_producer(settings)
    for sid in STREAMS:
        publish_stream(prod, settings, new_stream_record(sid, sid))

    api_port, qoe_port = free_port(), free_port()
    env = dict(os.environ, FLOODLIGHT_TOPIC_PREFIX=prefix, FLOODLIGHT_TOPIC_PARTITIONS="6",
               FLOODLIGHT_STACK_DIR=str(tmp / "stack"), FLOODLIGHT_STORE_URL=settings.store_url,
               FLOODLIGHT_CLICKHOUSE_DSN=settings.clickhouse_dsn, FLOODLIGHT_QOE_PORT=str(qoe_port),
               FLOODLIGHT_METRICS_PORT=str(free_port()), FLOODLIGHT_API_BEACON_RATE_PER_SESSION="1000",
               FLOODLIGHT_LOG_LEVEL="WARNING")
    procs = [
        subprocess.Popen([FLOODLIGHT, "qoe"], env=env, stderr=(tmp / "qoe.log").open("wb")),
        subprocess.Popen([FLOODLIGHT, "api", "--host", "127.0.0.1", "--port", str(api_port)], env=env,
                         stderr=(tmp / "api.log").open("wb")),
    ]
    from floodlight.analytics import AnalyticsClient

    client = AnalyticsClient(settings.model_copy(update={"qoe_port": qoe_port}))

    def rows() -> int:
        try:
            return int(client.query("SELECT count() AS n FROM stream_analytics")[0]["n"])
        except Exception:  # noqa: BLE001 - not up yet
            return -1

    try:
        import httpx

        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{api_port}/healthz", timeout=1).status_code == 200 and rows() >= 0:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            raise SystemExit(f"api/qoe did not start; logs in {tmp}")
        time.sleep(3)  # let the qoe consumer group settle before the clock starts

        print("anchor: direct produce to Kafka, 5 s ... ", end="", flush=True)
        anchor = anchor_direct_produce(settings)
        print(f"{anchor:,.0f} beacons/s")

        rnd = random.Random(7)
        now = int(time.time() * 1000)
        bodies = [json.dumps({"beacons": [beacon(k * args.batch + j, now, rnd) for j in range(args.batch)]}).encode()
                  for k in range(200)]
        stats = {"accepted": 0, "requests": 0, "non200": 0}
        probe_stats = {"accepted": 0}

        async def load() -> float:
            t0 = time.monotonic()
            until = t0 + args.seconds
            await asyncio.gather(*(post_loop("127.0.0.1", api_port, bodies, until, stats)
                                   for _ in range(args.connections)), probes("127.0.0.1", api_port, until, probe_stats))
            return time.monotonic() - t0

        before = rows()
        load_start = time.monotonic()
        load_s = asyncio.run(load())
        total = stats["accepted"] + probe_stats["accepted"]
        print(f"api: {stats['accepted']:,} beacons accepted in {load_s:.1f} s = {stats['accepted'] / load_s:,.0f}/s "
              f"({stats['requests']:,} requests, {stats['non200']} not 200)")
        load_end = time.monotonic()
        while rows() < before + total and time.monotonic() - load_end < 600:
            time.sleep(0.5)
        drained = time.monotonic()
        got = rows() - before
        e2e = got / (drained - load_start)
        print(f"end to end: {got:,}/{total:,} rows, {e2e:,.0f} beacons/s from load start to last row; "
              f"drain after load {drained - load_end:.1f} s")
        q = client.query("SELECT quantiles(0.5, 0.95, 1.0)(toUnixTimestamp64Milli(inserted_at) - "
                         "toUnixTimestamp64Milli(event_time_ms)) AS q, count() AS n FROM stream_analytics "
                         "WHERE startsWith(session_id, 'probe-')")[0]
        p50, p95, pmax = (v / 1000 for v in q["q"])
        print(f"visibility (row inserted - sent), {q['n']} probes: p50 {p50:.2f} s, p95 {p95:.2f} s, max {pmax:.2f} s")
        print(f"ratio api accepted / direct produce anchor: {stats['accepted'] / load_s / anchor:.2f}  "
              f"(targets: 20,000/s accepted, visible within 5 s; load average {os.getloadavg()[0]:.1f})")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        names = [n for n in admin.list_topics(timeout=10).topics if n.startswith(prefix)]
        if names:
            admin.delete_topics(names, operation_timeout=10)


if __name__ == "__main__":
    main()
