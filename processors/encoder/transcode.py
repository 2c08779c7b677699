"""GOP -> CMAF rendition segments, without Kafka: decode once, one encode thread per rung.

`transcode_gop` is the callable other roles use (packager tests, replay). Each call opens fresh
decoders, encoders and muxers, so any process can transcode any GOP with no state from the previous
one (DESIGN 3.2), and equal parameters give byte-identical init segments (DESIGN 3.4).

Threads, not processes: PyAV releases the GIL inside libx264 and swscale, so one thread per rung
keeps both cores busy (MEDIA-NOTES: 72.6 fps vs 57.6 for one ffmpeg command). Each rung owns its
scale graph (never VideoFrame.reformat() on a shared frame: from several threads it deadlocks).
x264 itself runs one thread per rung by default: with frame threads and VBV its output differs from
run to run (measured: 6 distinct outputs in 6 runs of one GOP), which breaks idempotent re-processing.
"""

from __future__ import annotations

import ctypes.util
import hashlib
import logging
import queue
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import av
import av.filter

from processors.encoder import aac, cmaf
from processors.encoder.ladder import bitrates, select_rungs, x264_options
from schemas.errors import FloodlightError

log = logging.getLogger("floodlight.encoder.transcode")
VIDEO_TIMESCALE = 90000
MOVFLAGS = "empty_moov+default_base_moof+cmaf+frag_discont+skip_trailer+frag_keyframe"
QUEUE_DEPTH = 12  # decoded frames buffered per rung (shared, 3 MB each at 1080p): absorbs scheduling jitter
_DONE = object()


def keep_freed_memory() -> bool:
    """Make glibc keep freed heap memory instead of handing it back to the kernel (call once, at start).

    A fresh libx264 encoder per GOP and rung allocates its frame buffers (~3 MB each at 1080p) and frees
    them a GOP later; glibc's dynamic thresholds then return the pages to the kernel, and the next GOP
    faults them in again, zero-filled: ~240 page faults per frame, 2 ms/frame of system time at veryfast.
    A fixed 32 MiB mmap threshold and a 1 GiB trim threshold keep them: ~40 faults, 0.8 ms. Process-wide,
    so the encoder role calls it; False (and nothing changed) where there is no glibc mallopt."""
    path = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(path).mallopt if path else None
    except (OSError, AttributeError):
        return False
    if mallopt is None:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, 32 * 1024 * 1024)) and bool(mallopt(m_trim_threshold, 1 << 30))


class TranscodeError(FloodlightError):
    """A GOP that cannot be turned into segments. error_class is 'decode', 'encode' or 'invalid'."""

    def __init__(self, reason: str, error_class: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error_class = error_class


@dataclass
class RungTiming:
    """Seconds spent per rung (encode + mux), for metrics and the bench."""

    seconds: dict[str, float] = field(default_factory=dict)
    decode_seconds: float = 0.0
    # Set once the source GOP is fully decoded (its encoders may still be busy): a caller can start
    # decoding the next GOP then, overlapping this GOP's encode tail with the next one's start.
    decoded: threading.Event = field(default_factory=threading.Event)


class _Sink:
    """Write-only file object: without seek() FFmpeg treats the output as a pipe (MEDIA-NOTES)."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def write(self, data: bytes) -> int:
        self.buf += data
        return len(data)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _mux_options(part_seconds: float) -> dict[str, str]:
    return {"movflags": MOVFLAGS, "frag_duration": str(max(1, int(part_seconds * 1_000_000)))}


def _validate(gop: dict[str, Any]) -> None:
    packets = gop.get("video_packets") or []
    if not packets:
        raise TranscodeError("GOP has no video packets", "invalid")
    if not packets[0].get("keyframe"):
        raise TranscodeError("GOP does not start with a keyframe (not a closed GOP)", "invalid")
    if gop.get("time_base_num", 0) <= 0 or gop.get("time_base_den", 0) <= 0:
        raise TranscodeError("GOP has no valid time base", "invalid")
    video = gop.get("video") or {}
    if video.get("frame_rate_num", 0) <= 0 or video.get("frame_rate_den", 0) <= 0:
        raise TranscodeError("GOP has no valid frame rate", "invalid")
    if video.get("width", 0) <= 0 or video.get("height", 0) <= 0:
        raise TranscodeError("GOP has no valid video size", "invalid")


def _segment_record(gop: dict[str, Any], rendition: dict[str, Any], output: bytes, started_ms: int,
                    *, independent_all: bool) -> dict[str, Any]:
    """Split muxer output into init + parts and build the RenditionSegment dict."""
    try:
        split = cmaf.split_fmp4(output)
        timescale = cmaf.track_timescale(split.init)
        default_duration = cmaf.trex_default_duration(split.init)
        infos = [cmaf.fragment_info(f, default_duration) for f in split.fragments]
    except cmaf.BoxError as exc:
        raise TranscodeError(f"muxer output unreadable for {rendition['name']}: {exc}", "encode") from exc
    if not split.fragments:
        raise TranscodeError(f"no media produced for {rendition['name']}", "encode")
    parts: list[dict[str, Any]] = []
    offset = 0
    for i, (frag, info) in enumerate(zip(split.fragments, infos, strict=True)):
        parts.append({"duration": info.duration / timescale, "offset": offset, "length": len(frag),
                      "independent": independent_all or (i == 0 and info.first_sample_sync)})
        offset += len(frag)
    peak, average = bitrates([p["length"] for p in parts], [p["duration"] for p in parts])
    rendition = {**rendition, "bandwidth": peak, "average_bandwidth": average}
    return {
        "stream_id": gop["stream_id"],
        "rendition": rendition,
        "gop_index": gop["gop_index"],
        "epoch": gop.get("epoch", 0),
        "pts": infos[0].base_media_decode_time,
        "duration": sum(i.duration for i in infos),
        "timescale": timescale,
        "capture_wallclock_ms": gop["capture_wallclock_ms"],
        "ingest_published_ms": gop.get("published_wallclock_ms", 0),
        "encode_started_ms": started_ms,
        "encoded_wallclock_ms": _now_ms(),
        "init_hash": hashlib.sha256(split.init).hexdigest(),
        "init_segment": split.init,
        "data": b"".join(split.fragments),
        "parts": parts,
    }


class RungScaler:
    """Decoded frames -> one rung's size in yuv420p, through this rung's own libavfilter `scale` graph
    (bilinear), the filter the ffmpeg CLI runs, so the chroma siting is honoured (VideoReformatter
    shifts the chroma planes: -0.8 dB U/V PSNR at 240p against ffmpeg's scaling of the same frames).
    A frame already at the rung's size and format comes back untouched: it is shared read-only by the
    rungs, its pts/pict_type set once by the decoding thread. One per rung and thread (never
    VideoFrame.reformat() on a shared frame: from several threads it deadlocks)."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.graph: Any = None
        self.source: tuple[int, int, str] | None = None

    def _build(self, frame: Any) -> None:
        graph = av.filter.Graph()
        graph.threads = 1  # the rungs are the parallelism; slice threads would only oversubscribe
        src = graph.add_buffer(width=frame.width, height=frame.height, format=frame.format,
                               time_base=frame.time_base or Fraction(1, VIDEO_TIMESCALE))
        scale = graph.add("scale", f"{self.width}:{self.height}:flags=bilinear")
        fmt = graph.add("format", "yuv420p")
        sink = graph.add("buffersink")
        src.link_to(scale)
        scale.link_to(fmt)
        fmt.link_to(sink)
        graph.configure()
        self.graph = graph

    def __call__(self, frame: Any) -> Any:
        source = (frame.width, frame.height, frame.format.name)
        if source == (self.width, self.height, "yuv420p"):
            return frame
        if source != self.source:
            self._build(frame)
            self.source = source
        self.graph.push(frame)
        scaled = self.graph.pull()
        scaled.pts = frame.pts
        scaled.time_base = frame.time_base
        return scaled


class _RungEncoder:
    """One rung: its own scaler, libx264 encoder and mp4 muxer, fed frames by the decoder."""

    def __init__(self, gop: dict[str, Any], rung: dict[str, Any], *, preset: str, part_seconds: float,
                 frames_in_gop: int, x264_threads: int) -> None:
        self.gop = gop
        self.rung = rung
        self.queue: queue.Queue[Any] = queue.Queue(QUEUE_DEPTH)
        self.error: BaseException | None = None
        self.output = b""
        self.seconds = 0.0
        video = gop["video"]
        self.rate = Fraction(video["frame_rate_num"], video["frame_rate_den"])
        self.out_tb = Fraction(1, VIDEO_TIMESCALE)
        self.frame_ticks = int(round(VIDEO_TIMESCALE / self.rate))
        self.preset = preset
        self.part_seconds = part_seconds
        self.keyint = max(1, frames_in_gop)
        self.x264_threads = x264_threads
        self.future: Future[None] | None = None

    def start(self, slot: int) -> None:
        self.future = _rung_thread(slot).submit(self._run)

    def join(self) -> None:
        if self.future is not None:
            self.future.result()

    def _open(self) -> tuple[Any, Any, _Sink]:
        sink = _Sink()
        out = av.open(sink, "w", format="mp4", options=_mux_options(self.part_seconds))
        stream = out.add_stream("libx264", rate=self.rate)
        stream.width = self.rung["width"]
        stream.height = self.rung["height"]
        stream.pix_fmt = "yuv420p"
        stream.time_base = self.out_tb
        ctx = stream.codec_context
        ctx.time_base = self.out_tb
        ctx.bit_rate = self.rung["bitrate_kbps"] * 1000
        ctx.thread_count = self.x264_threads
        ctx.thread_type = "FRAME"  # x264 frame threads (as the ffmpeg CLI uses), not PyAV's default slices
        ctx.options = x264_options(self.preset, self.keyint, self.rung["bitrate_kbps"], self.rung["height"])
        return out, stream, sink

    def _run(self) -> None:
        out = None
        try:
            out, stream, sink = self._open()
            scaler = RungScaler(self.rung["width"], self.rung["height"])
            while True:
                frame = self.queue.get()
                if frame is _DONE:
                    break
                t0 = time.perf_counter()
                for packet in stream.encode(scaler(frame)):
                    self._mux(out, packet)
                self.seconds += time.perf_counter() - t0
            t0 = time.perf_counter()
            for packet in stream.encode(None):
                self._mux(out, packet)
            out.close()
            out = None
            self.output = bytes(sink.buf)
            self.seconds += time.perf_counter() - t0
        except BaseException as exc:  # noqa: BLE001 - reported to the caller; the queue must drain
            self.error = exc
            while self.queue.get() is not _DONE:
                pass
        finally:
            if out is not None:
                try:
                    out.close()
                except Exception:  # noqa: BLE001
                    pass

    def _mux(self, out: Any, packet: Any) -> None:
        if not packet.duration:
            packet.duration = self.frame_ticks
        out.mux(packet)


def _decode_frames(gop: dict[str, Any]):
    """Yield the GOP's decoded frames in presentation order (fresh decoder, extradata set)."""
    video = gop["video"]
    try:
        ctx = av.CodecContext.create(video["codec"], "r")
    except (av.FFmpegError, ValueError) as exc:
        raise TranscodeError(f"unsupported video codec {video['codec']!r}: {exc}", "decode") from exc
    if video.get("extradata"):
        ctx.extradata = video["extradata"]
    ctx.thread_type = "AUTO"  # frame threads too: the decoder is the one serial stage before the rungs
    tb = Fraction(gop["time_base_num"], gop["time_base_den"])
    count = 0
    try:
        for p in gop["video_packets"]:
            packet = av.Packet(p["data"])
            packet.pts = p["pts"]
            packet.dts = p["dts"]
            packet.time_base = tb
            for frame in ctx.decode(packet):
                count += 1
                yield frame
        for frame in ctx.decode(None):
            count += 1
            yield frame
    except av.FFmpegError as exc:
        raise TranscodeError(f"undecodable video: {exc}", "decode") from exc
    expected = len(gop["video_packets"])
    if count != expected:
        raise TranscodeError(f"undecodable video: {count} of {expected} frames decoded", "decode")


_rung_threads = threading.local()


def _rung_thread(slot: int) -> ThreadPoolExecutor:
    """The calling thread's own long-lived thread for rung `slot`. A rung keeps its thread from GOP to GOP
    (per caller: GOPs transcoded at once never share one), so glibc serves each GOP's fresh encoder from
    the arena that held the previous GOP's encoder of the same rung: the pages are already there. With a
    new thread per rung and GOP, arenas are handed round at random and keep growing into fresh pages: in the
    encoder process, two GOPs at once, 1.9 ms/frame of system time vs 1.1 with these threads (veryfast)."""
    pools = getattr(_rung_threads, "pools", None)
    if pools is None:
        pools = _rung_threads.pools = []
    while len(pools) <= slot:
        pools.append(ThreadPoolExecutor(1, thread_name_prefix=f"rung{len(pools)}"))
    return pools[slot]


def transcode_video(gop: dict[str, Any], rungs: list[dict[str, Any]], *, preset: str, part_seconds: float,
                    x264_threads: int = 1, timing: RungTiming | None = None) -> list[dict[str, Any]]:
    """Decode the GOP once and encode every rung in its own thread; one record per rung."""
    started_ms = _now_ms()
    encoders = [_RungEncoder(gop, r, preset=preset, part_seconds=part_seconds,
                             frames_in_gop=len(gop["video_packets"]), x264_threads=x264_threads) for r in rungs]
    for slot, enc in enumerate(encoders):
        enc.start(slot)
    decode_error: TranscodeError | None = None
    src_tb = Fraction(gop["time_base_num"], gop["time_base_den"])
    out_tb = Fraction(1, VIDEO_TIMESCALE)
    t0 = time.perf_counter()
    try:
        for frame in _decode_frames(gop):
            if frame.pts is None:
                raise TranscodeError("decoded frame has no timestamp", "decode")
            # Once, before the frame is shared: source timeline in the output timescale, and no
            # forced picture type (libx264 would copy the source's I/P/B decisions).
            frame.pts = int(round(frame.pts * src_tb * VIDEO_TIMESCALE))
            frame.time_base = out_tb
            frame.pict_type = av.video.frame.PictureType.NONE
            for enc in encoders:
                enc.queue.put(frame)
    except TranscodeError as exc:
        decode_error = exc
    finally:
        if timing is not None:
            timing.decoded.set()
        for enc in encoders:
            enc.queue.put(_DONE)
        for enc in encoders:
            enc.join()
    if timing is not None:
        timing.decode_seconds = time.perf_counter() - t0
        timing.seconds.update({e.rung["name"]: e.seconds for e in encoders})
    if decode_error is not None:
        raise decode_error
    records = []
    for enc in encoders:
        if enc.error is not None:
            raise TranscodeError(f"encode failed for {enc.rung['name']}: {enc.error}", "encode") from enc.error
        rendition = {
            "name": enc.rung["name"], "media_type": "VIDEO", "bandwidth": 0, "average_bandwidth": 0,
            "target_bitrate": enc.rung["bitrate_kbps"] * 1000, "width": enc.rung["width"],
            "height": enc.rung["height"], "frame_rate": float(enc.rate), "codecs": "", "sample_rate": 0,
            "channels": 0,
        }
        record = _segment_record(gop, rendition, enc.output, started_ms, independent_all=False)
        try:
            record["rendition"]["codecs"] = cmaf.avc_codecs(record["init_segment"])
        except cmaf.BoxError as exc:
            raise TranscodeError(f"no codecs string for {enc.rung['name']}: {exc}", "encode") from exc
        records.append(record)
    return records


def _audio_part_seconds(frames: int, sample_rate: int, part_seconds: float) -> float:
    """Fragment duration that splits the GOP's AAC frames (1024 samples each) into even parts,
    instead of full parts plus a one-frame sliver (frames never divide the part duration exactly)."""
    frame_s = 1024 / sample_rate
    n_parts = max(1, round(frames * frame_s / part_seconds))
    per_part = -(-frames // n_parts)  # ceil
    return max(frame_s / 2, (per_part - 0.5) * frame_s)


def transcode_audio(gop: dict[str, Any], *, part_seconds: float) -> dict[str, Any] | None:
    """Pass the GOP's AAC through into a CMAF segment (never re-encoded); None when it has no audio."""
    params = gop.get("audio")
    packets = gop.get("audio_packets") or []
    if not params or not packets:
        return None
    if params["codec"] != "aac":
        raise TranscodeError(f"audio codec {params['codec']!r} cannot pass through (aac only)", "invalid")
    started_ms = _now_ms()
    asc = params.get("extradata") or b""
    adts = aac.is_adts(packets[0]["data"])
    try:
        if adts:
            asc = aac.parse_adts(packets[0]["data"]).audio_specific_config()
        if not asc:
            raise TranscodeError("raw AAC without an AudioSpecificConfig", "invalid")
        sample_rate = aac.asc_sample_rate(asc) or params["sample_rate"]
        object_type = aac.asc_object_type(asc)
        src_tb = Fraction(params["time_base_num"], params["time_base_den"])
        sink = _Sink()
        out = av.open(sink, "w", format="mp4", options=_mux_options(_audio_part_seconds(
            len(packets), sample_rate, part_seconds)))
        try:
            template_container = av.open(_Sink(), "w", format="mp4")
            template = template_container.add_stream("aac", rate=sample_rate)
            stream = out.add_stream_from_template(template, opaque=True)
            ctx = stream.codec_context
            ctx.extradata = asc
            ctx.sample_rate = sample_rate
            ctx.layout = "stereo" if params["channels"] == 2 else ("mono" if params["channels"] == 1 else
                                                                     f"{params['channels']}c")
            stream.time_base = Fraction(1, sample_rate)
            last = None
            for p in packets:
                payload = aac.strip_adts(p["data"]) if adts else p["data"]
                pts = int(round(p["pts"] * src_tb * sample_rate))
                if last is not None and pts <= last:  # keep the track strictly increasing
                    continue
                last = pts
                packet = av.Packet(payload)
                packet.pts = packet.dts = pts
                packet.duration = 1024
                packet.time_base = stream.time_base
                packet.stream = stream
                out.mux(packet)
        finally:
            out.close()
    except aac.AdtsError as exc:
        raise TranscodeError(f"bad ADTS audio: {exc}", "decode") from exc
    except av.FFmpegError as exc:
        raise TranscodeError(f"audio mux failed: {exc}", "encode") from exc
    rendition = {
        "name": "audio", "media_type": "AUDIO", "bandwidth": 0, "average_bandwidth": 0, "target_bitrate": 0,
        "width": 0, "height": 0, "frame_rate": 0.0, "codecs": f"mp4a.40.{object_type}",
        "sample_rate": sample_rate, "channels": params["channels"],
    }
    return _segment_record(gop, rendition, bytes(sink.buf), started_ms, independent_all=True)


def transcode_gop(gop: dict[str, Any], ladder: list[dict[str, Any]], *, preset: str, part_seconds: float,
                  renditions: set[str] | None = None, x264_threads: int = 1,
                  timing: RungTiming | None = None) -> list[dict[str, Any]]:
    """Every rendition of one GopChunk as complete RenditionSegment dicts: one per video rung this
    source gets (never upscaled), then one for `audio` when the GOP carries audio.

    `renditions` limits the output to those names ('audio' included); None means all.
    Raises TranscodeError (with error_class) for a GOP that cannot be decoded or encoded.
    """
    try:
        return _transcode_gop(gop, ladder, preset=preset, part_seconds=part_seconds, renditions=renditions,
                              x264_threads=x264_threads, timing=timing)
    finally:
        if timing is not None:
            timing.decoded.set()


def _transcode_gop(gop: dict[str, Any], ladder: list[dict[str, Any]], *, preset: str, part_seconds: float,
                   renditions: set[str] | None, x264_threads: int, timing: RungTiming | None) -> list[dict[str, Any]]:
    _validate(gop)
    if not gop.get("is_last_chunk", True) or gop.get("chunk_index", 0) != 0:
        raise TranscodeError("sub-GOP chunks are not supported yet (need a whole GOP)", "invalid")
    video = gop["video"]
    rungs = select_rungs(ladder, video["width"], video["height"],
                         None if renditions is None else renditions - {"audio"})
    if renditions is not None and not (renditions - {"audio"}):
        rungs = []
    records = transcode_video(gop, rungs, preset=preset, part_seconds=part_seconds,
                              x264_threads=x264_threads, timing=timing) if rungs else []
    if renditions is None or "audio" in renditions:
        try:
            audio = transcode_audio(gop, part_seconds=part_seconds)
        except TranscodeError as exc:
            if not records:
                raise
            # The picture is fine: publish the video rungs rather than lose the GOP over its audio.
            log.warning("audio dropped for this GOP", extra={"stream_id": gop["stream_id"],
                                                            "gop_index": gop["gop_index"], "reason": exc.reason})
            audio = None
        if audio is not None:
            records.append(audio)
    return records
