"""The brief's response shape of a stream, from a StreamRecord (pure: no I/O)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from floodlight.registry import ladder_of


def iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def status_of(record: dict[str, Any], last_update_ms: int | None, now_ms: int, silence_ms: int) -> str:
    """live while manifests keep changing; ended when signalled or silent too long; else scheduled."""
    if record["status"] == "ENDED":
        return "ended"
    if last_update_ms is not None:
        return "live" if now_ms - last_update_ms <= silence_ms else "ended"
    if record["status"] == "LIVE":
        return "live" if now_ms - record["updated_ms"] <= silence_ms else "ended"
    return "scheduled"


def stream_view(record: dict[str, Any], *, status: str, started_ms: int | None, playback_url: str | None,
                dash_url: str | None, key_base: str) -> dict[str, Any]:
    ladder = ladder_of(record)
    return {
        "stream_id": record["stream_id"],
        "title": record["title"],
        "description": record.get("description"),
        "category": record.get("category"),
        "status": status,
        "scheduled_start": iso(record.get("scheduled_start_ms")),
        "started_at": iso(record.get("actual_start_ms") or started_ms),
        "ended_at": iso(record.get("ended_at_ms")),
        "playback_url": playback_url,
        "dash_url": dash_url,
        "drm": {"type": "aes-128", "license_url": f"{key_base}/keys/{record['stream_id']}"}
        if record.get("drm_required") else None,
        "qualities": [{"resolution": r["name"], "width": r["width"], "height": r["height"],
                       "bitrate": r["bitrate_kbps"]} for r in ladder],
        "features": {
            "dvr_enabled": record.get("dvr_window_seconds", 0) > 0,
            "dvr_window_seconds": record.get("dvr_window_seconds", 0),
            "low_latency": record.get("latency_mode") == "LOW",
        },
        "is_premium": record.get("is_premium", False),
        "public": record.get("public", False),
        "allowed_countries": list(record.get("allowed_countries") or []),
    }
