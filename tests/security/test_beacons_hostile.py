"""Hole 4 of issue 13: hostile beacon bodies against the real api (uvicorn) and the real broker. No body
makes it answer >= 500; deep nesting and lone surrogates are 4xx; the size limit holds while the body
is still arriving; and every beacon that reaches floodlight.qoe was accepted exactly once (a batch is
validated whole before the first beacon of it is produced)."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.requests import Request

from api.beacons import MAX_BODY_BYTES, BeaconSink, read_body, validate_beacon
from api.server import BackgroundServer
from floodlight.kafka import consumer_config
from floodlight.settings import Settings

URL = "/api/v1/qoe/beacons"
GOOD = {"event_time": 1_795_000_000_000, "stream_id": "demo", "session_id": "s-good", "quality": "720p",
        "latency_ms": 2100, "bytes_downloaded": 1000}


@pytest.fixture
def api(isolated: Settings, tmp_path: Any) -> Iterator[tuple[Settings, BackgroundServer]]:
    s = isolated.model_copy(update={"stack_dir": tmp_path / "stack", "api_beacon_rate_per_session": 1000.0})
    with BackgroundServer(s) as srv:
        yield s, srv


def produced(s: Settings, srv: BackgroundServer, expect: int, timeout: float = 30.0) -> list[tuple[bytes, bytes]]:
    """Every (key, value) on the qoe topic, once `expect` have arrived (and a moment more for extras)."""
    assert srv.ctx.beacons is not None
    srv.ctx.beacons.producer.flush(10)
    c = Consumer(consumer_config(s, group_id=f"sec-{s.topic_prefix}", **{"enable.auto.commit": False}))
    try:
        md = c.list_topics(s.topic("qoe"), timeout=10)
        c.assign([TopicPartition(s.topic("qoe"), p, OFFSET_BEGINNING) for p in md.topics[s.topic("qoe")].partitions])
        out: list[tuple[bytes, bytes]] = []
        end = time.monotonic() + timeout
        idle_until = None
        while time.monotonic() < end:
            msgs = c.consume(500, 0.5)
            out += [(m.key(), m.value()) for m in msgs if m.error() is None]
            if len(out) >= expect:
                idle_until = idle_until or time.monotonic() + 2.0  # anything extra would show up now
                if time.monotonic() > idle_until:
                    break
        return out
    finally:
        c.close()


def expected_frames(items: Any, response: httpx.Response) -> list[tuple[bytes, bytes]]:
    """The (key, value) each accepted beacon of a batch must have been produced as."""
    if response.status_code not in (200, 207):
        return []
    body = response.json()
    rejected = {r["index"] for r in body["rejected"]}
    frames = [BeaconSink.frame(validate_beacon(raw)) for i, raw in enumerate(items) if i not in rejected]
    assert len(frames) == body["accepted"]
    return frames


# --- hostile JSON, built to reach every branch: valid-looking beacons with hostile values, deep and wide
# structures, odd scalars, lone surrogates (sent escaped, as JSON allows) -------------------------------
surrogates = st.sampled_from(["\ud800", "\udfff", "a\udc00b", "\ud83d", "\ud83d\ude00"])  # the last is valid
text = st.one_of(st.text(max_size=20), surrogates, st.sampled_from(["", "demo", "../etc", "x" * 300, "\x00"]))
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), text,
                    st.sampled_from([2**63, -(2**63) - 1, 2**31, 1e308, -0.0]))
json_values = st.recursive(scalars, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                           st.dictionaries(text, kids, max_size=4)), max_leaves=12)
FIELDS = ["event_time", "stream_id", "session_id", "user_id", "device_type", "quality", "buffer_events",
          "stall_ms", "bytes_downloaded", "cdn_pop", "latency_ms", "startup_ms", "bitrate_kbps",
          "dropped_frames", "error_code", "event_type", "watch_ms"]
beacon_like = st.builds(lambda patch, drop: {k: v for k, v in {**GOOD, **patch}.items() if k not in drop},
                        st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=4),
                        st.sets(st.sampled_from(FIELDS), max_size=2))
session_ids = st.sampled_from(["s-a", "s-b", "s-c"])
good_beacons = st.builds(lambda sid, t: {**GOOD, "session_id": sid, "event_time": t}, session_ids,
                         st.integers(1_795_000_000_000, 1_795_000_999_999))
batches = st.lists(st.one_of(good_beacons, beacon_like, json_values), max_size=8)
payloads = st.one_of(batches, st.builds(lambda b: {"beacons": b}, batches), json_values)


def deep(n: int, inner: str = "0") -> str:
    return "[" * n + inner + "]" * n


def test_hypothesis_bodies_never_500_and_no_beacon_is_produced_twice(api: tuple[Settings, BackgroundServer]) -> None:
    s, srv = api
    expected: list[tuple[bytes, bytes]] = []
    failures: list[str] = []
    with httpx.Client(base_url=srv.base_url, timeout=30) as c:

        def send(content: bytes, items: Any, ctype: str = "application/json") -> None:
            r = c.post(URL, content=content, headers={"content-type": ctype})
            if r.status_code >= 500:
                failures.append(f"{r.status_code} for {content[:120]!r}: {r.text[:200]}")
            elif not 200 <= r.status_code < 500:
                failures.append(f"unexpected {r.status_code} for {content[:120]!r}")
            else:
                expected.extend(expected_frames(items, r))

        @given(payload=payloads, ascii_only=st.booleans(), ctype=st.sampled_from(["application/json", "text/plain"]))
        @settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def json_bodies(payload: Any, ascii_only: bool, ctype: str) -> None:
            try:
                content = json.dumps(payload, ensure_ascii=ascii_only, allow_nan=True).encode("utf-8", "surrogatepass")
            except ValueError:
                return
            items = payload.get("beacons") if isinstance(payload, dict) else payload
            send(content, items, ctype)

        @given(raw=st.binary(max_size=300))
        @settings(max_examples=100, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def byte_bodies(raw: bytes) -> None:
            try:
                payload = json.loads(raw)
            except (ValueError, RecursionError):
                payload = None
            send(raw, payload.get("beacons") if isinstance(payload, dict) else payload)

        json_bodies()
        byte_bodies()
        for body in (deep(5000), deep(100_000), '{"beacons": ' + deep(3000) + "}",
                     json.dumps({"beacons": [{**GOOD, "session_id": "PLACE"}]}).replace('"PLACE"', deep(2000, '"x"')),
                     '{"a":' * 5000 + "1" + "}" * 5000, "1" * 5000, '"\\ud800"'):
            send(body.encode(), None)
    assert not failures, "\n".join(failures[:20])
    assert expected, "the generator never produced an acceptable beacon"
    got = produced(s, srv, len(expected))
    assert Counter(got) == Counter(expected)  # each accepted beacon exactly once, nothing else


def test_deep_nesting_and_lone_surrogates_are_4xx(api: tuple[Settings, BackgroundServer]) -> None:
    s, srv = api
    with httpx.Client(base_url=srv.base_url, timeout=30) as c:
        for body in (deep(5000), '{"beacons":' + deep(5000) + "}"):
            r = c.post(URL, content=body)
            assert r.status_code == 400, (r.status_code, r.text)
        lone = json.dumps({"beacons": [{**GOOD, "session_id": "\ud800"}]})  # ensure_ascii: "\ud800" escaped
        assert "\\ud800" in lone
        r = c.post(URL, content=lone)
        assert r.status_code == 422 and "valid Unicode" in r.json()["rejected"][0]["error"]
        for field in ("stream_id", "user_id", "cdn_pop", "quality", "error_code"):
            r = c.post(URL, content=json.dumps([{**GOOD, field: "a\udfffb"}]))
            assert r.status_code == 422, (field, r.status_code, r.text)
        # the failure: earlier beacons of the batch already produced when a later one failed
        first = {**GOOD, "session_id": "s-first"}
        batch = json.dumps({"beacons": [first, {**GOOD, "session_id": "s-second\ud800"}]})
        r = c.post(URL, content=batch)
        assert r.status_code == 207 and r.json() == {"accepted": 1, "rejected": [
            {"index": 1, "error": "'session_id' is not valid Unicode text"}]}
    got = produced(s, srv, 1)
    assert got == [BeaconSink.frame(validate_beacon(first))]


def test_body_limit_holds_while_the_body_arrives(api: tuple[Settings, BackgroundServer]) -> None:
    _s, srv = api
    sent = {"bytes": 0}

    async def endless() -> Any:
        chunk = b" " * 65536
        for _ in range(4096):  # 256 MiB if nobody stopped reading
            sent["bytes"] += len(chunk)
            yield chunk

    async def post() -> httpx.Response:
        async with httpx.AsyncClient(base_url=srv.base_url, timeout=30) as ac:
            return await ac.post(URL, content=endless())  # chunked: no Content-Length to refuse up front

    try:
        r = asyncio.run(post())
        assert r.status_code == 413
    except (httpx.WriteError, httpx.RemoteProtocolError, httpx.ReadError):
        pass  # the server answered 413 and closed while we were still writing: just as good
    assert sent["bytes"] < 64 * 1024 * 1024
    with httpx.Client(base_url=srv.base_url, timeout=30) as c:
        r = c.post(URL, content=b"[" + b" " * MAX_BODY_BYTES + b"]")
        assert r.status_code == 413


@pytest.mark.asyncio
async def test_read_body_stops_at_the_limit_without_draining_the_stream() -> None:
    pulled = {"n": 0}

    async def receive() -> dict[str, Any]:
        pulled["n"] += 1
        return {"type": "http.request", "body": b"x" * 65536, "more_body": pulled["n"] < 10_000}

    req = Request({"type": "http", "method": "POST", "path": URL, "headers": []}, receive)
    assert await read_body(req, MAX_BODY_BYTES) is None
    assert pulled["n"] == MAX_BODY_BYTES // 65536 + 1  # stopped at the first chunk over the limit
    declared = Request({"type": "http", "method": "POST", "path": URL,
                        "headers": [(b"content-length", str(10**9).encode())]}, receive)
    before = pulled["n"]
    assert await read_body(declared, MAX_BODY_BYTES) is None
    assert pulled["n"] == before  # refused on the declared length, nothing read
