"""--normalize auto, the decision: which GOPs of a feed pass through untouched, which are re-encoded (pure).

Why pure: OBS, vMix and hardware encoders send open GOPs, B-frames referencing across GOPs,
scene-cut keyframes and long GOPs by default. Auto mode passes a conforming feed through and
re-encodes one that is not; where it switches decides GOP identities, so primary and backup must
decide alike on the same feed. The rules below see only what a GopChunk record says (no PyAV) and
are unit-tested on synthetic shapes.

A GOP conforms when it is closed and regular:
- it starts with an IDR (not a recovery-point I-frame of an open GOP);
- no frame of it is shown before its keyframe (leading pictures reference the previous GOP);
- it is no longer than `max_seconds`;
- it lasts as long as the feed's GOP, within a frame (scene cuts and variable keyframes do not).
  The first closed GOP the pass-through sees sets that length; a GOP ended by the end of a session
  (`closed_by_key` False) is not held to it.

Switching: start by passing through. The first GOP that does not conform switches to re-encoding,
with its reason. While re-encoding, each closed GOP extends or restarts a run of conforming GOPs of
one length; when the run reaches `switch_back_after`, that GOP passes through again and its length
becomes the feed's. A switch always falls on a source GOP boundary.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from producers.gop import h264
from producers.gop.chunker import GopIndexer

# reason kinds (metric label values); CODEC and ALWAYS are decided per session, before any GOP
OPEN_GOP, IRREGULAR_GOP, LONG_GOP, CODEC, ALWAYS = "open_gop", "irregular_gop", "long_gop", "codec", "always"
SWITCH_BACK_AFTER = 3  # consecutive conforming GOPs that end re-encoding


@dataclass(frozen=True)
class GopShape:
    """What the policy needs to know of one source GOP."""

    start: int  # pts of its keyframe, in ticks
    duration: int  # ticks
    tick: Fraction  # seconds per tick
    idr: bool  # its first frame is an IDR
    leading: int = 0  # frames shown before its keyframe (open GOP)
    frame: Fraction | None = None  # one frame, in ticks, when the frame rate is known
    closed_by_key: bool = True  # False: ended by the end of the session, its length says nothing

    @property
    def seconds(self) -> Fraction:
        return self.duration * self.tick


def shape_of(gop: dict[str, Any], closed_by_key: bool = True) -> GopShape:
    """The shape of a GopChunk record (video params, time base and packets; H.264 AVCC or Annex B)."""
    video = gop["video"]
    tick = Fraction(gop["time_base_num"], gop["time_base_den"])
    packets = gop["video_packets"]
    length_size = h264.parse_extradata(video.get("extradata") or b"").length_size
    start = gop["pts_start"]
    fps = Fraction(video.get("frame_rate_num") or 0, video.get("frame_rate_den") or 1)
    return GopShape(start=start, duration=gop["duration"], tick=tick,
                    idr=bool(packets) and h264.has_idr(packets[0]["data"], length_size),
                    leading=sum(1 for p in packets if p["pts"] < start),
                    frame=1 / (fps * tick) if fps else None, closed_by_key=closed_by_key)


@dataclass(frozen=True)
class Verdict:
    kind: str | None = None  # None: the GOP conforms
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.kind is None


@dataclass(frozen=True)
class Decision:
    normalize: bool  # re-encode this GOP
    switched: bool  # this GOP starts a new leg (pass-through -> re-encoding, or back)
    verdict: Verdict  # the GOP's verdict; on a switch back, why it is over


class ConformancePolicy:
    def __init__(self, max_seconds: float, switch_back_after: int = SWITCH_BACK_AFTER) -> None:
        self.max_seconds = Fraction(max_seconds).limit_denominator(1000)
        self.switch_back_after = max(1, switch_back_after)
        self.normalizing = False
        self.nominal: Fraction | None = None  # the feed's GOP length in seconds, while passing through
        self.streak = 0  # consecutive conforming GOPs while re-encoding
        self.candidate: Fraction | None = None  # their length

    def restart(self) -> None:
        """A new feed (session, timeline): pass through again and learn its GOP length afresh."""
        self.normalizing, self.nominal, self.streak, self.candidate = False, None, 0, None

    def judge(self, g: GopShape, nominal: Fraction | None) -> Verdict:
        if not g.idr:
            return Verdict(OPEN_GOP, f"keyframe at pts {g.start} is not an IDR (open GOP / recovery-point I-frame)")
        if g.leading:
            return Verdict(OPEN_GOP, f"open GOP: {g.leading} frame(s) shown before the keyframe at pts {g.start} "
                                     "reference the previous GOP (B-frames across GOPs)")
        secs = g.seconds
        if secs > self.max_seconds:
            return Verdict(LONG_GOP, f"long GOP: {float(secs):.3f} s, over the {float(self.max_seconds):.3f} s limit")
        if g.closed_by_key and nominal is not None:
            slack = g.frame * g.tick if g.frame else nominal / 20
            if abs(secs - nominal) > slack:
                return Verdict(IRREGULAR_GOP, f"irregular GOP: {float(secs):.3f} s instead of {float(nominal):.3f} s "
                                              "(scene-cut or variable keyframes)")
        return Verdict()

    def decide(self, g: GopShape) -> Decision:
        if not self.normalizing:
            v = self.judge(g, self.nominal)
            if v.ok:
                if self.nominal is None and g.closed_by_key:
                    self.nominal = g.seconds
                return Decision(False, False, v)
            self.normalizing, self.nominal = True, None
            self.streak, self.candidate = 0, None
            self._watch(g, v)
            return Decision(True, True, v)
        v = self.judge(g, self.candidate)
        self._watch(g, v)
        if self.streak >= self.switch_back_after:
            assert self.candidate is not None
            back = Verdict(None, f"{self.streak} conforming GOPs of {float(self.candidate):.3f} s in a row")
            self.normalizing, self.nominal = False, self.candidate
            self.streak, self.candidate = 0, None
            return Decision(False, True, back)
        return Decision(True, False, v)

    def _watch(self, g: GopShape, v: Verdict) -> None:
        """While re-encoding: a closed GOP extends the run of conforming GOPs, or starts a new one
        when only its length differs; anything else ends the run."""
        if not g.closed_by_key:
            return  # a session's last GOP: neither evidence for nor against
        if v.ok:
            self.streak += 1
            if self.candidate is None:
                self.candidate = g.seconds
        elif v.kind == IRREGULAR_GOP:
            self.streak, self.candidate = 1, g.seconds
        else:
            self.streak, self.candidate = 0, None


class LegIdentities:
    """gop_index / epoch of the GOPs auto mode publishes, across legs (pass-through, re-encoded).

    Within a leg, identities come from the PTS exactly as its chunker gives them (an indexer
    configured like the chunker's, fed the same GOPs; an epoch the chunker opened is opened here
    too), so a feed that never switches keeps the identities of pass-through. A new leg is a
    discontinuity at a GOP boundary: a new epoch, and the index continues at last + 1.
    """

    def __init__(self) -> None:
        self.last_index: int | None = None
        self.epoch = 0
        self._leg: GopIndexer | None = None
        self._leg_epoch: int | None = None  # the producing chunker's epoch of the leg's last GOP

    def start_leg(self, like: GopIndexer) -> None:
        leg = GopIndexer(nominal=like.nominal if like.grid else None, max_gap_gops=like.max_gap_gops,
                         frame_ticks=like.frame_ticks, grid=like.grid)
        if self.last_index is not None:
            leg.epoch, leg.last_index = self.epoch, self.last_index
            leg.force_break()
        self._leg, self._leg_epoch = leg, None

    def assign(self, gop: dict[str, Any]) -> dict[str, Any]:
        """The record with its published identity (a new dict; the input is left alone)."""
        assert self._leg is not None, "start_leg first"
        if self.last_index is None and self._leg_epoch is None:
            self._leg.epoch = gop["epoch"]  # the very first GOP keeps its chunker's epoch
        elif self._leg_epoch is not None and gop["epoch"] != self._leg_epoch:
            self._leg.force_break()  # the chunker opened an epoch (timestamp jump, new parameters)
        self._leg_epoch = gop["epoch"]
        idx, epoch, _ = self._leg.assign(gop["pts_start"], gop["duration"], len(gop["video_packets"]))
        self.last_index, self.epoch = idx, epoch
        return {**gop, "gop_index": idx, "epoch": epoch}
