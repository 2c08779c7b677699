"""The playback origin against the real broker and a real object store: LL-HLS blocking reload,
delta playlists, coalescing, signed URLs, keys, traversal attempts (fixture objects written with
floodlight.objectstore, ManifestUpdates produced to the real floodlight.manifests)."""

from __future__ import annotations

import asyncio
import http.client
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import m3u8
import pytest

from api.auth import mint_jwt
from api.server import BackgroundServer
from floodlight.kafka import make_producer
from floodlight.objectstore import ObjectStore, open_store
from floodlight.registry import new_stream_record, publish_stream
from floodlight.settings import Settings
from schemas import codec
from tests.support import wait_until

PART_TARGET = 0.334


def ll_playlist(first: int, complete: int, parts: int, *, skip_before: int | None = None, ended: bool = False) -> str:
    """An LL-HLS media playlist: `complete` full segments from `first`, then `parts` parts of the next one.
    skip_before: write the delta form, replacing segments below that msn with EXT-X-SKIP."""
    lines = ["#EXTM3U", "#EXT-X-VERSION:9", "#EXT-X-TARGETDURATION:1",
             "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.002,CAN-SKIP-UNTIL=6.0",
             f"#EXT-X-PART-INF:PART-TARGET={PART_TARGET}", f"#EXT-X-MEDIA-SEQUENCE:{first}"]
    start = first
    if skip_before is not None and skip_before > first:
        lines.append(f"#EXT-X-SKIP:SKIPPED-SEGMENTS={skip_before - first}")
        start = skip_before
    lines.append('#EXT-X-MAP:URI="init.mp4"')
    lines.append("#EXT-X-KEY:METHOD=AES-128,URI=\"/keys/{sid}/k0\",IV=0x00000000000000000000000000000001")
    lines.append("#EXT-X-PROGRAM-DATE-TIME:2026-11-29T12:00:00.000Z")
    last = first + complete
    for n in range(start, last):
        if n >= last - 2:
            for p in range(3):
                ind = ",INDEPENDENT=YES" if p == 0 else ""
                lines.append(f'#EXT-X-PART:DURATION={PART_TARGET},URI="{n}.{p}.m4s"{ind}')
        lines += ["#EXTINF:1.000,", f"{n}.m4s"]
    if ended:
        lines.append("#EXT-X-ENDLIST")
    else:
        for p in range(parts):
            lines.append(f'#EXT-X-PART:DURATION={PART_TARGET},URI="{last}.{p}.m4s"')
        hint = f"{last}.{parts}.m4s"
        lines.append(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="{hint}"')
        lines.append(f'#EXT-X-RENDITION-REPORT:URI="../480p/playlist.m3u8",LAST-MSN={last},LAST-PART={parts - 1}')
    return "\n".join(lines) + "\n"


MASTER = """#EXTM3U
#EXT-X-VERSION:9
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="aud",NAME="audio",DEFAULT=YES,AUTOSELECT=YES,URI="audio/playlist.m3u8"
#EXT-X-STREAM-INF:BANDWIDTH=4400000,AVERAGE-BANDWIDTH=4000000,RESOLUTION=1280x720,CODECS="avc1.64001f,mp4a.40.2",AUDIO="aud"
720p/playlist.m3u8
"""


@dataclass
class Origin:
    settings: Settings
    srv: BackgroundServer
    store: ObjectStore
    producer: Any
    versions: dict[tuple[str, str], int]

    @property
    def url(self) -> str:
        return self.srv.base_url

    def register(self, sid: str, **fields: Any) -> dict[str, Any]:
        rec = new_stream_record(sid, f"stream {sid}", **{"status": "LIVE", "latency_mode": "LOW", **fields})
        publish_stream(self.producer, self.settings, rec)
        assert self.srv.ctx.registry.wait_for(lambda r: r is not None and r["updated_ms"] >= rec["updated_ms"],
                                              sid, 10)
        return rec

    def token(self, sid: str, **kw: Any) -> str:
        return self.srv.ctx.signer.sign(f"live/{sid}", **kw)

    def write(self, sid: str, rendition: str, first: int, complete: int, parts: int, *, announce: bool = True,
              ended: bool = False) -> None:
        """Media first, then the playlists, then the ManifestUpdate (the packager's order)."""
        base = f"live/{sid}/{rendition}"
        self.store.put(f"{base}/init.mp4", b"ftypmoov-" + rendition.encode())
        last = first + complete
        for n in range(first, last):
            self.store.put(f"{base}/{n}.m4s", f"seg {n}".encode())
            for p in range(3):
                self.store.put(f"{base}/{n}.{p}.m4s", f"part {n}.{p}".encode())
        for p in range(parts):
            self.store.put(f"{base}/{last}.{p}.m4s", f"part {last}.{p}".encode())
        self.store.put(f"{base}/playlist.m3u8", ll_playlist(first, complete, parts, ended=ended).replace(
            "{sid}", sid).encode())
        self.store.put(f"{base}/playlist-skip.m3u8", ll_playlist(first, complete, parts, skip_before=last - 4,
                                                                 ended=ended).replace("{sid}", sid).encode())
        self.store.put(f"live/{sid}/master.m3u8", MASTER.encode())
        if announce:
            self.announce(sid, rendition, last if parts else last - 1, parts - 1 if parts else -1, ended=ended)

    def announce(self, sid: str, rendition: str, msn: int, part: int, ended: bool = False) -> None:
        v = self.versions.get((sid, rendition), 0) + 1
        self.versions[(sid, rendition)] = v
        rec = {"stream_id": sid, "rendition": rendition, "msn": msn, "part": part, "version": v, "etag": f'"{v}"',
               "written_wallclock_ms": int(time.time() * 1000), "ended": ended}
        self.producer.produce(self.settings.topic("manifests"), key=sid.encode(),
                              value=codec.encode("ManifestUpdate", rec))
        self.producer.flush(10)


@pytest.fixture
def origin(isolated: Settings, tmp_path: Any) -> Iterator[Origin]:
    s = isolated.model_copy(update={"stack_dir": tmp_path / "stack", "api_block_timeout_s": 0.0})  # keys here
    store = open_store(s.resolved_store_url())
    with BackgroundServer(s) as srv:
        yield Origin(s, srv, store, make_producer(s), {})


def state_of(o: Origin, sid: str, rendition: str) -> Any:
    return o.srv.ctx.hub.state(sid, rendition)


# --- blocking reload ----------------------------------------------------------------------------

def test_existing_part_returns_at_once_and_next_part_wakes_on_manifest_update(origin: Origin) -> None:
    sid = "blk"
    origin.register(sid, public=True)
    origin.write(sid, "720p", first=10, complete=5, parts=1)  # segments 10..14 complete, 15.0 listed
    wait_until(lambda: (st := state_of(origin, sid, "720p")) and st.msn == 15, 10, what="update consumed")
    base = f"{origin.url}/live/{sid}/720p/playlist.m3u8"
    with httpx.Client(timeout=20) as c:
        t0 = time.monotonic()
        r = c.get(base, params={"_HLS_msn": 15, "_HLS_part": 0})
        assert r.status_code == 200 and "15.0.m4s" in r.text
        assert time.monotonic() - t0 < 1.0  # answered without holding (hold would be 3 s)

    async def blocked() -> tuple[httpx.Response, float]:
        async with httpx.AsyncClient(timeout=20) as ac:
            r = await ac.get(base, params={"_HLS_msn": 15, "_HLS_part": 1})
            return r, time.monotonic()

    async def scenario() -> tuple[httpx.Response, float, float]:
        task = asyncio.create_task(blocked())
        await asyncio.to_thread(wait_until, lambda: origin.srv.ctx.hub._renditions[(sid, "720p")].changed
                                is not None, 5, 0.005, "request held")
        assert not task.done()
        await asyncio.to_thread(origin.write, sid, "720p", 10, 5, 2, announce=False)
        sent = time.monotonic()
        await asyncio.to_thread(origin.announce, sid, "720p", 15, 1)
        r, got = await task
        return r, sent, got

    r, sent, got = asyncio.run(scenario())
    assert r.status_code == 200
    assert '"15.1.m4s"' in r.text
    latency_ms = (got - sent) * 1000
    print(f"blocking reload answered {latency_ms:.1f} ms after the ManifestUpdate was acknowledged")
    assert latency_ms < 1000  # woken by the update, not by the 3 s hold expiring (timings: bench/origin.py)


def test_too_far_ahead_is_400_and_held_too_long_is_503(origin: Origin) -> None:
    sid = "far"
    origin.register(sid, public=True)
    origin.write(sid, "720p", first=0, complete=4, parts=1)
    wait_until(lambda: state_of(origin, sid, "720p"), 10, what="update consumed")
    base = f"{origin.url}/live/{sid}/720p/playlist.m3u8"
    with httpx.Client(timeout=20) as c:
        assert c.get(base, params={"_HLS_msn": 6}).status_code == 400  # last complete 3, +2 = 5
        assert c.get(base, params={"_HLS_msn": 4, "_HLS_part": 30}).status_code == 400
        assert c.get(base, params={"_HLS_part": 1}).status_code == 400
        assert c.get(base, params={"_HLS_msn": "x"}).status_code == 400
        assert c.get(base, params={"_HLS_msn": 4, "_HLS_skip": "NO"}).status_code == 400
        t0 = time.monotonic()
        r = c.get(base, params={"_HLS_msn": 5})  # plausible but never arrives: 3 x TARGETDURATION:1
        held = time.monotonic() - t0
        assert r.status_code == 503 and r.headers["retry-after"]
        assert r.headers["cache-control"] == "no-store"
        assert 2.5 < held < 6


def test_delta_playlist_carries_ext_x_skip(origin: Origin) -> None:
    sid = "dlt"
    origin.register(sid, public=True)
    origin.write(sid, "720p", first=100, complete=12, parts=2)
    wait_until(lambda: state_of(origin, sid, "720p"), 10, what="update consumed")
    with httpx.Client(base_url=origin.url, timeout=10) as c:
        full = c.get(f"/live/{sid}/720p/playlist.m3u8").text
        delta = c.get(f"/live/{sid}/720p/playlist.m3u8", params={"_HLS_msn": 112, "_HLS_part": 1, "_HLS_skip": "YES"})
    assert delta.status_code == 200
    assert "#EXT-X-SKIP:SKIPPED-SEGMENTS=8" in delta.text
    full_pl, delta_pl = m3u8.loads(full), m3u8.loads(delta.text)
    assert delta_pl.skip.skipped_segments == len(full_pl.segments) - len(delta_pl.segments)
    assert delta_pl.media_sequence == full_pl.media_sequence == 100
    assert [s.uri for s in delta_pl.segments] == [s.uri for s in full_pl.segments][-len(delta_pl.segments):]
    assert len(delta_pl.segments) == 5  # 4 kept + the partial one


def test_thousand_waiters_cost_one_store_read_and_one_render(origin: Origin) -> None:
    sid = "herd"
    origin.register(sid)  # not public: every response is signed
    origin.write(sid, "720p", first=0, complete=3, parts=1)
    wait_until(lambda: state_of(origin, sid, "720p"), 10, what="update consumed")
    token = origin.token(sid)
    hub = origin.srv.ctx.hub
    from api import metrics

    def count(m: Any) -> float:
        return m._value.get() if hasattr(m, "_value") else m.labels("playlist")._value.get()

    from bench.origin import fetch_many

    host, port = origin.url.removeprefix("http://").split(":")
    path = f"/live/{sid}/720p/playlist.m3u8?_HLS_msn=3&_HLS_part=1&token={token}"
    deltas: list[float] = []

    async def scenario() -> list[tuple[int, dict[str, str], bytes, float]]:
        base = metrics.BLOCKED._value.get()
        task = asyncio.ensure_future(fetch_many(host, int(port), path, 1000))
        await asyncio.to_thread(wait_until, lambda: metrics.BLOCKED._value.get() - base >= 1000, 30, 0.01,
                                "1000 requests held")
        reads0, renders0 = count(metrics.STORE_READS), count(metrics.PLAYLIST_RENDERS)
        await asyncio.to_thread(origin.write, sid, "720p", 0, 3, 2, announce=False)
        await asyncio.to_thread(origin.announce, sid, "720p", 3, 1)
        out = await task
        deltas.extend([count(metrics.STORE_READS) - reads0, count(metrics.PLAYLIST_RENDERS) - renders0])
        return out

    responses = asyncio.run(scenario())
    assert [r[0] for r in responses] == [200] * 1000
    assert len({r[2] for r in responses}) == 1
    assert f"3.1.m4s?token={token}".encode() in responses[0][2]
    assert deltas == [1, 1], deltas
    assert hub.version(sid, "720p") == 2


# --- signed playback ------------------------------------------------------------------------------

def test_tokens_propagate_to_every_uri_and_are_enforced(origin: Origin) -> None:
    sid, other = "paid", "other"
    origin.register(sid, drm_required=True)
    origin.register(other)
    origin.write(sid, "720p", first=0, complete=3, parts=1)
    origin.srv.ctx.keys.get_or_create(sid, "k0")
    token = origin.token(sid)
    with httpx.Client(base_url=origin.url, timeout=10) as c:
        master = c.get(f"/live/{sid}/master.m3u8", params={"token": token})
        assert master.status_code == 200
        assert f"720p/playlist.m3u8?token={token}" in master.text
        assert f'URI="audio/playlist.m3u8?token={token}"' in master.text
        media = c.get(f"/live/{sid}/720p/playlist.m3u8", params={"token": token}).text
        pl = m3u8.loads(media)
        uris = [s.uri for s in pl.segments if s.uri] + [p.uri for p in pl.segments[-1].parts] + [pl.segment_map[0].uri]
        uris += [pl.keys[-1].uri, pl.preload_hint.uri] + [r.uri for r in pl.rendition_reports]
        assert uris and all(u.endswith(f"token={token}") for u in uris), uris
        assert pl.keys[-1].uri == f"/keys/{sid}/k0?token={token}"
        # every object URI of the playlist opens with its token
        assert c.get(f"/live/{sid}/720p/{pl.segments[0].uri}").status_code == 200
        assert c.get(f"/live/{sid}/720p/0.m4s").status_code == 403  # no token
        tampered = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
        for bad in (origin.token(other), origin.token(sid, ttl_s=-10), tampered, "k9." + token.split(".", 1)[1],
                    "garbage"):
            assert c.get(f"/live/{sid}/720p/0.m4s", params={"token": bad}).status_code == 403, bad
            assert c.get(f"/live/{sid}/master.m3u8", params={"token": bad}).status_code == 403, bad
        key = c.get(f"/keys/{sid}/k0", params={"token": token})
        assert key.status_code == 200 and len(key.content) == 16
        assert key.headers["cache-control"] == "private, no-store"
        assert c.get(f"/keys/{sid}/k0").status_code == 403
        assert c.get(f"/keys/{sid}/k0", params={"token": origin.token(other)}).status_code == 403
        assert c.get(f"/keys/{sid}/nope", params={"token": token}).status_code == 404
        assert c.get("/live/nobody/master.m3u8", params={"token": token}).status_code == 404


def test_premium_needs_entitlement_and_geo_rules_apply(origin: Origin) -> None:
    origin.register("final", is_premium=True, allowed_countries=["IN"])
    secret = origin.settings.jwt_secret
    plain = {"Authorization": f"Bearer {mint_jwt(secret, 'viewer')}"}
    entitled = {"Authorization": f"Bearer {mint_jwt(secret, 'fan', entitlements=['premium'])}"}
    with httpx.Client(base_url=origin.url, timeout=10) as c:
        assert c.get("/api/v1/live/streams/final").status_code == 401
        r = c.get("/api/v1/live/streams/final", headers=plain)
        assert r.status_code == 403
        r = c.get("/api/v1/live/streams/final", headers=entitled)
        assert r.status_code == 200
        url = httpx.URL(r.json()["playback_url"])
        token = url.params["token"]
        origin.write("final", "720p", 0, 2, 0)
        assert c.get("/live/final/master.m3u8", params={"token": token}).status_code == 403  # no country
        ok = c.get("/live/final/master.m3u8", params={"token": token}, headers={"X-Country-Code": "IN"})
        assert ok.status_code == 200
        assert c.get("/live/final/master.m3u8", params={"token": token},
                     headers={"X-Country-Code": "US"}).status_code == 403


def test_public_stream_plays_without_token_and_caching_headers(origin: Origin) -> None:
    sid = "fta"
    origin.register(sid, public=True)
    origin.write(sid, "720p", 0, 3, 1)
    with httpx.Client(base_url=origin.url, timeout=10) as c:
        pl = c.get(f"/live/{sid}/720p/playlist.m3u8")
        assert pl.status_code == 200 and "token=" not in pl.text
        assert pl.headers["content-type"] == "application/vnd.apple.mpegurl"
        assert pl.headers["cache-control"] == "public, max-age=1"
        seg = c.get(f"/live/{sid}/720p/1.m4s", headers={"Origin": "http://player.example"})
        assert seg.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert seg.headers["content-type"] == "video/iso.segment"
        assert seg.headers["access-control-allow-origin"] == "*"
        again = c.get(f"/live/{sid}/720p/1.m4s", headers={"If-None-Match": seg.headers["etag"]})
        assert again.status_code == 304 and again.content == b""
        assert c.get(f"/live/{sid}/720p/init.mp4").headers["content-type"] == "video/mp4"
        assert c.get(f"/live/{sid}/720p/999.m4s").status_code == 404
        t = c.get("/api/v1/time", headers={"Origin": "http://player.example"})
        assert t.status_code == 200 and t.text.endswith("Z") and t.headers["access-control-allow-origin"] == "*"


def test_preload_hinted_part_is_held_until_written(origin: Origin) -> None:
    sid = "hint"
    origin.register(sid, public=True)
    origin.write(sid, "720p", 0, 3, 1)  # 3.0 listed, hint 3.1
    wait_until(lambda: state_of(origin, sid, "720p"), 10, what="update consumed")

    async def scenario() -> httpx.Response:
        async with httpx.AsyncClient(timeout=20) as ac:
            task = asyncio.create_task(ac.get(f"{origin.url}/live/{sid}/720p/3.1.m4s"))
            await asyncio.to_thread(wait_until, lambda: origin.srv.ctx.hub._renditions[(sid, "720p")].changed
                                    is not None, 5, 0.005, "part request held")
            await asyncio.to_thread(origin.write, sid, "720p", 0, 3, 2, announce=False)
            await asyncio.to_thread(origin.announce, sid, "720p", 3, 1)
            return await task

    r = asyncio.run(scenario())
    assert r.status_code == 200 and r.content == b"part 3.1"


# --- malformed and hostile paths -----------------------------------------------------------------

TRAVERSALS = [
    "/live/trav/../../../etc/passwd",
    "/live/trav/720p/..%2F..%2F..%2Fetc%2Fpasswd",
    "/live/trav/%2e%2e/%2e%2e/etc/passwd",
    "/live/trav/720p/%2Fetc%2Fpasswd",
    "/live/%2Fetc%2Fpasswd/master.m3u8",
    "/live/..%2F..%2Fetc/master.m3u8",
    "//etc/passwd",
    "/live/trav/720p/..",
    "/live/trav/720p/.hidden.m4s",
    "/live/trav/720p/x%00.m4s",
    "/live/TRAV/master.m3u8",
    "/live/trav/720p/passwd",
    "/keys/trav/..%2F..%2Fkeys",
    "/vod/../live/trav/master.m3u8",
    "/live/trav/720p/0.m4s/../../../../etc/passwd",
]


def test_traversal_attempts_never_leave_the_store(origin: Origin) -> None:
    origin.register("trav", public=True)
    origin.write("trav", "720p", 0, 2, 0)
    host, port = origin.url.removeprefix("http://").split(":")
    for path in TRAVERSALS:
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("GET", path)  # raw: no client-side normalisation of dot segments
        res = conn.getresponse()
        body = res.read()
        conn.close()
        assert res.status in (400, 403, 404), (path, res.status)
        assert b"root:" not in body


def test_vod_assets_use_the_registry_record_and_its_token(origin: Origin) -> None:
    origin.register("replay1", status="ENDED")
    origin.store.put("vod/replay1/720p/playlist.m3u8", b"#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:4.0,\n0.m4s\n"
                     b"#EXT-X-ENDLIST\n")
    origin.store.put("vod/replay1/720p/0.m4s", b"vod seg")
    token = origin.token("replay1")
    with httpx.Client(base_url=origin.url, timeout=10) as c:
        pl = c.get("/vod/replay1/720p/playlist.m3u8", params={"token": token})
        assert pl.status_code == 200 and f"0.m4s?token={token}" in pl.text
        assert c.get("/vod/replay1/720p/0.m4s", params={"token": token}).content == b"vod seg"
        assert c.get("/vod/replay1/720p/0.m4s").status_code == 403
        assert c.get("/vod/replay1/720p/0.m4s", params={"token": origin.token("other")}).status_code == 403


def test_root_documents(origin: Origin) -> None:
    origin.register("docs", public=True)
    origin.store.put("live/docs/master.m3u8", MASTER.encode())
    origin.store.put("live/docs/master-dvr.m3u8", MASTER.replace("playlist.m3u8", "dvr.m3u8").encode())
    origin.store.put("live/docs/manifest.mpd", b'<MPD><SegmentTemplate media="720p/$Number$.m4s"/></MPD>')
    with httpx.Client(base_url=origin.url, timeout=10) as c:
        assert "720p/dvr.m3u8" in c.get("/live/docs/master-dvr.m3u8").text
        mpd = c.get("/live/docs/manifest.mpd")
        assert mpd.status_code == 200 and mpd.headers["content-type"] == "application/dash+xml"
        assert c.get("/live/docs/other.m3u8").status_code == 400
        assert c.get("/live/docs/master-x.m3u8").status_code == 404
