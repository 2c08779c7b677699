"""The api serving what the real packager writes: real CMAF (PyAV testsrc -> transcode_gop -> StreamPackager),
real ManifestUpdates on the real broker, signed URLs followed by ffmpeg as a player would."""

from __future__ import annotations

import asyncio
import subprocess
import time
from typing import Any

import httpx
import m3u8

from api.server import BackgroundServer
from floodlight.kafka import make_producer
from floodlight.objectstore import open_store
from floodlight.registry import new_stream_record, publish_stream
from floodlight.settings import Settings
from schemas import codec
from tests.conftest import require_tool
from tests.support import wait_until

LADDER = [{"name": "144p", "width": 256, "height": 144, "bitrate_kbps": 150}]
SID = "pkgd"


def test_packager_output_through_the_api(isolated: Settings, tmp_path: Any) -> None:
    from processors.encoder.transcode import transcode_gop
    from producers.sources.testsrc import generate_gops
    from sinks.packager.core import StreamPackager
    from sinks.packager.state import StreamConfig

    s = isolated.model_copy(update={"stack_dir": tmp_path / "stack"})
    gops = generate_gops(SID, 5, width=256, height=144, gop_seconds=1.0, start_ms=int(time.time() * 1000) - 5000)
    media = [transcode_gop(g, LADDER, preset="ultrafast", part_seconds=1 / 3, x264_threads=1) for g in gops]
    producer = make_producer(s)
    publish_stream(producer, s, new_stream_record(SID, "packaged", status="LIVE", latency_mode="LOW", ladder=LADDER))

    def announce(update: dict[str, Any]) -> None:
        producer.produce(s.topic("manifests"), key=SID.encode(), value=codec.encode("ManifestUpdate", update))
        producer.flush(10)

    store = open_store(s.resolved_store_url())
    pkg = StreamPackager.open(store, SID, config=StreamConfig(latency_mode="LOW"), on_manifest=announce)

    def package(i: int) -> None:
        for rec in media[i]:
            pkg.add(rec, time.monotonic())
        pkg.flush()

    for i in range(4):
        package(i)
    with BackgroundServer(s) as srv, httpx.Client(base_url=srv.base_url, timeout=20) as c:
        wait_until(lambda: srv.ctx.hub.state(SID, "144p"), 10, what="packager's ManifestUpdates consumed")
        token = srv.ctx.signer.sign(f"live/{SID}")
        master = c.get(f"/live/{SID}/master.m3u8", params={"token": token})
        assert master.status_code == 200, master.text
        mpl = m3u8.loads(master.text)
        assert mpl.is_variant and all(p.uri.endswith(f"token={token}") for p in mpl.playlists)
        child = mpl.playlists[0].uri
        pl_resp = c.get(f"/live/{SID}/{child}")
        pl = m3u8.loads(pl_resp.text)
        assert pl.segments and all(seg.uri.endswith(f"token={token}") for seg in pl.segments if seg.uri)
        last = pl.media_sequence + len([seg for seg in pl.segments if seg.uri]) - 1
        seg = c.get(f"/live/{SID}/144p/{pl.segments[0].uri}")
        assert seg.status_code == 200 and seg.headers["content-type"] == "video/iso.segment"
        assert c.get(f"/live/{SID}/144p/playlist.m3u8", params={"token": token, "_HLS_skip": "YES"}).status_code == 200

        # a player blocking on the next segment is answered by the packager's next write
        async def blocked() -> httpx.Response:
            async with httpx.AsyncClient(base_url=srv.base_url, timeout=20) as ac:
                task = asyncio.ensure_future(ac.get(f"/live/{SID}/144p/playlist.m3u8",
                                                    params={"_HLS_msn": last + 1, "_HLS_part": 0, "token": token}))
                await asyncio.to_thread(wait_until, lambda: srv.ctx.hub._renditions[(SID, "144p")].changed
                                        is not None, 10, 0.01, "request held")
                await asyncio.to_thread(package, 4)
                return await task

        r = asyncio.run(blocked())
        assert r.status_code == 200
        assert f"{last + 1}.m4s?token={token}" in r.text

        # ffmpeg, as a player, follows the signed URIs from the master playlist down to the media
        require_tool("ffmpeg")
        res = subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-i",
                              f"{srv.base_url}/live/{SID}/master.m3u8?token={token}", "-t", "2", "-f", "null", "-"],
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr[-800:]
        assert c.get(f"/live/{SID}/master.m3u8").status_code == 403
