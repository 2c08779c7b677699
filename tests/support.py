"""Small helpers for tests: waiting on conditions with deadlines, sample records."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def wait_until(pred: Callable[[], T], timeout: float, interval: float = 0.05, what: str = "condition") -> T:
    """Poll `pred` until it returns something truthy; fail naming `what` at the deadline."""
    end = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def healthy(url: str) -> bool:
    """GET url/healthz answers 200 (a server we started is up); False while it cannot be reached."""
    import httpx

    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def sample_records() -> dict[str, dict[str, Any]]:
    """One valid record of every schema (fields exercised, not realistic media)."""
    now = 1_795_000_000_000
    pkt = {"pts": 0, "dts": 0, "duration": 3000, "keyframe": True, "data": b"\x00\x00\x00\x01\x65"}
    return {
        "GopChunk": {
            "stream_id": "s1", "ingest_id": "primary", "gop_index": 7, "epoch": 0, "chunk_index": 0,
            "is_last_chunk": True, "pts_start": 630000, "duration": 180000, "time_base_num": 1,
            "time_base_den": 90000, "capture_wallclock_ms": now, "published_wallclock_ms": now + 5,
            "video": {"codec": "h264", "width": 1920, "height": 1080, "frame_rate_num": 30,
                      "frame_rate_den": 1, "extradata": b"\x01\x64\x00\x28"},
            "audio": {"codec": "aac", "sample_rate": 48000, "channels": 2, "extradata": b"\x11\x90",
                      "time_base_num": 1, "time_base_den": 48000},
            "video_packets": [pkt], "audio_packets": [dict(pkt, keyframe=False)],
        },
        "RenditionSegment": {
            "stream_id": "s1",
            "rendition": {"name": "720p", "media_type": "VIDEO", "bandwidth": 4_400_000,
                          "average_bandwidth": 3_900_000, "target_bitrate": 4_000_000, "width": 1280,
                          "height": 720, "frame_rate": 30.0, "codecs": "avc1.64001f", "sample_rate": 0,
                          "channels": 0},
            "gop_index": 7, "epoch": 0, "pts": 630000, "duration": 180000, "timescale": 90000,
            "capture_wallclock_ms": now, "ingest_published_ms": now + 5, "encode_started_ms": now + 10,
            "encoded_wallclock_ms": now + 500, "init_hash": "ab" * 32, "init_segment": b"ftyp",
            "data": b"moofmdat", "parts": [{"duration": 0.5, "offset": 0, "length": 8, "independent": True}],
            "part_index": -1, "is_last_part": True,
        },
        "ManifestUpdate": {"stream_id": "s1", "rendition": "720p", "msn": 7, "part": 2, "version": 31,
                           "etag": '"abc"', "written_wallclock_ms": now, "ended": False,
                           "target_duration": 2, "part_target": 0.334},
        "StreamRecord": {
            "stream_id": "s1", "title": "MI vs CSK", "description": None, "category": "sports",
            "status": "LIVE", "scheduled_start_ms": now, "actual_start_ms": now, "ended_at_ms": None,
            "is_premium": True, "drm_required": False, "public": False,
            "ladder": [{"name": "1080p", "width": 1920, "height": 1080, "bitrate_kbps": 8000}],
            "latency_mode": "LOW", "encoder_preset": None, "dvr_window_seconds": 7200,
            "key_rotation_segments": 10, "allowed_countries": ["IN"],
            "ingest_endpoints": [{"role": "primary", "protocol": "rtmp", "url": "rtmp://x/live",
                                  "stream_key_hash": "scrypt$aa$bb"}],
            "taken_down_ms": None, "steering_drained": ["b"], "steering_pinned": None,
            "created_ms": now, "updated_ms": now,
        },
        "QoeBeacon": {"event_time": now, "stream_id": "s1", "session_id": "sess", "user_id": "u",
                      "device_type": "web", "quality": "720p", "buffer_events": 1, "stall_ms": 250,
                      "bytes_downloaded": 1000, "cdn_pop": "bom1", "latency_ms": 2500, "startup_ms": 900,
                      "bitrate_kbps": 4000, "dropped_frames": 0, "error_code": None,
                      "event_type": "heartbeat", "watch_ms": 10000},
        "Cue": {"stream_id": "s1", "cue_id": "c1", "splice_event_id": 42, "start_wallclock_ms": now,
                "duration_ms": 30000, "scte35": None, "created_ms": now},
        "DeadLetter": {"original_topic": "floodlight.gops", "partition": 1, "offset": 99, "key": b"s1",
                       "value": b"junk", "reason": "undecodable", "error_class": "decode",
                       "stage": "encoder", "stream_id": "s1", "gop_index": 7, "failed_ms": now, "attempt": 1},
    }
