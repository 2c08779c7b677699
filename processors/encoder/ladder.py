"""Pure ladder maths: which rungs a source gets (never upscaled), their sizes, presets, parts."""

from __future__ import annotations

from typing import Any

PRESET_BY_MODE = {"LOW": "ultrafast", "STANDARD": "veryfast"}
PART_SECONDS_BY_MODE = {"LOW": 0.333, "STANDARD": 1.0}


def even(x: float) -> int:
    """Nearest even integer >= 2 (4:2:0 chroma needs even dimensions)."""
    return max(2, int(round(x / 2.0)) * 2)


def select_rungs(ladder: list[dict[str, Any]], src_width: int, src_height: int,
                 renditions: set[str] | None = None) -> list[dict[str, Any]]:
    """Rungs to encode for this source, highest first, each with its output width/height.

    A rung taller than the source is dropped (never upscale). If that leaves nothing, the
    smallest rung is kept at the source's own size, so every stream gets at least one rendition.
    Output width follows the source aspect ratio at the rung's height.
    """
    if src_width <= 0 or src_height <= 0:
        raise ValueError(f"bad source size {src_width}x{src_height}")
    wanted = [r for r in ladder if renditions is None or r["name"] in renditions]
    out: list[dict[str, Any]] = []
    for rung in sorted(wanted, key=lambda r: (-r["height"], -r["bitrate_kbps"])):
        if rung["height"] > src_height:
            continue
        height = even(rung["height"])
        width = min(even(height * src_width / src_height), even(src_width))
        out.append({**rung, "width": width, "height": height})
    if not out and wanted:
        smallest = min(wanted, key=lambda r: r["height"])
        out.append({**smallest, "width": even(src_width), "height": even(src_height)})
    return out


X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow",
                "placebo")


def preset_for(record: dict[str, Any] | None) -> str:
    """x264 preset: the stream's override, else by latency mode; unknown streams get STANDARD.
    An override x264 does not know falls back to the mode's preset rather than failing every GOP."""
    if record and record.get("encoder_preset") in X264_PRESETS:
        return record["encoder_preset"]
    mode = (record or {}).get("latency_mode") or "STANDARD"
    return PRESET_BY_MODE.get(mode, PRESET_BY_MODE["STANDARD"])


def part_seconds_for(record: dict[str, Any] | None) -> float:
    mode = (record or {}).get("latency_mode") or "STANDARD"
    return PART_SECONDS_BY_MODE.get(mode, PART_SECONDS_BY_MODE["STANDARD"])


def bitrates(part_sizes: list[int], part_durations: list[float], window_s: float = 1.0) -> tuple[int, int]:
    """(peak, average) bits/s of a segment: the average over the whole segment, the peak as the
    highest rate over any run of consecutive parts lasting at least `window_s` (or the whole segment)."""
    total_bytes = sum(part_sizes)
    total_s = sum(part_durations)
    if total_s <= 0:
        return 0, 0
    average = int(round(total_bytes * 8 / total_s))
    peak = average
    for i in range(len(part_sizes)):
        size = 0
        dur = 0.0
        for j in range(i, len(part_sizes)):
            size += part_sizes[j]
            dur += part_durations[j]
            if dur >= window_s - 1e-6:
                peak = max(peak, int(round(size * 8 / dur)))
                break
    return peak, average
