"""bench/scaleout: what a second api process gives on this machine (issue 14.2).

  .venv/bin/python -m bench.scaleout [--processes 1,2] [--seconds 5] [--connections 64]

Starts K `floodlight api` processes (ports P, P+1, ...; each follows floodlight.manifests and the registry
on a private topic prefix, all read one store) and loads them together, the load spread evenly over the
processes, the way the edge's round-robin director spreads its origin requests:
1. playlist requests/s that reach the origin (a media playlist GET, no edge cache in front: what the
   edge's misses, token checks and direct players cost);
2. QoE beacons accepted/s (POST /api/v1/qoe/beacons, batches of 100, produced to Kafka).
The load generators (bench.origin's keep-alive clients) run in processes of their own, as many for every K
(one per process of the largest K), so only the origin side changes. Anchor: K = 1 in
the same run; the ratio K/1 is printed. On a machine with C free cores the ceiling is about min(K, C)x.
Needs the local stack's broker (./run stack up).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx


def _wait_ok(url: str, limit_s: float = 60.0) -> None:
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer 200 in {limit_s}s")


def _load(code: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)


def _rate(procs: list[subprocess.Popen[str]]) -> float:
    return sum(float(p.communicate(timeout=120)[0].strip().splitlines()[-1]) for p in procs)


def measure(settings: object, k: int, seconds: float, connections: int, tmp: Path,
            generators: int) -> dict[str, float]:
    from api.server import free_port
    from ops.demo import settings_env

    ports = []
    while len(ports) < k:
        p = free_port()
        if p not in ports:
            ports.append(p)
    env = {**os.environ, **settings_env(settings)}  # type: ignore[arg-type]
    procs = [subprocess.Popen([sys.executable, "-m", "ops.cli", "api", "--host", "127.0.0.1", "--port", str(p)],
                              env=env, stdout=subprocess.DEVNULL, stderr=(tmp / f"api-{k}-{p}.log").open("wb"))
             for p in ports]
    try:
        path = "/live/bench/720p/playlist.m3u8"
        for p in ports:
            _wait_ok(f"http://127.0.0.1:{p}{path}")
        # the same load generators whatever k (one per process of the largest k), spread over the k ports
        targets = [ports[i % k] for i in range(generators)]
        per = max(1, connections // generators)
        playlists = _rate([_load("import asyncio; from bench.origin import _hammer; "
                                 f"print(asyncio.run(_hammer({p}, {path!r}, {seconds}, {per})))") for p in targets])
        beacons = _rate([_load("import asyncio; from bench.origin import _post_beacons; "
                               f"print(asyncio.run(_post_beacons({p}, {seconds}, {max(1, 8 // generators)})))")
                         for p in targets])
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(20)
    return {"playlists": playlists, "beacons": beacons}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--processes", default="1,2")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--connections", type=int, default=64)
    args = ap.parse_args(argv)

    from bench.origin import _playlist
    from floodlight.kafka import make_producer
    from floodlight.objectstore import open_store
    from floodlight.registry import new_stream_record, publish_stream
    from floodlight.settings import Settings
    from floodlight.topics import apply_topics, delete_prefixed_topics
    from schemas import codec

    tmp = Path(tempfile.mkdtemp(prefix="bench-scaleout-"))
    s = Settings().model_copy(update={"topic_prefix": f"bench{uuid.uuid4().hex[:6]}.", "topic_partitions": 1,
                                      "store_url": (tmp / "store").as_uri(), "stack_dir": tmp / "stack"})
    apply_topics(s)
    results = {}
    try:
        producer = make_producer(s)
        publish_stream(producer, s, new_stream_record("bench", "bench", status="LIVE", latency_mode="LOW", public=True))
        open_store(s.resolved_store_url()).put("live/bench/720p/playlist.m3u8", _playlist(20, 2))
        producer.produce(s.topic("manifests"), key=b"bench", value=codec.encode("ManifestUpdate", {
            "stream_id": "bench", "rendition": "720p", "msn": 20, "part": 1, "version": 1, "etag": '"1"',
            "written_wallclock_ms": int(time.time() * 1000), "ended": False}))
        producer.flush(10)
        ks = [int(x) for x in args.processes.split(",")]
        for k in ks:
            results[k] = measure(s, k, args.seconds, args.connections, tmp, generators=max(ks))
    finally:
        delete_prefixed_topics(s)
    one = results.get(1)
    print(f"api processes on this machine ({os.cpu_count()} cores), load spread evenly, {args.seconds:.0f} s each:")
    for k, r in results.items():
        ratio = (f"  (x{r['playlists'] / one['playlists']:.2f} / x{r['beacons'] / one['beacons']:.2f} of one)"
                 if one and k != 1 else "")
        print(f"  {k} process(es): playlists {r['playlists']:.0f} req/s at the origin, "
              f"beacons {r['beacons']:.0f} accepted/s{ratio}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
