"""The --source value: its grammar (`parse_source`) and what the agent hands any source it opens.

Why apart from the sources themselves: the agent parses and validates the value before it reads
the registry or opens anything (a typo is a usage error, not a failed capture), and the unit tests
check the grammar without PyAV.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class SourceSpec:
    """A parsed --source value."""

    kind: str  # testsrc | file | rtmp | srt | tcp | udp
    raw: str
    path: Path | None = None
    loop: bool = False
    host: str = ""
    port: int = 0
    app: str = ""
    key: str | None = None  # a literal key in the RTMP URL (None for the {stream_key} placeholder)
    query: dict[str, str] = field(default_factory=dict)


def parse_source(src: str) -> SourceSpec:
    """Validate and split a --source value; raises ValueError with a message naming the problem."""
    if src.startswith("testsrc"):
        return SourceSpec("testsrc", src)
    if src.startswith("file:"):
        rest = src[len("file:"):]
        if rest.startswith("//"):
            rest = urlsplit(src).path + (("?" + urlsplit(src).query) if urlsplit(src).query else "")
        path_s, _, q = rest.partition("?")
        query = {k: v[-1] for k, v in parse_qs(q).items()}
        unknown = set(query) - {"loop"}
        if unknown:
            raise ValueError(f"unknown file source option(s) {sorted(unknown)}: only ?loop=1")
        path = Path(path_s).expanduser()
        if not path.is_file():
            raise ValueError(f"file source {path_s!r} does not exist or is not a regular file")
        return SourceSpec("file", src, path=path.resolve(), loop=query.get("loop", "0") in ("1", "true", "yes"))
    u = urlsplit(src)
    if u.scheme in ("rtmp", "srt", "tcp", "udp"):
        if not u.hostname or not u.port:
            raise ValueError(f"{src!r}: need host and port, e.g. {u.scheme}://0.0.0.0:PORT...")
        query = {k: v[-1] for k, v in parse_qs(u.query).items()}
        if u.scheme == "rtmp":
            parts = [p for p in u.path.split("/") if p]
            if not parts:
                raise ValueError(f"{src!r}: need an app, e.g. rtmp://0.0.0.0:1935/live/{{stream_key}}")
            app = parts[0]
            key = parts[1] if len(parts) > 1 else None
            if key in ("{stream_key}", "%7Bstream_key%7D"):
                key = None
            if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", app):
                raise ValueError(f"{src!r}: bad RTMP app name {app!r}")
            return SourceSpec("rtmp", src, host=u.hostname, port=u.port, app=app, key=key, query=query)
        if u.scheme == "srt":
            _check_srt_options(src, query)
        return SourceSpec(u.scheme, src, host=u.hostname, port=u.port, query=query)
    raise ValueError(f"unknown source {src!r}: expected testsrc[:WxH@FPS], file:PATH[?loop=1], "
                     "rtmp://HOST:PORT/APP/{stream_key}, srt://HOST:PORT?streamid=..., tcp://..., udp://...")


def _check_srt_options(src: str, query: dict[str, str]) -> None:
    unknown = set(query) - {"streamid", "passphrase", "pbkeylen", "latency", "mode"}
    if unknown:
        raise ValueError(f"{src!r}: unknown SRT option(s) {sorted(unknown)}: streamid, passphrase, pbkeylen, latency")
    if query.get("mode", "listener") != "listener":
        raise ValueError(f"{src!r}: the agent is the SRT listener (mode=listener); pushers are callers")
    if "passphrase" in query and not 10 <= len(query["passphrase"]) <= 79:
        raise ValueError("SRT passphrase must be 10 to 79 characters")
    if query.get("pbkeylen", "16") not in ("0", "16", "24", "32"):
        raise ValueError("SRT pbkeylen must be 16, 24 or 32")
    if not query.get("latency", "0").isdigit():
        raise ValueError("SRT latency is in microseconds, e.g. latency=200000")


@dataclass
class SourceContext:
    """What every kind of source may need from the agent that opens it."""

    stream_id: str
    ingest_id: str
    stop: threading.Event
    gop_seconds: float
    preset: str  # venue x264 preset (testsrc, --normalize)
    normalize: str = "never"  # never | auto | always (--normalize)
    duration: float | None = None  # media seconds to capture (testsrc stops on its own)
    record: dict[str, Any] | None = None  # the stream's registry record; None with --no-registry
    on_bad_input: Callable[..., None] = lambda *_: None  # (reason) or (kind, reason)
    max_connections: int = 8  # concurrent pushers a listener (RTMP gate) holds; more are refused
    auth_timeout: float = 10.0  # seconds a connection has to publish with a valid key (RTMP gate)
    srt_passphrase: str = ""  # SRT encryption passphrase when the URL sets none ("" = none)
