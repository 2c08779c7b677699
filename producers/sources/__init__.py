"""Feed sources: test pattern, files/URLs, RTMP (behind the key gate), SRT (behind its key gate), TCP/UDP MPEG-TS.

`spec.parse_source` reads the --source value, `dispatch.open_source` builds that kind's source.
A source yields sessions (one per file, per accepted connection) of MediaPackets and ParamsChange
markers (`producers.media`), and `close()` stops what it started in front of the demuxer.
"""
