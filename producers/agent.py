"""The ingest agent: source -> GOP chunker -> bounded buffer -> floodlight.gops.

Capture runs on the calling thread (PyAV work happens in C, releasing the GIL); publishing runs
on the GopPublisher thread, so a slow or absent broker never stalls capture (the buffer drops
its oldest GOPs past FLOODLIGHT_INGEST_BUFFER_SECONDS instead).
"""

from __future__ import annotations

import hmac
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, TextIO

from floodlight.settings import Settings
from producers import h264
from producers.chunker import FeedProblem, GopChunker
from producers.publisher import GopPublisher
from producers.sources import (
    DemuxSource,
    FeedSession,
    ParamsChange,
    SourceError,
    SourceSpec,
    SrtRelay,
    StreamInfo,
    TestPatternSource,
    parse_source,
)
from producers.telemetry import IngestStats, StatusPrinter

log = logging.getLogger("producers.agent")
GOP_SECONDS_BY_MODE = {"LOW": 1.0, "STANDARD": 2.0}  # 4 s segments put HOLD-BACK (3x) past the 10 s target
PRESET_BY_MODE = {"LOW": "ultrafast", "STANDARD": "veryfast"}

EXIT_OK, EXIT_USAGE, EXIT_REFUSED, EXIT_SOURCE = 0, 2, 3, 4


@dataclass
class AgentConfig:
    stream_id: str
    source: str
    ingest_id: str = "primary"
    normalize: bool = False
    gop_seconds: float | None = None
    duration: float | None = None
    use_registry: bool = True
    status_interval: float = 5.0
    preset: str | None = None  # venue x264 preset (testsrc, --normalize); default: ultrafast
    buffer_seconds: float | None = None


class AgentError(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class IngestAgent:
    def __init__(self, settings: Settings, cfg: AgentConfig, stop: threading.Event | None = None,
                 out: TextIO | None = None) -> None:
        self.settings, self.cfg = settings, cfg
        self.stop = stop or threading.Event()
        self.out = out or sys.stdout
        self.stats = IngestStats(cfg.stream_id, cfg.ingest_id)
        self.record: dict[str, Any] | None = None
        self.chunker: GopChunker | None = None
        self.publisher: GopPublisher | None = None
        self.media_seconds = 0.0
        self.refusals: list[str] = []
        self._relay: SrtRelay | None = None
        self._gate: Any = None

    # --- set-up -------------------------------------------------------------------------------
    def _load_record(self) -> None:
        from floodlight.registry import STREAM_ID_RE, RegistryView

        if not STREAM_ID_RE.match(self.cfg.stream_id):
            raise AgentError(f"invalid stream id {self.cfg.stream_id!r}: use [a-z0-9][a-z0-9-]{{0,99}}", EXIT_USAGE)
        if not self.cfg.use_registry:
            return
        view = RegistryView(self.settings).start()
        try:
            if not view.wait_caught_up(30):
                raise AgentError("stream registry not readable (is Kafka up?)", EXIT_SOURCE)
            rec = view.get(self.cfg.stream_id)
        finally:
            view.stop()
        if rec is None:
            raise AgentError(f"stream {self.cfg.stream_id!r} is not registered: create it first "
                             "(floodlight streams create) or run with --no-registry", EXIT_USAGE)
        if rec.get("status") == "ENDED":
            raise AgentError(f"stream {self.cfg.stream_id!r} has ENDED; refusing to ingest", EXIT_USAGE)
        self.record = rec

    def gop_seconds(self) -> float:
        if self.cfg.gop_seconds:
            return self.cfg.gop_seconds
        mode = (self.record or {}).get("latency_mode", "STANDARD")
        return GOP_SECONDS_BY_MODE.get(mode, 4.0)

    def verify_key(self, spec: SourceSpec) -> Callable[[str, str], bool]:
        """(app, presented key) -> allowed: registered hashes, or the literal key of --no-registry."""
        from floodlight.streamkeys import verify_stream_key

        hashes = [e["stream_key_hash"] for e in (self.record or {}).get("ingest_endpoints", [])
                  if e.get("stream_key_hash") and e.get("role", self.cfg.ingest_id) in (self.cfg.ingest_id, "")]
        if not hashes:
            hashes = [e["stream_key_hash"] for e in (self.record or {}).get("ingest_endpoints", [])
                      if e.get("stream_key_hash")]
        literal = spec.key

        def verify(_app: str, key: str) -> bool:
            if not key:
                return False
            if self.record is not None:
                if not hashes:
                    return literal is not None and hmac.compare_digest(key.encode(), literal.encode())
                return any(verify_stream_key(key, h) for h in hashes)
            return literal is not None and hmac.compare_digest(key.encode(), literal.encode())

        return verify

    def _source(self, spec: SourceSpec) -> Any:
        from producers.normalize import NormalizeSpec

        gop_s = self.gop_seconds()
        preset = self.cfg.preset or "ultrafast"
        norm = NormalizeSpec(gop_s, preset) if self.cfg.normalize else None
        bad = self._bad_input
        if spec.kind == "testsrc":
            from producers.testsrc import parse_source as parse_test

            return TestPatternSource(parse_test(spec.raw, gop_s), self.stop, self.cfg.duration, preset=preset)
        if spec.kind == "file":
            assert spec.path is not None
            return DemuxSource(str(spec.path), self.stop, pace=True, loop=spec.loop, normalize=norm,
                               label=f"file {spec.path.name}", on_bad_input=bad)
        if spec.kind == "rtmp":
            from producers.rtmpgate import RtmpGate

            if self.record is None and spec.key is None:
                raise AgentError("rtmp with --no-registry needs the key in the URL: rtmp://HOST:PORT/APP/KEY",
                                 EXIT_USAGE)
            backend = free_port()
            try:
                self._gate = RtmpGate(spec.host, spec.port, backend, spec.app, self.verify_key(spec),
                                      on_refused=lambda reason: bad("wrong_key", reason)).start()
            except OSError as exc:
                raise AgentError(f"cannot listen on {spec.host}:{spec.port}: {exc}", EXIT_SOURCE) from exc
            log.info("rtmp listening", extra={"stream_id": self.cfg.stream_id, "port": self._gate.port})
            if self.record is not None and not any(e.get("stream_key_hash") for e in
                                                   self.record.get("ingest_endpoints", [])) and spec.key is None:
                log.warning("no stream key registered for this stream: every push will be refused",
                            extra={"stream_id": self.cfg.stream_id})
            return DemuxSource(f"rtmp://127.0.0.1:{backend}/{spec.app}/ingest", self.stop, options={"listen": "1"},
                               listen=True, normalize=norm, label=f"rtmp :{spec.port}", on_bad_input=bad,
                               poke=("127.0.0.1", backend))
        if spec.kind == "srt":
            port = free_port()
            self._relay = SrtRelay(spec, port, self.stop).start()
            log.info("srt relay started", extra={"stream_id": self.cfg.stream_id, "port": spec.port})
            return DemuxSource(f"tcp://127.0.0.1:{port}?listen=1", self.stop, listen=True, normalize=norm,
                               label=f"srt :{spec.port}", on_bad_input=bad, poke=("127.0.0.1", port))
        if spec.kind == "tcp":
            listen = spec.query.get("listen", "1") != "0"
            url = f"tcp://{spec.host}:{spec.port}" + ("?listen=1" if listen else "")
            poke = ("127.0.0.1" if spec.host in ("0.0.0.0", "") else spec.host, spec.port) if listen else None
            return DemuxSource(url, self.stop, listen=True, normalize=norm, label=f"tcp :{spec.port}",
                               on_bad_input=bad, poke=poke)
        if spec.kind == "udp":
            # a quiet UDP feed ends its session after 3 s (and listening resumes), so stop is prompt too
            return DemuxSource(f"udp://{spec.host}:{spec.port}", self.stop, listen=True, normalize=norm,
                               label=f"udp :{spec.port}", on_bad_input=bad, read_timeout=3.0)
        raise AgentError(f"unsupported source kind {spec.kind}", EXIT_USAGE)

    def _bad_input(self, kind_or_reason: str, reason: str | None = None) -> None:
        kind = kind_or_reason if reason is not None else "unreadable"
        self.stats.bad_input(kind)
        self.refusals.append(reason or kind_or_reason)

    # --- the loop ------------------------------------------------------------------------------
    def run(self) -> int:
        try:
            spec = parse_source(self.cfg.source)
            self._load_record()
            source = self._source(spec)
        except ValueError as exc:
            print(f"floodlight ingest: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except AgentError as exc:
            print(f"floodlight ingest: {exc}", file=sys.stderr)
            return exc.code
        self.publisher = GopPublisher(self.settings, buffer_seconds=self.cfg.buffer_seconds,
                                      on_published=self.stats.published_one,
                                      on_dropped=self.stats.dropped_one,
                                      on_dead_letter=lambda gop, reason: self.stats.bad_input("dead_lettered")
                                      ).start()
        status = StatusPrinter(self.stats, self.publisher, self.out, self.cfg.status_interval)
        if self.cfg.status_interval > 0:
            status.start()
        log.info("ingest started", extra={"stream_id": self.cfg.stream_id, "ingest_id": self.cfg.ingest_id,
                                          "source": _redact(self.cfg.source), "gop_seconds": self.gop_seconds()})
        code = EXIT_OK
        try:
            for session in source.sessions():
                self.stats.session()
                try:
                    self._run_session(session)
                except FeedProblem as exc:
                    self.stats.bad_input("refused_feed")
                    self.refusals.append(str(exc))
                    log.error("feed refused: %s", exc, extra={"stream_id": self.cfg.stream_id,
                                                               "source": session.info.label})
                    if spec.kind in ("file", "testsrc"):
                        print(f"floodlight ingest: feed refused: {exc}", file=sys.stderr)
                        code = EXIT_REFUSED
                        break
                finally:
                    session.close()
                if self._done():
                    break
        except SourceError as exc:
            print(f"floodlight ingest: {exc}", file=sys.stderr)
            log.error("source failed", extra={"stream_id": self.cfg.stream_id, "reason": str(exc)})
            code = EXIT_SOURCE
        except FeedProblem as exc:  # refused before the first packet (codec, no video)
            self.stats.bad_input("refused_feed")
            self.refusals.append(str(exc))
            print(f"floodlight ingest: feed refused: {exc}", file=sys.stderr)
            log.error("feed refused: %s", exc, extra={"stream_id": self.cfg.stream_id})
            code = EXIT_REFUSED
        finally:
            self._finish(status)
        return code

    def _done(self) -> bool:
        return self.stop.is_set() or (self.cfg.duration is not None and self.media_seconds >= self.cfg.duration - 1e-6)

    def _chunker_for(self, info: StreamInfo) -> GopChunker:
        gop_ticks = info.gop_ticks  # None for natural feeds: learnt from the feed (--gop-seconds sets ours)
        idr = None if info.produced_here else (lambda data, ls=info.length_size: h264.has_idr(data, ls))
        return GopChunker(
            self.cfg.stream_id, self.cfg.ingest_id, info.video, info.audio, info.time_base, info.audio_time_base,
            gop_ticks=gop_ticks, grid=info.produced_here, wrap_bits=info.wrap_bits,
            check_regular=not info.produced_here, idr_check=idr, on_event=self._on_event,
            clock_ms=lambda: int(time.time() * 1000))

    def _on_event(self, kind: str, info: dict[str, Any]) -> None:
        if kind in ("discontinuity", "params_changed"):
            if kind == "discontinuity":
                self.stats.discontinuity()
            log.warning("%s: %s", kind, info.get("reason"), extra={"stream_id": self.cfg.stream_id, **info})

    def _run_session(self, session: FeedSession) -> None:
        info = session.info
        log.info("feed session", extra={"stream_id": self.cfg.stream_id, "source": info.label,
                                        "width": info.video.get("width"), "height": info.video.get("height"),
                                        "codec": info.video.get("codec"), "audio": bool(info.audio)})
        ch = self.chunker
        if ch is None or ch.tb != info.time_base or ch.atb != (info.audio_time_base or info.time_base):
            if ch is not None:
                self._submit(ch.flush())
                indexer = ch.indexer
                new = self._chunker_for(info)
                new.indexer = indexer  # identities continue across reconnects
                new.indexer.force_break()
                ch = new
            else:
                ch = self._chunker_for(info)
            self.chunker = ch
        elif _params_key(ch.video) != _params_key(info.video) or _params_key(ch.audio) != _params_key(info.audio):
            self._submit(ch.change_params(info.video, info.audio, "new session with different coding parameters"))
        try:
            for item in session.items:
                if isinstance(item, ParamsChange):
                    self._submit(ch.change_params(item.video, item.audio, item.reason))
                    continue
                self._submit(ch.push(item))
                if self._done():
                    break
        finally:
            self._submit(ch.flush())

    def _submit(self, gops: list[dict[str, Any]]) -> None:
        assert self.publisher is not None
        for g in gops:
            if self.cfg.duration is not None and self.media_seconds >= self.cfg.duration - 1e-6:
                return
            self.media_seconds += float(Fraction(g["duration"] * g["time_base_num"], g["time_base_den"]))
            self.stats.chunk(g)
            self.publisher.submit(g)
            log.debug("gop", extra={"stream_id": g["stream_id"], "gop_index": g["gop_index"], "epoch": g["epoch"]})

    def _finish(self, status: StatusPrinter) -> None:
        if self._gate is not None:
            self._gate.stop()
        if self._relay is not None:
            self._relay.stop_now()
        if self.publisher is not None:
            ok = self.publisher.close(timeout=30)
            if not ok:
                log.error("exiting with GOPs not acknowledged", extra={
                    "stream_id": self.cfg.stream_id, "queued": self.publisher.queued()})
        status.tick()
        status.stop()
        log.info("ingest stopped", extra={"stream_id": self.cfg.stream_id, "gops": self.stats.published,
                                          "dropped": self.stats.dropped})


def _params_key(p: dict[str, Any] | None) -> tuple[Any, ...]:
    if not p:
        return ()
    return tuple(sorted((k, v) for k, v in p.items()))


def _redact(src: str) -> str:
    """Never log a stream key: drop the last path element of rtmp URLs and SRT passphrases."""
    if src.startswith("rtmp://") and src.count("/") >= 4:
        return src.rsplit("/", 1)[0] + "/***"
    if "passphrase=" in src:
        import re

        return re.sub(r"passphrase=[^&]*", "passphrase=***", src)
    return src
