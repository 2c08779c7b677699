"""Synthetic feed: moving pattern, burnt-in wall-clock (ms) + frame counter, 1 kHz tone.

The timeline is anchored to the wall clock: a frame captured at Unix time t has pts = t * 90000
(1/90000 since the epoch), GOP boundaries fall on multiples of the GOP duration, and the audio
sample n is sample n since the epoch. So a primary and a backup agent started at different moments
produce the same (stream_id, gop_index) for the same instants, and the same frames.

The clock is burnt in twice: as digits for people, and as a two-row binary strip (48 bits of ms,
24 bits of frame counter + 8 check bits) that `read_clock` decodes from a decoded frame, even after
the ladder's downscale, for glass-to-glass measurements.

`TestPatternSource` is the agent's live, paced source; `generate_gops` makes the same GOPs as fast
as the CPU allows, without Kafka, for tests and benches.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from producers.media import FeedSession, MediaPacket, StreamInfo

TICKS = 90000
MS_BITS, FRAME_BITS, CHECK_BITS = 48, 24, 8
STRIP_CELLS = MS_BITS  # cells per row; row 2 carries frame counter + check bits

_FONT = {  # 5x7 bitmap font: digits and a few signs
    "0": "01110 10001 10011 10101 11001 10001 01110", "1": "00100 01100 00100 00100 00100 00100 01110",
    "2": "01110 10001 00001 00010 00100 01000 11111", "3": "11110 00001 00001 01110 00001 00001 11110",
    "4": "00010 00110 01010 10010 11111 00010 00010", "5": "11111 10000 11110 00001 00001 10001 01110",
    "6": "00110 01000 10000 11110 10001 10001 01110", "7": "11111 00001 00010 00100 01000 01000 01000",
    "8": "01110 10001 10001 01110 10001 10001 01110", "9": "01110 10001 10001 01111 00001 00010 01100",
    " ": "00000 00000 00000 00000 00000 00000 00000", "#": "01010 01010 11111 01010 11111 01010 01010",
    ":": "00000 01100 01100 00000 01100 01100 00000", ".": "00000 00000 00000 00000 00000 01100 01100",
    "-": "00000 00000 00000 11111 00000 00000 00000",
}
_GLYPHS = {c: np.array([[b == "1" for b in row] for row in s.split()], dtype=bool) for c, s in _FONT.items()}


@dataclass(frozen=True)
class TestSpec:
    __test__ = False  # not a pytest class

    width: int = 640
    height: int = 360
    fps: int = 30
    gop_seconds: float = 2.0

    def __post_init__(self) -> None:
        if self.width % 2 or self.height % 2 or self.width < 128 or self.height < 72:
            raise ValueError(f"testsrc size {self.width}x{self.height}: need even sizes of at least 128x72")
        if self.fps <= 0 or TICKS % self.fps:
            raise ValueError(f"testsrc fps {self.fps}: must divide 90000 (e.g. 24, 25, 30, 50, 60)")
        frames = self.gop_seconds * self.fps
        if self.gop_seconds <= 0 or abs(frames - round(frames)) > 1e-9:
            raise ValueError(f"GOP of {self.gop_seconds} s is not a whole number of frames at {self.fps} fps")

    @property
    def frame_ticks(self) -> int:
        return TICKS // self.fps

    @property
    def frames_per_gop(self) -> int:
        return round(self.gop_seconds * self.fps)

    @property
    def gop_ticks(self) -> int:
        return self.frames_per_gop * self.frame_ticks


log = logging.getLogger("producers.sources.testsrc")
_SOURCE_RE = re.compile(r"^testsrc(?::(\d+)x(\d+)(?:@(\d+))?)?$")


def parse_source(src: str, gop_seconds: float) -> TestSpec:
    """`testsrc[:WxH[@FPS]]` -> TestSpec (default 640x360@30)."""
    m = _SOURCE_RE.match(src)
    if not m:
        raise ValueError(f"bad test source {src!r}: expected testsrc[:1920x1080@30]")
    w, h, fps = m.groups()
    return TestSpec(int(w or 640), int(h or 360), int(fps or 30), gop_seconds)


# --- pure rendering ------------------------------------------------------------------------------
class PatternRenderer:
    """Renders yuv420p frames as one (h*3/2, w) uint8 array: cheap enough for 1080p30 in real time."""

    def __init__(self, width: int, height: int) -> None:
        self.w, self.h = width, height
        x = np.arange(2 * width)
        bars = (x * 8 // width) % 8  # eight bars repeated over twice the width, scrolled per frame
        ys = np.array([235, 210, 170, 145, 106, 81, 41, 16], np.uint8)
        us = np.array([128, 16, 166, 54, 202, 90, 240, 128], np.uint8)
        vs = np.array([128, 146, 16, 34, 222, 240, 110, 128], np.uint8)
        self.bar_y, self.bar_u, self.bar_v = ys[bars], us[bars[::2]], vs[bars[::2]]
        self.cell = max(2, width // (STRIP_CELLS + 4))
        self.row_h = max(2, height // 40)
        self.scale = max(1, height // 120)

    def render(self, frame_no: int, wallclock_ms: int) -> np.ndarray:
        w, h = self.w, self.h
        buf = np.empty((h * 3 // 2, w), np.uint8)
        flat = buf.reshape(-1)
        y = buf[:h]
        cs = (h // 2) * (w // 2)
        u = flat[h * w: h * w + cs].reshape(h // 2, w // 2)
        v = flat[h * w + cs: h * w + 2 * cs].reshape(h // 2, w // 2)
        shift = (frame_no * 4) % w
        y[:] = self.bar_y[shift: shift + w]
        u[:] = self.bar_u[shift // 2: shift // 2 + w // 2]
        v[:] = self.bar_v[shift // 2: shift // 2 + w // 2]
        # a box bouncing across the lower half, so motion is visible and costs the encoder something
        size = h // 6
        period = max(1, (w - size) * 2)
        pos = (frame_no * 6) % period
        bx = pos if pos < w - size else period - pos
        by = h // 2 + int((h // 2 - size - 1) * (0.5 + 0.5 * math.sin(frame_no / 15)))
        y[by: by + size, bx: bx + size] = 250
        u[by // 2: (by + size) // 2, bx // 2: (bx + size) // 2] = 90
        v[by // 2: (by + size) // 2, bx // 2: (bx + size) // 2] = 240
        self._strip(y, u, v, wallclock_ms, frame_no)
        text = f"{_fmt_clock(wallclock_ms)} {wallclock_ms % 1000:03d} #{frame_no:07d}"
        self._text(y, u, v, text, x0=self.cell * 2, y0=self.row_h * 3)
        return buf

    def _strip(self, y: np.ndarray, u: np.ndarray, v: np.ndarray, ms: int, frame_no: int) -> None:
        c, rh, x0 = self.cell, self.row_h, self.cell * 2
        y[: rh * 3, :] = 128
        u[: rh * 3 // 2 + 1, :] = 128
        v[: rh * 3 // 2 + 1, :] = 128
        for row, bits in enumerate(strip_bits(ms, frame_no)):
            top = row * rh + rh // 2
            for i, b in enumerate(bits):
                y[top: top + rh, x0 + i * c: x0 + (i + 1) * c] = 235 if b else 16

    def _text(self, y: np.ndarray, u: np.ndarray, v: np.ndarray, text: str, x0: int, y0: int) -> None:
        s = self.scale
        gw, gh = 6 * s, 8 * s
        width = min(len(text) * gw + 2 * s, self.w - x0)
        y[y0 - s: y0 + gh, x0 - s: x0 - s + width] = 16
        u[(y0 - s) // 2: (y0 + gh) // 2, (x0 - s) // 2: (x0 - s + width) // 2] = 128
        v[(y0 - s) // 2: (y0 + gh) // 2, (x0 - s) // 2: (x0 - s + width) // 2] = 128
        for i, ch in enumerate(text):
            g = _GLYPHS.get(ch, _GLYPHS[" "])
            gx = x0 + i * gw
            if gx + 5 * s > self.w:
                break
            big = np.kron(g, np.ones((s, s), dtype=bool))
            region = y[y0: y0 + 7 * s, gx: gx + 5 * s]
            region[big] = 235


def _fmt_clock(ms: int) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(ms // 1000))


def _check(ms: int, frame_no: int) -> int:
    total = sum((ms >> (8 * i)) & 0xFF for i in range(6)) + sum((frame_no >> (8 * i)) & 0xFF for i in range(3))
    return (total + 0xA5) & 0xFF  # the offset makes an all-black or all-white strip invalid


def strip_bits(ms: int, frame_no: int) -> tuple[list[int], list[int]]:
    ms &= (1 << MS_BITS) - 1
    frame_no &= (1 << FRAME_BITS) - 1
    row1 = [(ms >> (MS_BITS - 1 - i)) & 1 for i in range(MS_BITS)]
    word = (frame_no << CHECK_BITS) | _check(ms, frame_no)
    n = FRAME_BITS + CHECK_BITS
    row2 = [(word >> (n - 1 - i)) & 1 for i in range(n)]
    return row1, row2


def read_clock(y_plane: np.ndarray, source_width: int | None = None) -> tuple[int, int] | None:
    """Decode (wallclock_ms, frame_no) from a decoded frame's luma plane (any scale); None if unreadable.

    `source_width` is the width the pattern was rendered at (cell geometry); by default the
    strip is assumed to span the frame proportionally, which holds for scaled renditions.
    """
    h, w = y_plane.shape[:2]
    ref_w = source_width or w
    ref_cell = max(2, ref_w // (STRIP_CELLS + 4))
    cell = ref_cell * w / ref_w
    # row height was derived from the rendered height; recover it from the aspect ratio
    ref_h = round(h * ref_w / w)
    rh = max(2, ref_h // 40) * h / ref_h
    out_rows = []
    for row, n in ((0, MS_BITS), (1, FRAME_BITS + CHECK_BITS)):
        yc = int(row * rh + rh // 2 * (h / ref_h) + rh / 2)
        yc = min(max(yc, 0), h - 1)
        bits = []
        for i in range(n):
            xc = int(cell * 2 + (i + 0.5) * cell)
            if xc >= w:
                return None
            bits.append(1 if float(y_plane[yc, xc]) > 128 else 0)
        out_rows.append(bits)
    ms = int("".join(map(str, out_rows[0])), 2)
    word = int("".join(map(str, out_rows[1])), 2)
    frame_no, check = word >> CHECK_BITS, word & 0xFF
    if _check(ms, frame_no) != check:
        return None
    return ms, frame_no


def tone(first_sample: int, n: int, sample_rate: int = 48000, freq: float = 1000.0, channels: int = 2
         ) -> np.ndarray:
    """A sine from absolute sample numbers, so any agent renders the same samples for the same instants."""
    t = (np.arange(first_sample, first_sample + n) % sample_rate) / sample_rate
    x = (0.25 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.tile(x, (channels, 1))


# --- the feed --------------------------------------------------------------------------------------
class TestPatternFeed:
    """Produces MediaPackets (video + audio) for whole GOPs on the wall-clock-anchored timeline."""

    __test__ = False  # not a pytest class

    def __init__(self, spec: TestSpec, preset: str = "ultrafast", threads: int = 0,
                 sample_rate: int = 48000) -> None:
        from producers.encode.gopencoder import AacEncoder, VideoGopEncoder

        self.spec = spec
        self.renderer = PatternRenderer(spec.width, spec.height)
        self.venc = VideoGopEncoder(spec.width, spec.height, Fraction(spec.fps), preset=preset, threads=threads)
        self.aenc = AacEncoder(sample_rate)
        self.sample_rate = sample_rate
        self._next_sample: int | None = None
        self.skipped_gops = 0

    def first_gop_at(self, start_ms: int) -> int:
        """Index of the first GOP starting at or after `start_ms` (the feed starts on a boundary)."""
        start_ticks = start_ms * (TICKS // 1000)
        return -(-start_ticks // self.spec.gop_ticks)

    def frame_pts(self, gop_index: int, i: int) -> int:
        return gop_index * self.spec.gop_ticks + i * self.spec.frame_ticks

    def render_frame(self, pts: int) -> Any:
        import av

        ms = pts // (TICKS // 1000)
        frame_no = pts // self.spec.frame_ticks
        arr = self.renderer.render(frame_no, ms)
        return av.VideoFrame.from_ndarray(arr, format="yuv420p")

    def video_frame(self, gop_index: int, i: int) -> list:
        """Render and encode frame i of a GOP; returns the packets it produced."""
        pts = self.frame_pts(gop_index, i)
        return self.venc.encode(self.render_frame(pts), pts, new_gop=(i == 0), wallclock_ms=pts // 90)

    def audio_until(self, pts_90k: int) -> list:
        """Encode audio up to (and a little past) video time `pts_90k`; returns AAC packets."""
        import av

        end_sample = pts_90k * self.sample_rate // TICKS
        out = []
        if self._next_sample is None:
            # start one GOP-aligned instant: the first sample of the first video frame
            self._next_sample = (end_sample // self.aenc.frame_size) * self.aenc.frame_size
            return out
        while self._next_sample < end_sample:
            n = self.aenc.frame_size
            fr = av.AudioFrame.from_ndarray(tone(self._next_sample, n, self.sample_rate), format="fltp",
                                            layout="stereo")
            fr.sample_rate = self.sample_rate
            fr.pts = self._next_sample
            fr.time_base = Fraction(1, self.sample_rate)
            out += self.aenc.encode(fr)
            self._next_sample += n
        return out

    def make_chunker(self, stream_id: str, ingest_id: str, on_event: Callable | None = None,
                     part_seconds: float | None = None) -> Any:
        from producers.gop.chunker import GopChunker

        return GopChunker(stream_id, ingest_id, self.venc.params(), self.aenc.params(), Fraction(1, TICKS),
                          Fraction(1, self.sample_rate), gop_ticks=self.spec.gop_ticks, grid=True, on_event=on_event,
                          part_seconds=part_seconds)

    def packets(self, first_gop: int, gops: int | None, live: bool = False) -> Iterator[tuple[int, list]]:
        """Yield (pts of the frame, packets) frame by frame, audio kept ~2 AAC frames ahead of video.

        `live`: like a camera, never fall far behind the wall clock. When the CPU cannot keep up and
        the GOP to render ended more than one GOP ago, skip to the current one (a gap in gop_index,
        logged and counted).
        """
        g = first_gop
        lead = 2 * self.aenc.frame_size * TICKS // self.sample_rate + 1
        self.audio_until(self.frame_pts(g, 0))
        while gops is None or g < first_gop + gops:
            if live:
                now_gop = int(time.time() * TICKS) // self.spec.gop_ticks
                if now_gop > g + 1:  # tolerate one GOP of lag (a busy moment), not more
                    end = now_gop if gops is None else min(now_gop, first_gop + gops)
                    log.warning("testsrc behind real time: skipped GOPs", extra={"from": g, "to": end,
                                                                                "skipped": end - g})
                    self.skipped_gops += end - g
                    g = end
                    if gops is not None and g >= first_gop + gops:
                        return
                    self._next_sample = None  # audio restarts with the video, on its grid
                    self.audio_until(self.frame_pts(g, 0))
            for i in range(self.spec.frames_per_gop):
                pts = self.frame_pts(g, i)
                pk = self.video_frame(g, i)
                pk += self.audio_until(pts + self.spec.frame_ticks + lead)
                yield pts, pk
            g += 1

    def flush(self) -> list:
        return self.venc.flush() + self.aenc.encode(None)


def generate_gops(stream_id: str, seconds: float, width: int = 640, height: int = 360, fps: int = 30,
                  gop_seconds: float = 2.0, ingest_id: str = "primary", start_ms: int | None = None,
                  preset: str = "ultrafast", part_seconds: float | None = None) -> list[dict[str, Any]]:
    """Complete GopChunk record dicts for `seconds` of test pattern, as fast as the CPU allows.

    Deterministic for equal arguments (pass start_ms; by default it is now). The first GOP starts
    on the first GOP boundary at or after start_ms; `seconds` is rounded down to whole GOPs (min 1).
    No Kafka, no pacing: for tests and benchmarks of the stages downstream. With `part_seconds` each
    GOP comes as the sub-GOP chunks a LOW-latency agent publishes.
    """
    spec = TestSpec(width, height, fps, gop_seconds)
    feed = TestPatternFeed(spec, preset=preset)
    n = max(1, int(seconds / gop_seconds + 1e-9))
    first = feed.first_gop_at(int(time.time() * 1000) if start_ms is None else start_ms)
    chunker = feed.make_chunker(stream_id, ingest_id, part_seconds=part_seconds)
    out: list[dict[str, Any]] = []
    end_pts = feed.frame_pts(first + n, 0)
    for _pts, pkts in feed.packets(first, n):
        for p in pkts:
            out += chunker.push(p)
    # close the last GOP: remaining video, then audio up to its end (later audio is not ours)
    for p in feed.venc.flush():
        out += chunker.push(p)
    for p in feed.aenc.encode(None):
        if p.pts * TICKS // feed.sample_rate < end_pts:
            out += chunker.push(p)
    out += chunker.flush()
    return [g for g in out if g["gop_index"] < first + n]


# --- the source (the agent's live test pattern) -----------------------------------------------------
class TestPatternSource:
    """Real-time test pattern, wall-clock anchored: one endless session (or `duration_s` of GOPs)."""

    __test__ = False

    def __init__(self, spec: TestSpec, stop: threading.Event, duration_s: float | None = None,
                 preset: str = "ultrafast", threads: int = 0) -> None:
        self.spec = spec
        self.stop = stop
        self.duration_s = duration_s
        self.feed = TestPatternFeed(spec, preset=preset, threads=threads)

    def sessions(self) -> Iterator[FeedSession]:
        f = self.feed
        info = StreamInfo(f.venc.params(), f.aenc.params(), Fraction(1, TICKS), Fraction(1, f.sample_rate),
                          gop_ticks=self.spec.gop_ticks, produced_here=True,
                          label=f"testsrc {self.spec.width}x{self.spec.height}@{self.spec.fps}")
        gops = None if self.duration_s is None else max(1, int(self.duration_s / self.spec.gop_seconds + 1e-9))
        yield FeedSession(info, self._items(gops))

    def close(self) -> None:
        """Nothing to stop: the session ends with `stop` or after its GOPs."""

    def _items(self, gops: int | None) -> Iterator[MediaPacket]:
        f = self.feed
        first = f.first_gop_at(int(time.time() * 1000))
        end_pts = None if gops is None else f.frame_pts(first + gops, 0)
        for pts, pkts in f.packets(first, gops, live=True):
            # pace: a frame is "captured" at its own timestamp
            delay = pts / TICKS - time.time()
            if delay > 0 and self.stop.wait(delay):
                return
            if self.stop.is_set():
                return
            yield from pkts
        for p in f.venc.flush():
            yield p
        for p in f.aenc.encode(None):
            if end_pts is None or p.pts * TICKS // f.sample_rate < end_pts:
                yield p
