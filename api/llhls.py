"""LL-HLS blocking reload rules of RFC 8216bis §6.2.5.2 as pure functions.

A request carries `_HLS_msn=M[&_HLS_part=P][&_HLS_skip=YES|v2]`. The origin answers at once when
the playlist already holds part P of segment M (or anything later), holds the request until a
ManifestUpdate says so otherwise, refuses (400) a request too far ahead, and gives up (503) after
three target durations. The target duration and part target come with each ManifestUpdate; only a
record written before they were part of it (ManifestUpdate v1) leaves them to be read from the playlist.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from schemas.errors import FloodlightError


class BadBlockingRequest(FloodlightError, ValueError):
    """Malformed or out-of-range _HLS_* parameters: answered with 400."""


@dataclass(frozen=True)
class BlockRequest:
    msn: int | None = None
    part: int | None = None
    skip: str | None = None  # "YES" or "v2"

    @property
    def blocking(self) -> bool:
        return self.msn is not None


@dataclass(frozen=True)
class PlaylistState:
    """Where a rendition's playlist stands: newest (partial) segment msn, its newest part (-1 = complete)."""

    msn: int
    part: int
    ended: bool = False
    target_duration: float = 4.0
    part_target: float | None = None

    @property
    def last_complete_msn(self) -> int:
        return self.msn if self.part == -1 else self.msn - 1


_INT = re.compile(r"^[0-9]{1,18}$")


def carries_targets(rec: Mapping[str, Any]) -> bool:
    """Whether a ManifestUpdate says its playlist's target duration (v1 records decode with 0)."""
    return int(rec.get("target_duration") or 0) > 0


def state_from_update(rec: Mapping[str, Any], prev: PlaylistState | None = None) -> PlaylistState:
    """The state a ManifestUpdate announces; a record without targets keeps the ones known before."""
    if carries_targets(rec):
        target, part_target = float(rec["target_duration"]), float(rec.get("part_target") or 0.0) or None
    else:
        target, part_target = (prev.target_duration, prev.part_target) if prev else (4.0, None)
    return PlaylistState(int(rec["msn"]), int(rec["part"]), bool(rec.get("ended")), target, part_target)


def parse_block_request(msn: str | None, part: str | None, skip: str | None) -> BlockRequest:
    """Validate the query parameters (strings as received)."""
    if msn is None and part is not None:
        raise BadBlockingRequest("_HLS_part requires _HLS_msn")
    if msn is not None and not _INT.match(msn):
        raise BadBlockingRequest("_HLS_msn must be a non-negative integer")
    if part is not None and not _INT.match(part):
        raise BadBlockingRequest("_HLS_part must be a non-negative integer")
    if skip is not None and skip not in ("YES", "v2"):
        raise BadBlockingRequest("_HLS_skip must be YES or v2")
    return BlockRequest(int(msn) if msn is not None else None, int(part) if part is not None else None, skip)


def satisfied(state: PlaylistState | None, req: BlockRequest) -> bool:
    """True when the playlist already answers the request (or never will change: ENDLIST)."""
    if not req.blocking:
        return True
    if state is None:
        return False
    if state.ended:
        return True
    assert req.msn is not None
    if state.msn > req.msn:
        return True
    if state.msn < req.msn:
        return False
    if state.part == -1:
        return True
    return req.part is not None and state.part >= req.part


def advance_part_limit(part_target: float | None) -> int:
    """Three divided by the part target when it is under a second, otherwise three (RFC 8216bis)."""
    if part_target and part_target < 1.0:
        return math.ceil(3.0 / part_target)
    return 3


def too_far_ahead(state: PlaylistState, req: BlockRequest) -> bool:
    """_HLS_msn beyond the last segment plus two, or _HLS_part beyond the last part by the limit."""
    if not req.blocking or state.ended:
        return False
    assert req.msn is not None
    if req.msn > state.last_complete_msn + 2:
        return True
    if req.part is not None:
        limit = advance_part_limit(state.part_target)
        if req.msn == state.msn and state.part >= 0 and req.part > state.part + limit:
            return True
        if req.msn > state.msn and req.part > limit:
            return True
    return False


def hold_seconds(state: PlaylistState | None, override_s: float = 0.0) -> float:
    """How long a blocked request may wait: three target durations unless configured."""
    if override_s > 0:
        return override_s
    return 3.0 * (state.target_duration if state else 4.0)


def parse_state(text: str) -> PlaylistState | None:
    """Derive PlaylistState from a media playlist: the fallback when no ManifestUpdate has been seen yet,
    or only ones written before updates carried the target duration and part target."""
    if not text.startswith("#EXTM3U"):
        return None
    seq = 0
    segments = 0
    parts_after = 0
    target = 4.0
    part_target: float | None = None
    ended = False
    for line in text.splitlines():
        if line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
            seq = _int_or(line.split(":", 1)[1], 0)
        elif line.startswith("#EXT-X-TARGETDURATION:"):
            target = float(_int_or(line.split(":", 1)[1], 4)) or 4.0
        elif line.startswith("#EXT-X-PART-INF:"):
            m = re.search(r"PART-TARGET=([0-9.]+)", line)
            part_target = float(m.group(1)) if m else None
        elif line.startswith("#EXT-X-SKIP:"):
            m = re.search(r"SKIPPED-SEGMENTS=([0-9]+)", line)
            segments += int(m.group(1)) if m else 0
        elif line.startswith("#EXTINF:"):
            segments += 1
            parts_after = 0
        elif line.startswith("#EXT-X-PART:"):
            parts_after += 1
        elif line.startswith("#EXT-X-ENDLIST"):
            ended = True
    # parts listed after the last EXTINF belong to the segment being built
    if parts_after and not ended:
        return PlaylistState(seq + segments, parts_after - 1, ended, target, part_target)
    if segments == 0:
        return PlaylistState(seq - 1, -1, ended, target, part_target) if seq > 0 else None
    return PlaylistState(seq + segments - 1, -1, ended, target, part_target)


def _int_or(s: str, default: int) -> int:
    s = s.strip()
    return int(s) if _INT.match(s) else default
