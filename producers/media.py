"""What flows from a source to the GOP chunker, and the two ways a feed fails (pure, no PyAV).

Why a module of its own: sources, the venue encoders, the normalizer and the chunker all speak in
these values, so they live below every one of them and none of those has to import another to
name a packet or a session.

A source yields FeedSessions (one per file, per accepted connection); a session yields
MediaPackets and ParamsChange markers, and carries a StreamInfo that tells the agent how to build
its chunker (time bases, PTS wrap, whether GOPs are ours and regular by construction).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Protocol

from schemas.errors import FloodlightError


class FeedProblem(FloodlightError, ValueError):
    """The feed is not H.264 + AAC with closed, regular GOPs; the message names the problem."""


class SourceError(FloodlightError, RuntimeError):
    """The source cannot be opened or read at all (bad path, port busy, ...)."""


@dataclass(slots=True)
class MediaPacket:
    """One encoded access unit as a source adapter hands it over (timestamps in the stream's time base)."""

    kind: str  # "video" | "audio"
    pts: int
    dts: int
    data: bytes
    keyframe: bool = False
    duration: int = 0
    wallclock_ms: int | None = None  # capture time of a video frame, when the source knows it


@dataclass
class StreamInfo:
    video: dict[str, Any]
    audio: dict[str, Any] | None
    time_base: Fraction
    audio_time_base: Fraction | None
    wrap_bits: int | None = None
    length_size: int | None = None
    gop_ticks: int | None = None  # known GOP duration (ours) in video ticks
    produced_here: bool = False  # testsrc / --normalize: closed, regular GOPs by construction
    label: str = ""
    normalize_reason: str | None = None  # why this session is re-encoded whole (codec, --normalize always)


@dataclass
class ParamsChange:
    video: dict[str, Any]
    audio: dict[str, Any] | None
    reason: str


class FeedSession:
    """One continuous feed: `info` plus an iterator of MediaPacket | ParamsChange."""

    def __init__(self, info: StreamInfo, items: Iterator[MediaPacket | ParamsChange],
                 close: Callable[[], None] = lambda: None) -> None:
        self.info = info
        self.items = items
        self.close = close


class Source(Protocol):
    """What the agent needs of any source: its sessions, and a close for what it started (gate, relay)."""

    def sessions(self) -> Iterator[FeedSession]: ...

    def close(self) -> None: ...
