"""bench/origin: LL-HLS origin under 2,000 concurrent blocked clients, and the edge's playlist cache.

  .venv/bin/python -m bench.origin [--clients 2000] [--rounds 5] [--rps-seconds 5]

1. Wake-up: N clients hold `_HLS_msn/_HLS_part` requests for the next part on one api process
   (direct, no edge). The bench then writes the part + playlist, as the packager does, and produces a
   ManifestUpdate; per client it records (response received - playlist written): the write is when the
   new part exists, so the Kafka produce and ack are part of what is measured. Exact p50/p99 over all
   rounds (sample quantiles, interpolated), and the api's own notify time (write -> update received)
   from every raw observation, not from histogram buckets.
   Anchor: the same clients' latency for a plain GET of an existing playlist in the same run.
   Then the same herd through the Varnish edge (api/edge.py), together with as many clients holding the
   hinted next part: wake-up p50/p99 of both after the write (ratio to direct printed) and the requests
   that reached the origin per round (varnishstat MAIN.backend_req: one per playlist version and one per
   part is the target); then the playlist herd alone (the issue's 2,000 blocked clients, target p99 < 100 ms).
2. Playlist requests/s through the edge (cached, max-age=1) vs nginx serving the same playlist file
   statically: ratio edge/static, in one run.
3. QoE beacons accepted/s by one api process (batches of 100) vs validate+encode+produce in-process.
Needs the local stack's broker (./run stack up).
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path


async def fetch(host: str, port: int, path: str, headers: dict[str, str] | None = None,
                limit_s: float = 60.0) -> tuple[int, dict[str, str], bytes, float]:
    """One raw HTTP/1.1 GET on its own connection: (status, headers, body, monotonic time of completion).
    Raw asyncio because pooled clients (httpx) degrade badly with thousands of concurrent connections."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), limit_s)
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n{extra}\r\n".encode())
    try:
        data = await asyncio.wait_for(reader.read(), limit_s)
    finally:
        writer.close()
    done = time.time()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    hdrs = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    if hdrs.get("transfer-encoding") == "chunked":
        out, rest = b"", body
        while rest:
            size_s, _, rest = rest.partition(b"\r\n")
            size = int(size_s, 16)
            if size == 0:
                break
            out, rest = out + rest[:size], rest[size + 2:]
        body = out
    return status, hdrs, body, done


async def fetch_many(host: str, port: int, path: str, n: int, headers: dict[str, str] | None = None,
                     limit_s: float = 60.0) -> list[tuple[int, dict[str, str], bytes, float]]:
    """n concurrent GETs of one URL; each result's last item is its completion time (time.time())."""
    return await asyncio.gather(*(fetch(host, port, path, headers, limit_s) for _ in range(n)))


def _clients_main(port: int, path: str, n: int) -> None:
    """Subprocess entry: n concurrent clients; prints status,completion-wallclock per line."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    print(f"0,{time.time():.6f}")  # start marker
    for status, _h, _b, done in asyncio.run(fetch_many("127.0.0.1", port, path, n)):
        print(f"{status},{done:.6f}")


class _HerdClient(asyncio.Protocol):
    """One client of a herd as a bare protocol (no stream reader, no coroutine): it stamps the moment its
    response is complete (Content-Length reached, or the server closed), so a herd of thousands woken at
    once is timed by the server, not by the client's own queue of callbacks."""

    def __init__(self, request: bytes, done: asyncio.Future[tuple[int, float]]) -> None:
        self.request, self.done, self.buf, self.need = request, done, b"", -1

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.need < 0 and b"\r\n\r\n" in self.buf:
            head, _, _ = self.buf.partition(b"\r\n\r\n")
            for line in head.split(b"\r\n")[1:]:
                if line[:15].lower() == b"content-length:":
                    self.need = len(head) + 4 + int(line[15:])
        if 0 <= self.need <= len(self.buf):
            self._finish()

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish()

    def _finish(self) -> None:
        if not self.done.done():
            status = int(self.buf.split(b" ", 2)[1]) if self.buf.startswith(b"HTTP/") else 0
            self.done.set_result((status, time.time()))


def _herd_main(port: int, path: str, n: int) -> None:
    """Subprocess entry, like _clients_main but on uvloop with bare protocols (see _HerdClient): n concurrent
    GETs, each on its own connection; prints status,completion-wallclock per line after a start marker."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode()

    async def run() -> list[tuple[int, float]]:
        loop = asyncio.get_running_loop()
        futures = []
        for _ in range(n):
            fut: asyncio.Future[tuple[int, float]] = loop.create_future()
            await loop.create_connection(lambda f=fut: _HerdClient(request, f), "127.0.0.1", port)  # type: ignore[misc]
            futures.append(fut)
        return list(await asyncio.wait_for(asyncio.gather(*futures), 120))

    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency of uvicorn[standard]
        runner = asyncio.run
    print(f"0,{time.time():.6f}")  # start marker
    for status, done in runner(run()):
        print(f"{status},{done:.6f}")


def clients_in_subprocess(port: int, path: str, n: int) -> subprocess.Popen[str]:
    """The clients run in their own process so they do not share a GIL with the api."""
    code = f"from bench.origin import _herd_main; _herd_main({port}, {path!r}, {n})"
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)


def _results(proc: subprocess.Popen[str]) -> tuple[float, list[tuple[int, float]]]:
    """(start wallclock, [(status, completion wallclock)])."""
    out, _ = proc.communicate(timeout=120)
    rows = [line.split(",") for line in out.strip().splitlines()]
    return float(rows[0][1]), [(int(a), float(b)) for a, b in rows[1:]]


def pct(values: list[float], p: float) -> float:
    """Exact sample quantile (p in 0..100), linear between the two nearest order statistics."""
    values = sorted(values)
    if not values:
        return float("nan")
    pos = p / 100 * (len(values) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--rps-seconds", type=float, default=5.0)
    ap.add_argument("--rps-concurrency", type=int, default=64)
    args = ap.parse_args(argv)

    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))

    from floodlight.settings import Settings
    from floodlight.topics import apply_topics, delete_prefixed_topics

    tmp = Path(tempfile.mkdtemp(prefix="bench-origin-"))
    s = Settings().model_copy(update={"topic_prefix": f"bench{uuid.uuid4().hex[:6]}.", "topic_partitions": 1,
                                      "store_url": (tmp / "store").as_uri(), "stack_dir": tmp / "stack",
                                      "api_block_timeout_s": 60.0})  # hold is not what is measured
    apply_topics(s)
    try:
        wake = run_wake(s, args.clients, args.rounds, tmp)
        rps = run_rps(s, tmp, args.rps_seconds, args.rps_concurrency)
        beacons = run_beacons(s, args.rps_seconds, 8)
    finally:
        delete_prefixed_topics(s)
    print(f"wake-up after the playlist write, {args.clients} blocked clients x {args.rounds} rounds: "
          f"p50 {wake['p50']:.1f} ms  p99 {wake['p99']:.1f} ms  max {wake['max']:.1f} ms  "
          f"(anchor: plain GET of an existing playlist by the same {args.clients} clients: "
          f"p50 {wake['anchor_p50']:.1f} ms p99 {wake['anchor_p99']:.1f} ms; "
          f"ratio p99 wake/anchor {wake['p99'] / max(wake['anchor_p99'], 0.001):.2f})")
    print(f"  api notified (playlist written -> update in the api loop), {wake['notify_n']} updates: "
          f"p50 {wake['notify_p50']:.1f} ms  p99 {wake['notify_p99']:.1f} ms")
    print(f"  through the Varnish edge (herd parked on its waiting list): playlist p50 {wake['edge_p50']:.1f} ms  "
          f"p99 {wake['edge_p99']:.1f} ms (ratio p99 edge/direct {wake['edge_p99'] / max(wake['p99'], 0.001):.2f}); "
          f"hinted part p50 {wake['edge_part_p50']:.1f} ms  p99 {wake['edge_part_p99']:.1f} ms")
    print(f"  the playlist herd alone through the edge ({args.clients} clients): p50 {wake['edge_alone_p50']:.1f} ms  "
          f"p99 {wake['edge_alone_p99']:.1f} ms (target p99 < 100 ms: "
          f"{'met' if wake['edge_alone_p99'] < 100 else 'not met'}; ratio p99 edge/direct "
          f"{wake['edge_alone_p99'] / max(wake['p99'], 0.001):.2f})")
    print(f"  origin requests per round through the edge (playlist + part herds of {args.clients} each): "
          f"{wake['edge_origin']} (target 2: one per playlist version, one per part); "
          f"part requests at the origin {[int(x) for x in wake['edge_parts']]}")
    print(f"playlist req/s: edge (cached) {rps['edge']:.0f}/s  vs the same Varnish serving the file statically "
          f"{rps['varnish_static']:.0f}/s  ratio {rps['edge'] / rps['varnish_static']:.2f};  vs nginx static "
          f"{rps['static']:.0f}/s  ratio {rps['edge'] / rps['static']:.2f}  (direct api, uncached: {rps['api']:.0f}/s)")
    print(f"beacons accepted/s through POST /api/v1/qoe/beacons (batches of 100): {beacons['api']:.0f}/s  vs "
          f"validate+encode+produce in-process {beacons['anchor']:.0f}/s  "
          f"ratio {beacons['api'] / beacons['anchor']:.2f}")
    return 0


def _fixture(s: object) -> object:
    from api.server import BackgroundServer
    from floodlight.kafka import make_producer
    from floodlight.objectstore import open_store
    from floodlight.registry import new_stream_record, publish_stream

    srv = BackgroundServer(s).start()  # type: ignore[arg-type]
    producer = make_producer(s)  # type: ignore[arg-type]
    rec = new_stream_record("bench", "bench", status="LIVE", latency_mode="LOW", public=True)
    publish_stream(producer, s, rec)  # type: ignore[arg-type]
    srv.ctx.registry.wait_for(lambda r: r is not None, "bench", 10)
    return srv, producer, open_store(s.resolved_store_url())  # type: ignore[attr-defined]


def _playlist(msn: int, parts: int) -> bytes:
    lines = ["#EXTM3U", "#EXT-X-VERSION:9", "#EXT-X-TARGETDURATION:1",
             "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.002,CAN-SKIP-UNTIL=6.0",
             "#EXT-X-PART-INF:PART-TARGET=0.334", f"#EXT-X-MEDIA-SEQUENCE:{max(0, msn - 6)}",
             '#EXT-X-MAP:URI="init.mp4"']
    for n in range(max(0, msn - 6), msn):
        lines += [f'#EXT-X-PART:DURATION=0.334,URI="{n}.{p}.m4s"' for p in range(3)]
        lines += ["#EXTINF:1.000,", f"{n}.m4s"]
    lines += [f'#EXT-X-PART:DURATION=0.334,URI="{msn}.{p}.m4s"' for p in range(parts)]
    lines.append(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="{msn}.{parts}.m4s"')
    return ("\n".join(lines) + "\n").encode()


def run_wake(s: object, clients: int, rounds: int, tmp_dir: Path) -> dict[str, float]:
    from api import metrics
    from schemas import codec

    srv, producer, store = _fixture(s)
    key = "live/bench/720p/playlist.m3u8"
    lat: list[float] = []
    notify: list[float] = []  # every raw WAKE_LATENCY observation of this run, in ms
    anchor: list[float] = []
    edge_lat: list[float] = []
    edge_part_lat: list[float] = []  # the hinted next part, held by the same edge
    edge_alone_lat: list[float] = []  # the playlist herd without the part herd beside it
    edge_origin: list[int] = []  # requests the edge sent to the origin, per round (playlist + part)
    edge_parts: list[float] = []  # part requests that reached the origin, per round
    try:
        msn, part, version = 10, 0, 0
        observe = metrics.WAKE_LATENCY.observe

        def record(amount: float, *args: object, **kw: object) -> None:
            notify.append(amount * 1000)
            observe(amount, *args, **kw)  # type: ignore[arg-type]

        metrics.WAKE_LATENCY.observe = record  # type: ignore[method-assign]

        def publish(msn: int, part: int) -> float:
            """Write the playlist (the moment the part exists), then announce it; return the write time."""
            nonlocal version
            version += 1
            store.put(key, _playlist(msn, part + 1))
            written = time.time()
            producer.produce(s.topic("manifests"), key=b"bench", value=codec.encode("ManifestUpdate", {  # type: ignore[attr-defined]
                "stream_id": "bench", "rendition": "720p", "msn": msn, "part": part, "version": version,
                "etag": f'"{version}"', "written_wallclock_ms": int(written * 1000), "ended": False}))
            producer.flush(10)
            return written

        publish(msn, part)
        while srv.ctx.hub.version("bench", "720p") < version:
            time.sleep(0.01)
        for _ in range(rounds):
            nxt = part + 1
            path = f"/live/bench/720p/playlist.m3u8?_HLS_msn={msn}&_HLS_part={nxt}"
            base_blocked = metrics.BLOCKED._value.get()
            proc = clients_in_subprocess(srv.port, path, clients)
            t_end = time.monotonic() + 60
            while metrics.BLOCKED._value.get() - base_blocked < clients and time.monotonic() < t_end:
                time.sleep(0.02)  # bench only: waiting for the clients to be held
            written = publish(msn, nxt)
            _start, results = _results(proc)
            assert all(r[0] == 200 for r in results), {r[0] for r in results}
            lat += [(done - written) * 1000 for _s, done in results]
            part = nxt
            # anchor: the same number of clients fetching the (now existing) playlist without blocking
            t0, got = _results(clients_in_subprocess(srv.port, "/live/bench/720p/playlist.m3u8", clients))
            anchor += [(done - t0) * 1000 for _s, done in got]
        # the same herd through the edge: one origin request, the edge serves the rest from its cache
        from api.edge import edge_stats, start_edge
        from api.server import free_port

        edge_port = free_port()
        edge = start_edge(s, port=edge_port, origin=f"127.0.0.1:{srv.port}", prefix=tmp_dir / "wake-edge")  # type: ignore[arg-type]
        try:
            _wait_up(edge_port)  # varnishd compiles its VCL at start (bench only)
            # round 0 warms up (varnishd grows its worker threads): not counted; then both herds together (as
            # players ask for both), then the playlist herd alone (2,000 blocked clients, as the issue counts them)
            plan = [(rnd, False) for rnd in range(rounds + 1)] + [(rnd, True) for rnd in range(1, rounds + 1)]
            for rnd, alone in plan:
                nxt = part + 1
                path = f"/live/bench/720p/playlist.m3u8?_HLS_msn={msn}&_HLS_part={nxt}"
                base_blocked = metrics.BLOCKED._value.get()
                stats0 = edge_stats(tmp_dir / "wake-edge")
                parts0 = metrics.ORIGIN_MEDIA.labels("part")._value.get()
                authz0 = _api_requests("edge")  # token verdicts (/edge/authz): not playlist or media fetches
                proc = clients_in_subprocess(edge_port, path, clients)
                part_proc = None if alone else clients_in_subprocess(edge_port, f"/live/bench/720p/{msn}.{nxt}.m4s",
                                                                     clients)
                t_end = time.monotonic() + 60
                while metrics.BLOCKED._value.get() - base_blocked < 2 and time.monotonic() < t_end:
                    time.sleep(0.02)
                # bench only: until the rest of the herd(s) is parked on the edge's waiting lists
                herds = 1 if alone else 2
                _wait_parked(tmp_dir / "wake-edge", stats0.get("MAIN.busy_sleep", 0) + herds * (clients - 1))
                store.put(f"live/bench/720p/{msn}.{nxt}.m4s", b"part")  # media first, as the packager does
                written = publish(msn, nxt)
                _start, results = _results(proc)
                _pstart, part_results = _results(part_proc) if part_proc is not None else (0.0, [])
                assert all(r[0] == 200 for r in results), {r[0] for r in results}
                assert all(r[0] == 200 for r in part_results), {r[0] for r in part_results}
                stats1 = edge_stats(tmp_dir / "wake-edge")
                authz = _api_requests("edge") - authz0
                part = nxt
                if rnd == 0:
                    continue
                if alone:
                    edge_alone_lat += [(done - written) * 1000 for _s, done in results]
                    continue
                edge_lat += [(done - written) * 1000 for _s, done in results]
                edge_part_lat += [(done - written) * 1000 for _s, done in part_results]
                edge_origin.append(int(stats1["MAIN.backend_req"] - stats0["MAIN.backend_req"] - authz))
                edge_parts.append(metrics.ORIGIN_MEDIA.labels("part")._value.get() - parts0)
        finally:
            edge.terminate()
            edge.wait(10)
    finally:
        metrics.WAKE_LATENCY.__dict__.pop("observe", None)  # back to the class's method
        srv.stop()
    return {"p50": pct(lat, 50), "p99": pct(lat, 99), "max": max(lat),
            "anchor_p50": pct(anchor, 50), "anchor_p99": pct(anchor, 99),
            "notify_n": len(notify), "notify_p50": pct(notify, 50), "notify_p99": pct(notify, 99),
            "edge_p50": pct(edge_lat, 50), "edge_p99": pct(edge_lat, 99),
            "edge_part_p50": pct(edge_part_lat, 50), "edge_part_p99": pct(edge_part_lat, 99),
            "edge_alone_p50": pct(edge_alone_lat, 50), "edge_alone_p99": pct(edge_alone_lat, 99),
            "edge_origin": edge_origin, "edge_parts": edge_parts}


def _wait_up(port: int, limit_s: float = 30.0) -> None:
    """Until something answers HTTP on the port (varnishd compiles its VCL at start; bench only)."""
    import http.client

    end = time.monotonic() + limit_s
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            conn.getresponse().read()
            conn.close()
            return
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.05)


def _api_requests(kind: str) -> float:
    """Responses the in-process api gave for one path kind (all statuses)."""
    from api import metrics

    return sum(x.value for x in metrics.REQUESTS.collect()[0].samples
               if x.name.endswith("_total") and x.labels.get("kind") == kind)


def _wait_parked(prefix: Path, busy_sleep: int, limit_s: float = 30.0) -> None:
    """Until the edge has parked `busy_sleep` requests in total on waiting lists (varnishstat; bench only)."""
    from api.edge import edge_stats

    end = time.monotonic() + limit_s
    while edge_stats(prefix, "MAIN.busy_sleep").get("MAIN.busy_sleep", 0) < busy_sleep and time.monotonic() < end:
        time.sleep(0.05)


async def _hammer(port: int, path: str, seconds: float, concurrency: int) -> float:
    """Keep-alive HTTP/1.1 GET loop on `concurrency` connections; return responses/s."""
    done = 0
    end = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal done
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        req = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
        try:
            while time.monotonic() < end:
                writer.write(req)
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                done += 1
        finally:
            writer.close()

    t0 = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.monotonic() - t0)


def _rps_in_subprocess(port: int, path: str, seconds: float, concurrency: int) -> float:
    """The load generator runs in its own process so it does not share a GIL with the api."""
    code = ("import asyncio,sys; from bench.origin import _hammer; "
            f"print(asyncio.run(_hammer({port}, {path!r}, {seconds}, {concurrency})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


async def _post_beacons(port: int, seconds: float, concurrency: int) -> float:
    """Keep-alive POSTs of 100-beacon batches (sessions spread so no rate limit applies); accepted beacons/s."""
    import json

    accepted = 0
    end = time.monotonic() + seconds

    async def worker(w: int) -> None:
        nonlocal accepted
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        i = 0
        try:
            while time.monotonic() < end:
                now = int(time.time() * 1000)
                batch = [{"event_time": now, "stream_id": "bench", "session_id": f"w{w}-{(i + k) % 5000}",
                          "device_type": "web", "quality": "720p", "latency_ms": 2000, "bitrate_kbps": 4000,
                          "bytes_downloaded": 125000, "watch_ms": 10000} for k in range(100)]
                i += 100
                body = json.dumps({"beacons": batch}).encode()
                writer.write(b"POST /api/v1/qoe/beacons HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                             + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(next(ln.split(b":")[1] for ln in head.split(b"\r\n")
                                  if ln.lower().startswith(b"content-length:")))
                reply = json.loads(await reader.readexactly(length))
                accepted += reply["accepted"]
        finally:
            writer.close()

    t0 = time.monotonic()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return accepted / (time.monotonic() - t0)


def run_beacons(s: object, seconds: float, concurrency: int) -> dict[str, float]:
    """Accepted beacons/s through POST /api/v1/qoe/beacons vs validating + encoding + producing the same
    beacons in-process with no HTTP (the anchor): what the HTTP layer costs."""
    from api.beacons import BeaconSink, validate_beacon

    srv, _producer, _store = _fixture(s)
    try:
        code = ("import asyncio; from bench.origin import _post_beacons; "
                f"print(asyncio.run(_post_beacons({srv.port}, {seconds}, {concurrency})))")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        api_rate = float(out.stdout.strip().splitlines()[-1])
    finally:
        srv.stop()
    sink = BeaconSink(s)  # type: ignore[arg-type]
    n = 0
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < seconds:
            now = int(time.time() * 1000)
            for k in range(100):
                raw = {"event_time": now, "stream_id": "bench", "session_id": f"a-{(n + k) % 5000}",
                       "device_type": "web", "quality": "720p", "latency_ms": 2000, "bitrate_kbps": 4000,
                       "bytes_downloaded": 125000, "watch_ms": 10000}
                try:
                    sink.send(validate_beacon(raw))
                except BufferError:
                    sink.producer.poll(0.01)
            n += 100
        anchor = n / (time.monotonic() - t0)
    finally:
        sink.close()
    return {"api": api_rate, "anchor": anchor}


def run_rps(s: object, tmp: Path, seconds: float, concurrency: int) -> dict[str, float]:
    from api.edge import nginx_binary, start_edge, start_varnishd, varnishd_command
    from api.server import free_port

    srv, _producer, store = _fixture(s)
    body = _playlist(20, 2)
    store.put("live/bench/720p/playlist.m3u8", body)
    static_root = tmp / "static" / "live" / "bench" / "720p"
    static_root.mkdir(parents=True)
    (static_root / "playlist.m3u8").write_bytes(body)
    static_port, edge_port = free_port(), free_port()
    conf = tmp / "static.conf"
    conf.write_text(f"""daemon off; worker_processes auto; pid {tmp}/static.pid; error_log {tmp}/static.err warn;
events {{ worker_connections 16384; }}
http {{ access_log off; keepalive_requests 100000; types {{ application/vnd.apple.mpegurl m3u8; }}
  server {{ listen 127.0.0.1:{static_port} backlog=4096; root {tmp}/static;
    location / {{ add_header Cache-Control "public, max-age=1"; }} }} }}
""")
    static = subprocess.Popen([nginx_binary(), "-p", str(tmp), "-c", str(conf), "-e", str(tmp / "static.err")])
    # the edge's own server serving the same file with no cache and no origin: Varnish answering from
    # std.fileread (read once, kept in memory) - the anchor of "cached vs the same server, static"
    vstatic_port = free_port()
    (tmp / "vstatic").mkdir()
    vcl = tmp / "vstatic" / "static.vcl"
    vcl.write_text(f"""vcl 4.1;
import std;
backend none {{ .host = "127.0.0.1"; .port = "9"; }}
sub vcl_recv {{ return (synth(200)); }}
sub vcl_synth {{
  set resp.http.Content-Type = "application/vnd.apple.mpegurl";
  set resp.http.Cache-Control = "public, max-age=1";
  set resp.body = std.fileread("{static_root / 'playlist.m3u8'}");
  return (deliver);
}}
""")
    vstatic = start_varnishd(tmp / "vstatic", varnishd_command(tmp / "vstatic", vcl, f"127.0.0.1:{vstatic_port}"))
    edge = start_edge(s, port=edge_port, origin=f"127.0.0.1:{srv.port}", prefix=tmp / "edge")  # type: ignore[arg-type]
    try:
        _wait_up(edge_port)
        _wait_up(static_port)
        _wait_up(vstatic_port)
        path = "/live/bench/720p/playlist.m3u8"
        return {"edge": _rps_in_subprocess(edge_port, path, seconds, concurrency),
                "varnish_static": _rps_in_subprocess(vstatic_port, path, seconds, concurrency),
                "static": _rps_in_subprocess(static_port, path, seconds, concurrency),
                "api": _rps_in_subprocess(srv.port, path, min(seconds, 3.0), concurrency)}
    finally:
        for p in (static, edge, vstatic):
            p.terminate()
            p.wait(10)
        srv.stop()


if __name__ == "__main__":
    raise SystemExit(main())
