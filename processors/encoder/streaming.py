"""Sub-GOP streaming (issue 15): a GOP transcoded while its chunks arrive, each chunk -> one CMAF part
per rendition, published as soon as its frames are encoded.

State is scoped to the GOP (DESIGN 3.2): one decoder, one libx264 encoder per rung and the AAC
pass-through state are opened at the GOP's first chunk (it carries the codec parameters) and dropped
with its last, so any member can take any GOP and nothing outlives it. The encoders run with zero
latency (x264 `tune=zerolatency`: no lookahead, no B-frames, no frame threads), so every frame of a
chunk comes out of its encoder before the next chunk is needed. Each part is muxed by a fresh mp4
muxer (`fragment_index` = part + 1, `frag_discont` so `tfdt` carries the source PTS): its bytes depend
on the GOP's chunks alone, so re-processing the GOP (another member after a kill -9, a replay) yields
the same part bytes, and the init segment is the same for every part of every GOP with equal
parameters.

A part record is a RenditionSegment with `part_index` >= 0: `data` is that part (one moof/mdat),
`pts`/`duration` are the part's, `parts` has the one entry; the record with `is_last_part` completes
segment `gop_index` (the concatenation of parts 0..part_index). A rendition whose last chunk gave it
no media (audio that all came earlier, an abandoned GOP) gets a closing record: `is_last_part`, no
data, `part_index` = the number of parts it had.

`GopStream` has no Kafka in it: `feed(chunk)` returns the part records of that chunk, `close()` the
closing records of a GOP that will not get its last chunk. `assemble` turns a GOP's chunks back into
one whole GopChunk (the replay tool transcodes whole GOPs).
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import av

from processors.encoder import aac, cmaf
from processors.encoder.ladder import bitrates, select_rungs, x264_vbv
from processors.encoder.transcode import MOVFLAGS, VIDEO_TIMESCALE, RungScaler, TranscodeError

log = logging.getLogger("floodlight.encoder.streaming")
QUEUE_DEPTH = 12
KEYINT = 100_000  # a fresh encoder per GOP: one IDR, the GOP's own first frame, never another


def is_chunk(gop: dict[str, Any]) -> bool:
    """A sub-GOP chunk (a GOP published while it is captured), not a whole GOP."""
    return gop.get("chunk_index", 0) != 0 or not gop.get("is_last_chunk", True)


def x264_stream_options(preset: str, kbps: int, height: int) -> dict[str, str]:
    """libx264 for parts: the whole-GOP options (no scene-cut keyframes, closed, no B-frames, the rung's
    VBV) with zero latency, so a frame's packet comes out with the frame."""
    return {
        "preset": preset,
        "tune": "zerolatency",
        "x264-params": (f"keyint={KEYINT}:min-keyint={KEYINT}:scenecut=0:open-gop=0:bframes=0:rc-lookahead=0:"
                        f"sync-lookahead=0:{x264_vbv(kbps, height)}"),
    }


class _Sink:
    """Write-only file object: without seek() FFmpeg treats the output as a pipe (MEDIA-NOTES)."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def write(self, data: bytes) -> int:
        self.buf += data
        return len(data)


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class _Part:
    index: int
    last: bool


_STOP = object()


@dataclass
class _Made:
    """What a rendition made of one chunk: muxer output (init + one fragment), or nothing."""

    output: bytes | None
    seconds: float = 0.0
    error: BaseException | None = None


class _RungStream:
    """One rung of one GOP: a thread with its scaler and zero-latency libx264, fed frames by the
    decoder; at each part marker the packets so far are muxed into one part."""

    def __init__(self, rung: dict[str, Any], rate: Fraction, *, preset: str, x264_threads: int) -> None:
        self.rung = rung
        self.rate = rate
        self.queue: queue.Queue[Any] = queue.Queue(QUEUE_DEPTH)
        self.made: queue.Queue[_Made] = queue.Queue()
        self.frame_ticks = int(round(VIDEO_TIMESCALE / rate))
        self.enc = av.CodecContext.create("libx264", "w")
        enc = self.enc
        enc.width, enc.height, enc.pix_fmt = rung["width"], rung["height"], "yuv420p"
        enc.time_base = Fraction(1, VIDEO_TIMESCALE)
        enc.framerate = rate
        enc.bit_rate = rung["bitrate_kbps"] * 1000
        enc.thread_count = max(1, x264_threads)
        enc.options = x264_stream_options(preset, rung["bitrate_kbps"], rung["height"])
        enc.flags = enc.flags | av.codec.context.Flags.global_header
        enc.open()
        self._template_box: Any = av.open(_Sink(), "w", format="mp4")
        self._template = self._template_box.add_stream("libx264", rate=rate)
        self.thread = threading.Thread(target=self._run, name=f"part-{rung['name']}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        packets: list[Any] = []
        scaler = RungScaler(self.rung["width"], self.rung["height"])
        error: BaseException | None = None
        busy = 0.0
        while True:
            item = self.queue.get()
            if item is _STOP:
                return
            t0 = time.perf_counter()
            if isinstance(item, _Part):
                made = _Made(None, error=error)
                if error is None:
                    try:
                        if item.last:
                            packets += self.enc.encode(None)
                        made.output = self._mux(packets, item.index) if packets else None
                    except BaseException as exc:  # noqa: BLE001 - reported with the part
                        made.error = exc
                packets = []
                made.seconds = busy + time.perf_counter() - t0
                busy = 0.0
                self.made.put(made)
                if item.last:
                    return
                continue
            if error is not None:
                continue
            try:
                packets += self.enc.encode(scaler(item))
            except BaseException as exc:  # noqa: BLE001 - reported at the next part marker
                error = exc
            busy += time.perf_counter() - t0

    def _mux(self, packets: list[Any], index: int) -> bytes:
        sink = _Sink()
        out = av.open(sink, "w", format="mp4", options={"movflags": MOVFLAGS, "fragment_index": str(index + 1)})
        try:
            stream = out.add_stream_from_template(self._template, opaque=True)
            ctx = stream.codec_context
            ctx.width, ctx.height = self.rung["width"], self.rung["height"]
            ctx.extradata = self.enc.extradata
            stream.time_base = Fraction(1, VIDEO_TIMESCALE)
            for p in packets:
                if not p.duration:
                    p.duration = self.frame_ticks
                p.stream = stream
                out.mux(p)
        finally:
            out.close()
        return bytes(sink.buf)

    def stop(self) -> None:
        if self.thread.is_alive():
            self.queue.put(_STOP)
            self.thread.join(10)
        if self._template_box is not None:
            self._template_box.close()
            self._template_box = None


@dataclass
class _Rendition:
    """What was published of one rendition of the GOP so far."""

    rendition: dict[str, Any]
    init: bytes = b""
    init_hash: str = ""
    sizes: list[int] = field(default_factory=list)
    durations: list[float] = field(default_factory=list)
    next_pts: int = 0
    timescale: int = 0
    closed: bool = False

    @property
    def parts(self) -> int:
        return len(self.sizes)


class GopStream:
    """One GOP, transcoded chunk by chunk (see the module doc). Not thread-safe: one caller at a time,
    chunks in order."""

    def __init__(self, first: dict[str, Any], ladder: list[dict[str, Any]], *, preset: str,
                 renditions: set[str] | None = None, x264_threads: int = 1) -> None:
        if first.get("chunk_index", 0) != 0:
            raise TranscodeError(f"GOP starts at chunk {first.get('chunk_index')}, not 0", "invalid")
        packets = first.get("video_packets") or []
        if not packets or not packets[0].get("keyframe"):
            raise TranscodeError("first chunk does not start with a keyframe (not a closed GOP)", "invalid")
        video = first.get("video") or {}
        if first.get("time_base_num", 0) <= 0 or first.get("time_base_den", 0) <= 0:
            raise TranscodeError("chunk has no valid time base", "invalid")
        if video.get("frame_rate_num", 0) <= 0 or video.get("frame_rate_den", 0) <= 0 or video.get("width", 0) <= 0:
            raise TranscodeError("chunk has no valid video parameters", "invalid")
        self.gop = first
        self.next_chunk = 0
        self.finished = False
        self.src_tb = Fraction(first["time_base_num"], first["time_base_den"])
        self.rate = Fraction(video["frame_rate_num"], video["frame_rate_den"])
        self.rung_seconds: dict[str, float] = {}
        self.decode_seconds = 0.0
        want_video = renditions is None or bool(renditions - {"audio"})
        rungs = select_rungs(ladder, video["width"], video["height"],
                             None if renditions is None else renditions - {"audio"}) if want_video else []
        self.want_audio = renditions is None or "audio" in renditions
        try:
            self.decoder = av.CodecContext.create(video["codec"], "r")
        except (av.FFmpegError, ValueError) as exc:
            raise TranscodeError(f"unsupported video codec {video['codec']!r}: {exc}", "decode") from exc
        if video.get("extradata"):
            self.decoder.extradata = video["extradata"]
        self.decoder.thread_type = "SLICE"  # frame threads would hold frames back past the chunk's end
        self.rungs: list[_RungStream] = []
        try:
            for r in rungs:
                self.rungs.append(_RungStream(r, self.rate, preset=preset, x264_threads=x264_threads))
        except Exception as exc:
            self.close_threads()
            raise TranscodeError(f"cannot open the encoder of {r['name']}: {exc}", "encode") from exc
        self.out: dict[str, _Rendition] = {}
        for rs in self.rungs:
            r = rs.rung
            self.out[r["name"]] = _Rendition({
                "name": r["name"], "media_type": "VIDEO", "bandwidth": 0, "average_bandwidth": 0,
                "target_bitrate": r["bitrate_kbps"] * 1000, "width": r["width"], "height": r["height"],
                "frame_rate": float(self.rate), "codecs": "", "sample_rate": 0, "channels": 0})
        self._audio: dict[str, Any] | None = None  # pass-through state, from the first audio packet
        self._audio_last: int | None = None
        self._frames = 0

    # --- chunks -----------------------------------------------------------------------------
    def feed(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        """The part records of chunk `next_chunk` (video rungs, then audio); the last chunk closes the GOP."""
        if self.finished:
            raise TranscodeError("GOP already finished", "invalid")
        if chunk.get("chunk_index", 0) != self.next_chunk:
            raise TranscodeError(f"chunk {chunk.get('chunk_index')} given, {self.next_chunk} expected", "invalid")
        started_ms = _now_ms()
        last = bool(chunk.get("is_last_chunk", True))
        index = {name: o.parts for name, o in self.out.items()}
        t0 = time.perf_counter()
        decode_error: TranscodeError | None = None
        try:
            for frame in self._decode(chunk["video_packets"], last):
                for rs in self.rungs:
                    rs.queue.put(frame)
        except TranscodeError as exc:
            decode_error = exc
        finally:
            self.decode_seconds += time.perf_counter() - t0
            for rs in self.rungs:
                rs.queue.put(_Part(index[rs.rung["name"]], last))
        records: list[dict[str, Any]] = []
        error: BaseException | None = None
        if decode_error is not None:
            for rs in self.rungs:
                rs.made.get()
            self.close_threads()
            raise decode_error
        for rs in self.rungs:
            made = rs.made.get()
            name = rs.rung["name"]
            self.rung_seconds[name] = self.rung_seconds.get(name, 0.0) + made.seconds
            if made.error is not None and error is None:
                error = made.error
            if made.output is not None and error is None:
                records.append(self._record(self.out[name], made.output, chunk, started_ms, last, sync_first=True))
        if error is not None:
            self.close_threads()
            raise TranscodeError(f"encode failed: {error}", "encode") from error
        if self.want_audio:
            rec = self._audio_part(chunk, started_ms, last)
            if rec is not None:
                records.append(rec)
        self.next_chunk += 1
        if last:
            records += self._closing(chunk, started_ms)
            self.finished = True
            self.close_threads()
        return records

    def close(self, chunk: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """The GOP will not get its last chunk (its ingest stopped mid-GOP): stop, and close every
        rendition at the parts it has, so the packager completes the segment with them."""
        self.close_threads()
        if self.finished:
            return []
        self.finished = True
        return self._closing(chunk or self.gop, _now_ms())

    def close_threads(self) -> None:
        for rs in self.rungs:
            rs.stop()

    # --- video ------------------------------------------------------------------------------
    def _decode(self, packets: list[dict[str, Any]], last: bool) -> list[Any]:
        frames: list[Any] = []
        try:
            for p in packets:
                packet = av.Packet(p["data"])
                packet.pts, packet.dts, packet.time_base = p["pts"], p["dts"], self.src_tb
                frames += self.decoder.decode(packet)
            if last:
                frames += self.decoder.decode(None)
        except av.FFmpegError as exc:
            raise TranscodeError(f"undecodable video: {exc}", "decode") from exc
        out_tb = Fraction(1, VIDEO_TIMESCALE)
        for frame in frames:
            if frame.pts is None:
                raise TranscodeError("decoded frame has no timestamp", "decode")
            frame.pts = int(round(frame.pts * self.src_tb * VIDEO_TIMESCALE))
            frame.time_base = out_tb
            frame.pict_type = av.video.frame.PictureType.NONE
        self._frames += len(frames)
        return frames

    # --- audio (passed through, never re-encoded) --------------------------------------------
    def _audio_state(self, params: dict[str, Any], first: bytes) -> dict[str, Any]:
        if params["codec"] != "aac":
            raise TranscodeError(f"audio codec {params['codec']!r} cannot pass through (aac only)", "invalid")
        adts = aac.is_adts(first)
        asc = aac.parse_adts(first).audio_specific_config() if adts else (params.get("extradata") or b"")
        if not asc:
            raise TranscodeError("raw AAC without an AudioSpecificConfig", "invalid")
        sample_rate = aac.asc_sample_rate(asc) or params["sample_rate"]
        return {"adts": adts, "asc": asc, "sample_rate": sample_rate, "object_type": aac.asc_object_type(asc),
                "channels": params["channels"], "tb": Fraction(params["time_base_num"], params["time_base_den"])}

    def _audio_part(self, chunk: dict[str, Any], started_ms: int, last: bool) -> dict[str, Any] | None:
        params = chunk.get("audio") or self.gop.get("audio")
        packets = chunk.get("audio_packets") or []
        if not params or not packets:
            return None
        try:
            if self._audio is None:
                self._audio = self._audio_state(params, packets[0]["data"])
                a = self._audio
                self.out["audio"] = _Rendition({
                    "name": "audio", "media_type": "AUDIO", "bandwidth": 0, "average_bandwidth": 0,
                    "target_bitrate": 0, "width": 0, "height": 0, "frame_rate": 0.0,
                    "codecs": f"mp4a.40.{a['object_type']}", "sample_rate": a["sample_rate"],
                    "channels": a["channels"]})
            output = self._mux_audio(packets, self.out["audio"].parts)
        except aac.AdtsError as exc:
            log.warning("audio part dropped", extra={"stream_id": chunk["stream_id"], "gop_index": chunk["gop_index"],
                                                     "reason": str(exc)})
            return None
        except (TranscodeError, av.FFmpegError) as exc:
            log.warning("audio part dropped", extra={"stream_id": chunk["stream_id"], "gop_index": chunk["gop_index"],
                                                     "reason": str(exc)})
            return None
        if output is None:
            return None
        return self._record(self.out["audio"], output, chunk, started_ms, last, sync_first=False)

    def _mux_audio(self, packets: list[dict[str, Any]], index: int) -> bytes | None:
        a = self._audio
        assert a is not None
        sr = a["sample_rate"]
        stamps = [int(round(p["pts"] * a["tb"] * sr)) for p in packets]
        for i in range(len(stamps) - 1, 0, -1):  # audio from before a jump (a source that skipped ahead): stale
            if stamps[i] - stamps[i - 1] > 2 * 1024:
                packets = packets[i:]
                break
        sink = _Sink()
        out = av.open(sink, "w", format="mp4", options={"movflags": MOVFLAGS, "fragment_index": str(index + 1)})
        muxed = 0
        try:
            template_box = av.open(_Sink(), "w", format="mp4")
            stream = out.add_stream_from_template(template_box.add_stream("aac", rate=sr), opaque=True)
            ctx = stream.codec_context
            ctx.extradata = a["asc"]
            ctx.sample_rate = sr
            ch = a["channels"]
            ctx.layout = "stereo" if ch == 2 else ("mono" if ch == 1 else f"{ch}c")
            stream.time_base = Fraction(1, sr)
            for p in packets:
                payload = aac.strip_adts(p["data"]) if a["adts"] else p["data"]
                pts = int(round(p["pts"] * a["tb"] * sr))
                if self._audio_last is not None and pts <= self._audio_last:
                    continue  # keep the track strictly increasing
                self._audio_last = pts
                packet = av.Packet(payload)
                packet.pts = packet.dts = pts
                packet.duration = 1024
                packet.time_base = stream.time_base
                packet.stream = stream
                out.mux(packet)
                muxed += 1
        finally:
            out.close()
        return bytes(sink.buf) if muxed else None

    # --- records ----------------------------------------------------------------------------
    def _record(self, o: _Rendition, output: bytes, chunk: dict[str, Any], started_ms: int, last: bool, *,
                sync_first: bool) -> dict[str, Any]:
        name = o.rendition["name"]
        try:
            split = cmaf.split_fmp4(output)
            if len(split.fragments) != 1:
                raise cmaf.BoxError(f"{len(split.fragments)} fragments in one part")
            timescale = cmaf.track_timescale(split.init)
            info = cmaf.fragment_info(split.fragments[0], cmaf.trex_default_duration(split.init))
            if not o.init:
                o.init, o.init_hash = split.init, hashlib.sha256(split.init).hexdigest()
                if o.rendition["media_type"] == "VIDEO":
                    o.rendition["codecs"] = cmaf.avc_codecs(split.init)
            elif split.init != o.init:
                raise cmaf.BoxError("init segment changed inside the GOP")
        except cmaf.BoxError as exc:
            raise TranscodeError(f"muxer output unreadable for {name}: {exc}", "encode") from exc
        frag = split.fragments[0]
        index = o.parts
        o.sizes.append(len(frag))
        o.durations.append(info.duration / timescale)
        o.timescale = timescale
        o.next_pts = info.base_media_decode_time + info.duration
        peak, average = bitrates(o.sizes, o.durations)  # over the segment so far
        independent = info.first_sample_sync if sync_first else True  # audio: every part starts cleanly
        o.closed = last
        return self._base(o, chunk, started_ms) | {
            "rendition": {**o.rendition, "bandwidth": peak, "average_bandwidth": average},
            "pts": info.base_media_decode_time, "duration": info.duration, "timescale": timescale,
            "data": frag, "parts": [{"duration": info.duration / timescale, "offset": 0, "length": len(frag),
                                     "independent": bool(independent)}],
            "part_index": index, "is_last_part": last,
        }

    def _base(self, o: _Rendition, chunk: dict[str, Any], started_ms: int) -> dict[str, Any]:
        return {
            "stream_id": self.gop["stream_id"], "gop_index": self.gop["gop_index"], "epoch": self.gop.get("epoch", 0),
            "capture_wallclock_ms": self.gop["capture_wallclock_ms"],
            "ingest_published_ms": chunk.get("published_wallclock_ms", 0), "encode_started_ms": started_ms,
            "encoded_wallclock_ms": _now_ms(), "init_hash": o.init_hash, "init_segment": o.init,
        }

    def _closing(self, chunk: dict[str, Any], started_ms: int) -> list[dict[str, Any]]:
        """A closing record for every rendition that has parts but was not closed by its last one."""
        out = []
        for o in self.out.values():
            if o.closed or not o.parts:
                continue
            o.closed = True
            peak, average = bitrates(o.sizes, o.durations)
            out.append(self._base(o, chunk, started_ms) | {
                "rendition": {**o.rendition, "bandwidth": peak, "average_bandwidth": average},
                "pts": o.next_pts, "duration": 0, "timescale": o.timescale, "data": b"", "parts": [],
                "part_index": o.parts, "is_last_part": True,
            })
        return out


def assemble(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """A GOP's chunks (in chunk order, from chunk 0) as one whole GopChunk record."""
    if not chunks or chunks[0].get("chunk_index", 0) != 0:
        raise TranscodeError("a GOP needs its chunk 0", "invalid")
    first = chunks[0]
    return {**first, "chunk_index": 0, "is_last_chunk": True,
            "duration": sum(c["duration"] for c in chunks),
            "video_packets": [p for c in chunks for p in c["video_packets"]],
            "audio_packets": [p for c in chunks for p in c["audio_packets"]],
            "published_wallclock_ms": max(c.get("published_wallclock_ms", 0) for c in chunks)}
