"""Anything FFmpeg demuxes: files and URLs, TCP/UDP MPEG-TS, and the private side of RTMP and SRT.

An H.264 + AAC feed passes through untouched (--normalize auto or never); every in-band SPS change
becomes a ParamsChange (resolution switch -> new epoch). Another codec is re-encoded by the
Normalizer on a fixed GOP grid with auto (the reason travels in StreamInfo.normalize_reason) and
refused with never; --normalize always re-encodes every feed.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from fractions import Fraction
from typing import Any

from producers.gop import h264
from producers.media import FeedProblem, FeedSession, MediaPacket, ParamsChange, SourceError, StreamInfo

log = logging.getLogger("producers.sources.demux")


def _now_ms() -> int:
    return int(time.time() * 1000)


def free_port() -> int:
    """A free TCP port on the loopback (the private side of a listener; tests pick ports with it too)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def video_params(stream: Any) -> dict[str, Any]:
    cc = stream.codec_context
    rate = stream.average_rate or stream.guessed_rate or Fraction(30)
    rate = Fraction(rate).limit_denominator(1001)
    return {"codec": cc.name, "width": cc.width, "height": cc.height, "frame_rate_num": rate.numerator,
            "frame_rate_den": rate.denominator, "extradata": bytes(cc.extradata or b"")}


def audio_params(stream: Any) -> dict[str, Any]:
    cc = stream.codec_context
    return {"codec": cc.name, "sample_rate": cc.sample_rate, "channels": cc.channels,
            "extradata": bytes(cc.extradata or b""), "time_base_num": stream.time_base.numerator,
            "time_base_den": stream.time_base.denominator}


class DemuxSource:
    """Anything FFmpeg demuxes. `listen` sources accept one pusher at a time, forever."""

    def __init__(self, url: str, stop: threading.Event, *, options: dict[str, str] | None = None,
                 listen: bool = False, pace: bool = False, loop: bool = False, normalize: Any = None,
                 open_timeout: float = 3.0, read_timeout: float = 10.0, label: str = "",
                 on_bad_input: Callable[[str], None] | None = None, poke: tuple[str, int] | None = None) -> None:
        self.url, self.stop = url, stop
        # live feeds: probe 1 s, not FFmpeg's default 5 s, so a pusher is on air quickly
        self.options = ({"analyzeduration": "1000000", "probesize": "1000000"} if listen else {}) | dict(options or {})
        self.listen, self.pace, self.loop, self.normalize = listen, pace, loop, normalize
        self.open_timeout, self.read_timeout, self.label = open_timeout, read_timeout, label or url
        self.on_bad_input = on_bad_input or (lambda reason: None)
        self.sessions_opened = 0
        # A TCP/RTMP listener blocks in av.open until a pusher connects and the probe is done; a short
        # open timeout would abort a pusher mid-probe. So it waits long, and on stop we "poke" the
        # listening port ourselves: the empty connection fails the open at once and the loop sees stop.
        self.poke = poke
        if poke is not None:
            self.open_timeout = max(self.open_timeout, 30.0)

    def close(self) -> None:
        """Nothing of its own to stop: the sessions end with `stop` (kinds with a gate or relay stop it here)."""

    def _poker(self, done: threading.Event) -> None:
        self.stop.wait()
        while not done.is_set():
            try:
                with socket.create_connection(self.poke, timeout=1):  # type: ignore[arg-type]
                    pass
            except OSError:
                pass
            done.wait(0.5)

    def sessions(self) -> Iterator[FeedSession]:
        done = threading.Event()
        if self.poke is not None:
            threading.Thread(target=self._poker, args=(done,), name="listener-poke", daemon=True).start()
        try:
            yield from self._sessions()
        finally:
            done.set()

    def _sessions(self) -> Iterator[FeedSession]:
        import av

        while not self.stop.is_set():
            try:
                container = av.open(self.url, options=self.options, timeout=(self.open_timeout, self.read_timeout))
            except av.error.ExitError:
                if self.listen:
                    continue  # nobody connected within open_timeout: check stop, listen again
                raise
            except (av.error.FFmpegError, OSError) as exc:
                if not self.listen:
                    raise SourceError(f"cannot open {self.label}: {exc}") from exc
                if _is_timeout(exc) or self.stop.is_set():
                    continue
                log.warning("bad input on listener, listening again", extra={"source": self.label,
                                                                              "reason": str(exc)})
                self.on_bad_input(f"open failed: {exc}")
                continue
            self.sessions_opened += 1
            try:
                session = self._session(container)
            except FeedProblem as exc:
                container.close()
                if not self.listen:
                    raise
                log.warning("feed refused: %s", exc, extra={"source": self.label})
                self.on_bad_input(f"feed refused: {exc}")
                continue
            except Exception as exc:  # noqa: BLE001 - e.g. no video stream: refuse this feed, keep listening
                container.close()
                if not self.listen:
                    raise SourceError(f"{self.label}: {exc}") from exc
                log.warning("feed refused", extra={"source": self.label, "reason": str(exc)})
                self.on_bad_input(str(exc))
                continue
            yield session
            if not self.listen:
                return

    def _session(self, container: Any) -> FeedSession:
        if not container.streams.video:
            raise FeedProblem("the feed has no video stream")
        vs = container.streams.video[0]
        aus = container.streams.audio[0] if container.streams.audio else None
        wrap = 33 if container.format.name == "mpegts" else None
        vp = video_params(vs)
        ap = audio_params(aus) if aus is not None else None
        codecs = codec_problem(vp, ap)
        mode = getattr(self.normalize, "mode", "always")
        if self.normalize is not None and (mode == "always" or codecs):
            from producers.encode.normalize import Normalizer

            norm = Normalizer(vs, aus, self.normalize)
            info = norm.info(label=self.label, reason=codecs or "--normalize always")
            items = norm.run(self._packets(container, vs, aus))
            return FeedSession(info, items, container.close)
        if codecs:
            raise FeedProblem(f"{codecs}; use --normalize auto (the default) or always to re-encode it")
        cfg = h264.parse_extradata(vp["extradata"])
        info = StreamInfo(vp, ap, Fraction(vs.time_base), Fraction(aus.time_base) if aus is not None else None,
                          wrap_bits=wrap, length_size=cfg.length_size, label=self.label)
        return FeedSession(info, self._passthrough(container, vs, aus, info, cfg), container.close)

    def _packets(self, container: Any, vs: Any, aus: Any) -> Iterator[tuple[Any, int, int]]:
        """(packet, video_offset, audio_offset) paced and looped; ends on EOF, error or stop."""
        import av

        streams = [s for s in (vs, aus) if s is not None]
        voff = aoff = 0
        t0: float | None = None
        first_dts: Fraction | None = None
        while not self.stop.is_set():
            first_v: int | None = None
            end_v: int | None = None
            try:
                for pkt in container.demux(streams):
                    if self.stop.is_set():
                        return
                    if pkt.size == 0 or (pkt.pts is None and pkt.dts is None):
                        continue
                    if pkt.stream is vs and pkt.pts is not None:
                        first_v = pkt.pts if first_v is None else min(first_v, pkt.pts)
                        e = pkt.pts + (pkt.duration or 0)
                        end_v = e if end_v is None else max(end_v, e)
                    if self.pace:
                        ts = pkt.dts if pkt.dts is not None else pkt.pts
                        off = voff if pkt.stream is vs else aoff
                        t = Fraction(ts + off) * pkt.stream.time_base
                        if t0 is None or first_dts is None:
                            t0, first_dts = time.monotonic(), t
                        delay = t0 + float(t - first_dts) - time.monotonic()
                        if delay > 0 and self.stop.wait(delay):
                            return
                    yield pkt, voff, aoff
            except (av.error.FFmpegError, OSError) as exc:
                if isinstance(exc, av.error.ExitError):  # the read timeout: the feed went quiet
                    log.info("feed quiet: ending this session", extra={"source": self.label,
                                                                        "read_timeout_s": self.read_timeout})
                elif _is_eof(exc):
                    log.info("feed ended", extra={"source": self.label, "reason": str(exc)})
                else:
                    log.warning("feed read error: ending this session", extra={"source": self.label,
                                                                               "reason": str(exc)})
                    self.on_bad_input(f"read error: {exc}")
                return
            if not self.loop or first_v is None or end_v is None:
                return
            # loop with continuous timestamps: shift the next pass by this pass's duration
            span = end_v - first_v
            voff += span
            aoff += int(Fraction(span) * vs.time_base / aus.time_base) if aus is not None else 0
            container.seek(0)

    def _passthrough(self, container: Any, vs: Any, aus: Any, info: StreamInfo, cfg: h264.AvcConfig
                     ) -> Iterator[MediaPacket | ParamsChange]:
        current_sps = cfg.sps[0] if cfg.sps else None
        for pkt, voff, aoff in self._packets(container, vs, aus):
            data = bytes(pkt)
            pts = pkt.pts if pkt.pts is not None else pkt.dts
            dts = pkt.dts if pkt.dts is not None else pts
            if pkt.stream is vs:
                if pkt.is_keyframe:
                    sps = h264.sps_in(data, info.length_size)
                    if sps is not None and sps != current_sps:
                        change = self._sps_change(sps, data, info, current_sps)
                        current_sps = sps
                        if change is not None:
                            yield change
                yield MediaPacket("video", pts + voff, dts + voff, data, bool(pkt.is_keyframe),
                                  int(pkt.duration or 0), _now_ms())
            else:
                yield MediaPacket("audio", pts + aoff, dts + aoff, data, True, int(pkt.duration or 0))

    def _sps_change(self, sps: bytes, data: bytes, info: StreamInfo, old: bytes | None) -> ParamsChange | None:
        try:
            new = h264.parse_sps(sps)
        except (ValueError, IndexError):
            return None
        if old is None:
            return None
        try:
            prev = h264.parse_sps(old)
        except (ValueError, IndexError):
            prev = None
        pps = next((n for n in h264.nal_units(data, info.length_size) if n and n[0] & 0x1F == h264.NAL_PPS), b"")
        video = dict(info.video, width=new.width, height=new.height)
        if info.length_size is None:  # Annex B: extradata is start-code SPS + PPS
            video["extradata"] = b"\x00\x00\x00\x01" + sps + (b"\x00\x00\x00\x01" + pps if pps else b"")
        info.video = video
        what = f"{prev.width}x{prev.height} -> {new.width}x{new.height}" if prev else "new SPS"
        return ParamsChange(video, info.audio, f"coding parameters changed ({what})")


def codec_problem(video: dict[str, Any], audio: dict[str, Any] | None) -> str | None:
    """Why a feed cannot pass through as it is (None: H.264 video, AAC or no audio)."""
    if video["codec"] != "h264":
        return f"video codec is {video['codec']}, not H.264"
    if audio is not None and audio["codec"] != "aac":
        return f"audio codec is {audio['codec']}, not AAC"
    return None


def _is_eof(exc: BaseException) -> bool:
    import av

    return isinstance(exc, (av.error.EOFError,)) or getattr(exc, "errno", None) in (5, 32, 104)


def _is_timeout(exc: BaseException) -> bool:
    return getattr(exc, "errno", None) in (110, 60) or "timed out" in str(exc).lower()
