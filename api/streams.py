"""Stream registry endpoints: create (admin), list, get (signed playback URL), end, cues.

Writes go to the compacted topic floodlight.streams; the handler then waits until this
instance's own RegistryView holds the record, so a create followed by a get never misses.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import logging
import time
import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from api import metrics
from api.auth import Principal, principal_of, require_admin
from api.context import Context
from api.shapes import iso, status_of, stream_view
from floodlight import ids
from floodlight.registry import new_stream_record, publish_stream
from floodlight.streamkeys import hash_stream_key, new_stream_key
from schemas import codec

log = logging.getLogger("api.streams")
router = APIRouter(tags=["streams"])
StreamId = Annotated[str, Path(pattern=ids.STREAM_ID_PATTERN, examples=["ipl-2024-mi-vs-csk"])]
READ_YOUR_WRITES_S = 10.0


class Rung(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=ids.RENDITION_PATTERN, examples=["720p"])
    width: int = Field(ge=16, le=7680)
    height: int = Field(ge=16, le=4320)
    bitrate_kbps: int = Field(ge=50, le=100_000)


class StreamCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "stream_id": "ipl-2024-mi-vs-csk", "title": "MI vs CSK - IPL 2024", "category": "sports",
        "latency_mode": "low", "is_premium": True, "dvr_window_seconds": 7200}]})
    stream_id: str = Field(pattern=ids.STREAM_ID_PATTERN)
    title: str = Field(min_length=1, max_length=200)
    description: str | None = Field(None, max_length=4000)
    category: str | None = Field(None, max_length=50)
    scheduled_start: dt.datetime | None = None
    is_premium: bool = False
    drm_required: bool = False
    public: bool = False
    latency_mode: Literal["low", "standard"] = "standard"
    dvr_window_seconds: int = Field(7200, ge=0, le=86_400)
    ladder: list[Rung] | None = Field(None, max_length=8)
    allowed_countries: list[Annotated[str, Field(pattern=r"^[A-Z]{2}$")]] = Field(default_factory=list,
                                                                                   max_length=250)
    encoder_preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium"] | None = None


class CueCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"duration_s": 30}]})
    duration_s: float = Field(gt=0, le=3600)
    start: dt.datetime | None = Field(None, description="Requested start; default now (snapped to a segment).")
    splice_event_id: int | None = Field(None, ge=0, le=2**32 - 1)
    cue_id: str | None = Field(None, pattern=ids.TOKEN_ID_PATTERN)
    scte35_base64: str | None = Field(None, max_length=4096)


STREAM_EXAMPLE = {
    "stream_id": "ipl-2024-mi-vs-csk", "title": "MI vs CSK - IPL 2024", "description": None,
    "category": "sports", "status": "live", "scheduled_start": None, "started_at": "2024-04-15T19:30:00Z",
    "ended_at": None,
    "playback_url": "http://127.0.0.1:8080/live/ipl-2024-mi-vs-csk/master.m3u8?token=k1.1713213000.abc",
    "dash_url": "http://127.0.0.1:8080/live/ipl-2024-mi-vs-csk/manifest.mpd?token=k1.1713213000.abc",
    "drm": {"type": "aes-128", "license_url": "http://127.0.0.1:8080/keys/ipl-2024-mi-vs-csk"},
    "qualities": [{"resolution": "1080p", "width": 1920, "height": 1080, "bitrate": 8000},
                  {"resolution": "720p", "width": 1280, "height": 720, "bitrate": 4000}],
    "features": {"dvr_enabled": True, "dvr_window_seconds": 7200, "low_latency": True},
    "is_premium": True, "public": False, "allowed_countries": [],
}


def _ctx(request: Request) -> Context:
    return request.app.state.ctx


def _view(ctx: Context, record: dict[str, Any], principal: Principal | None) -> dict[str, Any]:
    sid = record["stream_id"]
    hub = ctx.hub
    last = hub.last_update_ms.get(sid) if hub else None
    now = int(time.time() * 1000)
    status = status_of(record, last, now, int(ctx.settings.api_silence_timeout_s * 1000))
    playback = dash = None
    if can_watch(record, principal) and not record.get("taken_down_ms"):
        cdn = ctx.cdn
        # with pathways, new sessions start on the one the steering server ranks first (issue 18)
        base = f"{cdn.base_of(cdn.first(sid)) if cdn is not None and cdn.enabled else ctx.public_base}/live/{sid}"
        if record.get("public"):
            playback, dash = f"{base}/master.m3u8", f"{base}/manifest.mpd"
        else:
            # viewers of the same minute share a token: the edge caches one playlist for all of them
            token = ctx.signer.sign(f"live/{sid}", bucket_s=ctx.settings.playback_token_bucket_s)
            playback, dash = f"{base}/master.m3u8?token={token}", f"{base}/manifest.mpd?token={token}"
    started = hub.first_update_ms.get(sid) if hub else None
    view = stream_view(record, status=status, started_ms=started, playback_url=playback, dash_url=dash,
                       key_base=ctx.public_base)
    if record.get("taken_down_ms"):
        view["taken_down_at"] = iso(record["taken_down_ms"])
    return view


def can_watch(record: dict[str, Any], principal: Principal | None) -> bool:
    if record.get("public"):
        return True
    if principal is None:
        return False
    if record.get("is_premium") and not principal.entitled_to(record["stream_id"]):
        return False
    return True


async def _publish_and_wait(ctx: Context, record: dict[str, Any], op: str) -> None:
    await asyncio.to_thread(publish_stream, ctx.control, ctx.settings, record)
    metrics.REGISTRY_WRITES.labels(op).inc()
    ok = await asyncio.to_thread(ctx.registry.wait_for, lambda r: r is not None and r["updated_ms"] >= record[
        "updated_ms"] and r["status"] == record["status"], record["stream_id"], READ_YOUR_WRITES_S)
    if not ok:
        raise HTTPException(503, "registry write not visible yet; retry", headers={"Retry-After": "1"})


def _ensure_ready(ctx: Context) -> None:
    if ctx.registry is None or not ctx.registry.caught_up:
        raise HTTPException(503, "registry still loading", headers={"Retry-After": "1"})


@router.post("/api/v1/live/streams", status_code=201, summary="Create or schedule a stream (admin)",
             responses={201: {"description": "The stream, with its ingest endpoints and stream keys (shown once)",
                              "content": {"application/json": {"example": {**STREAM_EXAMPLE, "ingest": [
                                  {"role": "primary", "protocol": "rtmp", "url": "rtmp://127.0.0.1:1935/live",
                                   "stream_key": "sk_...", "publish_url": "rtmp://127.0.0.1:1935/live/sk_..."}]}}}},
                        401: {"description": "No or invalid bearer token"}, 403: {"description": "Not an admin"},
                        409: {"description": "A stream with this id exists"}})
async def create_stream(body: StreamCreate, request: Request,
                        admin: Annotated[Principal, Depends(require_admin)]) -> dict[str, Any]:
    ctx = _ctx(request)
    _ensure_ready(ctx)
    if ctx.registry.get(body.stream_id) is not None:
        raise HTTPException(409, f"stream {body.stream_id!r} already exists")
    record, keys = build_record(ctx.settings, body)
    await _publish_and_wait(ctx, record, "create")
    log.info("stream created", extra={"stream_id": body.stream_id, "by": admin.sub})
    out = _view(ctx, ctx.registry.get(body.stream_id) or record, admin)
    out["ingest"] = keys
    return out


def build_record(settings: Any, body: StreamCreate) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """A new StreamRecord with hashed stream keys, and the plain keys to show once."""
    rtmp = [u.strip() for u in settings.ingest_rtmp_urls.split(",") if u.strip()]
    srt = [u.strip() for u in settings.ingest_srt_urls.split(",") if u.strip()]
    endpoints, shown = [], []
    for i, role in enumerate(("primary", "backup")):
        key = new_stream_key()
        hashed = hash_stream_key(key)
        for protocol, urls in (("rtmp", rtmp), ("srt", srt)):
            if i >= len(urls):
                continue
            url = urls[i]
            endpoints.append({"role": role, "protocol": protocol, "url": url, "stream_key_hash": hashed})
            publish = f"{url}/{key}" if protocol == "rtmp" else f"{url}?streamid={key}"
            shown.append({"role": role, "protocol": protocol, "url": url, "stream_key": key, "publish_url": publish})
    record = new_stream_record(
        body.stream_id, body.title, description=body.description, category=body.category,
        scheduled_start_ms=int(body.scheduled_start.timestamp() * 1000) if body.scheduled_start else None,
        is_premium=body.is_premium, drm_required=body.drm_required, public=body.public,
        ladder=[r.model_dump() for r in body.ladder] if body.ladder else [],
        latency_mode=body.latency_mode.upper(), encoder_preset=body.encoder_preset,
        dvr_window_seconds=body.dvr_window_seconds, allowed_countries=list(body.allowed_countries),
        ingest_endpoints=endpoints)
    return record, shown


@router.get("/api/v1/live/streams", summary="List the streams the caller may watch (admin: all)",
            responses={200: {"content": {"application/json": {"example": {"streams": [STREAM_EXAMPLE]}}}}})
async def list_streams(request: Request, status: Annotated[Literal["scheduled", "live", "ended"] | None,
                                                           Query()] = None) -> dict[str, Any]:
    ctx = _ctx(request)
    principal = principal_of(request)
    _ensure_ready(ctx)
    # only what the caller may watch (issue 13): anonymous callers see public streams, a signed-in viewer
    # also non-premium ones and the premium ones they are entitled to; an admin sees every stream
    records = [r for r in ctx.registry.all() if (principal is not None and principal.admin) or can_watch(r, principal)]
    views = [_view(ctx, r, principal) for r in sorted(records, key=lambda r: r["stream_id"])]
    return {"streams": [v for v in views if status is None or v["status"] == status]}


@router.get("/api/v1/live/streams/{stream_id}", summary="One stream, in the brief's shape",
            responses={200: {"content": {"application/json": {"example": STREAM_EXAMPLE}}},
                       401: {"description": "Not public and no bearer token"},
                       403: {"description": "Premium stream and no entitlement, or not in an allowed country"},
                       404: {"description": "Unknown stream"}})
async def get_stream(stream_id: StreamId, request: Request) -> dict[str, Any]:
    ctx = _ctx(request)
    principal = principal_of(request)
    record = ctx.registry.get(stream_id) if ctx.registry else None
    if record is None:
        _ensure_ready(ctx)
        raise HTTPException(404, f"unknown stream {stream_id!r}")
    if not record.get("public"):
        if principal is None:
            raise HTTPException(401, "bearer token required", headers={"WWW-Authenticate": "Bearer"})
        if not can_watch(record, principal):
            raise HTTPException(403, "premium stream: entitlement required")
    view = _view(ctx, record, principal)
    view["viewers"] = await _viewers(ctx, stream_id)
    return view


_VIEWERS_TTL_S = 2.0
_viewers_cache: dict[str, tuple[float, int | None]] = {}


async def _viewers(ctx: Context, stream_id: str) -> int | None:
    """Live viewers from the qoe app (sessions in the last minute); None when analytics is unreachable.
    Cached briefly: a herd polling the stream page costs one analytics call per stream every 2 s."""
    now = time.monotonic()
    hit = _viewers_cache.get(stream_id)
    if hit is not None and now - hit[0] < _VIEWERS_TTL_S:
        return hit[1]
    value = await asyncio.to_thread(ctx.analytics_client().viewers, stream_id)
    _viewers_cache[stream_id] = (now, value)
    return value


@router.post("/api/v1/live/streams/{stream_id}/end", summary="Signal the end of a stream (admin)",
             responses={404: {"description": "Unknown stream"}, 403: {"description": "Not an admin"}})
async def end_stream(stream_id: StreamId, request: Request,
                     admin: Annotated[Principal, Depends(require_admin)]) -> dict[str, Any]:
    ctx = _ctx(request)
    record = ctx.registry.get(stream_id)
    if record is None:
        raise HTTPException(404, f"unknown stream {stream_id!r}")
    if record["status"] != "ENDED":
        now = int(time.time() * 1000)
        record = {**record, "status": "ENDED", "ended_at_ms": now, "updated_ms": max(now, record["updated_ms"] + 1)}
        await _publish_and_wait(ctx, record, "end")
        log.info("stream ended", extra={"stream_id": stream_id, "by": admin.sub})
        if ctx.cdn is not None:  # edges drop what they hold of it; the origin serves the ended stream from now on
            await ctx.cdn.purge_stream(stream_id)
    return _view(ctx, ctx.registry.get(stream_id) or record, admin)


@router.post("/api/v1/live/streams/{stream_id}/takedown",
             summary="Stop serving a stream everywhere, edge caches included (admin)",
             responses={404: {"description": "Unknown stream"}, 403: {"description": "Not an admin"},
                        200: {"content": {"application/json": {"example": {
                            "stream_id": "demo", "status": "ended", "taken_down_at": "2026-11-29T12:00:00Z",
                            "purged": {"a": "ok", "b": "ok"}}}}}})
async def takedown_stream(stream_id: StreamId, request: Request,
                          admin: Annotated[Principal, Depends(require_admin)]) -> dict[str, Any]:
    """Marks the stream taken down in the registry (every api process then answers 410 for its playlists,
    media, keys and steering, and refuses its tokens at the edge), then bans it on every pathway's edge so
    cached objects go too (again 1 s later). `purged` says how each edge answered."""
    ctx = _ctx(request)
    record = ctx.registry.get(stream_id)
    if record is None:
        _ensure_ready(ctx)
        raise HTTPException(404, f"unknown stream {stream_id!r}")
    if not record.get("taken_down_ms"):
        now = int(time.time() * 1000)
        record = {**record, "status": "ENDED", "ended_at_ms": record.get("ended_at_ms") or now, "taken_down_ms": now,
                  "updated_ms": max(now, record["updated_ms"] + 1)}
        await _publish_and_wait(ctx, record, "takedown")
        log.warning("stream taken down", extra={"stream_id": stream_id, "by": admin.sub})
    purged = await ctx.cdn.purge_stream(stream_id) if ctx.cdn is not None else {}
    return {**_view(ctx, ctx.registry.get(stream_id) or record, admin), "purged": purged}


@router.post("/api/v1/live/streams/{stream_id}/cues", status_code=202, summary="Insert an ad break (admin)",
             responses={404: {"description": "Unknown stream"}, 403: {"description": "Not an admin"},
                        202: {"content": {"application/json": {"example": {
                            "stream_id": "demo", "cue_id": "c-1a2b", "splice_event_id": 42,
                            "start_wallclock_ms": 1795000000000, "duration_ms": 30000}}}}})
async def create_cue(stream_id: StreamId, body: CueCreate, request: Request,
                     admin: Annotated[Principal, Depends(require_admin)]) -> dict[str, Any]:
    ctx = _ctx(request)
    if ctx.registry.get(stream_id) is None:
        raise HTTPException(404, f"unknown stream {stream_id!r}")
    scte35 = None
    if body.scte35_base64:
        try:
            scte35 = base64.b64decode(body.scte35_base64, validate=True)
        except ValueError as exc:
            raise HTTPException(422, "scte35_base64 is not base64") from exc
    now = int(time.time() * 1000)
    cue = {"stream_id": stream_id, "cue_id": body.cue_id or f"c-{uuid.uuid4().hex[:12]}",
           "splice_event_id": body.splice_event_id if body.splice_event_id is not None else now % (2**31),
           "start_wallclock_ms": int(body.start.timestamp() * 1000) if body.start else now,
           "duration_ms": int(body.duration_s * 1000), "scte35": scte35, "created_ms": now}
    await asyncio.to_thread(_produce_cue, ctx, cue)
    log.info("cue issued", extra={"stream_id": stream_id, "cue_id": cue["cue_id"], "by": admin.sub})
    return {k: v for k, v in cue.items() if k != "scte35"}


def _produce_cue(ctx: Context, cue: dict[str, Any]) -> None:
    errors: list[Any] = []
    ctx.control.produce(ctx.settings.topic("cues"), key=cue["stream_id"].encode(),
                        value=codec.encode("Cue", cue), on_delivery=lambda e, m: errors.append(e))
    ctx.control.flush(30)
    if errors != [None]:
        raise HTTPException(503, f"cue not written: {errors}", headers={"Retry-After": "1"})
