"""Holes 2, 3 and 5 of issue 13 tried as an attacker would, against the real agent and the real broker.

- RTMP: a raw client that does the handshake, `connect` and `createStream` and then sends FLV media with
  no publish at all (the attack that published 12 GOPs before), one that publishes with a wrong key, and
  Debian's ffmpeg with a wrong key: 0 GOPs on the topic, the private listener never even opened a session.
  The same raw client with the right key does publish GOPs (so the attack client is a real one).
- SRT: Debian's ffmpeg with a wrong, a missing streamid, and the right one without the passphrase: 0 GOPs;
  the right streamid and passphrase: GOPs.
- Many idle RTMP connections: refused over the caps, memory and threads bounded, the idle ones cut at the
  authentication deadline, and the legitimate publisher still gets in.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from floodlight.kafka import make_consumer, make_producer
from floodlight.registry import new_stream_record, publish_stream
from floodlight.settings import Settings
from floodlight.streamkeys import hash_stream_key, new_stream_key
from producers.agent import AgentConfig, IngestAgent
from producers.sources.demux import free_port
from tests.conftest import require_tool
from tests.integration.test_ingest_sources import push, running
from tests.support import wait_until

PASSPHRASE = "venue-secret-0123"


# --- fixtures -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """6 s of 320x240@30 H.264 (1 s closed GOPs) + AAC, as MP4 (for ffmpeg pushes) and as FLV (for the raw client)."""
    require_tool("ffmpeg")
    d = tmp_path_factory.mktemp("keys")
    mp4, flv = d / "feed.mp4", d / "feed.flv"
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30",
         "-f", "lavfi", "-i", "sine=f=1000:sample_rate=48000", "-t", "6", "-c:v", "libx264", "-preset", "ultrafast",
         "-g", "30", "-keyint_min", "30", "-sc_threshold", "0", "-c:a", "aac", "-ac", "2", str(mp4)],
        check=True, timeout=60)
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i", str(mp4), "-c", "copy", str(flv)],
                   check=True, timeout=60)
    return mp4, flv


def register(settings: Settings, stream_id: str, key: str, port: int) -> None:
    rec = new_stream_record(stream_id, "security test", status="LIVE", ingest_endpoints=[
        {"role": "primary", "protocol": "rtmp", "url": f"rtmp://127.0.0.1:{port}/live",
         "stream_key_hash": hash_stream_key(key)},
        {"role": "primary", "protocol": "srt", "url": f"srt://127.0.0.1:{port}",
         "stream_key_hash": hash_stream_key(key)},
    ])
    p = make_producer(settings)
    publish_stream(p, settings, rec)
    p.flush(10)


def gops_on_topic(settings: Settings) -> int:
    """Every GopChunk ever written to the gops topic (end minus start offsets), whoever wrote it."""
    from confluent_kafka import TopicPartition

    c = make_consumer(settings, f"t-{uuid.uuid4().hex[:8]}")
    try:
        topic = settings.topic("gops")
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        total = 0
        for p in parts:
            lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            total += hi - lo
        return total
    finally:
        c.close()


AUTH_TIMEOUT_S = 6.0


@pytest.fixture
def rtmp_agent(isolated: Settings) -> Iterator[tuple[IngestAgent, int, str]]:
    key, port = new_stream_key(), free_port()
    register(isolated, "sec-rtmp", key, port)
    cfg = AgentConfig("sec-rtmp", f"rtmp://127.0.0.1:{port}/live/{{stream_key}}", status_interval=0)
    # a 6 s authentication deadline (10 s by default) keeps the idle-connection test short; not shorter: the
    # flood itself takes a few seconds on a loaded box
    with running(isolated.model_copy(update={"ingest_auth_timeout_s": AUTH_TIMEOUT_S}), cfg) as agent:
        wait_until(lambda: agent.source is not None, 30, what="rtmp gate listening")
        yield agent, port, key


# --- a raw RTMP client, written from the spec (not from the gate's code) --------------------------------
def amf(*values: object) -> bytes:
    out = b""
    for v in values:
        if v is None:
            out += b"\x05"
        elif isinstance(v, float | int):
            out += b"\x00" + struct.pack(">d", float(v))
        elif isinstance(v, str):
            out += b"\x02" + struct.pack(">H", len(v)) + v.encode()
        elif isinstance(v, dict):
            out += b"\x03" + b"".join(struct.pack(">H", len(k)) + k.encode() + amf(x) for k, x in v.items())
            out += b"\x00\x00\x09"
    return out


def flv_tags(path: Path) -> list[tuple[int, int, bytes]]:
    """(type, timestamp ms, body) of every audio/video tag of an FLV file."""
    data = path.read_bytes()
    i, out = 9 + 4, []
    while i + 11 <= len(data):
        kind, size = data[i], int.from_bytes(data[i + 1: i + 4], "big")
        ts = int.from_bytes(data[i + 4: i + 7], "big") | data[i + 7] << 24
        if kind in (8, 9):
            out.append((kind, ts, data[i + 11: i + 11 + size]))
        i += 11 + size + 4
    return out


class RawRtmp:
    CHUNK = 128

    def __init__(self, port: int, source: str = "127.0.0.1") -> None:
        self.s = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))

    def handshake(self) -> None:
        self.s.sendall(b"\x03" + bytes(8) + os.urandom(1528))
        got = b""
        while len(got) < 1 + 2 * 1536:
            chunk = self.s.recv(8192)
            assert chunk, "server closed during the handshake"
            got += chunk
        self.s.sendall(got[1: 1 + 1536])  # C2 = S1

    def message(self, csid: int, type_id: int, payload: bytes, msid: int = 0, ts: int = 0) -> None:
        out = bytes([csid]) + ts.to_bytes(3, "big") + len(payload).to_bytes(3, "big") + bytes([type_id])
        out += msid.to_bytes(4, "little") + payload[: self.CHUNK]
        for at in range(self.CHUNK, len(payload), self.CHUNK):
            out += bytes([0xC0 | csid]) + payload[at: at + self.CHUNK]
        self.s.sendall(out)

    def command(self, *values: object, csid: int = 3, msid: int = 0) -> None:
        self.message(csid, 20, amf(*values), msid)

    def read_until(self, marker: bytes, timeout: float = 10) -> bytes:
        got, end = b"", time.monotonic() + timeout
        self.s.settimeout(0.5)
        while marker not in got and time.monotonic() < end:
            try:
                chunk = self.s.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                break
            got += chunk
        return got

    def connect_and_create_stream(self) -> None:
        self.handshake()
        self.command("connect", 1.0, {"app": "live", "type": "nonprivate", "tcUrl": "rtmp://127.0.0.1/live"})
        assert b"NetConnection.Connect.Success" in self.read_until(b"NetConnection.Connect.Success")
        self.command("createStream", 2.0, None)
        self.read_until(b"_result", timeout=2)

    def send_media(self, tags: list[tuple[int, int, bytes]]) -> int:
        """Send tags as RTMP audio/video messages on stream 1 until the server cuts us off; how many went."""
        sent = 0
        try:
            for kind, ts, body in tags:
                self.message(4 if kind == 8 else 6, kind, body, msid=1, ts=ts)
                sent += 1
        except OSError:
            pass
        return sent

    def cut_off(self, timeout: float = 5) -> bool:
        """Did the server close the connection?"""
        self.s.settimeout(timeout)
        try:
            while True:
                if not self.s.recv(65536):
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.s.close()


# --- RTMP ----------------------------------------------------------------------------------------------
def test_rtmp_media_before_publish_and_wrong_keys_publish_no_gop(isolated: Settings, media, rtmp_agent):
    mp4, flv = media
    agent, port, key = rtmp_agent
    tags = flv_tags(flv)
    assert len([t for t in tags if t[0] == 9]) >= 180  # 6 s of real video

    # 1. the attack: handshake, connect, createStream, then media with no publish and no key
    raw = RawRtmp(port)
    raw.connect_and_create_stream()
    sent = raw.send_media(tags)
    assert raw.cut_off(), "the gate kept a connection that sent media before publish"
    raw.close()
    wait_until(lambda: agent.source.gate.refused >= 1, 10, what="the media-before-publish refusal")
    assert any("before an accepted publish" in r for r in agent.refusals)

    # 2. a publish with a wrong key, media right behind it
    raw = RawRtmp(port)
    raw.connect_and_create_stream()
    raw.command("publish", 3.0, None, "sk_" + "x" * 32, "live", csid=8, msid=1)
    raw.send_media(tags[:50])
    assert raw.cut_off()
    raw.close()

    # 3. Debian's ffmpeg with a wrong key, and with no key at all
    for wrong in ("sk_wrong-key", key[:-1], ""):
        bad = push(["-re", "-i", str(mp4), "-t", "1", "-c", "copy", "-f", "flv", f"rtmp://127.0.0.1:{port}/live/{wrong}"])
        assert bad.returncode != 0

    time.sleep(2)  # anything that got through would be chunked and published by now
    assert agent.source.gate.refused == 5 and agent.source.gate.accepted == 0
    assert agent.source.sessions_opened == 0  # the private listener never saw a byte
    assert agent.stats.chunked == 0 and agent.stats.published == 0
    assert gops_on_topic(isolated) == 0
    assert sent < len(tags)  # cut off mid-stream, not after everything was taken

    # the same raw client with the right key is a real publisher: its media becomes GOPs
    raw = RawRtmp(port)
    raw.connect_and_create_stream()
    raw.command("publish", 3.0, None, key, "live", csid=8, msid=1)
    assert b"NetStream.Publish.Start" in raw.read_until(b"NetStream.Publish.Start")
    assert raw.send_media(tags) == len(tags)
    wait_until(lambda: agent.stats.published >= 4, 20, what="GOPs from the keyed raw publisher")
    raw.close()
    assert agent.source.gate.accepted == 1
    # and so is ffmpeg with the right key, after it
    good = push(["-re", "-i", str(mp4), "-t", "3", "-c", "copy", "-f", "flv", f"rtmp://127.0.0.1:{port}/live/{key}"])
    assert good.returncode == 0, good.stderr
    wait_until(lambda: agent.source.gate.accepted == 2 and gops_on_topic(isolated) >= 7, 30,
               what="GOPs from ffmpeg with the right key")


# --- SRT -----------------------------------------------------------------------------------------------
def test_srt_wrong_or_missing_streamid_or_passphrase_publishes_no_gop(isolated: Settings, media):
    mp4, _ = media
    key, port = new_stream_key(), free_port()
    register(isolated, "sec-srt", key, port)
    settings = isolated.model_copy(update={"ingest_srt_passphrase": PASSPHRASE})
    cfg = AgentConfig("sec-srt", f"srt://127.0.0.1:{port}", status_interval=0)
    with running(settings, cfg) as agent:
        wait_until(lambda: agent.source is not None and agent.source.gate.listening.is_set(), 30, what="srt gate")
        url = f"srt://127.0.0.1:{port}?mode=caller"
        for caller in (f"{url}&streamid=WRONGKEY&passphrase={PASSPHRASE}",  # wrong key (the attack)
                       f"{url}&passphrase={PASSPHRASE}",  # no streamid at all
                       f"{url}&streamid={key[:-1]}&passphrase={PASSPHRASE}",  # one character short
                       f"{url}&streamid={key}",  # the right key, no passphrase
                       f"{url}&streamid={key}&passphrase=not-the-passphrase"):  # the right key, wrong passphrase
            res = push(["-re", "-i", str(mp4), "-t", "2", "-c", "copy", "-f", "mpegts", caller])
            assert res.returncode != 0, f"accepted: {caller.replace(key, 'KEY')}"
        time.sleep(2)
        gate = agent.source.gate
        # three callers refused by the key check (a caller may retry: at least three); two by libsrt's passphrase
        assert gate.accepted == 0 and gate.bytes == 0 and gate.refused >= 3
        assert agent.source.sessions_opened == 0 and agent.stats.chunked == 0
        assert gops_on_topic(isolated) == 0

        res = None
        for _ in range(3):  # the right key and passphrase (the relay may still be settling: retry)
            time.sleep(1)
            res = push(["-re", "-i", str(mp4), "-c", "copy", "-f", "mpegts",
                        f"{url}&streamid={key}&passphrase={PASSPHRASE}"])
            if res.returncode == 0:
                break
        assert res is not None and res.returncode == 0, res.stderr
        wait_until(lambda: agent.stats.published >= 4, 20, what="GOPs from the keyed SRT caller")
    assert gate.accepted == 1 and gops_on_topic(isolated) >= 4


# --- many idle connections -------------------------------------------------------------------------------
def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def idle_connections(port: int, source: str, n: int) -> tuple[list[socket.socket], int]:
    """Open n connections from `source` that send half a handshake and then nothing; (kept, refused)."""
    kept, refused = [], 0
    for _ in range(n):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
        except ConnectionResetError:  # on loopback the refusal (RST on accept) can beat connect() returning
            refused += 1
            continue
        try:
            s.sendall(b"\x03" + bytes(700))
        except OSError:
            pass
        kept.append(s)
    time.sleep(0.5)
    still = []
    for s in kept:
        s.settimeout(0.2)
        try:
            closed = s.recv(1) == b""
        except TimeoutError:
            closed = False
        except OSError:
            closed = True
        if closed:
            refused += 1
            s.close()
        else:
            still.append(s)
    return still, refused


def test_many_idle_rtmp_connections_are_capped_and_the_publisher_still_gets_in(isolated: Settings, media,
                                                                               rtmp_agent):
    mp4, _ = media
    agent, port, key = rtmp_agent
    gate = agent.source.gate
    assert gate.max_connections == 8 and gate.max_pre_auth_per_peer == 4
    rss0, threads0 = rss_bytes(), threading.active_count()

    # one address floods: it holds at most half the slots, the rest are refused on accept
    flood, refused = idle_connections(port, "127.0.0.2", 60)
    assert len(flood) == 4 and refused == 56 and gate.over_capacity == 56
    assert threading.active_count() - threads0 <= 4 + 1
    assert rss_bytes() - rss0 < 16 * 1024 * 1024, f"RSS grew by {(rss_bytes() - rss0) >> 20} MiB"
    # ... and the publisher from another address gets in during the flood
    good = push(["-re", "-i", str(mp4), "-t", "3", "-c", "copy", "-f", "flv", f"rtmp://127.0.0.1:{port}/live/{key}"])
    assert good.returncode == 0, good.stderr
    wait_until(lambda: agent.stats.published >= 2, 20, what="GOPs during the flood")
    # idle connections are cut at the authentication deadline, freeing their slots
    assert gate.auth_timeout == AUTH_TIMEOUT_S
    wait_until(lambda: gate.active == 0, AUTH_TIMEOUT_S + 5, what="idle connections cut at the deadline")
    for s in flood:
        s.close()

    # many addresses fill every slot: the next is refused; once the deadline cuts them the publisher gets in
    flood = []
    for src in ("127.0.0.3", "127.0.0.4"):
        kept, _ = idle_connections(port, src, 4)
        flood += kept
    assert len(flood) == 8 and gate.active == 8
    extra, refused = idle_connections(port, "127.0.0.5", 1)
    assert refused == 1 and not extra
    first = agent.stats.published
    start = time.monotonic()
    while time.monotonic() - start < 20:  # a venue encoder retries until it is in
        res = push(["-re", "-i", str(mp4), "-t", "2", "-c", "copy", "-f", "flv", f"rtmp://127.0.0.1:{port}/live/{key}"])
        if res.returncode == 0:
            break
        time.sleep(0.5)
    assert res.returncode == 0, res.stderr
    wait_until(lambda: agent.stats.published > first, 20, what="GOPs once the idle connections were cut")
    for s in flood:
        s.close()
    assert gate.over_capacity >= 57 and gate.refused >= 12  # the deadline cuts count as refusals
