"""Ladder maths: rung selection never upscales, sizes follow the source aspect, presets by mode."""

from __future__ import annotations

import pytest

from floodlight.registry import DEFAULT_LADDER
from processors.encoder.ladder import (
    CBR_BELOW_HEIGHT,
    bitrates,
    even,
    part_seconds_for,
    preset_for,
    select_rungs,
    x264_options,
)


def names(rungs):
    return [r["name"] for r in rungs]


def test_full_ladder_from_1080p_source():
    rungs = select_rungs(DEFAULT_LADDER, 1920, 1080)
    assert names(rungs) == ["1080p", "720p", "480p", "240p"]
    assert [(r["width"], r["height"]) for r in rungs] == [(1920, 1080), (1280, 720), (854, 480), (426, 240)]


def test_never_upscales():
    assert names(select_rungs(DEFAULT_LADDER, 1280, 720)) == ["720p", "480p", "240p"]
    assert names(select_rungs(DEFAULT_LADDER, 640, 360)) == ["240p"]


def test_tiny_source_keeps_smallest_rung_at_source_size():
    rungs = select_rungs(DEFAULT_LADDER, 320, 180)
    assert names(rungs) == ["240p"]
    assert (rungs[0]["width"], rungs[0]["height"]) == (320, 180)


def test_aspect_ratio_follows_source_and_sizes_are_even():
    rungs = select_rungs(DEFAULT_LADDER, 1440, 1080)  # 4:3
    assert (rungs[0]["width"], rungs[0]["height"]) == (1440, 1080)
    assert all(r["width"] % 2 == 0 and r["height"] % 2 == 0 for r in rungs)
    assert rungs[1]["width"] == 960


def test_rendition_filter_and_order():
    ladder = list(reversed(DEFAULT_LADDER))
    assert names(select_rungs(ladder, 1920, 1080, {"240p", "1080p"})) == ["1080p", "240p"]
    assert select_rungs(ladder, 1920, 1080, {"nope"}) == []


def test_bad_source_size():
    with pytest.raises(ValueError):
        select_rungs(DEFAULT_LADDER, 0, 1080)


def test_even():
    assert even(853.3) == 854 and even(426.7) == 426 and even(1) == 2


def test_presets_and_parts_by_latency_mode():
    assert preset_for(None) == "veryfast"
    # LOW: the fastest preset that keeps High profile (CABAC, 8x8 transforms); ultrafast has neither
    assert preset_for({"latency_mode": "LOW", "encoder_preset": None}) == "superfast"
    assert preset_for({"latency_mode": "STANDARD"}) == "veryfast"
    assert preset_for({"latency_mode": "LOW", "encoder_preset": "ultrafast"}) == "ultrafast"  # the override wins
    assert preset_for({"latency_mode": "STANDARD", "encoder_preset": "fast"}) == "fast"
    assert part_seconds_for({"latency_mode": "LOW"}) == pytest.approx(0.333)
    assert part_seconds_for(None) == 1.0


def test_bitrates_peak_and_average():
    peak, avg = bitrates([4000, 1000, 1000, 1000], [0.5, 0.5, 0.5, 0.5])
    assert avg == 7000 * 8 // 2
    assert peak == (5000 * 8) // 1  # first 1 s window holds the keyframe
    assert bitrates([], []) == (0, 0)
    # a segment shorter than the window: peak falls back to the average
    assert bitrates([100], [0.2]) == (4000, 4000)


def test_unknown_preset_override_falls_back_to_mode():
    assert preset_for({"latency_mode": "LOW", "encoder_preset": "turbo; rm -rf"}) == "superfast"


def params(opts: dict[str, str]) -> dict[str, str]:
    return dict(kv.split("=", 1) for kv in opts["x264-params"].split(":"))


def test_x264_options_fixed_closed_gop_and_vbv_by_rung_size():
    top = x264_options("veryfast", 60, 8000, 1080)
    assert top["preset"] == "veryfast" and "tune" not in top
    p = params(top)
    # one IDR per GOP (the source's), no scene-cut keyframes, closed, no B-frames
    assert (p["keyint"], p["min-keyint"], p["scenecut"], p["open-gop"], p["bframes"]) == ("60", "60", "0", "0", "0")
    assert (p["vbv-maxrate"], p["vbv-bufsize"]) == ("9600", "16000")  # ABR under a 1.2x cap, 2 s buffer
    for height in (240, 480, CBR_BELOW_HEIGHT - 2):  # small rungs: CBR-style, x264 spends from the first frame
        assert (params(x264_options("superfast", 30, 500, height))["vbv-maxrate"],
                params(x264_options("superfast", 30, 500, height))["vbv-bufsize"]) == ("500", "500")
    assert params(x264_options("veryfast", 60, 4000, 720))["vbv-maxrate"] == "4800"
