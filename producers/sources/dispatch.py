"""One door for every kind of feed: the --source scheme picks the kind, each case a few lines.

Why one switch: what differs between kinds (a gate, a relay, pacing, listening) lives in the
kind's own module; what the agent decides for all of them (GOP length, preset, --normalize, the
registry record, where bad input is counted) arrives once, in the SourceContext.
"""

from __future__ import annotations

from producers.media import Source
from producers.sources.demux import DemuxSource
from producers.sources.rtmp import RtmpSource
from producers.sources.spec import SourceContext, SourceSpec
from producers.sources.srt import SrtSource
from producers.sources.testsrc import TestPatternSource
from producers.sources.testsrc import parse_source as parse_testsrc


def open_source(spec: SourceSpec, ctx: SourceContext) -> Source:
    """Build the source a parsed --source names; ValueError for a bad value, SourceError if it cannot open."""
    norm = None
    if ctx.normalize in ("auto", "always"):
        from producers.encode.normalize import NormalizeSpec

        norm = NormalizeSpec(ctx.gop_seconds, ctx.preset, mode=ctx.normalize)
    stop, bad = ctx.stop, ctx.on_bad_input
    match spec.kind:
        case "testsrc":
            return TestPatternSource(parse_testsrc(spec.raw, ctx.gop_seconds), stop, ctx.duration, preset=ctx.preset)
        case "file":
            assert spec.path is not None
            return DemuxSource(str(spec.path), stop, pace=True, loop=spec.loop, normalize=norm,
                               label=f"file {spec.path.name}", on_bad_input=bad)
        case "rtmp":
            return RtmpSource(spec, ctx, norm)
        case "srt":
            return SrtSource(spec, ctx, norm)
        case "tcp":
            listen = spec.query.get("listen", "1") != "0"
            url = f"tcp://{spec.host}:{spec.port}" + ("?listen=1" if listen else "")
            poke = ("127.0.0.1" if spec.host in ("0.0.0.0", "") else spec.host, spec.port) if listen else None
            return DemuxSource(url, stop, listen=True, normalize=norm, label=f"tcp :{spec.port}",
                               on_bad_input=bad, poke=poke)
        case "udp":
            # a quiet UDP feed ends its session after 3 s (and listening resumes), so stop is prompt too
            return DemuxSource(f"udp://{spec.host}:{spec.port}", stop, listen=True, normalize=norm,
                               label=f"udp :{spec.port}", on_bad_input=bad, read_timeout=3.0)
    raise ValueError(f"unsupported source kind {spec.kind}")
