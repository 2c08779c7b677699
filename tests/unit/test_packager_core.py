"""The packaging core against a real directory store: reorder, gaps, late fills, restart, DVR,
encryption, cues, VOD finalisation, bad input. Synthetic RenditionSegments, no Kafka."""

from __future__ import annotations

import copy
from typing import Any

import m3u8
import pytest

from floodlight.keystore import open_key_provider
from floodlight.objectstore import DirectoryStore
from sinks.packager import encrypt
from sinks.packager.conformance import check_media_playlist
from sinks.packager.core import BadSegment, StreamPackager, checkpoint_key
from sinks.packager.reorder import ReorderBuffer
from sinks.packager.state import StreamConfig
from tests.support import sample_records

T0 = 1_795_000_000_000
BASE_GOP = 1000


def seg(g: int, name: str = "720p", seconds: float = 1.0, media: str = "VIDEO") -> dict[str, Any]:
    r = copy.deepcopy(sample_records()["RenditionSegment"])
    ts = 90000
    r["gop_index"] = BASE_GOP + g
    r["pts"] = (BASE_GOP + g) * int(seconds * ts)
    r["duration"] = int(seconds * ts)
    r["capture_wallclock_ms"] = T0 + int(g * seconds * 1000)
    r["rendition"].update(name=name, media_type=media, codecs="mp4a.40.2" if media == "AUDIO" else "avc1.64001f")
    r["init_segment"] = b"ftyp-moov-" + name.encode()
    r["data"] = bytes([g % 256]) * 90 + name.encode()
    n = len(r["data"])
    r["parts"] = [{"duration": seconds / 3, "offset": i * 30, "length": 30 if i < 2 else n - 60,
                   "independent": i == 0} for i in range(3)]
    return r


def pkg(tmp_path, **cfg: Any) -> tuple[StreamPackager, DirectoryStore, list[dict[str, Any]]]:
    store = DirectoryStore(tmp_path / "store")
    ups: list[dict[str, Any]] = []
    config = StreamConfig(**{"latency_mode": "LOW", "live_window_s": 20.0, **cfg})
    p = StreamPackager.open(store, "s1", config=config, keys=open_key_provider(tmp_path / "stack"),
                            gap_deadline_s=2.0, on_manifest=ups.append)
    return p, store, ups


def playlist_of(store: DirectoryStore, name: str = "720p", kind: str = "playlist") -> m3u8.M3U8:
    obj = store.get(f"live/s1/{name}/{kind}.m3u8")
    assert obj is not None
    return m3u8.loads(obj.data.decode())


def test_reorder_buffer_releases_in_order_and_gaps_after_deadline() -> None:
    buf: ReorderBuffer[str] = ReorderBuffer(deadline_s=2.0)
    assert [r.msn for r in buf.offer(0, "a", now=0)] == [0]
    assert buf.offer(2, "c", now=1) == []  # 1 missing: hold 2
    assert buf.expire(now=2.5) == []  # deadline counts from when the hole appeared
    out = buf.expire(now=3.1)
    assert [(r.msn, r.item) for r in out] == [(1, None), (2, "c")]
    late = buf.offer(1, "b", now=4)
    assert late[0].late and late[0].item == "b"


def test_segments_written_before_playlists_and_msn_from_base(tmp_path) -> None:
    p, store, ups = pkg(tmp_path)
    for g in range(5):
        p.add(seg(g), now=0)
    p.flush(T0)
    pl = playlist_of(store)
    assert [s.uri for s in pl.segments] == [f"{m}.m4s" for m in range(5)]  # msn = gop_index - base
    for m in range(5):
        assert store.get(f"live/s1/720p/{m}.m4s").data == seg(m)["data"]
        parts = b"".join(store.get(f"live/s1/720p/{m}.{j}.m4s").data for j in range(3))
        assert parts == seg(m)["data"]
    assert store.get("live/s1/720p/init.mp4").data == b"ftyp-moov-720p"
    assert check_media_playlist(store.get("live/s1/720p/playlist.m3u8").data.decode(),
                                lambda uri: store.exists(f"live/s1/720p/{uri}")) == []
    assert {u["rendition"] for u in ups} == {"720p", "master", "mpd"}
    assert [u["msn"] for u in ups if u["rendition"] == "720p"] == [4]
    # every update carries the targets the playlist advertises (the api needs no playlist read for them)
    assert pl.target_duration == 1 and "#EXT-X-PART-INF:PART-TARGET=0.334" in store.get(
        "live/s1/720p/playlist.m3u8").data.decode()
    assert {(u["target_duration"], u["part_target"]) for u in ups} == {(1, 0.334)}


def test_standard_stream_announces_no_part_target(tmp_path) -> None:
    p, _, ups = pkg(tmp_path, latency_mode="STANDARD")
    for g in range(3):
        p.add(seg(g, seconds=2.0), now=0)
    p.flush(T0)
    assert ups and {(u["target_duration"], u["part_target"]) for u in ups} == {(2, 0.0)}


def test_state_owns_its_transitions() -> None:
    from sinks.packager.state import Part, Segment, StreamState

    st = StreamState("s1")
    t = st.track_for("720p", "VIDEO", "avc1.64001f")
    assert st.track_for("720p", "VIDEO", "other") is t
    t.describe(codecs="", timescale=90000, bandwidth=4000, width=1280, height=720, frame_rate=30.0)
    t.describe(codecs="avc1.640028", timescale=90000, bandwidth=3000)  # zeros keep, bandwidth only grows
    assert (t.codecs, t.bandwidth, t.width, t.height, t.frame_rate) == ("avc1.640028", 4000, 1280, 720, 30.0)

    def segment(m: int) -> Segment:
        return Segment(msn=m, pts=m * 90000, duration=90000, timescale=90000, pdt_ms=T0 + m * 1000,
                       parts=[Part(0.334, True), Part(0.333, False), Part(0.333, False)])

    st.add_segment(t, segment(0), now_ms=T0 + 1500)
    assert (st.ast_ms, t.pto, st.lag_ms, st.target_duration, st.part_target) == (T0, 0, 500, 1, 0.334)
    gap = st.add_gap(t, 1, None, "k0", "00" * 16)
    assert gap.gap and gap.key_id == "k0" and t.last_msn == 1
    st.add_segment(t, segment(1), now_ms=T0 + 2100)  # a late fill over the gap: not a live arrival
    assert not t.segments[1].gap and st.lag_ms == 500
    assert st.add_cue("c1", 7, T0 + 2000, 1000) and not st.add_cue("c1", 7, T0, 1000)
    assert st.cues["c1"].after_msn == 2 and not st.place_cues()
    st.add_segment(t, segment(2), now_ms=T0 + 3500)
    st.add_segment(t, segment(3), now_ms=T0 + 4500)
    assert st.place_cues() and (st.cues["c1"].out_msn, st.cues["c1"].in_msn) == (2, 3)
    st.reconfigure(StreamConfig(dvr_window_s=2))
    assert [s.msn for s in st.slide_window(t)] == [0, 1] and sorted(t.segments) == [2, 3]
    assert t.publish(5) == 5 and t.publish(5) == 6 and st.publish(T0) == T0
    st.end()
    assert st.ended and not st.slide_window(t) and st.reopen() and not st.ended
    st.end(vod=True)
    assert st.vod and not st.reopen()


def test_out_of_order_gop_7_before_6(tmp_path) -> None:
    p, store, _ = pkg(tmp_path)
    for g in range(6):
        p.add(seg(g), now=0)
    p.add(seg(7), now=1)
    p.flush(T0)
    assert [s.uri for s in playlist_of(store).segments][-1] == "5.m4s"  # 7 waits for 6
    p.add(seg(6), now=1.5)
    p.flush(T0)
    assert [s.uri for s in playlist_of(store).segments][-2:] == ["6.m4s", "7.m4s"]


def test_missing_gop_becomes_gap_then_filled_late(tmp_path) -> None:
    p, store, _ = pkg(tmp_path)
    for g in [0, 1, 2, 4, 5]:
        p.add(seg(g), now=10)
    p.tick(now=11)
    p.flush(T0)
    assert playlist_of(store).segments[-1].uri == "2.m4s"  # still within the deadline
    p.tick(now=12.1)
    p.flush(T0)
    text = store.get("live/s1/720p/playlist.m3u8").data.decode()
    assert "#EXT-X-GAP\n#EXTINF:1.00000,\n3.m4s" in text
    assert [s.uri for s in m3u8.loads(text).segments][-3:] == ["3.m4s", "4.m4s", "5.m4s"]
    assert not store.exists("live/s1/720p/3.m4s") and p.stats["gaps"] == 1
    assert check_media_playlist(text, lambda uri: store.exists(f"live/s1/720p/{uri}")) == []
    p.add(seg(3), now=13)  # arrives late, within the window: the gap is filled
    p.flush(T0)
    text = store.get("live/s1/720p/playlist.m3u8").data.decode()
    assert "#EXT-X-GAP" not in text and store.exists("live/s1/720p/3.m4s") and p.stats["late_fills"] == 1


def test_restart_from_checkpoint_keeps_msns_and_bytes(tmp_path) -> None:
    p, store, _ = pkg(tmp_path)
    for g in range(6):
        p.add(seg(g), now=0)
    p.flush(T0)
    p.checkpoint()
    before = {k: store.get(k).data for k in store.list("live/s1/") if k.endswith((".m4s", ".mp4"))}
    # a new packager resumes; records after the checkpoint are re-delivered (duplicates) and new ones follow
    p2, _, _ = pkg(tmp_path)
    assert p2.state.base_gop == BASE_GOP
    for g in range(4, 9):
        p2.add(seg(g), now=1)
    p2.flush(T0)
    pl = playlist_of(store, kind="dvr")
    assert [s.uri for s in pl.segments] == [f"{m}.m4s" for m in range(9)] and pl.media_sequence == 0
    assert p2.stats["duplicates"] == 2
    for k, data in before.items():
        assert store.get(k).data == data


def test_dvr_window_deletes_old_objects(tmp_path) -> None:
    p, store, _ = pkg(tmp_path, dvr_window_s=60)
    for g in range(120):
        p.add(seg(g), now=0)
        if g % 10 == 9:
            p.flush(T0)
    p.flush(T0)
    dvr = playlist_of(store, kind="dvr")
    first = dvr.segments[0]
    assert dvr.media_sequence == 60 and len(dvr.segments) == 60  # the window's edge: newest end - 60 s
    assert first.program_date_time.timestamp() * 1000 == T0 + 60_000
    assert not store.exists("live/s1/720p/59.m4s") and not store.exists("live/s1/720p/59.0.m4s")
    assert store.exists("live/s1/720p/60.m4s")
    live = playlist_of(store)
    assert live.media_sequence == 100  # live window 20 s


def test_encryption_rotates_keys_and_round_trips(tmp_path) -> None:
    p, store, _ = pkg(tmp_path, drm=True, key_rotation_segments=4)
    for g in range(9):
        p.add(seg(g), now=0)
    p.flush(T0)
    pl = playlist_of(store, kind="dvr")
    keys = open_key_provider(tmp_path / "stack")
    assert [s.key.uri for s in pl.segments] == ["/keys/s1/k0"] * 4 + ["/keys/s1/k1"] * 4 + ["/keys/s1/k2"]
    for m in (0, 5):
        ck = keys.get("s1", f"k{m // 4}")
        assert pl.segments[m].key.iv == "0x" + ck.iv.hex()
        enc = store.get(f"live/s1/720p/{m}.m4s").data
        assert enc != seg(m)["data"] and encrypt.decrypt(enc, ck.key, ck.iv) == seg(m)["data"]
    assert store.get("live/s1/720p/init.mp4").data == b"ftyp-moov-720p"  # init in the clear
    assert not any("key" in k for k in store.list(""))  # keys never next to the media
    assert not store.exists("live/s1/manifest.mpd")  # AES-128 whole-segment is HLS only


def test_cue_snaps_to_next_boundary_and_ends_on_one(tmp_path) -> None:
    p, store, _ = pkg(tmp_path)
    for g in range(10):
        p.add(seg(g), now=0)
    p.add_cue({"cue_id": "ad1", "splice_event_id": 7, "start_wallclock_ms": T0 + 12_300, "duration_ms": 2000,
               "scte35": None, "created_ms": T0})
    for g in range(10, 20):
        p.add(seg(g), now=0)
    p.flush(T0)
    cue = p.state.cues["ad1"]
    assert (cue.out_msn, cue.in_msn) == (13, 15)
    pl = playlist_of(store)
    by_uri = {s.uri: s for s in pl.segments}
    assert [d.id for d in by_uri["13.m4s"].dateranges] == ["ad1"] and by_uri["13.m4s"].cue_out_start
    assert by_uri["15.m4s"].cue_in
    mpd = store.get("live/s1/manifest.mpd").data.decode()
    assert 'presentationTime="13000"' in mpd and 'duration="2000"' in mpd


def test_end_writes_endlist_and_static_mpd(tmp_path) -> None:
    p, store, ups = pkg(tmp_path)
    for g in range(5):
        p.add(seg(g), now=0)
        p.add(seg(g, "audio", media="AUDIO"), now=0)
    p.add(seg(6), now=0)  # 5 never comes: the end publishes it as a gap
    p.end()
    pl = playlist_of(store)
    assert pl.is_endlist and [s.uri for s in pl.segments][-2:] == ["5.m4s", "6.m4s"]
    assert 'type="static"' in store.get("live/s1/manifest.mpd").data.decode()
    assert any(u["ended"] for u in ups)


def test_vod_prefix_for_replay(tmp_path) -> None:
    store = DirectoryStore(tmp_path / "store")
    p = StreamPackager.open(store, "s1", prefix="vod/final-2026", config=StreamConfig())
    for g in range(3):
        p.add(seg(g), now=0)
    p.end(vod=True)
    text = store.get("vod/final-2026/720p/playlist.m3u8").data.decode()  # the contract's vod/{asset_id}/ layout
    assert "#EXT-X-PLAYLIST-TYPE:VOD" in text and "#EXT-X-ENDLIST" in text
    assert store.exists(checkpoint_key("vod/final-2026", "s1")) is False
    p.checkpoint()
    assert store.exists(checkpoint_key("vod/final-2026", "s1"))
    with pytest.raises(ValueError):
        StreamPackager.open(store, "s1", prefix="../etc")


@pytest.mark.parametrize("mutate,reason", [
    (lambda r: r["rendition"].update(name="../x"), "rendition"),
    (lambda r: r["rendition"].update(name="master"), "rendition"),
    (lambda r: r.update(timescale=0), "timescale"),
    (lambda r: r.update(data=b""), "empty"),
    (lambda r: r["parts"].append({"duration": 0.1, "offset": 10_000, "length": 5, "independent": False}), "part"),
])
def test_bad_segments_are_refused_with_a_reason(tmp_path, mutate, reason: str) -> None:
    p, store, _ = pkg(tmp_path)
    r = seg(0)
    mutate(r)
    with pytest.raises(BadSegment, match=reason):
        p.add(r, now=0)
    assert list(store.list("live/")) == []


def test_checkpoint_in_chunks_restores_and_forgets_expired(tmp_path) -> None:
    p, store, _ = pkg(tmp_path, dvr_window_s=100)
    for g in range(300):
        p.add(seg(g), now=0)
    p.flush(T0)
    p.checkpoint()
    assert sorted(store.list("packager/live/s1/720p/")) == ["packager/live/s1/720p/0.json",
                                                            "packager/live/s1/720p/1.json"]
    p2, _, _ = pkg(tmp_path, dvr_window_s=100)
    assert sorted(p2.state.tracks["720p"].segments) == list(range(200, 300))
    for g in range(300, 420):
        p2.add(seg(g), now=0)
    p2.flush(T0)
    p2.checkpoint()
    assert not store.exists("packager/live/s1/720p/0.json")  # every segment of chunk 0 left the window
    p3, _, _ = pkg(tmp_path, dvr_window_s=100)
    assert sorted(p3.state.tracks["720p"].segments) == list(range(320, 420))


def test_store_failure_mid_release_loses_nothing(tmp_path) -> None:
    """A write failing while held segments are released puts them back; the retried add completes all."""
    from floodlight.objectstore import StoreError

    p, store, _ = pkg(tmp_path)
    real_put = store.put
    fail = {"key": "live/s1/720p/2.m4s"}

    def flaky(key: str, data: bytes, **kw: Any) -> str:
        if key == fail.get("key"):
            fail.clear()
            raise StoreError("disk full")
        return real_put(key, data, **kw)

    store.put = flaky  # type: ignore[method-assign]
    for g in (0, 2, 3):
        p.add(seg(g), now=0)
    with pytest.raises(StoreError):
        p.add(seg(1), now=0)  # releases 1, 2, 3: writing 2 fails
    p.add(seg(1), now=0)  # the sink retries the same record
    p.flush(T0)
    assert [s.uri for s in playlist_of(store).segments] == ["0.m4s", "1.m4s", "2.m4s", "3.m4s"]
    assert all(store.get(f"live/s1/720p/{m}.m4s").data == seg(m)["data"] for m in range(4))


def test_dvr_playlist_rewritten_per_interval_and_refreshed(tmp_path) -> None:
    p, store, _ = pkg(tmp_path)
    for g in range(10):  # 1 s segments, a flush each: dvr.m3u8 is rewritten every 4 s of media
        p.add(seg(g), now=0)
        p.flush(T0)
    listed = len(playlist_of(store, kind="dvr").segments)
    assert listed < 10 and 10 - listed < 4 and len(playlist_of(store).segments) == 10
    assert p.refresh_dvr() == 1
    assert len(playlist_of(store, kind="dvr").segments) == 10


class CheckingStore(DirectoryStore):
    """Checks DESIGN §3.4 at every write: a playlist names only objects already stored, and no object is
    deleted while a stored playlist still names it."""

    def __init__(self, root) -> None:
        super().__init__(root)
        self.problems: list[str] = []
        self.playlists: dict[str, str] = {}

    def put(self, key: str, data: bytes, **kw: Any) -> str:
        if key.endswith(".m3u8") and "master" not in key:
            base = key.rsplit("/", 1)[0]
            self.problems += [f"{key}: {p}" for p in check_media_playlist(
                data.decode(), lambda uri: self.exists(f"{base}/{uri}"))]
            self.playlists[key] = data.decode()
        elif key.endswith("master.m3u8"):
            base = key.rsplit("/", 1)[0]
            for uri in m3u8.loads(data.decode()).playlists:
                if not self.exists(f"{base}/{uri.uri}"):
                    self.problems.append(f"{key} names {uri.uri} before it exists")
        return super().put(key, data, **kw)

    def delete(self, key: str) -> None:
        name = key.rsplit("/", 1)[1]
        for pkey, text in self.playlists.items():
            if pkey.rsplit("/", 1)[0] == key.rsplit("/", 1)[0] and (f"\n{name}\n" in text or f'"{name}"' in text):
                self.problems.append(f"deleted {key} while {pkey} names it")
        super().delete(key)


def test_media_before_playlists_and_no_deletion_under_a_playlist(tmp_path) -> None:
    store = CheckingStore(tmp_path / "store")
    p = StreamPackager.open(store, "s1", config=StreamConfig(latency_mode="LOW", live_window_s=8, dvr_window_s=12,
                                                             drm=True, key_rotation_segments=3),
                            keys=open_key_provider(tmp_path / "stack"), gap_deadline_s=1.0)
    now = 0.0
    for g in list(range(0, 20)) + [21, 20] + list(range(23, 40)):  # 20/21 swapped, 22 never comes
        now += 0.5
        p.add(seg(g), now=now)
        p.add(seg(g, "audio", media="AUDIO"), now=now)
        p.tick(now)
        p.flush(T0)
    p.refresh_dvr()
    p.end()
    assert p.stats["gaps"] == 2 and p.stats["deleted"] > 0
    assert store.problems == []
