"""The nginx edge in front of a real api: the herd of viewers asking for one new segment costs the
origin exactly one request; tokens are still checked on cached objects; LL-HLS query strings pass."""

from __future__ import annotations

import asyncio
import re
import resource
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from api.edge import start_edge
from api.server import BackgroundServer, free_port
from bench.origin import fetch_many
from floodlight.kafka import make_producer
from floodlight.objectstore import open_store
from floodlight.settings import Settings
from tests.integration.test_api_origin import Origin
from tests.support import healthy, wait_until

VIEWERS = 1000


@pytest.fixture
def edge(isolated: Settings, tmp_path: Any) -> Iterator[tuple[Origin, str]]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    isolated = isolated.model_copy(update={"api_block_timeout_s": 15.0,  # generous hold on a loaded machine
                                           "stack_dir": tmp_path / "stack"})
    with BackgroundServer(isolated) as srv:
        port = free_port()
        proc = start_edge(isolated, port=port, origin=f"127.0.0.1:{srv.port}", prefix=tmp_path / "edge")
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until(lambda: healthy(url), 10, what="nginx listening")
            yield Origin(isolated, srv, open_store(isolated.resolved_store_url()), make_producer(isolated), {}), url
        finally:
            proc.terminate()
            proc.wait(10)


def origin_media_requests(api_url: str, kind: str) -> float:
    text = httpx.get(f"{api_url}/metrics", timeout=10).text
    m = re.search(rf'^floodlight_api_origin_media_requests_total\{{kind="{kind}"\}} ([0-9.e+]+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


async def herd(url: str, n: int) -> list[tuple[int, bytes]]:
    """n viewers at once, each on its own connection (raw asyncio client: httpx's pool is too slow here)."""
    u = httpx.URL(url)
    path = u.raw_path.decode()
    return [(st, body) for st, _h, body, _t in await fetch_many(u.host, u.port or 80, path, n)]


def test_thousand_viewers_of_a_new_segment_cost_one_origin_request(edge: tuple[Origin, str]) -> None:
    o, edge_url = edge
    sid = "herd"
    o.register(sid)
    o.write(sid, "720p", 0, 3, 0)
    token = o.token(sid)
    api = o.srv.base_url
    # 1. a segment that exists but no viewer asked for yet
    before = origin_media_requests(api, "segment")
    responses = asyncio.run(herd(f"{edge_url}/live/{sid}/720p/2.m4s?token={token}", VIEWERS))
    assert [st for st, _ in responses] == [200] * VIEWERS
    assert {body for _, body in responses} == {b"seg 2"}
    assert origin_media_requests(api, "segment") - before == 1
    # 2. the next part, requested by everyone before it exists (preload hint): held, then one fetch
    wait_until(lambda: o.srv.ctx.hub.state(sid, "720p"), 10, what="update consumed")
    before = origin_media_requests(api, "part")

    async def scenario() -> list[tuple[int, bytes]]:
        task = asyncio.ensure_future(herd(f"{edge_url}/live/{sid}/720p/3.0.m4s?token={token}", VIEWERS))
        await asyncio.to_thread(wait_until, lambda: origin_media_requests(api, "part") - before >= 1, 20, 0.05,
                                "the first request reaching the origin")
        await asyncio.sleep(0)  # let the remaining viewers queue on the edge's cache lock
        await asyncio.to_thread(o.write, sid, "720p", 0, 3, 1, announce=False)
        await asyncio.to_thread(o.announce, sid, "720p", 3, 0)
        return await task

    responses = asyncio.run(scenario())
    assert [st for st, _ in responses] == [200] * VIEWERS
    assert {body for _, body in responses} == {b"part 3.0"}
    assert origin_media_requests(api, "part") - before == 1


def test_edge_checks_tokens_and_passes_ll_hls_queries(edge: tuple[Origin, str]) -> None:
    o, edge_url = edge
    sid = "gate"
    o.register(sid)
    o.register("else")
    o.write(sid, "720p", 0, 3, 1)
    token = o.token(sid)
    with httpx.Client(base_url=edge_url, timeout=20) as c:
        first = c.get(f"/live/{sid}/720p/1.m4s", params={"token": token})
        assert first.status_code == 200 and first.headers["cache-control"].endswith("immutable")
        assert c.get(f"/live/{sid}/720p/1.m4s", params={"token": token}).headers["x-edge-cache"] == "HIT"
        # cached, yet a missing, foreign or tampered token is refused at the edge
        assert c.get(f"/live/{sid}/720p/1.m4s").status_code == 403
        assert c.get(f"/live/{sid}/720p/1.m4s", params={"token": o.token("else")}).status_code == 403
        assert c.get(f"/live/{sid}/720p/1.m4s", params={"token": token[:-1] + "x"}).status_code == 403
        # a client cannot choose its country: the edge overwrites the trusted header
        o.register("geo", allowed_countries=["IN"])
        o.write("geo", "720p", 0, 1, 0)
        assert c.get("/live/geo/720p/0.m4s", params={"token": o.token("geo")},
                     headers={"X-Country-Code": "IN"}).status_code == 403
        assert c.get("/metrics").status_code == 404 and c.get("/edge/authz").status_code == 404
        # playlists: tokens and _HLS_* reach the origin; blocking works through the edge
        pl = c.get(f"/live/{sid}/720p/playlist.m3u8", params={"token": token})
        assert pl.status_code == 200 and f"3.0.m4s?token={token}" in pl.text
        assert pl.headers["cache-control"] == "public, max-age=1"
        assert c.get(f"/live/{sid}/720p/playlist.m3u8", params={"_HLS_msn": 99, "token": token}).status_code == 400

        async def blocked() -> tuple[httpx.Response, float]:
            async with httpx.AsyncClient(base_url=edge_url, timeout=20) as ac:
                task = asyncio.ensure_future(ac.get(f"/live/{sid}/720p/playlist.m3u8",
                                                    params={"_HLS_msn": 3, "_HLS_part": 1, "token": token}))
                await asyncio.to_thread(wait_until, lambda: o.srv.ctx.hub._renditions[(sid, "720p")].changed
                                        is not None, 10, 0.01, "blocked at the origin")
                await asyncio.to_thread(o.write, sid, "720p", 0, 3, 2, announce=False)
                await asyncio.to_thread(o.announce, sid, "720p", 3, 1)
                return await task, time.monotonic()

        r, _ = asyncio.run(blocked())
        assert r.status_code == 200 and f'"3.1.m4s?token={token}"' in r.text


def listed(playlist: str, part: str) -> bool:
    return any(ln.startswith("#EXT-X-PART:") and f'URI="{part}.m4s' in ln for ln in playlist.splitlines())


def test_a_joining_player_gets_the_live_edge_not_a_copy_up_to_the_max_age_old(edge: tuple[Origin, str]) -> None:
    """A player joins from the media playlist asked without _HLS_msn and places its start from that copy's edge
    as if it were current: the edge keeps it 0.1 s, not the origin's 1 s max-age (api/edge.py JOIN_PLAYLIST_TTL).
    Blocking requests and the master keep the max-age."""
    o, edge_url = edge
    sid = "join"
    o.register(sid)
    o.write(sid, "720p", 0, 3, 1)
    token = o.token(sid)
    url = f"/live/{sid}/720p/playlist.m3u8"
    with httpx.Client(base_url=edge_url, timeout=20) as c:
        t0 = time.monotonic()
        first = c.get(url, params={"token": token})
        assert first.status_code == 200 and not listed(first.text, "3.1") and first.headers["x-edge-cache"] == "MISS"
        assert first.headers["cache-control"] == "public, max-age=1"  # what any other cache in between keeps
        o.write(sid, "720p", 0, 3, 2)  # the next part is listed at the origin
        wait_until(lambda: listed(c.get(url, params={"token": token}).text, "3.1"), 5, 0.02,
                   "the new part listed through the edge")
        # a copy kept for the max-age is served until >= 1 s after the first request started (it was stored after
        # t0); the join copy for 0.1 s, so what remains is the announce reaching the api
        assert time.monotonic() - t0 < 1.0
        master = f"/live/{sid}/master.m3u8"
        assert c.get(master, params={"token": token}).status_code == 200
        assert c.get(master, params={"token": token}).headers["x-edge-cache"] == "HIT"
