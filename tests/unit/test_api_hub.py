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
