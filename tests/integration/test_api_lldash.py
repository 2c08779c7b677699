"""LL-DASH chunked CMAF at the origin (issue 15.4): a segment still being built is streamed part by part as each
is written (ManifestUpdate per part), ending with the rest of the complete segment; the bytes are the
segment's. Real broker, real store, the api in the background."""

from __future__ import annotations

import threading
import time

import httpx

from schemas import codec
from tests.integration.test_api_origin import Origin, origin, state_of  # noqa: F401
from tests.support import wait_until


def announce(o: Origin, sid: str, rendition: str, msn: int, part: int) -> None:
    """What the packager announces for a LOW stream in parts (target duration and part target included)."""
    v = o.versions.get((sid, rendition), 0) + 1
    o.versions[(sid, rendition)] = v
    rec = {"stream_id": sid, "rendition": rendition, "msn": msn, "part": part, "version": v, "etag": f'"{v}"',
           "written_wallclock_ms": int(time.time() * 1000), "ended": False, "target_duration": 1,
           "part_target": 0.334}
    o.producer.produce(o.settings.topic("manifests"), key=sid.encode(), value=codec.encode("ManifestUpdate", rec))
    o.producer.flush(10)


def test_a_segment_being_built_is_streamed_part_by_part(origin: Origin) -> None:  # noqa: F811
    sid, r = "lldash", "720p"
    origin.register(sid, public=True)
    base = f"live/{sid}/{r}"
    parts = [b"moof-mdat-%d " % i * 50 for i in range(3)]
    origin.store.put(f"{base}/4.m4s", b"segment 4")
    announce(origin, sid, r, 4, -1)  # segment 4 complete; 5 not started
    wait_until(lambda: (st := state_of(origin, sid, r)) and st.msn == 4, 10, what="update consumed")
    got: list[tuple[float, bytes]] = []
    t0 = time.monotonic()

    def fetch() -> None:
        with httpx.stream("GET", f"{origin.url}/live/{sid}/{r}/5.m4s", timeout=20) as res:
            assert res.status_code == 200 and res.headers["content-type"] == "video/iso.segment"
            assert "immutable" in res.headers["cache-control"]
            for chunk in res.iter_raw():
                got.append((time.monotonic() - t0, chunk))

    reader = threading.Thread(target=fetch)
    reader.start()
    for i, data in enumerate(parts):  # the packager's order: the part, then the playlist's update
        time.sleep(0.4)
        origin.store.put(f"{base}/5.{i}.m4s", data)
        if i < 2:
            announce(origin, sid, r, 5, i)
    time.sleep(0.4)
    origin.store.put(f"{base}/5.m4s", b"".join(parts))
    announce(origin, sid, r, 5, -1)  # the last part completes the segment
    reader.join(20)
    body = b"".join(c for _t, c in got)
    assert body == b"".join(parts)
    # the first part left long before the segment was complete (about 0.4 s in, not 1.6 s)
    first_at = next(t for t, c in got if c)
    assert first_at < 1.2, got


def test_a_part_that_never_comes_ends_the_response_unfinished(origin: Origin) -> None:  # noqa: F811
    sid, r = "lldash-stall", "720p"
    origin.register(sid, public=True)
    origin.settings.api_block_timeout_s = 1.0
    origin.srv.ctx.settings.api_block_timeout_s = 1.0
    base = f"live/{sid}/{r}"
    origin.store.put(f"{base}/7.0.m4s", b"part 0")
    announce(origin, sid, r, 7, 0)
    wait_until(lambda: (st := state_of(origin, sid, r)) and st.msn == 7, 10, what="update consumed")
    body = b""
    failed = False
    try:
        with httpx.stream("GET", f"{origin.url}/live/{sid}/{r}/7.m4s", timeout=20) as res:
            for chunk in res.iter_raw():
                body += chunk
    except httpx.HTTPError:
        failed = True  # the chunked body never ends properly: no cache may keep it
    assert body == b"part 0" and failed
