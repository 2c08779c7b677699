"""GET /api/v1/analytics/streams/{stream_id}/qoe: per-minute QoE series and a summary (DESIGN §7).

Reads through floodlight.analytics.AnalyticsClient (the qoe app's port in embedded mode, the
ClickHouse server otherwise). QoE data is operational: an admin or analyst bearer token is required.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request

from api.auth import principal_of
from api.context import Context
from floodlight import ids
from floodlight.analytics import MAX_RANGE_MS, AnalyticsClient, AnalyticsError

router = APIRouter(tags=["analytics"])
DEFAULT_RANGE_MS = 3600 * 1000


def parse_instant(value: str | None, name: str) -> int | None:
    """Unix ms (digits) or ISO 8601 with a timezone ('Z' allowed) -> Unix ms; 400 otherwise."""
    if value is None or value == "":
        return None
    if value.isdigit() and len(value) <= 15:
        return int(value)
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise HTTPException(400, f"'{name}' must be Unix milliseconds or ISO 8601, got {value[:40]!r}") from None
    if dt.tzinfo is None:
        raise HTTPException(400, f"'{name}' needs a timezone (e.g. 2026-11-29T12:00:00Z)")
    return int(dt.timestamp() * 1000)


def resolve_range(from_: str | None, to: str | None, now_ms: int) -> tuple[int, int]:
    to_ms = parse_instant(to, "to")
    from_ms = parse_instant(from_, "from")
    to_ms = now_ms if to_ms is None else to_ms
    from_ms = to_ms - DEFAULT_RANGE_MS if from_ms is None else from_ms
    if from_ms >= to_ms:
        raise HTTPException(400, "'from' must be before 'to'")
    if to_ms - from_ms > MAX_RANGE_MS:
        raise HTTPException(400, "range longer than 31 days")
    return from_ms, to_ms


def _client(request: Request) -> AnalyticsClient:
    ctx: Context = request.app.state.ctx
    return ctx.analytics_client()


@router.get(
    "/api/v1/analytics/streams/{stream_id}/qoe",
    summary="QoE of a stream: per-minute series and a summary",
    responses={400: {"description": "Bad stream id or time range"}, 401: {"description": "No/invalid token"},
               403: {"description": "Not an admin or analyst"}, 404: {"description": "Unknown stream"},
               503: {"description": "Analytics store unreachable"}},
)
async def stream_qoe(
    request: Request,
    stream_id: str,
    from_: str | None = Query(None, alias="from", description="Start, Unix ms or ISO 8601 (default: to - 1 h)."),
    to: str | None = Query(None, description="End (exclusive), Unix ms or ISO 8601 (default: now)."),
) -> dict[str, Any]:
    principal = principal_of(request)
    if principal is None:
        raise HTTPException(401, "bearer token required", headers={"WWW-Authenticate": "Bearer"})
    if not (principal.admin or "analyst" in principal.roles):
        raise HTTPException(403, "admin or analyst role required")
    if not ids.is_stream_id(stream_id):
        raise HTTPException(400, "invalid stream_id")
    from_ms, to_ms = resolve_range(from_, to, int(time.time() * 1000))
    registry = getattr(request.app.state.ctx, "registry", None)
    if registry is not None:
        if not registry.caught_up:  # just started: give the view a moment rather than answer wrongly
            await asyncio.to_thread(registry.wait_caught_up, 5.0)
        if registry.caught_up and registry.get(stream_id) is None:
            raise HTTPException(404, f"unknown stream {stream_id}")
    try:
        return await asyncio.to_thread(_client(request).qoe_series, stream_id, from_ms, to_ms)
    except AnalyticsError as exc:
        raise HTTPException(exc.status if exc.status in (400, 503) else 502, str(exc)) from None
