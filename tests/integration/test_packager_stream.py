"""The packager as a real process on the real broker, fed real encoder output (PyAV testsrc -> transcode_gop).

One 30 s low-latency stream with a four-rung ladder is packaged across a `kill -9` and restart; a cue
announced before the stream lands as DATERANGE + MPD event; GOP 7 is sent before 6; an encrypted
and a gappy stream share the same packager. Then every playlist is checked against RFC 8216bis rules,
ffmpeg decodes 20 s from master.m3u8 over plain HTTP, and ending the stream writes ENDLIST.
"""

from __future__ import annotations

import http.server
import io
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import m3u8
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from floodlight.kafka import consumer_config, make_producer
from floodlight.keystore import open_key_provider
from floodlight.objectstore import open_store
from floodlight.registry import new_stream_record, publish_stream
from floodlight.settings import ROOT, Settings
from floodlight.topics import apply_topics, delete_prefixed_topics
from schemas import codec
from sinks.packager import encrypt
from sinks.packager.conformance import check_media_playlist
from tests.support import wait_until

LADDER = [
    {"name": "360p", "width": 640, "height": 360, "bitrate_kbps": 800},
    {"name": "270p", "width": 480, "height": 270, "bitrate_kbps": 500},
    {"name": "180p", "width": 320, "height": 180, "bitrate_kbps": 250},
    {"name": "144p", "width": 256, "height": 144, "bitrate_kbps": 150},
]
RENDITIONS = ["360p", "270p", "180p", "144p", "audio"]
N_GOPS = 30
SID = "main"


@pytest.fixture(scope="module")
def media() -> dict[int, list[dict[str, Any]]]:
    """30 s of real CMAF: testsrc 640x360 1 s GOPs through the encoder's transcode_gop, 1/3 s parts."""
    from processors.encoder.transcode import transcode_gop
    from producers.sources.testsrc import generate_gops

    gops = generate_gops(SID, N_GOPS, width=640, height=360, gop_seconds=1.0,
                         start_ms=int(time.time() * 1000) - N_GOPS * 1000)
    out: dict[int, list[dict[str, Any]]] = {}
    for i, g in enumerate(gops):
        out[i] = transcode_gop(g, LADDER, preset="ultrafast", part_seconds=1 / 3)
    assert sorted({r["rendition"]["name"] for r in out[0]}) == sorted(RENDITIONS)
    return out


@pytest.fixture(scope="module")
def env(broker: Settings, tmp_path_factory) -> Iterator[Settings]:
    tmp = tmp_path_factory.mktemp("pkg")
    prefix = f"t{uuid.uuid4().hex[:8]}."
    s = broker.model_copy(update={"topic_prefix": prefix, "topic_partitions": 3,
                                  "store_url": (tmp / "store").as_uri(), "stack_dir": tmp / "stack"})
    apply_topics(s)
    yield s
    delete_prefixed_topics(s)


class Packager:
    """`floodlight packager` as a subprocess with the test's settings."""

    def __init__(self, s: Settings, group: str, log: Path) -> None:
        self.env = {**os.environ, "FLOODLIGHT_TOPIC_PREFIX": s.topic_prefix, "FLOODLIGHT_STORE_URL": s.store_url,
                    "FLOODLIGHT_STACK_DIR": str(s.stack_dir), "FLOODLIGHT_KAFKA_BOOTSTRAP": s.kafka_bootstrap,
                    "FLOODLIGHT_PACKAGER_GAP_DEADLINE_S": "2", "FLOODLIGHT_PACKAGER_COMMIT_INTERVAL_S": "0.5",
                    "FLOODLIGHT_LOG_FORMAT": "text"}
        self.group = group
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "ops.cli", "packager", "--group", self.group],
                                     cwd=ROOT, env=self.env, stdout=self.log.open("ab"), stderr=subprocess.STDOUT)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.terminate()
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return -9


def produce(s: Settings, records: list[dict[str, Any]], stream_id: str | None = None) -> None:
    p = make_producer(s)
    for r in records:
        if stream_id:
            r = dict(r, stream_id=stream_id)
        p.produce(s.topic("segments"), key=r["stream_id"].encode(), value=codec.encode("RenditionSegment", r))
    assert p.flush(30) == 0


def playlist_msn(store, sid: str, rendition: str) -> int:
    obj = store.get(f"live/{sid}/{rendition}/playlist.m3u8")
    if obj is None:
        return -1
    pl = m3u8.loads(obj.data.decode())
    return pl.media_sequence + len(pl.segments) - 1 if pl.segments else -1


def playlist_msn_dvr(store, sid: str, rendition: str) -> int:
    pl = m3u8.loads(store.get(f"live/{sid}/{rendition}/dvr.m3u8").data.decode())
    return pl.media_sequence + len(pl.segments) - 1


class Store(http.server.SimpleHTTPRequestHandler):
    """A plain HTTP server over the directory store, plus /keys/{stream}/{kid} from the key provider."""

    keys = None

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        m = re.match(r"^/keys/([a-z0-9-]+)/([A-Za-z0-9_-]+)$", self.path)
        if m:
            ck = self.keys.get(m.group(1), m.group(2))  # type: ignore[union-attr]
            if ck is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", "16")
            self.end_headers()
            self.wfile.write(ck.key)
            return
        super().do_GET()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def run(env: Settings, media: dict[int, list[dict[str, Any]]], tmp_path_factory) -> Iterator[dict[str, Any]]:
    """Drive the whole scenario once; the tests below check its outcome."""
    store = open_store(env.store_url)
    producer = make_producer(env)
    t0 = media[0][0]["capture_wallclock_ms"]
    publish_stream(producer, env, new_stream_record(SID, "Main", status="LIVE", latency_mode="LOW", public=True,
                                                    ladder=LADDER))
    publish_stream(producer, env, new_stream_record("enc", "Enc", status="LIVE", latency_mode="LOW", drm_required=True,
                                                    key_rotation_segments=3, ladder=LADDER))
    cue = {"stream_id": SID, "cue_id": "break-1", "splice_event_id": 4242, "start_wallclock_ms": t0 + 12_300,
           "duration_ms": 3000, "scte35": None, "created_ms": t0}
    producer.produce(env.topic("cues"), key=SID.encode(), value=codec.encode("Cue", cue))
    producer.flush(10)
    logf = tmp_path_factory.mktemp("logs") / "packager.log"
    pk = Packager(env, f"pkg-test-{uuid.uuid4().hex[:6]}", logf)
    pk.start()
    result: dict[str, Any] = {"store": store, "env": env, "t0": t0, "log": logf, "packager": pk}
    try:
        bad = dict(media[0][0], rendition=dict(media[0][0]["rendition"], name="../etc"))
        producer.produce(env.topic("segments"), key=SID.encode(), value=b"\x00not avro")
        producer.produce(env.topic("segments"), key=SID.encode(), value=codec.encode("RenditionSegment", bad))
        producer.flush(10)
        order = list(range(15))
        order[6], order[7] = 7, 6  # GOP 7 reaches the packager before GOP 6
        produce(env, [r for g in order for r in media[g]])
        wait_until(lambda: all(playlist_msn(store, SID, r) == 14 for r in RENDITIONS), 60,
                   what="msn 14 in every playlist")
        snapshot = {k: store.get(k).data for k in store.list(f"live/{SID}/") if k.endswith((".m4s", ".mp4"))}
        pk.kill9()  # mid-stream: whatever was not committed is re-read after the restart
        produce(env, [r for g in range(15, N_GOPS) for r in media[g]])
        # side streams: encrypted (6 GOPs, one rung) and gappy (GOP 3 withheld, then late)
        one = [r for g in range(6) for r in media[g] if r["rendition"]["name"] in ("180p",)]
        produce(env, one, stream_id="enc")
        gappy = [r for g in (0, 1, 2, 4, 5, 6) for r in media[g] if r["rendition"]["name"] == "180p"]
        produce(env, gappy, stream_id="gappy")
        pk.start()
        wait_until(lambda: all(playlist_msn(store, SID, r) == N_GOPS - 1 for r in RENDITIONS), 90,
                   what="msn 29 after the restart")
        wait_until(lambda: playlist_msn(store, "enc", "180p") == 5, 30, what="encrypted stream")
        wait_until(lambda: "#EXT-X-GAP" in (store.get("live/gappy/180p/playlist.m3u8") or _empty).data.decode(),
                   30, what="gap published after the deadline")
        result["gap_text"] = store.get("live/gappy/180p/playlist.m3u8").data.decode()
        produce(env, [r for r in media[3] if r["rendition"]["name"] == "180p"], stream_id="gappy")
        wait_until(lambda: "#EXT-X-GAP" not in store.get("live/gappy/180p/playlist.m3u8").data.decode(), 30,
                   what="gap filled by the late GOP")
        result["snapshot"] = snapshot
        yield result
    finally:
        pk.stop()


class _Empty:
    data = b""


_empty = _Empty()


def test_outputs_exist_and_conform(run: dict[str, Any]) -> None:
    store = run["store"]
    master = m3u8.loads(store.get(f"live/{SID}/master.m3u8").data.decode())
    assert [p.uri for p in master.playlists] == [f"{r}/playlist.m3u8" for r in RENDITIONS[:4]]
    for p in master.playlists:
        si = p.stream_info
        assert si.bandwidth > 0 and si.average_bandwidth > 0 and si.resolution and si.frame_rate == 30.0
        assert si.codecs.startswith("avc1.") and ",mp4a.40." in si.codecs and si.audio == "aac"
    assert [m.uri for m in master.media] == ["audio/playlist.m3u8"]
    for r in RENDITIONS:
        for kind in ("playlist", "playlist-skip", "dvr"):
            text = store.get(f"live/{SID}/{r}/{kind}.m3u8").data.decode()
            problems = check_media_playlist(text, lambda uri, r=r: store.exists(f"live/{SID}/{r}/{uri}"))
            assert problems == [], (r, kind, problems)
        text = store.get(f"live/{SID}/{r}/playlist.m3u8").data.decode()
        assert "#EXT-X-PART:" in text and "#EXT-X-PRELOAD-HINT" in text and "#EXT-X-RENDITION-REPORT" in text


def test_restart_kept_msns_and_bytes(run: dict[str, Any]) -> None:
    store = run["store"]
    for r in RENDITIONS:  # dvr.m3u8 follows within a commit interval
        wait_until(lambda r=r: playlist_msn_dvr(store, SID, r) == N_GOPS - 1, 10, what=f"{r} dvr.m3u8")
        pl = m3u8.loads(store.get(f"live/{SID}/{r}/dvr.m3u8").data.decode())
        assert pl.media_sequence == 0
        assert [s.uri for s in pl.segments] == [f"{m}.m4s" for m in range(N_GOPS)], r
        assert "#EXT-X-GAP" not in pl.dumps()
    for key, data in run["snapshot"].items():
        assert store.get(key).data == data, f"{key} rewritten with different bytes"


def test_manifest_updates_announced(run: dict[str, Any]) -> None:
    env = run["env"]
    c = Consumer(consumer_config(env, f"probe-{uuid.uuid4().hex[:6]}", **{"enable.partition.eof": True}))
    c.assign([TopicPartition(env.topic("manifests"), 0, OFFSET_BEGINNING)])
    ups: list[dict[str, Any]] = []
    while True:
        msg = c.poll(10)
        assert msg is not None, "manifests topic did not reach EOF"
        if msg.error():
            assert msg.error().code() == KafkaError._PARTITION_EOF
            break
        ups.append(codec.decode(msg.value(), expect="ManifestUpdate"))
    c.close()
    for r in RENDITIONS:
        mine = [u for u in ups if u["stream_id"] == SID and u["rendition"] == r]
        assert mine and mine[-1]["msn"] == N_GOPS - 1 and all(u["part"] == -1 for u in mine)
        versions = [u["version"] for u in mine]
        assert versions == sorted(versions)
        assert [u["msn"] for u in mine] == sorted(u["msn"] for u in mine)
        # the targets the playlist advertises travel with the update (the api reads no playlist for them)
        text = run["store"].get(f"live/{SID}/{r}/playlist.m3u8").data.decode()
        pt = re.search(r"PART-TARGET=([0-9.]+)", text)
        assert mine[-1]["target_duration"] == int(re.search(r"#EXT-X-TARGETDURATION:(\d+)", text).group(1))
        assert mine[-1]["part_target"] == (float(pt.group(1)) if pt else 0.0)
    assert any(u["rendition"] == "master" for u in ups) and any(u["rendition"] == "mpd" for u in ups)


def test_mpd_structure(run: dict[str, Any]) -> None:
    root = ET.fromstring(run["store"].get(f"live/{SID}/manifest.mpd").data)
    ns = {"d": "urn:mpeg:dash:schema:mpd:2011"}
    assert root.get("type") == "dynamic" and root.get("availabilityStartTime") and root.get("timeShiftBufferDepth")
    assert root.find("d:UTCTiming", ns).get("value") == "/api/v1/time"
    reps = root.findall("d:Period/d:AdaptationSet/d:Representation", ns)
    assert [r.get("id") for r in reps] == RENDITIONS
    for rep in reps:
        tmpl = rep.find("d:SegmentTemplate", ns)
        assert tmpl.get("media") == f"{rep.get('id')}/$Number$.m4s" and tmpl.get("startNumber") == "0"
        n = sum(int(s.get("r", 0)) + 1 for s in tmpl.findall("d:SegmentTimeline/d:S", ns))
        assert n == N_GOPS + 1  # LOW, in parts: low-latency DASH also lists the segment being built (issue 15.4)
        assert tmpl.get("availabilityTimeComplete") == "false" and float(tmpl.get("availabilityTimeOffset")) > 0
    ev = root.find("d:Period/d:EventStream/d:Event", ns)
    assert ev is not None and ev.get("id") == "4242" and ev.get("duration") == "3000"


def test_cue_on_segment_boundaries(run: dict[str, Any]) -> None:
    store = run["store"]
    pl = m3u8.loads(store.get(f"live/{SID}/360p/dvr.m3u8").data.decode())
    starts = [i for i, s in enumerate(pl.segments) if s.dateranges and s.cue_out_start]
    ins = [i for i, s in enumerate(pl.segments) if s.cue_in]
    assert starts == [13] and ins == [16]  # 12.3 s snaps to the boundary at 13 s; 3 s later, 16 s
    start = pl.segments[13].dateranges[0]
    assert start.id == "break-1" and start.scte35_out and start.start_date.startswith(
        pl.segments[13].program_date_time.strftime("%Y-%m-%dT%H:%M:%S"))


def test_reorder_and_gap_stream(run: dict[str, Any]) -> None:
    gap_text = run["gap_text"]
    assert "#EXT-X-GAP\n#EXTINF:1.00000,\n3.m4s" in gap_text
    pl = m3u8.loads(run["store"].get("live/gappy/180p/playlist.m3u8").data.decode())
    assert [s.uri for s in pl.segments] == [f"{m}.m4s" for m in range(7)]
    assert run["store"].exists("live/gappy/180p/3.m4s")


def _decode_frames(data: bytes) -> int:
    try:
        with av.open(io.BytesIO(data)) as c:
            return sum(1 for _ in c.decode(video=0))
    except av.FFmpegError:
        return 0


def test_encrypted_segments_need_the_key(run: dict[str, Any]) -> None:
    store, env = run["store"], run["env"]
    pl = m3u8.loads(store.get("live/enc/180p/playlist.m3u8").data.decode())
    assert [s.key.uri for s in pl.segments] == ["/keys/enc/k0"] * 3 + ["/keys/enc/k1"] * 3
    init = store.get("live/enc/180p/init.mp4").data
    enc = store.get("live/enc/180p/0.m4s").data
    assert _decode_frames(init + enc) == 0
    ck = open_key_provider(env.stack_dir).get("enc", "k0")
    assert pl.segments[0].key.iv == "0x" + ck.iv.hex()
    assert _decode_frames(init + encrypt.decrypt(enc, ck.key, ck.iv)) == 30
    assert not store.exists("live/enc/manifest.mpd")


@pytest.fixture(scope="module")
def http_base(run: dict[str, Any]) -> Iterator[str]:
    root = Path(run["env"].store_url.removeprefix("file://"))
    Store.keys = open_key_provider(run["env"].stack_dir)  # type: ignore[assignment]
    handler = lambda *a, **kw: Store(*a, directory=str(root), **kw)  # noqa: E731
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def _ffmpeg_frames(url: str, seconds: int) -> tuple[int, str]:
    proc = subprocess.run(["/usr/bin/ffmpeg", "-nostdin", "-v", "error", "-live_start_index", "0", "-i", url,
                           "-t", str(seconds), "-map", "0:v:0", "-f", "framecrc", "-"],
                          capture_output=True, timeout=120)
    frames = sum(1 for line in proc.stdout.decode().splitlines() if line and not line.startswith("#"))
    return frames, proc.stderr.decode() if proc.returncode == 0 else f"rc={proc.returncode} {proc.stderr.decode()}"


def test_ffmpeg_decodes_20s_from_master(http_base: str) -> None:
    frames, errors = _ffmpeg_frames(f"{http_base}/live/{SID}/master.m3u8", 20)
    assert errors == "" and 599 <= frames <= 600  # 20 s at 30 fps (-t may cut the boundary frame)


def test_ffmpeg_decodes_encrypted_stream_with_key(http_base: str) -> None:
    frames, errors = _ffmpeg_frames(f"{http_base}/live/enc/180p/playlist.m3u8", 5)
    assert errors == "" and 149 <= frames <= 150


def test_end_writes_endlist_and_static_mpd(run: dict[str, Any]) -> None:
    """Runs last: the operator ends the stream on the registry, the packager finalises it."""
    store, env = run["store"], run["env"]
    publish_stream(make_producer(env), env, new_stream_record(SID, "Main", status="ENDED", latency_mode="LOW",
                                                              public=True, ladder=LADDER))
    wait_until(lambda: store.get(f"live/{SID}/360p/playlist.m3u8").data.decode().rstrip().endswith("#EXT-X-ENDLIST"),
               30, what="ENDLIST after the registry says ENDED")
    pl = m3u8.loads(store.get(f"live/{SID}/360p/playlist.m3u8").data.decode())
    assert pl.media_sequence == 0 and len(pl.segments) == N_GOPS  # the whole event stays playable
    wait_until(lambda: b'type="static"' in store.get(f"live/{SID}/manifest.mpd").data, 10, what="static MPD")


def test_ended_stream_past_its_window_is_deleted(run: dict[str, Any]) -> None:
    """An event that ended longer ago than its DVR window: every object goes, late copies are dropped."""
    store, env = run["store"], run["env"]
    assert store.exists("live/gappy/180p/0.m4s")
    gone_at = int(time.time() * 1000) - 600_000
    publish_stream(make_producer(env), env, new_stream_record("gappy", "Gappy", status="ENDED", ended_at_ms=gone_at,
                                                              dvr_window_seconds=60))
    wait_until(lambda: not list(store.list("live/gappy/")) and not list(store.list("packager/live/gappy/")), 30,
               what="objects and checkpoint of the expired event deleted")


def test_bad_input_dead_lettered_and_stream_goes_on(run: dict[str, Any]) -> None:
    env = run["env"]
    c = Consumer(consumer_config(env, f"probe-{uuid.uuid4().hex[:6]}", **{"enable.partition.eof": True}))
    c.assign([TopicPartition(env.topic("dlq"), 0, OFFSET_BEGINNING)])
    dead: list[dict[str, Any]] = []
    while True:
        msg = c.poll(10)
        assert msg is not None, "dlq topic did not reach EOF"
        if msg.error():
            break
        dead.append(codec.decode(msg.value(), expect="DeadLetter"))
    c.close()
    mine = [d for d in dead if d["stage"] == "packager"]
    assert {d["error_class"] for d in mine} == {"schema", "invalid"}
    assert any("rendition name" in d["reason"] for d in mine) and all(d["value"] for d in mine)
    assert not run["store"].exists(f"live/{SID}/etc/playlist.m3u8")


def test_sigterm_exits_cleanly(run: dict[str, Any]) -> None:
    """Runs last: SIGTERM makes the packager commit, close and exit 0."""
    assert run["packager"].stop() == 0
    assert "packager stopped" in run["log"].read_text()
