"""The api started while its broker is down for 60 s (longer than any start-up timeout it has): the
manifest follower and the registry view wait it out (floodlight.follow), /readyz says "catching up"
meanwhile and turns ready once the broker is back, and a blocking LL-HLS playlist reload held on the
next part is answered by the ManifestUpdate the packager announces. Uses a private broker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from api.server import BackgroundServer
from floodlight.kafka import make_producer
from floodlight.objectstore import open_store
from floodlight.registry import new_stream_record, publish_stream
from floodlight.settings import Settings
from floodlight.topics import apply_topics
from ops import stack
from schemas import codec
from tests.integration.test_api_origin import MASTER, ll_playlist
from tests.integration.test_ingest_broker_outage import free_pair
from tests.support import wait_until

pytestmark = pytest.mark.waits  # a minute of a private broker being down: `./run test` runs it beside the rest

OUTAGE_S = 60.0
SID = "late-broker"


@pytest.fixture
def down_broker(broker: Settings, tmp_path: Any) -> Iterator[Settings]:
    """Settings for a private broker that is not running yet (the test starts it); stopped at the end."""
    p = free_pair()
    s = broker.model_copy(update={"stack_dir": tmp_path / "stack", "kafka_port": p, "kafka_bootstrap": f"127.0.0.1:{p}",
                                  "topic_prefix": "follow.", "topic_partitions": 3,
                                  "store_url": (tmp_path / "store").as_uri(), "api_block_timeout_s": 20.0})
    try:
        yield s
    finally:
        stack.down(s)


def readyz(url: str) -> tuple[int, dict[str, Any]]:
    try:
        r = httpx.get(f"{url}/readyz", timeout=10)
    except httpx.HTTPError as exc:
        return 0, {"error": str(exc)}
    return r.status_code, r.json()


def write_playlist(store: Any, first: int, complete: int, parts: int) -> None:
    """Media first, then the playlist (the packager's order)."""
    base = f"live/{SID}/720p"
    store.put(f"{base}/init.mp4", b"ftypmoov")
    last = first + complete
    for n in range(first, last):
        store.put(f"{base}/{n}.m4s", f"seg {n}".encode())
        for p in range(3):
            store.put(f"{base}/{n}.{p}.m4s", f"part {n}.{p}".encode())
    for p in range(parts):
        store.put(f"{base}/{last}.{p}.m4s", f"part {last}.{p}".encode())
    store.put(f"{base}/playlist.m3u8", ll_playlist(first, complete, parts).replace("{sid}", SID).encode())
    store.put(f"live/{SID}/master.m3u8", MASTER.encode())


def announce(s: Settings, producer: Any, msn: int, part: int, version: int) -> None:
    rec = {"stream_id": SID, "rendition": "720p", "msn": msn, "part": part, "version": version,
           "etag": f'"{version}"', "written_wallclock_ms": int(time.time() * 1000), "ended": False}
    producer.produce(s.topic("manifests"), key=SID.encode(), value=codec.encode("ManifestUpdate", rec))
    producer.flush(10)


def test_api_waits_out_a_broker_down_for_60s_then_answers_a_blocking_reload(down_broker: Settings) -> None:
    s = down_broker
    store = open_store(s.resolved_store_url())
    srv = BackgroundServer(s)
    t0 = time.monotonic()
    srv.thread.start()  # not srv.start(): that waits for the registry, which cannot catch up yet
    try:
        wait_until(lambda: srv.server.started or not srv.thread.is_alive(), 60, what="the api's start-up")
        assert srv.server.started, "the api did not start without a broker"
        ctx = srv.ctx

        # The broker stays away for OUTAGE_S: the api answers, says it is catching up, and keeps trying.
        while time.monotonic() - t0 < OUTAGE_S:
            code, body = readyz(srv.base_url)
            assert code == 503, body
            assert body["checks"]["manifests"] == "catching up" and body["checks"]["registry"] == "catching up"
            assert ctx.follower.alive and not ctx.follower.caught_up.is_set()
            ctx.follower.caught_up.wait(1.0)  # pace the probes (returns at once if it ever caught up)
        assert ctx.follower.alive, "the manifest follower gave up during the outage"

        # The broker comes back with its topics; the stream is registered and packaged up to 14 + part 15.0.
        stack.up(s)
        apply_topics(s)
        producer = make_producer(s)
        publish_stream(producer, s, new_stream_record(SID, "late broker", status="LIVE", latency_mode="LOW",
                                                      public=True))
        write_playlist(store, first=10, complete=5, parts=1)
        announce(s, producer, 15, 0, version=1)
        came_back = time.monotonic()

        wait_until(lambda: readyz(srv.base_url)[0] == 200, 90, interval=0.2, what="/readyz ready after the outage")
        print(f"ready {time.monotonic() - came_back:.1f}s after the broker and topics came back "
              f"({time.monotonic() - t0:.0f}s after the api started)")
        assert readyz(srv.base_url)[1]["checks"] == {"kafka": "ok", "registry": "ok", "manifests": "ok", "store": "ok"}
        wait_until(lambda: (st := ctx.hub.state(SID, "720p")) is not None and (st.msn, st.part) == (15, 0), 30,
                   what="the first ManifestUpdate consumed")

        base = f"{srv.base_url}/live/{SID}/720p/playlist.m3u8"

        async def scenario() -> tuple[httpx.Response, float, float]:
            async with httpx.AsyncClient(timeout=30) as client:
                task = asyncio.create_task(client.get(base, params={"_HLS_msn": 15, "_HLS_part": 1}))
                await asyncio.to_thread(wait_until, lambda: (r := ctx.hub._renditions.get((SID, "720p")))
                                        is not None and r.changed is not None, 10, 0.005, "the reload held")
                assert not task.done()
                # the packager: media and playlist first, then the ManifestUpdate
                await asyncio.to_thread(write_playlist, store, 10, 5, 2)
                await asyncio.to_thread(announce, s, producer, 15, 1, 2)
                sent = time.monotonic()
                r = await task
                return r, sent, time.monotonic()

        r, sent, got = asyncio.run(scenario())
        assert r.status_code == 200, r.text
        assert '"15.1.m4s"' in r.text
        print(f"blocking reload answered {(got - sent) * 1000:.0f} ms after the ManifestUpdate was acknowledged")
        assert got - sent < 10  # woken by the update, well before the 20 s hold would expire
    finally:
        srv.stop()
