"""The playlist hub's coalesced reads (pure asyncio, a fake reader)."""

from __future__ import annotations

import pytest


def test_hub_reads_once_per_version_and_retries_a_failed_read() -> None:
    import asyncio

    from api.hub import PlaylistHub
    from floodlight.objectstore import StoredObject, StoreError

    calls: list[str] = []
    fail = [True]

    async def read(key: str) -> StoredObject | None:
        calls.append(key)
        await asyncio.sleep(0)
        if fail[0]:
            raise StoreError("disk gone")
        return StoredObject(key, b"#EXTM3U\n", "application/vnd.apple.mpegurl", "public, max-age=1", '"e"')

    async def scenario() -> None:
        hub = PlaylistHub(read)
        hub.on_update({"stream_id": "s", "rendition": "720p", "msn": 1, "part": -1, "version": 5, "etag": "x",
                       "written_wallclock_ms": 0, "ended": False})
        with pytest.raises(StoreError):
            await hub.get("k", "s", "720p")
        fail[0] = False
        got = await asyncio.gather(*(hub.get("k", "s", "720p") for _ in range(50)))
        assert {g.data for g in got} == {b"#EXTM3U\n"}
        assert len(calls) == 2  # the failure was not cached; 50 concurrent readers shared one read

    asyncio.run(scenario())


def test_one_update_wakes_every_waiter_and_unsatisfied_ones_time_out() -> None:
    import asyncio

    from api.hub import PlaylistHub
    from api.llhls import BlockRequest

    async def never(key: str) -> None:
        raise AssertionError("no read expected")

    async def scenario() -> tuple[list[bool], bool]:
        hub = PlaylistHub(never)
        hub.on_update({"stream_id": "s", "rendition": "r", "msn": 4, "part": 0, "version": 1, "etag": "x",
                       "written_wallclock_ms": 0, "ended": False})
        waiters = [asyncio.ensure_future(hub.wait_for("s", "r", BlockRequest(4, 1), 5.0)) for _ in range(100)]
        late = asyncio.ensure_future(hub.wait_for("s", "r", BlockRequest(6, 0), 0.2))
        await asyncio.sleep(0.01)
        assert not any(w.done() for w in waiters)
        hub.on_update({"stream_id": "s", "rendition": "r", "msn": 4, "part": 1, "version": 2, "etag": "y",
                       "written_wallclock_ms": 0, "ended": False})
        woke = await asyncio.wait_for(asyncio.gather(*waiters), 1.0)
        return woke, await late

    woke, late = asyncio.run(scenario())
    assert woke == [True] * 100
    assert late is False


def test_an_update_with_targets_needs_no_playlist_read_and_a_v1_update_does() -> None:
    from api.hub import PlaylistHub
    from api.llhls import PlaylistState

    async def never(key: str) -> None:
        raise AssertionError("no read expected")

    hub = PlaylistHub(never)
    base = {"stream_id": "s", "etag": "x", "written_wallclock_ms": 0, "ended": False}
    hub.on_update({**base, "rendition": "old", "msn": 3, "part": -1, "version": 1,
                   "target_duration": 0, "part_target": 0.0})
    assert not hub.learned("s", "old")  # the origin reads the playlist for its targets
    text = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:3\n#EXTINF:2.0,\n3.m4s\n"
    hub.learn_from_playlist("s", "old", text)
    assert hub.learned("s", "old") and hub.state("s", "old") == PlaylistState(3, -1, False, 2.0, None)
    hub.on_update({**base, "rendition": "new", "msn": 7, "part": 2, "version": 1,
                   "target_duration": 1, "part_target": 0.334})
    assert hub.learned("s", "new") and hub.state("s", "new") == PlaylistState(7, 2, False, 1.0, 0.334)
