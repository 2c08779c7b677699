"""Multi-CDN at run time (issue 18): health probes of every pathway, the steering server, operator overrides,
and purging the edges. The decision rule itself is pure and lives in api/steering.py.

- Pathways come from FLOODLIGHT_PATHWAYS (`id=base_url[|edge_url],...`: players get base_url, the api probes
  and purges edge_url, default the same). Without them nothing here runs: masters and
  MPDs are served as packaged and purges go to the one local edge (FLOODLIGHT_EDGE_PORT).
- A background task probes `BASE/healthz` of each pathway every FLOODLIGHT_STEERING_PROBE_INTERVAL_S (the
  edge passes it to the origin, so a probe tests the edge and its way to us), then re-evaluates every stream
  players asked about in the last 5 minutes, with the last minute of its QoE per cdn_pop (ClickHouse,
  fetched at most every 2 s per stream).
- Overrides (drain / pin) live in the stream's registry record, so every api process applies them.
- Purge: a BAN to every pathway's edge (Varnish; api/edge.py's VCL) naming `/live/{id}/`; the api sends
  the shared secret, the edge accepts it from loopback / its origins only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import httpx
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from api.auth import Principal, require_admin
from api.steering import Decision, Pathway, ProbeTracker, Qoe, Rule, Steerer, parse_pathways, steering_manifest
from floodlight import ids
from floodlight.settings import Settings

log = logging.getLogger("api.cdn")
router = APIRouter(tags=["steering"])
ACTIVE_S = 300.0  # a stream stays evaluated this long after its last steering request or master
QOE_REFRESH_S = 2.0
QOE_WINDOW_S = 60.0
PURGE_TIMEOUT_S = 1.0
REPURGE_AFTER_S = 1.0  # a second ban catches an object another api process served just before it saw the takedown


class Cdn:
    """Probes, per-stream steerers and purges of one api process."""

    def __init__(self, settings: Settings, clock: Any = time.monotonic) -> None:
        self.settings = settings
        self.pathways: list[Pathway] = parse_pathways(settings.pathways)
        self.rule = Rule(hold_s=settings.steering_hold_s, margin=settings.steering_margin)
        self.probes = {p.id: ProbeTracker() for p in self.pathways}
        self.steerers: dict[str, Steerer] = {}
        self.decisions: dict[str, Decision] = {}
        self.qoe: dict[str, tuple[float, dict[str, Qoe]]] = {}
        self.active: dict[str, float] = {}
        self.clock = clock
        self.registry: Any = None  # RegistryView, set at start
        self.analytics: Any = None  # callable () -> AnalyticsClient
        self._task: asyncio.Task[None] | None = None
        self._http: httpx.AsyncClient | None = None
        host = settings.api_host if settings.api_host not in ("", "0.0.0.0", "::") else "127.0.0.1"
        self.steering_base = (settings.steering_url or f"http://{host}:{settings.api_port}").rstrip("/")

    @property
    def enabled(self) -> bool:
        return bool(self.pathways)

    def base_of(self, pathway: str) -> str:
        return next(p.base_url for p in self.pathways if p.id == pathway)

    def server_uri(self, sid: str) -> str:
        return f"{self.steering_base}/api/v1/steering/{sid}"

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self, registry: Any, analytics: Any) -> None:
        self.registry, self.analytics = registry, analytics
        self._http = httpx.AsyncClient(timeout=min(2.0, self.settings.steering_probe_interval_s))
        if self.enabled:
            await self.probe_all()  # know the pathways' health before the first master is served
            self._task = asyncio.create_task(self._loop(), name="cdn-probes")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._http is not None:
            await self._http.aclose()

    async def _loop(self) -> None:
        interval = self.settings.steering_probe_interval_s
        while True:
            started = self.clock()
            try:
                await self.probe_all()
                await self.evaluate_active()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a bad round must not end steering
                log.exception("steering round failed")
            await asyncio.sleep(max(0.05, interval - (self.clock() - started)))

    # --- health probes --------------------------------------------------------------------------

    async def probe_all(self) -> None:
        results = await asyncio.gather(*(self._probe(p) for p in self.pathways))
        now = self.clock()
        for p, (ok, error) in zip(self.pathways, results, strict=True):
            tracker = self.probes[p.id]
            was = tracker.healthy
            tracker.record(now, ok, error)
            if was != tracker.healthy:
                log.warning("pathway %s", "up" if tracker.healthy else "down",
                            extra={"pathway": p.id, "base": p.base_url, "error": error})

    async def _probe(self, p: Pathway) -> tuple[bool, str]:
        assert self._http is not None
        try:
            r = await self._http.get(f"{p.admin_url}/healthz")
        except httpx.HTTPError as exc:
            return False, f"{type(exc).__name__}: {exc}"[:200]
        return (True, "") if r.status_code == 200 else (False, f"HTTP {r.status_code}")

    # --- steering -------------------------------------------------------------------------------

    def _record(self, sid: str) -> dict[str, Any] | None:
        return self.registry.get(sid) if self.registry is not None else None

    def decide(self, sid: str, record: dict[str, Any] | None = None) -> Decision:
        """Evaluate stream `sid` now (creating its steerer) and remember the stream as active."""
        now = self.clock()
        self.active[sid] = now
        record = record or self._record(sid) or {}
        steerer = self.steerers.get(sid)
        if steerer is None:
            steerer = self.steerers[sid] = Steerer([p.id for p in self.pathways], self.rule)
        qoe = self.qoe.get(sid, (0.0, {}))[1]
        decision = steerer.update(now, {k: t.healthy_since for k, t in self.probes.items()}, qoe,
                                  frozenset(record.get("steering_drained") or ()), record.get("steering_pinned"))
        if sid in self.decisions and self.decisions[sid].priority[0] != decision.priority[0]:
            log.warning("steering moved", extra={"stream_id": sid, "from": self.decisions[sid].priority[0],
                                                 "to": decision.priority[0], "reasons": decision.reasons})
        self.decisions[sid] = decision
        return decision

    def first(self, sid: str) -> str:
        return self.decide(sid).priority[0]

    async def evaluate_active(self) -> None:
        now = self.clock()
        for sid in [s for s, t in self.active.items() if now - t > ACTIVE_S]:
            self.active.pop(sid, None)
            self.steerers.pop(sid, None)
            self.decisions.pop(sid, None)
            self.qoe.pop(sid, None)
        for sid in list(self.active):
            fetched = self.qoe.get(sid, (-1e9, {}))[0]
            if now - fetched >= QOE_REFRESH_S and self.analytics is not None:
                self.qoe[sid] = (now, await self._fetch_qoe(sid, self.qoe.get(sid, (0.0, {}))[1]))
            at = self.active[sid]
            self.decide(sid)
            self.active[sid] = at  # evaluating is not a request: keep the stream's last-asked time

    async def _fetch_qoe(self, sid: str, previous: dict[str, Qoe]) -> dict[str, Qoe]:
        try:
            rows = await asyncio.to_thread(self.analytics().pathway_qoe, sid, QOE_WINDOW_S)
        except Exception as exc:  # noqa: BLE001 - analytics down: decide on probes (and the last QoE seen)
            log.info("no QoE for steering", extra={"stream_id": sid, "error": str(exc)[:200]})
            return previous
        known = {p.id for p in self.pathways}
        return {k: Qoe(**v) for k, v in rows.items() if k in known}

    def status(self, sid: str) -> dict[str, Any]:
        record = self._record(sid) or {}
        decision = self.decide(sid, record)
        now = self.clock()
        qoe = self.qoe.get(sid, (0.0, {}))[1]
        return {
            "stream_id": sid, "priority": decision.priority, "ttl_s": self.settings.steering_ttl_s,
            "rule": {"hold_s": self.rule.hold_s, "margin": self.rule.margin,
                     "fail_stall_ratio": self.rule.fail_stall_ratio, "fail_error_rate": self.rule.fail_error_rate},
            "override": {"drained": list(record.get("steering_drained") or []),
                         "pinned": record.get("steering_pinned")},
            "pathways": [{
                "id": p.id, "base_url": p.base_url, "healthy": self.probes[p.id].healthy,
                "healthy_for_s": None if self.probes[p.id].healthy_since is None
                else round(now - self.probes[p.id].healthy_since, 1),
                "probe_error": self.probes[p.id].last_error or None,
                "qoe": qoe[p.id].__dict__ if p.id in qoe else None,
                "cost": decision.costs.get(p.id), "reason": decision.reasons.get(p.id)}
                for p in self.pathways],
        }

    # --- purge ----------------------------------------------------------------------------------

    def purge_targets(self) -> dict[str, str]:
        if self.pathways:
            return {p.id: p.admin_url for p in self.pathways}
        return {"edge": f"http://127.0.0.1:{self.settings.edge_port}"}

    async def ban(self, path: str) -> dict[str, str]:
        """BAN `path` on every pathway's edge at once; {pathway: "ok" | why not}."""
        client = self._http or httpx.AsyncClient(timeout=PURGE_TIMEOUT_S)
        headers = {"X-Fl-Purge-Secret": self.settings.edge_purge_secret}

        async def one(base: str) -> str:
            try:
                r = await client.request("BAN", f"{base}{path}", headers=headers, timeout=PURGE_TIMEOUT_S)
            except httpx.HTTPError as exc:
                return f"unreachable: {type(exc).__name__}"
            return "ok" if r.status_code == 200 else f"HTTP {r.status_code}"

        targets = self.purge_targets()
        try:
            results = await asyncio.gather(*(one(b) for b in targets.values()))
        finally:
            if client is not self._http:
                await client.aclose()
        out = dict(zip(targets, results, strict=True))
        log.info("edge ban", extra={"path": path, "results": out})
        return out

    async def purge_stream(self, sid: str, scope: str = "live") -> dict[str, str]:
        """Every object of the stream on every edge (media, playlists, cached token verdicts), now and once more
        REPURGE_AFTER_S later."""
        out = await self.ban(f"/{scope}/{sid}/")

        async def again() -> None:
            await asyncio.sleep(REPURGE_AFTER_S)
            await self.ban(f"/{scope}/{sid}/")

        task = asyncio.get_running_loop().create_task(again())
        self._pending = getattr(self, "_pending", set())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return out

    async def purge_verdicts(self) -> dict[str, str]:
        """Every cached token verdict on every edge: at start, since playback keys change only with a restart
        (a revoked key's tokens must stop opening cached media now, not when their verdicts expire)."""
        return await self.ban("/edge/authz")


# --- routes ---------------------------------------------------------------------------------------

async def write_record(ctx: Any, record: dict[str, Any], op: str) -> None:
    """Produce a StreamRecord and wait until this process's registry view has it (read-your-writes)."""
    from api import metrics
    from floodlight.registry import publish_stream

    await asyncio.to_thread(publish_stream, ctx.control, ctx.settings, record)
    metrics.REGISTRY_WRITES.labels(op).inc()
    ok = await asyncio.to_thread(ctx.registry.wait_for, lambda r: r is not None and r["updated_ms"] >= record[
        "updated_ms"], record["stream_id"], 10.0)
    if not ok:
        raise HTTPException(503, "registry write not visible yet; retry", headers={"Retry-After": "1"})


def _cdn(request: Request) -> Cdn:
    cdn: Cdn | None = request.app.state.ctx.cdn
    if cdn is None or not cdn.enabled:
        raise HTTPException(404, "content steering is not configured (FLOODLIGHT_PATHWAYS)")
    return cdn


def _stream(request: Request, sid: str) -> dict[str, Any]:
    if not ids.is_stream_id(sid):
        raise HTTPException(400, "malformed stream id")
    ctx = request.app.state.ctx
    record = ctx.registry.get(sid) if ctx.registry else None
    if record is None:
        raise HTTPException(404, f"unknown stream {sid!r}", headers={"Cache-Control": "no-store"})
    if record.get("taken_down_ms"):
        raise HTTPException(410, "stream taken down", headers={"Cache-Control": "no-store"})
    return record


STEERING_EXAMPLE = {"VERSION": 1, "TTL": 10, "RELOAD-URI": "http://127.0.0.1:8000/api/v1/steering/demo",
                    "PATHWAY-PRIORITY": ["b", "a"]}


@router.get("/api/v1/steering/{sid}", summary="Content steering manifest (HLS Content Steering, DASH-IF)",
            responses={200: {"content": {"application/json": {"example": STEERING_EXAMPLE}}},
                       404: {"description": "Unknown stream, or no pathways configured"},
                       410: {"description": "Stream taken down (players stop asking)"}})
async def steering(sid: str, request: Request) -> JSONResponse:
    """Players (hls.js, dash.js) ask every TTL seconds, sending `_HLS_pathway`/`_DASH_pathway` (where they are)
    and `_HLS_throughput`/`_DASH_throughput`; the answer lists the pathways, best first."""
    cdn = _cdn(request)
    record = _stream(request, sid)
    decision = cdn.decide(sid, record)
    body = steering_manifest(decision.priority, cdn.settings.steering_ttl_s, cdn.server_uri(sid))
    if "_DASH_pathway" in request.query_params:
        body["SERVICE-LOCATION-PRIORITY"] = decision.priority  # the key of the DASH-IF community draft
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


class Override(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"action": "drain", "pathway": "a"}]})
    action: str = Field(pattern="^(drain|undrain|pin|unpin|clear)$",
                        description="drain: list it last; pin: list it first while healthy; clear: no override")
    pathway: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")


@router.get("/api/v1/steering/{sid}/status", summary="Why the steering server answers what it does (admin)",
            responses={403: {"description": "Not an admin"}, 404: {"description": "Unknown stream"}})
async def steering_status(sid: str, request: Request,
                          admin: Principal = Depends(require_admin)) -> dict[str, Any]:
    cdn = _cdn(request)
    _stream(request, sid)
    return cdn.status(sid)


@router.post("/api/v1/steering/{sid}/override", summary="Drain or pin a pathway for a stream (admin)",
             responses={403: {"description": "Not an admin"}, 404: {"description": "Unknown stream or pathway"}})
async def steering_override(sid: str, body: Override, request: Request,
                            admin: Principal = Depends(require_admin)) -> dict[str, Any]:
    cdn = _cdn(request)
    record = _stream(request, sid)
    if body.action != "clear" and body.pathway not in {p.id for p in cdn.pathways}:
        raise HTTPException(404, f"unknown pathway {body.pathway!r}")
    drained = [p for p in record.get("steering_drained") or [] if p != body.pathway]
    pinned = record.get("steering_pinned")
    if body.action == "drain":
        drained.append(str(body.pathway))
        pinned = None if pinned == body.pathway else pinned
    elif body.action == "pin":
        pinned = body.pathway
    elif body.action == "unpin" and pinned == body.pathway:
        pinned = None
    elif body.action == "clear":
        drained, pinned = [], None
    now = int(time.time() * 1000)
    new = {**record, "steering_drained": drained, "steering_pinned": pinned,
           "updated_ms": max(now, record["updated_ms"] + 1)}
    await write_record(request.app.state.ctx, new, "steering")
    log.warning("steering override", extra={"stream_id": sid, "action": body.action, "pathway": body.pathway,
                                            "by": admin.sub})
    return cdn.status(sid)
