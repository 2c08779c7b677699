"""RTMP: PyAV's listener on a private loopback port, behind the stream-key gate on the public one.

Why the gate: FFmpeg's RTMP listener takes any stream name, and media with no publish at all, so
the gate (`rtmpgate`) speaks RTMP itself until a `publish` whose key verifies against the stream's
registered key hashes (or the literal key in the URL when the agent runs without the registry);
only then does it open the private listener and relay.
"""

from __future__ import annotations

import logging
from typing import Any

from producers.media import SourceError
from producers.sources.demux import DemuxSource, free_port
from producers.sources.keys import key_check
from producers.sources.rtmpgate import RtmpGate
from producers.sources.spec import SourceContext, SourceSpec

log = logging.getLogger("producers.sources.rtmp")


class RtmpSource(DemuxSource):
    """Listens on the spec's host:port for one pusher at a time; the gate refuses all but a keyed publish."""

    def __init__(self, spec: SourceSpec, ctx: SourceContext, normalize: Any = None) -> None:
        if ctx.record is None and spec.key is None:
            raise ValueError("rtmp with --no-registry needs the key in the URL: rtmp://HOST:PORT/APP/KEY")
        backend = free_port()
        verify = key_check(ctx.record, ctx.ingest_id, spec.key)
        try:
            self.gate = RtmpGate(spec.host, spec.port, backend, spec.app, verify,
                                 on_refused=lambda kind, reason: ctx.on_bad_input(kind, reason),
                                 max_connections=ctx.max_connections, auth_timeout=ctx.auth_timeout).start()
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
