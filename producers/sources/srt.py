"""SRT: Debian's ffmpeg listens for SRT callers and relays MPEG-TS to the demuxer on a loopback port.

Why a relay: PyAV's FFmpeg has no SRT. The relay is supervised (restarted when its caller leaves,
with a back-off if it keeps failing) and stopped with the source.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from producers.sources.demux import DemuxSource, free_port
from producers.sources.spec import SourceContext, SourceSpec

log = logging.getLogger("producers.sources.srt")


class SrtSource(DemuxSource):
    """An SRT listener: the relay on the public port, the demuxer on a private TCP port behind it."""

    def __init__(self, spec: SourceSpec, ctx: SourceContext, normalize: Any = None) -> None:
        port = free_port()
        self.relay = SrtRelay(spec, port, ctx.stop).start()
        log.info("srt relay started", extra={"stream_id": ctx.stream_id, "port": spec.port})
        super().__init__(f"tcp://127.0.0.1:{port}?listen=1", ctx.stop, listen=True, normalize=normalize,
                         label=f"srt :{spec.port}", on_bad_input=ctx.on_bad_input, poke=("127.0.0.1", port))

    def close(self) -> None:
        self.relay.stop_now()


class SrtRelay:
    """Supervises Debian's ffmpeg as an SRT listener that forwards MPEG-TS to the agent's TCP port.

    PyAV's FFmpeg has no SRT; the relay exits when a caller disconnects and is restarted, with a
    back-off if it keeps failing. An SRT `passphrase` (the SRT-native way to keep strangers out)
    and `streamid` are passed through.
    """

    def __init__(self, spec: SourceSpec, tcp_port: int, stop: threading.Event, binary: str = "ffmpeg") -> None:
        self.spec, self.tcp_port, self.stop, self.binary = spec, tcp_port, stop, binary
        self.restarts = 0
        self.proc: Any = None
        self._thread = threading.Thread(target=self._run, name="srt-relay", daemon=True)

    def command(self) -> list[str]:
        q = {"mode": "listener", "latency": "200000"}
        for k in ("passphrase", "pbkeylen", "latency", "streamid"):
            if k in self.spec.query:
                q[k] = self.spec.query[k]
        qs = "&".join(f"{k}={v}" for k, v in q.items())
        return [self.binary, "-hide_banner", "-nostdin", "-loglevel", "warning",
                "-analyzeduration", "1000000", "-probesize", "1000000", "-i", f"srt://{self.spec.host}:{self.spec.port}?{qs}",
                "-c", "copy", "-f", "mpegts", f"tcp://127.0.0.1:{self.tcp_port}"]

    def start(self) -> SrtRelay:
        self._thread.start()
        return self

    def _run(self) -> None:
        import subprocess

        backoff = 0.2
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                self.proc = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            except OSError as exc:  # no ffmpeg with libsrt on this host: say so, keep trying slowly
                log.error("cannot start the SRT relay", extra={"binary": self.binary, "reason": str(exc)})
                if self.stop.wait(10):
                    return
                continue
            while self.proc.poll() is None:
                if self.stop.wait(0.2):
                    self.proc.terminate()
                    try:
                        self.proc.wait(5)
                    except subprocess.TimeoutExpired:
                        self.proc.kill()
                    return
            err = (self.proc.stderr.read() or b"").decode(errors="replace")[-400:] if self.proc.stderr else ""
            self.restarts += 1
            log.info("srt relay exited, restarting", extra={"rc": self.proc.returncode, "stderr": err.strip()})
            backoff = 0.2 if time.monotonic() - started > 5 else min(backoff * 2, 5.0)
            if self.stop.wait(backoff):
                return

    def stop_now(self) -> None:
        self.stop.set()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
