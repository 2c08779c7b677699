"""Playback origin: playlists (LL-HLS blocking reload, delta updates), MPD, init/segments/parts,
AES keys, the DASH time source, and the edge's token check.

Every path segment is checked against a strict pattern before any object key is built, so no
request can name something outside `live/{stream}/...` in the store. Unknown stream -> 404, bad
or missing token -> 403, malformed parameters -> 400.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import re
import time
from typing import Any
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

from api import metrics
from api.llhls import BadBlockingRequest, BlockRequest, hold_seconds, parse_block_request, satisfied, too_far_ahead
from api.rewrite import sign_mpd, sign_playlist, steer_master, steer_mpd
from api.tokens import TokenError
from floodlight import ids
from floodlight.ids import is_rendition, is_stream_id, is_token_id
from floodlight.objectstore import StoredObject, StoreError

log = logging.getLogger("api.origin")
router = APIRouter()

OBJECT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}(\.[0-9]{1,6})?\.(m4s|mp4|m3u8|vtt|aac)$")
MEDIA_RE = re.compile(r"^([0-9]{1,12})(?:\.([0-9]{1,6}))?\.m4s$")
ROOT_DOC_RE = re.compile(r"^(master(-[a-z0-9]{1,16})?\.m3u8|manifest\.mpd)$")
NO_STORE = "no-store"
SHORT_404 = "public, max-age=1"
GONE = "public, max-age=10"
ANON_KEY_TOKEN_BUCKET_S = 60


def _bad(msg: str) -> HTTPException:
    return HTTPException(400, msg, headers={"Cache-Control": NO_STORE})


def taken_down() -> HTTPException:
    """410 for everything of a stream an operator took down (issue 18); edges may keep the answer a while."""
    return HTTPException(410, "stream taken down", headers={"Cache-Control": GONE})


def _check_ids(scope: str, sid: str, rendition: str | None = None, name: str | None = None) -> None:
    if not is_stream_id(sid):
        raise _bad(f"malformed {scope} id")
    if rendition is not None and not is_rendition(rendition):
        raise _bad("malformed rendition")
    if name is not None and not OBJECT_RE.fullmatch(name):
        raise _bad("malformed object name")


def authorize(request: Request, scope: str, sid: str) -> tuple[dict[str, Any] | None, str | None]:
    """(stream record, token to propagate). 404 unknown live stream, 403 no/bad token or country."""
    ctx = request.app.state.ctx
    record = ctx.registry.get(sid) if ctx.registry else None
    if scope == "live" and record is None:
        if ctx.registry is None or not ctx.registry.caught_up:
            raise HTTPException(503, "stream registry still loading", headers={"Retry-After": "1",
                                                                               "Cache-Control": NO_STORE})
        raise HTTPException(404, f"unknown stream {sid!r}", headers={"Cache-Control": SHORT_404})
    if record is not None and record.get("taken_down_ms"):
        raise taken_down()
    if record is not None and record.get("allowed_countries"):
        country = (request.headers.get(ctx.settings.api_geo_header) or "").upper()
        if country not in record["allowed_countries"]:
            metrics.TOKEN_REJECTS.labels("geo").inc()
            raise HTTPException(403, "not available in your country", headers={"Cache-Control": NO_STORE})
    token = request.query_params.get("token")
    if record is not None and record.get("public"):
        return record, None
    try:
        ctx.signer.verify(token, f"{scope}/{sid}")
    except TokenError as exc:
        try:  # a replayed VOD asset is registered under its id: the stream's token opens its vod/ form too
            if scope != "vod":
                raise
            ctx.signer.verify(token, f"live/{sid}")
        except TokenError:
            metrics.TOKEN_REJECTS.labels(str(exc).split()[0]).inc()
            raise HTTPException(403, str(exc), headers={"Cache-Control": NO_STORE}) from exc
    return record, token


def _not_modified(request: Request, etag: str) -> bool:
    inm = request.headers.get("if-none-match")
    return bool(inm) and (inm.strip() == "*" or etag in [t.strip() for t in inm.split(",")])


def _respond(request: Request, body: bytes, content_type: str, cache_control: str, etag: str) -> Response:
    headers = {"Cache-Control": cache_control, "ETag": etag}
    if _not_modified(request, etag):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=content_type, headers=headers)


def _etag_with(etag: str, token: str | None) -> str:
    if not token:
        return etag
    return f'"{etag.strip(chr(34))}.{hashlib.blake2s(token.encode(), digest_size=6).hexdigest()}"'


async def _serve_document(request: Request, scope: str, sid: str, rendition: str, name: str,
                          record: dict[str, Any] | None, token: str | None, doc_version_key: str) -> Response:
    """A playlist or MPD, read once per version and signed for the caller's token."""
    ctx = request.app.state.ctx
    key = f"{scope}/{sid}/{name}" if rendition == "" else f"{scope}/{sid}/{rendition}/{name}"
    obj = await ctx.hub.get(key, sid, doc_version_key)
    if obj is None:
        raise HTTPException(404, "not found", headers={"Cache-Control": SHORT_404})
    if name.endswith(".m3u8") and rendition and scope == "live":
        if not ctx.hub.learned(sid, doc_version_key):
            ctx.hub.learn_from_playlist(sid, doc_version_key, obj.data.decode("utf-8", "replace"))
    sign_token = token
    keys_only = False
    if sign_token is None and record is not None and record.get("drm_required") and name.endswith(".m3u8"):
        # free-to-air but encrypted: key URIs still need a token; mint one shared by everyone for a minute
        sign_token = ctx.signer.sign(f"{scope}/{sid}", ttl_s=ANON_KEY_TOKEN_BUCKET_S,
                                     bucket_s=ANON_KEY_TOKEN_BUCKET_S)
        keys_only = True
    cdn = ctx.cdn
    steer = cdn is not None and cdn.enabled and scope == "live" and rendition == ""
    first = cdn.first(sid) if steer else ""
    if sign_token is None and not steer:
        return _respond(request, obj.data, obj.content_type, obj.cache_control, obj.etag)

    def render() -> bytes:
        text = obj.data.decode("utf-8", "replace")
        if steer:  # every variant once per pathway, absolute on its base (issue 18)
            ways = [(p.id, p.base_url) for p in cdn.pathways]
            steered = steer_mpd if name.endswith(".mpd") else steer_master
            text = steered(text, ways, f"/{scope}/{sid}/{name}", first, cdn.server_uri(sid))
        if sign_token is None:
            return text.encode()
        out = sign_mpd(text, sign_token) if name.endswith(".mpd") else sign_playlist(text, sign_token,
                                                                                    keys_only=keys_only)
        return out.encode()

    render_key = f"{sign_token or ''}|{first}" if steer else str(sign_token)
    body = ctx.hub.rendered(key, obj, render_key, render)
    return _respond(request, body, obj.content_type, obj.cache_control, _etag_with(obj.etag, render_key))


async def _serve_media(request: Request, scope: str, sid: str, rendition: str, name: str) -> Response:
    """init/segments/parts: immutable. A part or segment just past the live edge is held until it exists
    (preload hints), like a blocking playlist request; a segment of a stream in parts that is still being
    built is streamed part by part (LL-DASH, chunked CMAF)."""
    ctx = request.app.state.ctx
    key = f"{scope}/{sid}/{rendition}/{name}"
    kind = "init" if name.endswith(".mp4") else ("part" if name.count(".") == 2 else "segment")
    metrics.ORIGIN_MEDIA.labels(kind).inc()
    obj: StoredObject | None = await asyncio.to_thread(ctx.store.get, key)
    if obj is None and scope == "live":
        m = MEDIA_RE.match(name)
        state = ctx.hub.state(sid, rendition)
        if m and state is not None and not state.ended:
            req = BlockRequest(int(m.group(1)), int(m.group(2)) if m.group(2) else None)
            nearby = req.msn is not None and state.last_complete_msn < req.msn <= state.msn + 1
            if nearby and req.part is None and state.part_target and req.msn is not None:
                return _stream_segment(ctx, key, sid, rendition, req.msn)
            if nearby and not satisfied(state, req):
                hold = hold_seconds(state, ctx.settings.api_block_timeout_s)
                if await ctx.hub.wait_for(sid, rendition, req, hold):
                    obj = await asyncio.to_thread(ctx.store.get, key)
    if obj is None:
        raise HTTPException(404, "not found", headers={"Cache-Control": SHORT_404})
    return _respond(request, obj.data, obj.content_type, obj.cache_control, obj.etag)


def _stream_segment(ctx: Any, key: str, sid: str, rendition: str, msn: int) -> Response:
    """A segment still being built (issue 15.4, LL-DASH): its parts as each is written, with chunked transfer,
    then whatever the complete segment has beyond them (the segment is the concatenation of its parts, so
    the bytes are the segment's). A part that does not come in time ends the response unfinished, so no
    cache keeps a truncated segment."""

    async def body() -> Any:
        sent, j = 0, 0
        while True:
            state = ctx.hub.state(sid, rendition)
            if state is None or state.ended or state.msn > msn or (state.msn == msn and state.part == -1):
                obj = await asyncio.to_thread(ctx.store.get, key)
                if obj is None:
                    raise RuntimeError(f"{key} complete but not in the store")
                if len(obj.data) > sent:
                    yield obj.data[sent:]
                return
            if state.msn == msn and state.part >= j:
                part = await asyncio.to_thread(ctx.store.get, f"{key.removesuffix('.m4s')}.{j}.m4s")
                if part is not None:
                    yield part.data
                    sent += len(part.data)
                    j += 1
                    continue
            metrics.ORIGIN_MEDIA.labels("streamed_wait").inc()
            if not await ctx.hub.wait_for(sid, rendition, BlockRequest(msn, j),
                                          hold_seconds(state, ctx.settings.api_block_timeout_s)):
                raise TimeoutError(f"part {msn}.{j} of {sid}/{rendition} did not come in time")

    return StreamingResponse(body(), media_type="video/iso.segment",
                             headers={"Cache-Control": "public, max-age=31536000, immutable"})


async def _serve_media_playlist(request: Request, scope: str, sid: str, rendition: str, name: str,
                                record: dict[str, Any] | None, token: str | None) -> Response:
    ctx = request.app.state.ctx
    q = request.query_params
    try:
        req = parse_block_request(q.get("_HLS_msn"), q.get("_HLS_part"), q.get("_HLS_skip"))
    except BadBlockingRequest as exc:
        raise _bad(str(exc)) from exc
    if name != "playlist.m3u8" and (req.blocking or req.skip):
        raise _bad("_HLS_* parameters apply to playlist.m3u8 only")
    if req.blocking and scope == "live":
        hub = ctx.hub
        if not hub.learned(sid, rendition):  # target durations (and, before any update, the state itself)
            obj = await hub.get(f"{scope}/{sid}/{rendition}/playlist.m3u8", sid, rendition)
            if obj is None:
                raise HTTPException(404, "not found", headers={"Cache-Control": SHORT_404})
            hub.learn_from_playlist(sid, rendition, obj.data.decode("utf-8", "replace"))
        state = hub.state(sid, rendition)
        if state is not None and too_far_ahead(state, req):
            raise _bad(f"_HLS_msn/_HLS_part too far ahead of the live edge ({state.msn}.{state.part})")
        if not satisfied(state, req):
            hold = hold_seconds(state, ctx.settings.api_block_timeout_s)
            if not await hub.wait_for(sid, rendition, req, hold):
                metrics.BLOCK_TIMEOUTS.inc()
                raise HTTPException(503, "playlist did not reach the requested part in time",
                                    headers={"Retry-After": "1", "Cache-Control": NO_STORE})
    if req.skip and scope == "live":
        skip_key = f"{scope}/{sid}/{rendition}/playlist-skip.m3u8"
        if await ctx.hub.get(skip_key, sid, rendition) is not None:
            name = "playlist-skip.m3u8"
    return await _serve_document(request, scope, sid, rendition, name, record, token, rendition)


def _route(scope: str) -> None:
    @router.get(f"/{scope}/{{sid}}/{{doc}}", tags=["playback"],
                summary=f"{scope}: HLS master playlist (master.m3u8, master-dvr.m3u8) or DASH MPD (manifest.mpd)",
                responses={400: {"description": "Malformed id or document name"},
                           403: {"description": "Missing, expired or foreign token"},
                           404: {"description": "Unknown stream or not yet packaged"}})
    async def document(sid: str, doc: str, request: Request) -> Response:
        _check_ids(scope, sid)
        if not ROOT_DOC_RE.fullmatch(doc):
            raise _bad("malformed document name")
        record, token = authorize(request, scope, sid)
        version_key = "mpd" if doc.endswith(".mpd") else doc.removesuffix(".m3u8")
        return await _serve_document(request, scope, sid, "", doc, record, token, version_key)

    @router.get(f"/{scope}/{{sid}}/{{rendition}}/{{name}}", tags=["playback"],
                summary=f"{scope}: media playlist (LL-HLS: _HLS_msn, _HLS_part, _HLS_skip), init, segment, part",
                responses={400: {"description": "Malformed path or _HLS_* parameters, or too far ahead"},
                           503: {"description": "Blocked longer than three target durations (Retry-After)"}})
    async def media(sid: str, rendition: str, name: str, request: Request) -> Response:
        _check_ids(scope, sid, rendition, name)
        record, token = authorize(request, scope, sid)
        if name.endswith(".m3u8"):
            return await _serve_media_playlist(request, scope, sid, rendition, name, record, token)
        return await _serve_media(request, scope, sid, rendition, name)


_route("live")
_route("vod")


@router.get("/keys/{sid}/{key_id}", tags=["playback"], summary="AES-128 content key (token required)",
            responses={200: {"content": {"application/octet-stream": {}}},
                       403: {"description": "No valid playback token for this stream"},
                       404: {"description": "Unknown stream or key"}})
async def content_key(sid: str, key_id: str, request: Request) -> Response:
    _check_ids("live", sid)
    if not is_token_id(key_id):
        raise _bad("malformed key id")
    ctx = request.app.state.ctx
    record = ctx.registry.get(sid) if ctx.registry else None
    if record is None:
        raise HTTPException(404, f"unknown stream {sid!r}")
    if record.get("taken_down_ms"):
        raise taken_down()
    if record.get("allowed_countries"):
        authorize(request, "live", sid)  # geo rule
    try:
        ctx.signer.verify(request.query_params.get("token"), f"live/{sid}")
    except TokenError as exc:
        try:  # a VOD asset made by replay keeps the stream's keys
            ctx.signer.verify(request.query_params.get("token"), f"vod/{sid}")
        except TokenError:
            metrics.TOKEN_REJECTS.labels("key").inc()
            raise HTTPException(403, str(exc), headers={"Cache-Control": NO_STORE}) from exc
    key = await asyncio.to_thread(ctx.keys.get, sid, key_id)
    if key is None:
        raise HTTPException(404, "unknown key", headers={"Cache-Control": NO_STORE})
    return Response(key.key, media_type="application/octet-stream", headers={"Cache-Control": "private, no-store"})


@router.get("/api/v1/time", tags=["playback"], summary="Server time (ISO 8601) for DASH UTCTiming",
            response_class=PlainTextResponse,
            responses={200: {"content": {"text/plain": {"example": "2026-11-29T12:00:00.123Z"}}}})
async def server_time() -> Response:
    now = dt.datetime.now(dt.UTC)
    return PlainTextResponse(now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z",
                             headers={"Cache-Control": NO_STORE})


_EDGE_MEDIA_PATH = re.compile(r"^/(live|vod)/([^/]+)/([^/]+)/([^/]+)$")


@router.get("/edge/authz", tags=["ops"], summary="Token check for the edge (its first pass for media)",
            status_code=200, responses={403: {"description": "Token or country refused, or a path that is not "
                                                              "a canonical media path of a known stream"}})
async def edge_authz(request: Request) -> Response:
    """The edge asks before serving a cached object: it caches the verdict per (stream, token, country).

    Fail closed (issue 13): only a canonical media path (`/live|vod/{id}/{rendition}/{object}`, every
    part valid, no percent-escapes or dot segments) of a known stream with a valid token gets 200.
    Anything else is 403, so a path the edge and the origin could read differently never opens a
    cached object: the edge refuses non-canonical request paths before this check too. The token is
    the one the edge sends in X-Playback-Token: the very string its verdict cache is keyed on."""
    denied = Response(status_code=403, headers={"Cache-Control": "max-age=1"})
    parts = urlsplit(request.headers.get("x-original-uri", ""))
    m = _EDGE_MEDIA_PATH.fullmatch(parts.path)
    if m is None:
        return denied
    scope, sid, rendition, name = m.groups()
    if not (is_stream_id(sid) and is_rendition(rendition) and OBJECT_RE.fullmatch(name)):
        return denied
    ctx = request.app.state.ctx
    if scope == "live" and (ctx.registry is None or ctx.registry.get(sid) is None):
        return denied  # unknown (or not yet loaded) stream: never serve a cached object for it
    # the token the edge keys the cached verdict on (the raw first `token=` argument), never one decoded here
    token = request.headers.get("x-playback-token") or None
    scope_req = request.scope.copy()
    scope_req["query_string"] = urlencode({"token": token}).encode() if token else b""
    try:
        authorize(Request(scope_req, request.receive), scope, sid)
    except HTTPException as exc:
        if exc.status_code == 403:
            return Response(status_code=403, headers={"Cache-Control": "max-age=5"})
        return denied
    ttl = 60
    if token:
        try:
            ttl = max(1, min(60, int(token.split(".")[1]) - int(time.time())))
        except (IndexError, ValueError):
            ttl = 1
    return Response(status_code=200, headers={"Cache-Control": f"max-age={ttl}"})


_LIVE_PLAYLIST = re.compile(rf"^/live/({ids.STREAM_ID_PATTERN[1:-1]})/({ids.RENDITION_PATTERN[1:-1]})/playlist\.m3u8$")


class PlaylistFastPath:
    """Pure ASGI shortcut for GET /live/{id}/{rendition}/playlist.m3u8: the hot path of thousands of
    blocked LL-HLS requests skips routing and FastAPI's endpoint machinery. Same handlers, same answers
    as the routed endpoint (which still serves HEAD and documents the path in OpenAPI)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        m = _LIVE_PLAYLIST.fullmatch(scope["path"]) if scope["type"] == "http" and scope["method"] == "GET" else None
        if m is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        sid, rendition = m.groups()
        try:
            record, token = authorize(request, "live", sid)
            response = await _serve_media_playlist(request, "live", sid, rendition, "playlist.m3u8", record, token)
        except HTTPException as exc:
            response = JSONResponse({"detail": exc.detail}, exc.status_code, headers=exc.headers)
        except StoreError as exc:
            log.warning("object store error", extra={"stream_id": sid, "error": str(exc)})
            response = JSONResponse({"detail": "object store unavailable, retry"}, 503,
                                    headers={"Retry-After": "1", "Cache-Control": NO_STORE})
        await response(scope, receive, send)
