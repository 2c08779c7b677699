"""Replay against the real broker, encoder and packager cores: VOD with another ladder, resume, retention."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import av
import m3u8
import pytest

from floodlight.kafka import make_producer
from floodlight.objectstore import open_store
from floodlight.partitioner import gop_partition
from floodlight.registry import new_stream_record, publish_stream
from floodlight.settings import Settings
from ops.replay import ReplayError, load_ladder, run_replay
from producers.sources.testsrc import generate_gops
from schemas import codec

GOP_S = 2.0
LADDER = [{"name": "360p", "width": 640, "height": 360, "bitrate_kbps": 800},
          {"name": "240p", "width": 426, "height": 240, "bitrate_kbps": 400}]


def _publish_finished_stream(settings: Settings, stream_id: str, seconds: float) -> list[dict]:
    """A finished live stream: GOPs whose Kafka timestamps follow their capture clock, as the ingest's do."""
    start = int(time.time() * 1000) - int(seconds * 1000) - 5000
    gops = generate_gops(stream_id, seconds, width=640, height=360, gop_seconds=GOP_S, start_ms=start)
    producer = make_producer(settings)
    for g in gops:
        producer.produce(settings.topic("gops"), key=stream_id.encode(), value=codec.encode("GopChunk", g),
                         partition=gop_partition(stream_id, g["gop_index"], settings.topic_partitions),
                         timestamp=g["capture_wallclock_ms"] + int(GOP_S * 1000))
    assert producer.flush(30) == 0
    publish_stream(producer, settings, new_stream_record(stream_id, "Finished", status="ENDED", public=True,
                                                         ladder=[LADDER[1]]))
    return gops


@pytest.fixture(scope="module")
def finished(tmp_path_factory, broker: Settings):
    """One finished 60 s stream shared by the replay tests (generating it is the slow part)."""
    import uuid

    from floodlight.topics import apply_topics

    tmp = tmp_path_factory.mktemp("replay")
    s = broker.model_copy(update={"topic_prefix": f"r{uuid.uuid4().hex[:8]}.", "topic_partitions": 3,
                                  "store_url": (tmp / "store").as_uri(), "stack_dir": tmp / "stack"})
    apply_topics(s)
    gops = _publish_finished_stream(s, "match", 60)
    return s, gops


def _objects(settings: Settings, root: str) -> dict[str, bytes]:
    store = open_store(settings.resolved_store_url())
    return {k[len(root) + 1:]: store.get(k).data for k in store.list(root + "/")}


def test_vod_replay_with_an_added_rung(finished, tmp_path: Path) -> None:
    settings, gops = finished
    ladder_file = tmp_path / "ladder.json"
    ladder_file.write_text(json.dumps(LADDER))
    t1, t2 = gops[0]["capture_wallclock_ms"], gops[-1]["capture_wallclock_ms"] + 1
    result = run_replay(settings, "match", t1, t2, ladder=load_ladder(ladder_file), as_id="match-vod", vod=True,
                        progress=False)
    assert result.gops == len(gops) == 30
    assert (result.first_gop, result.last_gop) == (gops[0]["gop_index"], gops[-1]["gop_index"])
    objs = _objects(settings, "vod/match-vod")
    master = m3u8.loads(objs["master.m3u8"].decode())
    assert {p.stream_info.resolution for p in master.playlists} == {(640, 360), (426, 240)}
    for name in ("360p", "240p", "audio"):
        pl = m3u8.loads(objs[f"{name}/playlist.m3u8"].decode())
        assert pl.is_endlist and pl.playlist_type == "vod"
        assert len(pl.segments) == 30
        for seg in pl.segments:
            assert seg.uri in objs[f"{name}/playlist.m3u8"].decode() and f"{name}/{seg.uri}" in objs
    # a segment decodes from init + media, first frame a keyframe at the rung's size
    data = objs["360p/init.mp4"] + objs[f"360p/{m3u8.loads(objs['360p/playlist.m3u8'].decode()).segments[7].uri}"]
    with av.open(io.BytesIO(data)) as c:
        frames = list(c.decode(video=0))
    assert len(frames) == 60 and frames[0].key_frame and (frames[0].width, frames[0].height) == (640, 360)
    assert "type=\"static\"" in objs["manifest.mpd"].decode()


def test_interrupted_replay_resumes_to_the_same_asset(finished) -> None:
    settings, gops = finished
    t1 = gops[0]["capture_wallclock_ms"]
    t2 = gops[9]["capture_wallclock_ms"] + 1  # 10 GOPs keep this test short
    whole = run_replay(settings, "match", t1, t2, ladder=LADDER, as_id="whole", vod=True, progress=False)
    half = run_replay(settings, "match", t1, t2, ladder=LADDER, as_id="halves", vod=True, progress=False,
                      stop_after=5)
    assert half.gops == 5
    rest = run_replay(settings, "match", t1, t2, ladder=LADDER, as_id="halves", vod=True, progress=False)
    assert rest.gops == 5 and whole.gops == 10
    a, b = _objects(settings, "vod/whole"), _objects(settings, "vod/halves")
    assert sorted(a) == sorted(b)
    media = [k for k in a if k.endswith((".m4s", ".mp4"))]
    assert len(media) > 30
    differing = [k for k in a if a[k] != b[k]]
    assert differing == [], f"objects differ between resumed and uninterrupted replays: {differing[:5]}"


def test_range_outside_retention_is_refused(finished) -> None:
    settings, gops = finished
    t1 = gops[0]["capture_wallclock_ms"] - 3_600_000
    with pytest.raises(ReplayError, match="outside retention.*retains"):
        run_replay(settings, "match", t1, t1 + 60_000, vod=True, progress=False)
