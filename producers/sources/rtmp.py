"""RTMP: PyAV's listener on a private loopback port, behind the stream-key gate on the public one.

Why the gate: FFmpeg's RTMP listener takes any stream name, so the key is checked in front of it
(`rtmpgate`) against the stream's registered key hashes, or against the literal key in the URL
when the agent runs without the registry.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

from producers.media import SourceError
from producers.sources.demux import DemuxSource, free_port
from producers.sources.rtmpgate import RtmpGate, Verify
from producers.sources.spec import SourceContext, SourceSpec

log = logging.getLogger("producers.sources.rtmp")


def key_check(record: dict[str, Any] | None, ingest_id: str, literal: str | None) -> Verify:
    """(app, presented key) -> allowed: registered hashes, or the literal key of --no-registry."""
    from floodlight.streamkeys import verify_stream_key

    endpoints = (record or {}).get("ingest_endpoints", [])
    hashes = [e["stream_key_hash"] for e in endpoints
              if e.get("stream_key_hash") and e.get("role", ingest_id) in (ingest_id, "")]
    if not hashes:
        hashes = [e["stream_key_hash"] for e in endpoints if e.get("stream_key_hash")]

    def verify(_app: str, key: str) -> bool:
        if not key:
            return False
        if record is not None:
            if not hashes:
                return literal is not None and hmac.compare_digest(key.encode(), literal.encode())
            return any(verify_stream_key(key, h) for h in hashes)
        return literal is not None and hmac.compare_digest(key.encode(), literal.encode())

    return verify


class RtmpSource(DemuxSource):
    """Listens on the spec's host:port for one pusher at a time; wrong keys are cut off by the gate."""

    def __init__(self, spec: SourceSpec, ctx: SourceContext, normalize: Any = None) -> None:
        if ctx.record is None and spec.key is None:
            raise ValueError("rtmp with --no-registry needs the key in the URL: rtmp://HOST:PORT/APP/KEY")
        backend = free_port()
        verify = key_check(ctx.record, ctx.ingest_id, spec.key)
        try:
            self.gate = RtmpGate(spec.host, spec.port, backend, spec.app, verify,
                                 on_refused=lambda reason: ctx.on_bad_input("wrong_key", reason)).start()
        except OSError as exc:
            raise SourceError(f"cannot listen on {spec.host}:{spec.port}: {exc}") from exc
        log.info("rtmp listening", extra={"stream_id": ctx.stream_id, "port": self.gate.port})
        if ctx.record is not None and spec.key is None and not any(
                e.get("stream_key_hash") for e in ctx.record.get("ingest_endpoints", [])):
            log.warning("no stream key registered for this stream: every push will be refused",
                        extra={"stream_id": ctx.stream_id})
        super().__init__(f"rtmp://127.0.0.1:{backend}/{spec.app}/ingest", ctx.stop, options={"listen": "1"},
                         listen=True, normalize=normalize, label=f"rtmp :{spec.port}", on_bad_input=ctx.on_bad_input,
                         poke=("127.0.0.1", backend))

    def close(self) -> None:
        self.gate.stop()
