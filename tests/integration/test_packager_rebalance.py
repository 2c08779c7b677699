"""Two packager members in one group on the real broker: kill -9 the one owning streams; the other
takes their partitions over, resumes each stream from its checkpoint and continues the same MSNs."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import m3u8
import pytest

from floodlight.objectstore import open_store
from floodlight.settings import Settings
from tests.integration.test_packager_stream import Packager, playlist_msn, produce
from tests.support import wait_until

STREAMS = ["reb-a", "reb-b", "reb-c", "reb-d"]


@pytest.fixture(scope="module")
def small_media() -> dict[int, list[dict[str, Any]]]:
    from processors.encoder.transcode import transcode_gop
    from producers.sources.testsrc import generate_gops

    ladder = [{"name": "180p", "width": 320, "height": 180, "bitrate_kbps": 250}]
    gops = generate_gops("reb", 16, width=320, height=180, gop_seconds=1.0, start_ms=int(time.time() * 1000) - 16_000)
    return {i: [r for r in transcode_gop(g, ladder, preset="ultrafast", part_seconds=1 / 3)
                if r["rendition"]["name"] == "180p"] for i, g in enumerate(gops)}


def owned(log: str) -> set[str]:
    return set(re.findall(r"stream opened.*?stream_id=([a-z0-9-]+)", log))


@pytest.mark.waits  # mostly a killed member's session timeout: runs beside the rest
def test_member_killed_streams_continue_on_the_other(isolated: Settings, small_media, tmp_path) -> None:
    s = isolated.model_copy(update={"stack_dir": tmp_path / "stack"})
    store = open_store(s.store_url)
    group = f"pkg-reb-{uuid.uuid4().hex[:6]}"
    members = [Packager(s, group, tmp_path / f"m{i}.log") for i in range(2)]
    for m in members:
        m.start()
    try:
        for sid in STREAMS:
            produce(s, [r for g in range(8) for r in small_media[g]], stream_id=sid)
        wait_until(lambda: all(playlist_msn(store, sid, "180p") == 7 for sid in STREAMS), 60, what="msn 7 everywhere")
        logs = [m.log.read_text() for m in members]
        victim = max(range(2), key=lambda i: len(owned(logs[i])))
        moved = owned(logs[victim])
        assert moved, f"no member owned a stream: {logs}"
        members[victim].kill9()
        for sid in STREAMS:
            produce(s, [r for g in range(8, 16) for r in small_media[g]], stream_id=sid)
        wait_until(lambda: all(playlist_msn(store, sid, "180p") == 15 for sid in STREAMS), 90,
                   what="msn 15 everywhere after the takeover")
        survivor = members[1 - victim].log.read_text()
        assert moved <= owned(survivor)  # the survivor opened (resumed) every stream the victim had
        for sid in STREAMS:  # dvr.m3u8 follows within a commit interval
            wait_until(lambda sid=sid: "15.m4s" in store.get(f"live/{sid}/180p/dvr.m3u8").data.decode(), 10,
                       what=f"{sid} dvr.m3u8 at msn 15")
            pl = m3u8.loads(store.get(f"live/{sid}/180p/dvr.m3u8").data.decode())
            assert pl.media_sequence == 0 and [x.uri for x in pl.segments] == [f"{i}.m4s" for i in range(16)], sid
            assert "#EXT-X-GAP" not in pl.dumps()
    finally:
        for m in members:
            m.stop()
