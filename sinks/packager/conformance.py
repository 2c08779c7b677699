"""RFC 8216bis rule checks on rendered playlists, used by the tests (and handy when debugging a player).

Parses with the third-party `m3u8` library (so a foreign parser must accept the text) and then
checks the rules the packager promises: EXTINF <= TARGETDURATION when rounded, every part <=
PART-TARGET, PART-HOLD-BACK >= 3 x PART-TARGET, HOLD-BACK >= 3 x TARGETDURATION, CAN-SKIP-UNTIL
>= 6 x TARGETDURATION, parts after the last EXTINF belong to the next segment and the
PRELOAD-HINT names the part after the last one listed, and optionally that every URI the playlist
names exists.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_ATTR = re.compile(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)')


def attrs(line: str) -> dict[str, str]:
    body = line.split(":", 1)[1] if ":" in line else ""
    return {k: v.strip('"') for k, v in _ATTR.findall(body)}


def check_media_playlist(text: str, exists: Callable[[str], bool] | None = None) -> list[str]:
    """Problems found in one media playlist (empty when it conforms)."""
    import m3u8

    problems: list[str] = []
    try:
        pl = m3u8.loads(text)
    except Exception as exc:  # noqa: BLE001 - any parser failure is a finding
        return [f"m3u8 cannot parse: {exc}"]
    lines = text.splitlines()
    if not lines or lines[0] != "#EXTM3U":
        problems.append("first line is not #EXTM3U")
    td = pl.target_duration
    if td is None:
        problems.append("no EXT-X-TARGETDURATION")
        td = 0
    partial = [s for s in pl.segments if s.uri is None]  # parts of the segment being built (no EXTINF yet)
    if partial and (len(partial) > 1 or pl.segments[-1].uri is not None):
        problems.append("parts without EXTINF before a complete segment")
    full = [s for s in pl.segments if s.uri is not None]
    for seg in full:
        if round(seg.duration) > td:
            problems.append(f"EXTINF {seg.duration} > TARGETDURATION {td} ({seg.uri})")
    part_target = None
    for line in lines:
        if line.startswith("#EXT-X-PART-INF:"):
            part_target = float(attrs(line)["PART-TARGET"])
    uris: list[str] = []
    for line in lines:
        if line.startswith("#EXT-X-PART:"):
            a = attrs(line)
            if part_target is None:
                problems.append("EXT-X-PART without EXT-X-PART-INF")
            elif float(a["DURATION"]) > part_target + 1e-9:
                problems.append(f"part {a['URI']} {a['DURATION']} > PART-TARGET {part_target}")
            uris.append(a["URI"])
        elif line.startswith("#EXT-X-MAP:"):
            uris.append(attrs(line)["URI"])
        elif line.startswith("#EXT-X-SERVER-CONTROL:"):
            a = attrs(line)
            if part_target is not None or "PART-HOLD-BACK" in a:
                phb = float(a.get("PART-HOLD-BACK", "0"))
                if part_target is not None and phb < 3 * part_target - 1e-9:
                    problems.append(f"PART-HOLD-BACK {phb} < 3 x PART-TARGET {part_target}")
            if "HOLD-BACK" in a and float(a["HOLD-BACK"]) < 3 * td:
                problems.append(f"HOLD-BACK {a['HOLD-BACK']} < 3 x TARGETDURATION")
            if "CAN-SKIP-UNTIL" in a and float(a["CAN-SKIP-UNTIL"]) < 6 * td:
                problems.append(f"CAN-SKIP-UNTIL {a['CAN-SKIP-UNTIL']} < 6 x TARGETDURATION")
    gaps = _gap_uris(lines)
    for line in lines:
        if line and not line.startswith("#") and line not in gaps:
            uris.append(line)
    msns = [pl.media_sequence + i for i in range(len(full))]
    if msns != sorted(set(msns)):
        problems.append("media sequence numbers not strictly increasing")
    skipped = sum(int(attrs(ln).get("SKIPPED-SEGMENTS", "0")) for ln in lines if ln.startswith("#EXT-X-SKIP:"))
    problems += _hint_problems(lines, (pl.media_sequence or 0) + skipped + len(full))
    names = [s.uri for s in full if s.uri not in gaps]
    nums = [int(n.split(".")[0]) for n in names if n.split(".")[0].isdigit()]
    if nums != sorted(set(nums)):
        problems.append(f"segment URIs out of order or duplicated: {nums}")
    if exists is not None:
        for uri in uris:
            if not exists(uri):
                problems.append(f"{uri} named but not in the store")
    return problems


def _hint_problems(lines: list[str], next_msn: int) -> list[str]:
    """The PRELOAD-HINT names the part after the last listed one: of the segment being built, or part 0
    of the next segment (parts named {msn}.{part}.m4s, the packager's naming)."""
    hints = [attrs(ln).get("URI", "") for ln in lines if ln.startswith("#EXT-X-PRELOAD-HINT:")]
    if not hints:
        return []
    tail: list[str] = []  # part URIs after the last EXTINF
    for line in lines:
        if line.startswith("#EXTINF:"):
            tail = []
        elif line.startswith("#EXT-X-PART:"):
            tail.append(attrs(line)["URI"])
    want = f"{next_msn}.{len(tail)}.m4s"
    named = [u for u in tail if not u.startswith(f"{next_msn}.")]
    out = [f"part {u} listed after the last segment is not of segment {next_msn}" for u in named]
    if hints[-1].split("?")[0] != want:
        out.append(f"PRELOAD-HINT {hints[-1]} is not the next part {want}")
    return out


def _gap_uris(lines: list[str]) -> set[str]:
    """URIs of segments marked EXT-X-GAP (they need not exist)."""
    out: set[str] = set()
    gap = False
    for line in lines:
        if line == "#EXT-X-GAP":
            gap = True
        elif line and not line.startswith("#"):
            if gap:
                out.add(line)
            gap = False
    return out
