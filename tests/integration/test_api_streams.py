"""Registry and beacon endpoints over real HTTP against the real broker."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from api import app as api_app
from api.auth import mint_jwt
from api.server import BackgroundServer
from floodlight.kafka import consumer_config, make_producer
from floodlight.settings import Settings
from floodlight.streamkeys import verify_stream_key
from schemas import codec

BRIEF_KEYS = {"stream_id", "title", "status", "started_at", "playback_url", "drm", "qualities", "features"}


@pytest.fixture
def api(isolated: Settings, tmp_path: Any) -> Iterator[tuple[Settings, BackgroundServer]]:
    s = isolated.model_copy(update={"stack_dir": tmp_path / "stack"})
    with BackgroundServer(s) as srv:
        yield s, srv


def _auth(s: Settings, **kw: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_jwt(s.jwt_secret, 'tester', **kw)}"}


def read_topic(s: Settings, short: str, expect: str, want: int, timeout: float = 15) -> list[dict[str, Any]]:
    topic = s.topic(short)
    c = Consumer(consumer_config(s, "test-reader", **{"enable.partition.eof": False}))
    md = c.list_topics(topic, timeout=10)
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in md.topics[topic].partitions])
    out: list[dict[str, Any]] = []
    end = time.monotonic() + timeout
    try:
        while len(out) < want and time.monotonic() < end:
            msg = c.poll(0.2)
            if msg is not None and not msg.error():
                out.append(codec.decode(msg.value(), expect=expect))
    finally:
        c.close()
    return out


def test_create_get_list_read_your_writes_and_brief_shape(api: tuple[Settings, BackgroundServer]) -> None:
    s, srv = api
    admin = _auth(s, roles=["admin"])
    body = {"stream_id": "ipl-final", "title": "MI vs CSK", "category": "sports", "latency_mode": "low",
            "drm_required": True, "dvr_window_seconds": 3600,
            "ladder": [{"name": "720p", "width": 1280, "height": 720, "bitrate_kbps": 4000},
                       {"name": "240p", "width": 426, "height": 240, "bitrate_kbps": 500}]}
    with httpx.Client(base_url=srv.base_url, timeout=20) as c:
        r = c.post("/api/v1/live/streams", json=body, headers=admin)
        assert r.status_code == 201, r.text
        created = r.json()
        # read-your-writes: the very next read (no wait) sees it
        got = c.get("/api/v1/live/streams/ipl-final", headers=admin)
        assert got.status_code == 200
        view = got.json()
        assert BRIEF_KEYS <= set(view)
        assert view["status"] == "scheduled" and view["started_at"] is None
        assert view["qualities"] == [{"resolution": "720p", "width": 1280, "height": 720, "bitrate": 4000},
                                     {"resolution": "240p", "width": 426, "height": 240, "bitrate": 500}]
        assert view["features"] == {"dvr_enabled": True, "dvr_window_seconds": 3600, "low_latency": True}
        assert "viewers" in view  # from the qoe app; null when analytics is unreachable
        assert view["drm"]["type"] == "aes-128" and view["drm"]["license_url"].endswith("/keys/ipl-final")
        url = httpx.URL(view["playback_url"])
        assert url.path == "/live/ipl-final/master.m3u8"
        exp = srv.ctx.signer.verify(url.params["token"], "live/ipl-final")  # signed for this stream
        # minted on a minute's boundary: every viewer of that minute gets this URI (one cached playlist at the edge)
        assert exp % 60 == 0 and 0 < exp - time.time() - s.playback_token_ttl_s <= 61
        other = {"Authorization": f"Bearer {mint_jwt(s.jwt_secret, 'someone-else', roles=['viewer'])}"}
        viewer = c.get("/api/v1/live/streams/ipl-final", headers=other)
        again = httpx.URL(viewer.json()["playback_url"]).params["token"]
        assert again == url.params["token"] or int(again.split(".")[1]) == exp + 60  # (or the next minute began)
        # ingest endpoints: keys shown once, stored only as hashes
        ingest = created["ingest"]
        assert {(e["role"], e["protocol"]) for e in ingest} == {("primary", "rtmp"), ("primary", "srt"),
                                                                ("backup", "rtmp"), ("backup", "srt")}
        record = srv.ctx.registry.get("ipl-final")
        prim = next(e for e in record["ingest_endpoints"] if e["role"] == "primary" and e["protocol"] == "rtmp")
        key = next(e["stream_key"] for e in ingest if e["role"] == "primary")
        assert key not in str(record) and verify_stream_key(key, prim["stream_key_hash"])
        assert "stream_key" not in got.text
        # list + filter
        c.post("/api/v1/live/streams", json={"stream_id": "other", "title": "Other", "public": True}, headers=admin)
        listed = c.get("/api/v1/live/streams").json()["streams"]
        assert [v["stream_id"] for v in listed] == ["other"]  # anonymous: public streams only (issue 13)
        assert listed[0]["playback_url"].endswith("/live/other/master.m3u8")
        listed = c.get("/api/v1/live/streams", headers=admin).json()["streams"]
        assert [v["stream_id"] for v in listed] == ["ipl-final", "other"]  # an admin sees every stream
        assert "token=" in listed[0]["playback_url"]
        assert [v["stream_id"] for v in c.get("/api/v1/live/streams", params={"status": "live"}).json()[
            "streams"]] == []
        assert c.get("/api/v1/live/streams", params={"status": "bogus"}).status_code == 422
        # conflicts and validation
        assert c.post("/api/v1/live/streams", json=body, headers=admin).status_code == 409
        assert c.post("/api/v1/live/streams", json={**body, "stream_id": "Bad Id"}, headers=admin).status_code == 422
        assert c.post("/api/v1/live/streams", json={**body, "stream_id": "x1"}).status_code == 401
        assert c.post("/api/v1/live/streams", json={**body, "stream_id": "x1"}, headers=_auth(s)).status_code == 403
        assert c.get("/api/v1/live/streams/nope", headers=admin).status_code == 404
        assert c.get("/api/v1/live/streams/ipl-final", headers={"Authorization": "Bearer junk"}).status_code == 401


def test_status_follows_manifests_and_end_signal(api: tuple[Settings, BackgroundServer]) -> None:
    s, srv = api
    admin = _auth(s, roles=["admin"])
    with httpx.Client(base_url=srv.base_url, timeout=20) as c:
        assert c.post("/api/v1/live/streams", json={"stream_id": "evt", "title": "E", "public": True},
                      headers=admin).status_code == 201
        p = make_producer(s)
        now = int(time.time() * 1000)
        p.produce(s.topic("manifests"), key=b"evt", value=codec.encode("ManifestUpdate", {
            "stream_id": "evt", "rendition": "720p", "msn": 0, "part": -1, "version": 1, "etag": '"a"',
            "written_wallclock_ms": now, "ended": False}))
        p.flush(10)
        from tests.support import wait_until

        wait_until(lambda: c.get("/api/v1/live/streams/evt").json()["status"] == "live", 10, what="live")
        assert c.get("/api/v1/live/streams/evt").json()["started_at"] is not None
        assert c.post("/api/v1/live/streams/evt/end").status_code == 401
        r = c.post("/api/v1/live/streams/evt/end", headers=admin)
        assert r.status_code == 200 and r.json()["status"] == "ended" and r.json()["ended_at"]
        assert srv.ctx.registry.get("evt")["status"] == "ENDED"
        assert c.get("/api/v1/live/streams", params={"status": "ended"}).json()["streams"][0]["stream_id"] == "evt"
        # cues: admin only, produced to floodlight.cues
        assert c.post("/api/v1/live/streams/evt/cues", json={"duration_s": 30}).status_code == 401
        assert c.post("/api/v1/live/streams/evt/cues", json={"duration_s": -1}, headers=admin).status_code == 422
        assert c.post("/api/v1/live/streams/nope/cues", json={"duration_s": 5}, headers=admin).status_code == 404
        r = c.post("/api/v1/live/streams/evt/cues", json={"duration_s": 30, "splice_event_id": 7}, headers=admin)
        assert r.status_code == 202
    cues = read_topic(s, "cues", "Cue", 1)
    assert cues and cues[0]["duration_ms"] == 30000 and cues[0]["splice_event_id"] == 7


def test_silent_feed_is_reported_ended(isolated: Settings) -> None:
    s = isolated.model_copy(update={"api_silence_timeout_s": 1.0})
    with BackgroundServer(s) as srv, httpx.Client(base_url=srv.base_url, timeout=20) as c:
        assert c.post("/api/v1/live/streams", json={"stream_id": "quiet", "title": "Q", "public": True},
                      headers=_auth(s, roles=["admin"])).status_code == 201
        srv.ctx.hub.last_update_ms["quiet"] = int(time.time() * 1000) - 5000  # last manifest 5 s ago
        assert c.get("/api/v1/live/streams/quiet").json()["status"] == "ended"


def test_beacon_batch_with_one_bad_beacon(api: tuple[Settings, BackgroundServer]) -> None:
    s, srv = api
    now = int(time.time() * 1000)
    good = [{"event_time": now, "stream_id": "demo", "session_id": f"s{i}", "device_type": "web",
             "quality": "720p", "latency_ms": 2000 + i, "bitrate_kbps": 4000} for i in range(5)]
    batch = good[:2] + [{"event_time": "yesterday", "stream_id": "demo", "session_id": "bad"}] + good[2:]
    with httpx.Client(base_url=srv.base_url, timeout=20) as c:
        r = c.post("/api/v1/qoe/beacons", json={"beacons": batch})
        assert r.status_code == 207
        assert r.json()["accepted"] == 5
        assert [x["index"] for x in r.json()["rejected"]] == [2]
        assert "event_time" in r.json()["rejected"][0]["error"]
        # sendBeacon posts text/plain; a bare array is accepted too
        r = c.post("/api/v1/qoe/beacons", content=b'[{"event_time": 1, "stream_id": "demo", "session_id": "t"}]',
                   headers={"content-type": "text/plain;charset=UTF-8"})
        assert r.status_code == 200 and r.json() == {"accepted": 1, "rejected": []}
        assert c.post("/api/v1/qoe/beacons", content=b"{not json").status_code == 400
        assert c.post("/api/v1/qoe/beacons", json={"beacons": good * 21}).status_code == 422
        assert c.post("/api/v1/qoe/beacons", json={"beacons": [{"stream_id": "x"}]}).status_code == 422
        # per-session rate limit: a burst of 100, then refused
        flood = [dict(good[0], session_id="greedy")] * 100
        assert c.post("/api/v1/qoe/beacons", json={"beacons": flood}).status_code == 200
        r = c.post("/api/v1/qoe/beacons", json={"beacons": flood})
        assert r.status_code == 429 and r.json()["rejected"][0]["error"] == "rate limited"
    got = read_topic(s, "qoe", "QoeBeacon", 5 + 1 + 100)
    sessions = [b["session_id"] for b in got]
    assert sorted(x for x in sessions if x.startswith("s")) == ["s0", "s1", "s2", "s3", "s4"]
    assert "bad" not in sessions and "t" in sessions
    s3 = next(b for b in got if b["session_id"] == "s3")
    assert s3["latency_ms"] == 2003 and s3["device_type"] == "web" and s3["watch_ms"] == 0


def test_readyz_reports_each_dependency(api: tuple[Settings, BackgroundServer]) -> None:
    _s, srv = api
    with httpx.Client(base_url=srv.base_url, timeout=20) as c:
        r = c.get("/readyz")
        assert r.status_code == 200
        assert r.json()["checks"] == {"kafka": "ok", "registry": "ok", "manifests": "ok", "store": "ok"}
        assert c.get("/healthz").json() == {"status": "ok"}
        metrics = c.get("/metrics").text
        assert "floodlight_api_requests_total" in metrics
        doc = c.get("/openapi.json").json()
        assert "/api/v1/live/streams/{stream_id}" in doc["paths"]
        assert "/api/v1/qoe/beacons" in doc["paths"]


def test_readyz_fails_when_the_store_is_not_writable(isolated: Settings, tmp_path: Any) -> None:
    import shutil

    store_dir = tmp_path / "store-ro"
    s = isolated.model_copy(update={"store_url": store_dir.as_uri()})
    with BackgroundServer(s) as srv:
        assert httpx.get(f"{srv.base_url}/readyz", timeout=20).status_code == 200
        shutil.rmtree(store_dir)
        store_dir.write_text("a file where the store directory was")  # every put now fails
        api_app._store_probe.clear()  # as if STORE_PROBE_TTL_S had passed: the write probe runs once per TTL
        r = httpx.get(f"{srv.base_url}/readyz", timeout=20)
        assert r.status_code == 503 and r.json()["checks"]["store"].startswith("not writable")
        assert r.json()["checks"]["kafka"] == "ok"
