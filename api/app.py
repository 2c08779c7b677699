"""The api role's FastAPI app: `create_app(settings)` (DESIGN §7).

The lifespan starts what the process follows or writes: the stream registry view, the manifests
follower that wakes blocked LL-HLS requests, a fire-and-forget beacon producer and a control
producer for registry writes and cues. Routers: streams (registry), origin (playlists, media,
keys, time), beacons, analytics and the web player.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from confluent_kafka import Producer
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api import metrics
from api.beacons import BeaconSink, SessionRateLimiter
from api.cdn import Cdn
from api.context import Context
from api.cors import PlaybackCORS
from api.hub import ManifestFollower, PlaylistHub
from api.tokens import PlaybackSigner
from floodlight.keystore import open_key_provider
from floodlight.objectstore import StoredObject, StoreError, open_store
from floodlight.registry import RegistryView
from floodlight.settings import Settings, get_settings

log = logging.getLogger("api.app")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    ctx = Context(settings, PlaybackSigner(settings.playback_keys, settings.playback_token_ttl_s),
                  SessionRateLimiter(settings.api_beacon_rate_per_session))
    ctx.cdn = Cdn(settings)  # FLOODLIGHT_PATHWAYS checked here: a bad one stops the api at start

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await _start(ctx)
        try:
            yield
        finally:
            if ctx.cdn is not None:
                await ctx.cdn.stop()
            await asyncio.to_thread(_stop, ctx)

    app = FastAPI(
        title="Floodlight API",
        version="1.0",
        summary="Live stream registry, LL-HLS/DASH playback origin, AES keys and QoE beacons.",
        lifespan=lifespan,
    )
    app.state.ctx = ctx
    from api.origin import PlaylistFastPath

    app.add_middleware(PlaylistFastPath)  # innermost of ours: CORS and counting still apply
    app.add_middleware(PlaybackCORS, origins=settings.cors_origins)  # playback, player, beacons only

    @app.exception_handler(StoreError)
    async def _store_down(request: Request, exc: StoreError) -> JSONResponse:
        log.warning("object store error", extra={"path": request.url.path, "error": str(exc)})
        return JSONResponse({"detail": "object store unavailable, retry"}, 503,
                            headers={"Retry-After": "1", "Cache-Control": "no-store"})

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _jsonable(exc.errors())}, 422)

    from api import analytics, beacons, cdn, origin, streams
    from api.player import routes as player

    for module in (streams, origin, beacons, analytics, cdn, player):
        app.include_router(module.router)

    @app.get("/healthz", tags=["ops"], summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"], summary="Readiness: Kafka reachable, registry caught up, store writable",
             responses={503: {"description": "Not ready; `checks` says which part failed"}})
    async def readyz() -> JSONResponse:
        checks = await asyncio.to_thread(_readiness, ctx)
        ok = all(v == "ok" for v in checks.values())
        return JSONResponse({"status": "ready" if ok else "not ready", "checks": checks}, 200 if ok else 503)

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics", response_class=PlainTextResponse)
    async def prom() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(RequestCounter)
    return app


_KINDS = {"live", "vod", "keys", "api", "watch", "healthz", "readyz", "metrics", "edge", "player"}


class RequestCounter:
    """Pure ASGI middleware counting responses by path kind and status (cheaper than BaseHTTPMiddleware)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        parts = scope["path"].split("/", 2)
        kind = parts[1] if len(parts) > 1 and parts[1] in _KINDS else "other"

        async def counted(message: Any) -> None:
            if message["type"] == "http.response.start":
                metrics.REQUESTS.labels(kind, str(message["status"])).inc()
            await send(message)

        await self.app(scope, receive, counted)


def _jsonable(errors: Any) -> Any:
    out = []
    for e in errors:
        e = dict(e)
        e.pop("ctx", None)
        if "input" in e and not isinstance(e["input"], (str, int, float, bool, type(None), list, dict)):
            e["input"] = str(e["input"])
        out.append(e)
    return out


async def _start(ctx: Context) -> None:
    s = ctx.settings
    loop = asyncio.get_running_loop()
    ctx.store = await asyncio.to_thread(open_store, s.resolved_store_url(), s.s3_endpoint_url)
    ctx.keys = open_key_provider(s.stack_dir)
    store = ctx.store

    async def read(key: str) -> StoredObject | None:
        metrics.STORE_READS.labels("playlist").inc()
        return await asyncio.to_thread(store.get, key)

    ctx.hub = PlaylistHub(read)
    hub = ctx.hub
    from floodlight.kafka import make_producer

    ctx.control = make_producer(s, **{"log_level": 3})
    # a topic created a moment ago can list no partitions yet; the views would then never reach its end
    await asyncio.to_thread(_wait_for_partitions, ctx.control, [s.topic("streams"), s.topic("manifests")])
    ctx.registry = RegistryView(s).start()
    ctx.follower = ManifestFollower(
        s, lambda rec, received: loop.call_soon_threadsafe(hub.on_update, rec, received)).start()
    ctx.beacons = BeaconSink(s)
    if ctx.cdn is not None:
        await ctx.cdn.start(ctx.registry, ctx.analytics_client)
        if ctx.cdn.enabled:  # playback keys change only with a restart: a revoked key's cached verdicts go now
            _background(ctx, ctx.cdn.purge_verdicts())
    log.info("api started", extra={"store": s.resolved_store_url(), "topic_prefix": s.topic_prefix})


_tasks: set[asyncio.Task[Any]] = set()


def _background(ctx: Context, coro: Any) -> None:
    task = asyncio.get_running_loop().create_task(coro)
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


def _wait_for_partitions(producer: Producer, topics: list[str], deadline_s: float = 15.0) -> None:
    end = time.monotonic() + deadline_s
    pending = list(topics)
    while pending and time.monotonic() < end:
        try:
            md = producer.list_topics(timeout=2)
        except Exception:  # noqa: BLE001 - broker not up yet: readiness reports it
            continue
        pending = [t for t in pending if t not in md.topics or not md.topics[t].partitions
                   or md.topics[t].error is not None]
        if pending:
            time.sleep(0.1)
    if pending:
        log.warning("topics without partitions at start-up", extra={"topics": pending})


def _stop(ctx: Context) -> None:
    for part in (ctx.follower, ctx.registry):
        if part is not None:
            part.stop()
    if ctx.beacons is not None:
        ctx.beacons.close()
    if ctx.control is not None:
        ctx.control.flush(5)


def _readiness(ctx: Context) -> dict[str, str]:
    checks: dict[str, str] = {}
    try:
        assert ctx.control is not None
        ctx.control.list_topics(ctx.settings.topic("streams"), timeout=2)
        checks["kafka"] = "ok"
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        checks["kafka"] = f"unreachable: {exc}"
    checks["registry"] = "ok" if ctx.registry is not None and ctx.registry.caught_up else "catching up"
    checks["manifests"] = "ok" if ctx.follower is not None and ctx.follower.caught_up.is_set() else "catching up"
    checks["store"] = _store_writable(ctx)
    return checks


STORE_PROBE_TTL_S = 30.0
_store_probe: dict[int, tuple[float, str]] = {}  # id(store) -> (monotonic time of the write, verdict)
_store_probe_lock = threading.Lock()


def _store_writable(ctx: Context) -> str:
    """Write-and-delete a probe object at most once per STORE_PROBE_TTL_S per store (issue 13: a probe
    flood must not become a write flood); readiness answers from the last verdict in between."""
    store = ctx.store
    if store is None:
        return "not open"
    with _store_probe_lock:
        hit = _store_probe.get(id(store))
        if hit is not None and time.monotonic() - hit[0] < STORE_PROBE_TTL_S:
            return hit[1]
        try:
            key = f"health/readyz-{os.getpid()}"
            store.put(key, str(time.time()).encode(), content_type="text/plain")
            store.delete(key)
            verdict = "ok"
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            verdict = f"not writable: {exc}"
        _store_probe[id(store)] = (time.monotonic(), verdict)
        return verdict
