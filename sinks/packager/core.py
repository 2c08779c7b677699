"""The packaging core for one stream: RenditionSegments in, CMAF objects and manifests out.

Kafka-free so the live sink (worker.py) and the replay tool share it: the key prefix (`live` or
`vod/<asset>`) and VOD finalisation are parameters. Write order follows DESIGN §3.4: init, parts
and segment objects first, then the playlists naming them, then master and MPD; objects that leave
the DVR window are deleted only after the playlists stop naming them.

Parts that leave the encoder one by one (RenditionSegment `part_index` >= 0, LOW mode, issue 15)
are written the moment they arrive; the segment after the newest complete one (the reorder buffer's
next) lists its parts as they come (`Track.partial`: PDT of its GOP, EXT-X-PART, PRELOAD-HINT for the
next part), and each playlist write is announced with its msn and part. The record with
`is_last_part` completes the segment (the concatenation of its parts), which then goes through the
reorder buffer like a whole one. A part that is already there is never written again: a re-delivery
(another encoder re-doing the GOP) is compared and dropped, so what a playlist listed never changes;
and a segment with listed parts is never replaced by a gap — past `PARTIAL_DEADLINE_S` it is
completed with the parts it has.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from floodlight import ids
from floodlight.keystore import KeyProvider
from floodlight.objectstore import ObjectStore, etag_of
from schemas.errors import FloodlightError
from sinks.packager import encrypt, mpd, playlist
from sinks.packager.reorder import Released, ReorderBuffer
from sinks.packager.state import (
    Part,
    Segment,
    StreamConfig,
    StreamState,
    Track,
    seg_from_row,
    seg_row,
    stream_root,
)

log = logging.getLogger("floodlight.packager")
PARTIAL_DEADLINE_S = 30.0  # a segment with listed parts waits this long for the rest (encoder failover)
RESUME_WAIT_S = 30.0  # a restarted packager waits at most this long to catch up with the playlists in the store


class BadSegment(FloodlightError, ValueError):
    """A RenditionSegment the packager cannot list (goes to the DLQ with this reason)."""


@dataclass
class Held:
    """A record waiting in the reorder buffer, with where it came from (for safe commits)."""

    rec: dict[str, Any]
    partition: int = -1
    offset: int = -1
    more: list[tuple[int, int]] = field(default_factory=list)  # the other parts' (partition, offset)


@dataclass
class Assembly:
    """A segment arriving part by part: the parts so far (index -> record) and where they came from."""

    msn: int
    parts: dict[int, dict[str, Any]] = field(default_factory=dict)
    offsets: list[tuple[int, int]] = field(default_factory=list)
    count: int | None = None  # number of parts, once the last (or a closing record) has come
    first_at: float = 0.0

    def listed(self) -> int:
        """Parts that can be listed: the run from part 0 without a hole."""
        n = 0
        while n in self.parts:
            n += 1
        return n

    @property
    def complete(self) -> bool:
        return self.count is not None and self.listed() >= self.count


ManifestHook = Callable[[dict[str, Any]], None]


CHUNK = 256  # segments per checkpoint chunk: a checkpoint rewrites only the chunks that changed


def checkpoint_dir(prefix: str, stream_id: str) -> str:
    """Outside the served trees (live/, vod/): the api never exposes it."""
    return f"packager/{stream_root(prefix, stream_id)}/"


def checkpoint_key(prefix: str, stream_id: str) -> str:
    return checkpoint_dir(prefix, stream_id) + "state.json"


def chunk_key(prefix: str, stream_id: str, rendition: str, n: int) -> str:
    return f"{checkpoint_dir(prefix, stream_id)}{rendition}/{n}.json"


def _is_prefix(prefix: str) -> bool:
    """Live streams under live/, VOD under vod/, replay assets at vod/{asset}/."""
    return prefix in ("live", "vod") or (prefix.startswith("vod/") and ids.is_stream_id(prefix[4:]))


def validate_segment(rec: dict[str, Any]) -> None:
    r = rec.get("rendition") or {}
    name = r.get("name", "")
    if not ids.is_stream_id(rec.get("stream_id")):
        raise BadSegment(f"invalid stream_id {rec.get('stream_id')!r}")
    if not ids.is_rendition(name):
        raise BadSegment(f"invalid rendition name {name!r}")
    closing = rec.get("part_index", -1) > 0 and rec.get("is_last_part", True) and not rec.get("parts")
    if closing:  # closes a segment at the parts it has: no media of its own
        if rec.get("data"):
            raise BadSegment("a closing record carries no media")
        return
    if rec.get("timescale", 0) <= 0 or rec.get("duration", 0) <= 0:
        raise BadSegment("timescale and duration must be positive")
    if not rec.get("data"):
        raise BadSegment("empty segment data")
    if rec.get("part_index", -1) >= 0 and len(rec.get("parts") or []) != 1:
        raise BadSegment("a part record carries exactly one part")
    size = len(rec["data"])
    for p in rec.get("parts") or []:
        if p["offset"] < 0 or p["length"] <= 0 or p["offset"] + p["length"] > size or p["duration"] <= 0:
            raise BadSegment(f"part outside the segment: {p['offset']}+{p['length']} of {size}")


class StreamPackager:
    """Owns one stream's state, reorder buffers and object writes."""

    def __init__(self, store: ObjectStore, state: StreamState, *, keys: KeyProvider | None = None,
                 gap_deadline_s: float = 3.0, on_manifest: ManifestHook | None = None,
                 write_mpd: bool = True, dvr_every_s: float = 4.0) -> None:
        if not _is_prefix(state.prefix) or not ids.is_stream_id(state.stream_id):
            raise ValueError(f"invalid prefix/stream {state.prefix!r}/{state.stream_id!r}")
        self.store = store
        self.state = state
        self.keys = keys
        self.gap_deadline_s = gap_deadline_s
        self.on_manifest = on_manifest
        self.write_mpd = write_mpd
        # dvr.m3u8 spans the whole window (thousands of lines): rewritten once per dvr_every_s of media,
        # not per segment; DVR viewers are behind the live edge anyway (bench/packager.py)
        self.dvr_every_s = dvr_every_s
        self._dvr_at: dict[str, int] = {}  # rendition -> end (PDT ms) of the newest segment in dvr.m3u8
        self.buffers: dict[str, ReorderBuffer[Held]] = {}
        self.assembling: dict[str, dict[int, Assembly]] = {}  # rendition -> msn -> parts so far
        self.dirty: set[str] = set()
        self.unsaved = False  # state changed since the last checkpoint
        self._etags: dict[str, str] = {}  # manifests this process wrote: key -> etag
        self._dirty_chunks: set[tuple[str, int]] = set()  # (rendition, msn // CHUNK) changed since checkpoint
        self._doomed: list[tuple[str, Segment]] = []  # left the window; deleted once no playlist names them
        self._docs_written: tuple[Any, ...] | None = None  # what master and MPD were last written from
        self.last_segment_at = time.monotonic()
        self.stats = {"segments": 0, "gaps": 0, "late_fills": 0, "duplicates": 0, "too_old": 0, "deleted": 0,
                      "parts": 0, "duplicate_parts": 0, "contradicting_parts": 0, "short_segments": 0}
        # what the live playlists in the store list already: a restarted packager whose checkpoint is older
        # (or was never written) re-reads the rest from Kafka and writes no playlist that goes back meanwhile
        self._resume: dict[str, tuple[int, int] | None] = {}  # rendition -> edge to reach (None: checked)
        self._resume_until = time.monotonic() + RESUME_WAIT_S
        for name, track in state.tracks.items():
            if track.segments:
                self._buffer(name).next_msn = track.last_msn + 1

    # --- construction -----------------------------------------------------------------------
    @classmethod
    def open(cls, store: ObjectStore, stream_id: str, *, prefix: str = "live", config: StreamConfig | None = None,
             **kw: Any) -> StreamPackager:
        """Resume from the checkpoint in the store when there is one (restart keeps msns), else start fresh."""
        obj = store.get(checkpoint_key(prefix, stream_id))
        if obj is not None:
            state = StreamState.from_dict(json.loads(obj.data))
            head = checkpoint_key(prefix, stream_id)
            for key in store.list(checkpoint_dir(prefix, stream_id)):
                track = state.tracks.get(key.split("/")[-2]) if key != head else None
                chunk = store.get(key) if track is not None else None
                for row in json.loads(chunk.data) if chunk is not None else []:
                    track.insert(seg_from_row(row))  # type: ignore[union-attr]
            if config is not None:
                state.reconfigure(config)
        else:
            state = StreamState(stream_id=stream_id, prefix=prefix, config=config or StreamConfig())
        return cls(store, state, **kw)

    def checkpoint(self) -> None:
        """Changed segment chunks first, then the header: a restart resumes from here with the same msns."""
        st = self.state
        for name, n in sorted(self._dirty_chunks):
            track = st.tracks.get(name)
            rows = [seg_row(track.segments[m]) for m in range(n * CHUNK, (n + 1) * CHUNK)
                    if track is not None and m in track.segments]
            key = chunk_key(st.prefix, st.stream_id, name, n)
            if rows:
                self.store.put(key, json.dumps(rows, separators=(",", ":")).encode(),
                               content_type="application/json", cache_control="no-store")
            else:
                self.store.delete(key)
        data = json.dumps(st.to_dict(with_segments=False), separators=(",", ":")).encode()
        self.store.put(checkpoint_key(st.prefix, st.stream_id), data,
                       content_type="application/json", cache_control="no-store")
        self._dirty_chunks.clear()
        self.unsaved = False

    # --- input ------------------------------------------------------------------------------
    def _buffer(self, name: str) -> ReorderBuffer[Held]:
        buf = self.buffers.get(name)
        if buf is None:
            buf = self.buffers[name] = ReorderBuffer(self.gap_deadline_s)
        return buf

    def add(self, rec: dict[str, Any], now: float, partition: int = -1, offset: int = -1) -> None:
        """Take one RenditionSegment: reorder, then write what is ready. Raises BadSegment."""
        validate_segment(rec)
        if rec["stream_id"] != self.state.stream_id:
            raise BadSegment(f"segment of {rec['stream_id']} given to packager of {self.state.stream_id}")
        name = rec["rendition"]["name"]
        msn = self.state.msn_of(rec["gop_index"])
        self.last_segment_at = now
        if msn < 0:
            self.stats["too_old"] += 1
            log.info("segment before the stream's first GOP dropped",
                     extra={"stream_id": self.state.stream_id, "gop_index": rec["gop_index"], "rendition": name})
            return
        buf = self._buffer(name)
        if buf.next_msn is None:
            buf.next_msn = min(msn, self.state.start_msn()) if self.state.tracks else msn
        if rec.get("part_index", -1) >= 0:
            self._add_part(rec, msn, now, partition, offset)
            return
        self._apply(name, buf.offer(msn, Held(rec, partition, offset), now))

    def tick(self, now: float) -> None:
        """Release gaps whose deadline has passed; a segment with listed parts is waited for longer,
        then completed with the parts it has (never replaced by a gap)."""
        for name, buf in list(self.buffers.items()):
            asm = self.assembling.get(name, {}).get(buf.next_msn) if buf.next_msn is not None else None
            if asm is not None and asm.listed():
                if now - asm.first_at >= PARTIAL_DEADLINE_S:
                    self._complete(name, asm, now, short=True)
                continue
            self._apply(name, buf.expire(now))

    def held_offsets(self) -> list[tuple[int, int]]:
        """(partition, offset) of records still waiting: commits must not pass them."""
        out = [(p, o) for b in self.buffers.values() for h in b.pending.values()
               for p, o in [(h.partition, h.offset), *h.more] if o >= 0]
        out += [(p, o) for by_msn in self.assembling.values() for a in by_msn.values() for p, o in a.offsets if o >= 0]
        return out

    @property
    def holding(self) -> int:
        return sum(b.holding for b in self.buffers.values()) + sum(len(a) for a in self.assembling.values())

    # --- parts ------------------------------------------------------------------------------
    def _add_part(self, rec: dict[str, Any], msn: int, now: float, partition: int, offset: int) -> None:
        """One part of segment msn: written now, listed if msn is the segment being built, and the
        segment completed (then released in order) once its last part is here."""
        name = rec["rendition"]["name"]
        index = rec["part_index"]
        track = self._track(rec, whole=bool(rec.get("is_last_part", True)))
        existing = track.segments.get(msn)
        if existing is not None and not existing.gap:
            self.stats["duplicate_parts"] += 1  # the segment is complete: a re-delivery
            return
        buf = self._buffer(name)
        assert buf.next_msn is not None
        if msn < buf.next_msn and existing is None and (not track.segments or msn < min(track.segments)):
            self.stats["too_old"] += 1  # before the window (or purged): it would never be listed
            return
        by_msn = self.assembling.setdefault(name, {})
        asm = by_msn.get(msn)
        if asm is None:
            asm = by_msn[msn] = Assembly(msn, first_at=now)
        closing = not rec.get("parts")
        if closing or rec.get("is_last_part", True):
            count = index if closing else index + 1
            if asm.count is None:
                asm.count = count
        if not closing:
            old = asm.parts.get(index)
            if old is not None:
                if old["data"] != rec["data"]:
                    self.stats["contradicting_parts"] += 1
                    log.error("a part came again with different bytes: the first one stays",
                              extra={"stream_id": self.state.stream_id, "gop_index": rec["gop_index"],
                                     "rendition": name, "part": index})
                else:
                    self.stats["duplicate_parts"] += 1
                return
            root = f"{self.state.root}/{name}"
            self.store.put_if_changed(f"{root}/{track.init_name(rec['init_hash'])}", rec["init_segment"])
            _, key, iv = self._key_for(msn)
            data = rec["data"]
            self.store.put_if_changed(f"{root}/{msn}.{index}.m4s", encrypt.encrypt(data, key, iv) if key else data)
            asm.parts[index] = rec
            self.stats["parts"] += 1
            self.state.note_part(float(rec["parts"][0]["duration"]))
        asm.offsets.append((partition, offset))
        if msn == buf.next_msn and buf.waiting_since is not None:
            buf.waiting_since = now  # the segment the others wait for is coming: its deadline restarts
        if asm.complete:
            self._complete(name, asm, now)
        elif msn == buf.next_msn:
            self.dirty.add(name)

    def _complete(self, name: str, asm: Assembly, now: float, short: bool = False) -> None:
        """The segment is its parts (the run from part 0; `short`: no more are coming): release it."""
        self.assembling.get(name, {}).pop(asm.msn, None)
        n = asm.listed() if asm.count is None else min(asm.listed(), asm.count)
        if n == 0:
            return
        if short:
            self.stats["short_segments"] += 1
            log.warning("segment completed with the parts it has", extra={
                "stream_id": self.state.stream_id, "rendition": name, "msn": asm.msn, "parts": n})
        parts = [asm.parts[i] for i in range(n)]
        whole = dict(parts[-1])
        offset = 0
        plist = []
        for p in parts:
            plist.append({**p["parts"][0], "offset": offset})
            offset += len(p["data"])
        whole.update(pts=parts[0]["pts"], duration=sum(p["duration"] for p in parts), data=b"".join(
            p["data"] for p in parts), parts=plist, part_index=-1, is_last_part=True, _parts_written=True)
        first = asm.offsets[0] if asm.offsets else (-1, -1)
        self._apply(name, self._buffer(name).offer(asm.msn, Held(whole, first[0], first[1], asm.offsets[1:]), now))
        self.dirty.add(name)

    def _partial(self, track: Track) -> Segment | None:
        """The segment being built after the newest complete one, with its listable parts."""
        buf = self.buffers.get(track.name)
        if buf is None or buf.next_msn is None or not track.segments or buf.next_msn != track.last_msn + 1:
            return None
        asm = self.assembling.get(track.name, {}).get(buf.next_msn)
        n = asm.listed() if asm is not None else 0
        if asm is None or n == 0:
            return None
        first = asm.parts[0]
        kid, _, iv = self._key_for(asm.msn)
        parts = [asm.parts[i] for i in range(n)]
        return Segment(msn=asm.msn, pts=first["pts"], duration=sum(p["duration"] for p in parts),
                       timescale=first["timescale"], pdt_ms=first["capture_wallclock_ms"], epoch=first.get("epoch", 0),
                       init_hash=first["init_hash"], parts=[Part(float(p["parts"][0]["duration"]),
                                                                 bool(p["parts"][0]["independent"])) for p in parts],
                       key_id=kid, iv_hex=iv.hex() if iv else None, size=sum(len(p["data"]) for p in parts))

    def add_cue(self, cue: dict[str, Any]) -> bool:
        """Register an ad break; it is placed on the next segment boundary at or after its start."""
        raw = cue.get("scte35")
        if not self.state.add_cue(cue["cue_id"], int(cue["splice_event_id"]), int(cue["start_wallclock_ms"]),
                                  int(cue["duration_ms"]), raw.hex() if raw else None):
            return False
        self._place_cues()
        return True

    # --- applying ---------------------------------------------------------------------------
    def _apply(self, name: str, released: list[Released[Held]]) -> None:
        for i, r in enumerate(released):
            try:
                if r.item is None:
                    self._add_gap(name, r.msn)
                else:
                    self._add_segment(r.item.rec, r.msn, late=r.late)
            except Exception:
                self._hold_again(name, released[i:])
                raise

    def _hold_again(self, name: str, rest: list[Released[Held]]) -> None:
        """A write failed: put what was not applied back in the buffer, so a retry loses nothing."""
        buf = self._buffer(name)
        in_order = [r for r in rest if not r.late]
        if not in_order:
            return
        buf.next_msn = min(r.msn for r in in_order)
        for r in in_order:
            if r.item is not None:
                buf.pending[r.msn] = r.item
        if any(r.item is None for r in in_order):
            buf.waiting_since = float("-inf")  # its deadline had passed already

    def _track(self, rec: dict[str, Any], whole: bool = True) -> Track:
        """The rendition's track, described by the record (bitrates only from whole segments: a part's
        own rate says little of the segment's)."""
        r = rec["rendition"]
        t = self.state.track_for(r["name"], r["media_type"], r["codecs"])
        t.describe(codecs=r["codecs"], timescale=rec["timescale"] or t.timescale,
                   bandwidth=int(r.get("bandwidth") or 0) if whole else 0,
                   average_bandwidth=int(r.get("average_bandwidth") or 0) if whole else 0,
                   target_bitrate=int(r.get("target_bitrate") or 0), width=int(r.get("width") or 0),
                   height=int(r.get("height") or 0), frame_rate=float(r.get("frame_rate") or 0.0),
                   sample_rate=int(r.get("sample_rate") or 0), channels=int(r.get("channels") or 0))
        return t

    def _key_for(self, msn: int) -> tuple[str | None, bytes | None, bytes | None]:
        if not self.state.config.drm or self.keys is None:
            return None, None, None
        kid = encrypt.key_id_for(msn, self.state.config.key_rotation_segments)
        ck = self.keys.get_or_create(self.state.stream_id, kid)
        return kid, ck.key, ck.iv

    def _add_segment(self, rec: dict[str, Any], msn: int, late: bool) -> None:
        name = rec["rendition"]["name"]
        track = self._track(rec)
        existing = track.segments.get(msn)
        if existing is not None and not existing.gap:
            self.stats["duplicates"] += 1  # re-delivery: same GOP, same objects already written
            return
        if late and existing is None and (not track.segments or msn < min(track.segments)):
            self.stats["too_old"] += 1  # before the window (or purged): listing it would move MEDIA-SEQUENCE back
            log.info("late segment outside the window dropped",
                     extra={"stream_id": self.state.stream_id, "gop_index": rec["gop_index"], "rendition": name})
            return
        root = f"{self.state.root}/{name}"
        init_name = track.init_name(rec["init_hash"])
        self.store.put_if_changed(f"{root}/{init_name}", rec["init_segment"])
        kid, key, iv = self._key_for(msn)
        data: bytes = rec["data"]
        parts = rec.get("parts") or []
        for j, p in enumerate(parts):
            if rec.get("_parts_written"):
                break  # written one by one as they arrived (and never again)
            start = 0 if j == 0 else p["offset"]
            chunk = data[start:p["offset"] + p["length"]]
            self.store.put_if_changed(f"{root}/{msn}.{j}.m4s", encrypt.encrypt(chunk, key, iv) if key else chunk)
        self.store.put_if_changed(f"{root}/{msn}.m4s", encrypt.encrypt(data, key, iv) if key else data)
        seg = Segment(msn=msn, pts=rec["pts"], duration=rec["duration"], timescale=rec["timescale"],
                      pdt_ms=rec["capture_wallclock_ms"], epoch=rec.get("epoch", 0), init_hash=rec["init_hash"],
                      parts=[Part(float(p["duration"]), bool(p["independent"])) for p in parts],
                      key_id=kid, iv_hex=iv.hex() if iv else None, size=len(data))
        self.state.add_segment(track, seg, int(time.time() * 1000))
        self._dirty_chunks.add((name, msn // CHUNK))
        self.stats["late_fills" if existing is not None else "segments"] += 1
        if existing is not None:
            log.info("gap filled by a late segment", extra={"stream_id": self.state.stream_id,
                                                            "gop_index": rec["gop_index"], "rendition": name})
        self.dirty.add(name)
        self._place_cues()

    def _add_gap(self, name: str, msn: int) -> None:
        track = self.state.tracks.get(name)
        if track is None or msn in track.segments:
            return
        later = [m for m in track.segments if m > msn]
        nxt = track.segments[min(later)] if later else None
        held = self.buffers[name].pending
        if nxt is None and held:
            h = held[min(held)].rec
            nxt = Segment(msn=min(held), pts=h["pts"], duration=h["duration"], timescale=h["timescale"],
                          pdt_ms=h["capture_wallclock_ms"], epoch=h.get("epoch", 0))
        kid, _, iv = self._key_for(msn)
        self.state.add_gap(track, msn, nxt, kid, iv.hex() if iv else None)
        self._dirty_chunks.add((name, msn // CHUNK))
        self.stats["gaps"] += 1
        log.warning("GOP missing after the deadline: published as a gap",
                    extra={"stream_id": self.state.stream_id, "gop_index": msn + (self.state.base_gop or 0),
                           "rendition": name})
        self.dirty.add(name)

    def _place_cues(self) -> None:
        """Place pending ad breaks on segment boundaries; a placed boundary changes every playlist."""
        if self.state.place_cues():
            self.dirty.update(self.state.tracks)

    # --- output -----------------------------------------------------------------------------
    def flush(self, wall_ms: int | None = None) -> int:
        """Write the playlists of changed renditions (then master and MPD); return how many were written."""
        if not self.dirty:
            return 0
        wall_ms = wall_ms or int(time.time() * 1000)
        self.unsaved = True
        root = self.state.root
        doomed = self._doomed  # kept on the packager: a flush retried after a store error still deletes them
        expiring = any(self.state.expired(self.state.tracks[name]) for name in self.dirty)
        before = mpd.runs(self.state) if expiring else []
        for name in sorted(self.dirty):
            track = self.state.tracks[name]
            gone = self.state.slide_window(track)
            self._dirty_chunks.update((name, s.msn // CHUNK) for s in gone)
            doomed += [(name, s) for s in gone]
        if doomed:
            self._keep_period_origin(before)
        doomed_now = list(doomed)
        written = 0
        for name in sorted(self.dirty):
            track = self.state.tracks[name]
            if not track.segments:
                continue
            ordered = track.ordered()
            track.partial = self._partial(track) if not (self.state.ended or self.state.vod) else None
            if self._behind_the_store(name, track):
                continue  # the store lists more already (restart): catch up first, never go back
            kw = {"ordered": ordered, "disc": self.state.discontinuities(track, ordered)}
            text = playlist.media_playlist(self.state, name, playlist.LIVE, **kw)
            self._put_doc(f"{root}/{name}/playlist-skip.m3u8",
                          playlist.media_playlist(self.state, name, playlist.SKIP, **kw).encode())
            newest = ordered[-1]
            final = self.state.ended or self.state.vod
            purged = any(n == name for n, _ in doomed)  # the old dvr.m3u8 names objects about to go
            if final or purged or newest.end_ms - self._dvr_at.get(name, -10**15) >= self.dvr_every_s * 1000:
                self._put_doc(f"{root}/{name}/dvr.m3u8",
                              playlist.media_playlist(self.state, name, playlist.DVR, **kw).encode())
                self._dvr_at[name] = newest.end_ms
            etag, changed = self._put_doc(f"{root}/{name}/playlist.m3u8", text.encode())
            written += 1
            if changed:
                msn, part = playlist.live_edge(self.state, track)
                self._announce(name, msn, part, track.publish(wall_ms), etag, wall_ms)
        docs = self._docs_signature()
        if playlist.video_tracks(self.state) and docs != self._docs_written:
            # master and MPD change with segments, not with parts: a part alone does not rewrite them
            self._docs_written = docs
            self._write_doc("master", f"{root}/master.m3u8", playlist.master_playlist(self.state), wall_ms)
            self._write_doc("master-dvr", f"{root}/master-dvr.m3u8",
                            playlist.master_playlist(self.state, "dvr.m3u8"), wall_ms, announce=False)
            if self.write_mpd and not self.state.config.drm:
                self._write_doc("mpd", f"{root}/manifest.mpd", mpd.render_mpd(self.state, wall_ms), wall_ms)
        self.dirty.clear()
        for name, seg in doomed_now:
            self._delete_media(name, seg)
            doomed.remove((name, seg))
        return written

    def _docs_signature(self) -> tuple[Any, ...]:
        """What the master playlist and the MPD are made of, cheaply: they are rewritten when it changes."""
        st = self.state
        return (tuple((n, t.hi, len(t.segments), t.bandwidth, t.average_bandwidth, t.codecs,
                       min(t.segments, default=-1)) for n, t in sorted(st.tracks.items())),
                self.stats["gaps"], self.stats["late_fills"], st.ended, st.vod, st.config,
                tuple((c.out_msn, c.in_msn) for c in st.cues.values()), st.period_origin)

    def refresh_dvr(self) -> int:
        """Bring every lagging dvr.m3u8 up to the newest segment (the sink calls this once per commit)."""
        n = 0
        for name, track in self.state.tracks.items():
            if track.segments and track.segments[track.last_msn].end_ms > self._dvr_at.get(name, -10**15):
                self._put_doc(f"{self.state.root}/{name}/dvr.m3u8",
                              playlist.media_playlist(self.state, name, playlist.DVR).encode())
                self._dvr_at[name] = track.segments[track.last_msn].end_ms
                n += 1
        return n

    def _keep_period_origin(self, before: list[mpd.Run]) -> None:
        """The DVR window moved: remember where the first DASH Period began (its id and start stay)."""
        remaining = sorted({m for t in mpd.media_tracks(self.state) for m in t.segments})
        if not remaining:
            return
        for run in before:
            if remaining[0] in run.msns:
                self.state.keep_period(run.origin, run.start_s, run.ptos)
                return

    def _behind_the_store(self, name: str, track: Track) -> bool:
        """The live playlist in the store (written before a restart) lists more than this process has
        caught up with: its media is being re-read from Kafka, so wait (at most RESUME_WAIT_S)."""
        if name not in self._resume:
            obj = self.store.get(f"{self.state.root}/{name}/playlist.m3u8") if not self.state.ended else None
            self._resume[name] = playlist.listed_edge(obj.data.decode("utf-8", "replace")) if obj else None
        edge = self._resume[name]
        if edge is None:
            return False
        def order(e: tuple[int, int]) -> tuple[int, int]:
            return e[0], e[1] if e[1] >= 0 else 1 << 30  # a complete segment is past every part of it

        if order(playlist.live_edge(self.state, track)) < order(edge) and time.monotonic() < self._resume_until:
            return True
        self._resume[name] = None
        return False

    def _put_doc(self, key: str, data: bytes) -> tuple[str, bool]:
        """Write a manifest unless this process already wrote these exact bytes (saves a read per write)."""
        etag = etag_of(data)
        known = self._etags.get(key)
        if known == etag:
            return etag, False
        if known is not None:  # we wrote this key and the bytes differ: no need to read it back first
            etag, changed = self.store.put(key, data), True
        else:
            etag, changed = self.store.put_if_changed(key, data)
        self._etags[key] = etag
        return etag, changed

    def _write_doc(self, label: str, key: str, text: str, wall_ms: int, announce: bool = True) -> None:
        etag, changed = self._put_doc(key, text.encode())
        if changed and announce:
            self._announce(label, -1, -1, self.state.publish(wall_ms), etag, wall_ms)

    def _announce(self, rendition: str, msn: int, part: int, version: int, etag: str, wall_ms: int) -> None:
        if self.on_manifest is None:
            return
        st = self.state
        self.on_manifest({"stream_id": st.stream_id, "rendition": rendition, "msn": msn, "part": part,
                          "version": version, "etag": etag, "written_wallclock_ms": wall_ms,
                          "ended": st.ended or st.vod, "target_duration": max(1, st.target_duration),
                          "part_target": st.part_target if st.has_parts else 0.0})

    def _delete_media(self, name: str, seg: Segment) -> None:
        root = f"{self.state.root}/{name}"
        for j in range(len(seg.parts)):
            self.store.delete(f"{root}/{seg.msn}.{j}.m4s")
        if not seg.gap:
            self.store.delete(f"{root}/{seg.msn}.m4s")
        self.stats["deleted"] += 1

    # --- lifecycle --------------------------------------------------------------------------
    def end(self, vod: bool = False, wall_ms: int | None = None) -> None:
        """Stream over: release what waits (holes become gaps), then ENDLIST everywhere (static MPD)."""
        for name, by_msn in list(self.assembling.items()):
            for asm in sorted(by_msn.values(), key=lambda a: a.msn):
                self._complete(name, asm, time.monotonic(), short=True)
        for name, buf in list(self.buffers.items()):
            self._apply(name, buf.flush())
        self.state.end(vod)
        self.dirty.update(n for n, t in self.state.tracks.items() if t.segments)
        self.flush(wall_ms)

    def reopen(self) -> None:
        """The stream went live again after an end: drop ENDLIST on the next write."""
        if self.state.reopen():
            self.dirty.update(n for n, t in self.state.tracks.items() if t.segments)

    def purge_all(self) -> int:
        """Delete every object of the stream (ended and past its DVR window)."""
        n = 0
        for key in list(self.store.list(f"{self.state.root}/")):
            self.store.delete(key)
            n += 1
        for key in list(self.store.list(checkpoint_dir(self.state.prefix, self.state.stream_id))):
            self.store.delete(key)
        return n
