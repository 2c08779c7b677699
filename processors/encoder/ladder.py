"""Pure ladder maths: which rungs a source gets (never upscaled), their sizes, presets, parts."""

from __future__ import annotations

from typing import Any

# Default x264 preset per latency mode (a stream's encoder_preset overrides it). LOW: superfast, the fastest
# preset that keeps High profile with CABAC and 8x8 transforms (ultrafast turns both off: Constrained
# Baseline), with no lookahead and no B-frames, so a frame leaves the encoder as soon as it is coded.
# STANDARD: veryfast, whose 10-frame lookahead and macroblock tree are worth ~0.6 dB at 1080p over
# superfast; slower presets would not keep a 1080p ladder live on the 2-core demo machine.
PRESET_BY_MODE = {"LOW": "superfast", "STANDARD": "veryfast"}
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


# Rungs shorter than this get CBR-style VBV (maxrate = bitrate, 1 s buffer) instead of ABR under a 1.2x cap.
# Why: every GOP gets a fresh encoder, and x264's one-pass ABR starts each one from a content-blind QP guess
# that is far too high on small frames (measured at 240p/500k: QP 27 on the IDR where the steady state is
# 13), then needs ~40 frames to come down, so quality pulses every GOP and the rung undershoots its bitrate
# (361 of 500 kbps). With maxrate = bitrate x264 keeps the buffer from overflowing, which makes it spend
# from the first frame. Measured per GOP against one continuous ABR encoder at equal bitrate (PSNR at the
# rung's size; bench.quality's zoom source, veryfast, 2 s GOPs): 240p ABR -1.37 dB, CBR +0.33; 480p -0.51 /
# -0.14; but 720p -0.22 / -0.28 and 1080p -0.10 / -0.29, where the guess is close and ABR's freedom to vary
# the frame size is worth more. With 1 s GOPs (LOW) the ABR start costs more: 240p -2.8 dB, 480p -0.70.
CBR_BELOW_HEIGHT = 720


def x264_vbv(kbps: int, height: int) -> str:
    """The rung's VBV (x264-params): a 1.2x cap over a 2 s buffer for the ABR rate control, or CBR-style
    (maxrate = bitrate, 1 s buffer) below CBR_BELOW_HEIGHT."""
    if height < CBR_BELOW_HEIGHT:
        return f"vbv-maxrate={kbps}:vbv-bufsize={kbps}"
    return f"vbv-maxrate={int(kbps * 1.2)}:vbv-bufsize={kbps * 2}"


def x264_options(preset: str, keyint: int, kbps: int, height: int) -> dict[str, str]:
    """libx264 options of one rung of a whole GOP (bench/ gives the ffmpeg anchor the same): fixed GOP =
    the source GOP (one IDR, no scene-cut keyframes, closed), no B-frames, ABR at the rung's bitrate under
    the rung's VBV (x264_vbv)."""
    return {
        "preset": preset,
        "x264-params": f"keyint={keyint}:min-keyint={keyint}:scenecut=0:open-gop=0:bframes=0:{x264_vbv(kbps, height)}",
    }


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
