"""Read-only QoE analytics for the api and the CLI.

`AnalyticsClient(settings)` reaches the analytics store the way the target allows: with a
ClickHouse server DSN (http/https) it connects directly; in embedded mode (chdb://) the qoe app
owns the chDB directory (one process per directory), so the client asks the qoe app's HTTP port.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx

from floodlight import clickhouse
from floodlight.settings import Settings
from schemas.errors import FloodlightError

MAX_RANGE_MS = 31 * 24 * 3600 * 1000

SERIES_SQL = """
SELECT
    toUnixTimestamp(minute) * 1000 AS minute_ms,
    uniqCombined64Merge(sessions) AS n_sessions,
    sum(beacons) AS n_beacons,
    sum(stall_count) AS n_stalls,
    sum(stall_ms) AS stall_ms_sum,
    sum(watch_ms) AS watch_ms_sum,
    if(stall_ms_sum + watch_ms_sum = 0, 0, stall_ms_sum / (stall_ms_sum + watch_ms_sum)) AS rebuffering_ratio,
    avgMerge(latency_avg) AS latency_avg_ms,
    quantilesMerge(0.5, 0.95)(latency_q) AS latency_pq,
    quantilesMerge(0.5, 0.95)(startup_q) AS startup_pq,
    avgMerge(bitrate_avg) AS bitrate_avg_kbps,
    sum(bytes) AS bytes_sum,
    sum(dropped_frames) AS dropped_sum,
    sum(errors) AS errors_sum
FROM qoe_minute
WHERE stream_id = {stream_id:String}
  AND minute >= toDateTime(intDiv({from_ms:Int64}, 1000)) AND minute < toDateTime(intDiv({to_ms:Int64}, 1000))
"""

VIEWERS_SQL = """
SELECT uniqExact(session_id) AS viewers FROM stream_analytics
WHERE stream_id = {stream_id:String} AND event_time >= now() - {window_s:UInt32}
"""

# The last window of QoE per pathway (cdn_pop) for the steering server (issue 18): raw rows, so the window
# is exact to the second (qoe_minute would round it to whole minutes).
PATHWAY_QOE_SQL = """
SELECT cdn_pop,
    uniqExact(session_id) AS sessions,
    count() AS beacons,
    sum(stall_ms) AS stall_ms,
    sum(watch_ms) AS watch_ms,
    countIf(error_code != '') AS errors,
    quantileIf(0.5)(latency_ms, latency_ms > 0) AS latency_p50_ms,
    quantileIf(0.5)(assumeNotNull(startup_ms), isNotNull(startup_ms)) AS startup_p50_ms
FROM stream_analytics
WHERE stream_id = {stream_id:String}
  AND event_time >= toDateTime(intDiv({from_ms:Int64}, 1000))
  AND event_time_ms >= fromUnixTimestamp64Milli({from_ms:Int64})
GROUP BY cdn_pop
"""


class AnalyticsError(FloodlightError, RuntimeError):
    """The analytics store refused or could not answer (the message says why)."""

    def __init__(self, message: str, status: int = 502) -> None:
        super().__init__(message)
        self.status = status


def _num(value: Any) -> float | None:
    """ClickHouse returns nan for an empty avg/quantile; JSON wants null."""
    if value is None:
        return None
    value = float(value)
    return None if value != value else round(value, 6)


def _shape(row: dict[str, Any]) -> dict[str, Any]:
    lat = row.get("latency_pq") or [None, None]
    st = row.get("startup_pq") or [None, None]
    out = {
        "sessions": int(row["n_sessions"]), "beacons": int(row["n_beacons"]),
        "stall_count": int(row["n_stalls"]), "stall_ms": int(row["stall_ms_sum"]),
        "watch_ms": int(row["watch_ms_sum"]), "rebuffering_ratio": _num(row["rebuffering_ratio"]),
        "latency_ms": {"avg": _num(row["latency_avg_ms"]), "p50": _num(lat[0]), "p95": _num(lat[1])},
        "startup_ms": {"p50": _num(st[0]), "p95": _num(st[1])},
        "bitrate_avg_kbps": _num(row["bitrate_avg_kbps"]),
        "bytes": int(row["bytes_sum"]), "dropped_frames": int(row["dropped_sum"]), "errors": int(row["errors_sum"]),
    }
    if "minute_ms" in row:
        ms = int(row["minute_ms"])
        out = {"minute": datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
               "minute_ms": ms, **out}
    return out


class AnalyticsClient:
    """Read-only access to the QoE tables; see the module docstring for the two modes."""

    def __init__(self, settings: Settings, timeout: float = 30.0) -> None:
        self.settings = settings
        self.dsn = clickhouse.validate_dsn(settings.resolved_clickhouse_dsn())
        self.embedded = clickhouse.is_embedded(self.dsn)
        self.base_url = (settings.qoe_url or f"http://{settings.qoe_host}:{settings.qoe_port}").rstrip("/")
        self.timeout = timeout
        self._client: Any = None
        self._http: httpx.Client | None = None

    # --- transport ----------------------------------------------------------------------------

    def _http_client(self) -> httpx.Client:
        if self._http is None:
            self._http = httpx.Client(base_url=self.base_url, timeout=self.timeout)
        return self._http

    def _run(self, sql: str, parameters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        try:
            clickhouse.check_read_only(sql)
        except clickhouse.NotReadOnly as exc:
            raise AnalyticsError(str(exc), 400) from None
        if self.embedded:
            try:
                resp = self._http_client().post("/query", content=json.dumps(
                    {"sql": sql, "parameters": parameters or {}}), headers={"Content-Type": "application/json"})
            except httpx.HTTPError as exc:
                raise AnalyticsError(f"qoe app not reachable at {self.base_url}: {exc}", 503) from None
            body = resp.json() if resp.headers.get("content-type", "").startswith("application/json") else {}
            if resp.status_code != 200:
                raise AnalyticsError(body.get("error") or f"qoe app answered {resp.status_code}",
                                     400 if resp.status_code in (400, 422) else 502)
            return body["rows"]
        try:
            if self._client is None:
                self._client = clickhouse.connect(self.settings, self.dsn)
            return clickhouse.run_read_only(self._client, sql, parameters)
        except clickhouse.NotReadOnly as exc:
            raise AnalyticsError(str(exc), 400) from None
        except Exception as exc:  # noqa: BLE001 - driver/server errors, reported to the caller
            raise AnalyticsError(f"clickhouse: {str(exc)[:1000]}", 502) from None

    # --- public -------------------------------------------------------------------------------

    def query(self, sql: str) -> list[dict[str, Any]]:
        """One analyst SELECT; anything else raises AnalyticsError (status 400)."""
        return self._run(sql)

    def qoe_series(self, stream_id: str, from_ms: int, to_ms: int) -> dict[str, Any]:
        """Per-minute QoE of a stream in [from_ms, to_ms) and a summary over the whole range."""
        if to_ms <= from_ms:
            raise AnalyticsError("'to' must be after 'from'", 400)
        if to_ms - from_ms > MAX_RANGE_MS:
            raise AnalyticsError("range longer than 31 days", 400)
        params = {"stream_id": stream_id, "from_ms": from_ms, "to_ms": to_ms}
        series = self._run(SERIES_SQL + " GROUP BY minute ORDER BY minute", params)
        summary = self._run(SERIES_SQL.replace("toUnixTimestamp(minute) * 1000 AS minute_ms,", ""), params)
        return {
            "stream_id": stream_id,
            "from_ms": from_ms, "to_ms": to_ms,
            "series": [_shape(r) for r in series],
            "summary": _shape(summary[0]) if summary and int(summary[0]["n_beacons"]) else None,
        }

    def pathway_qoe(self, stream_id: str, window_s: float = 60.0,
                    now_ms: int | None = None) -> dict[str, dict[str, Any]]:
        """QoE of the last `window_s` per cdn_pop (the player's pathway): sessions, beacons, stall and watch
        ms, error beacons, median latency and startup (None when no sample)."""
        now_ms = int(datetime.now(UTC).timestamp() * 1000) if now_ms is None else now_ms
        rows = self._run(PATHWAY_QOE_SQL, {"stream_id": stream_id, "from_ms": now_ms - int(window_s * 1000)})
        return {str(r["cdn_pop"]): {"sessions": int(r["sessions"]), "beacons": int(r["beacons"]),
                                    "stall_ms": int(r["stall_ms"]), "watch_ms": int(r["watch_ms"]),
                                    "errors": int(r["errors"]), "latency_p50_ms": _num(r["latency_p50_ms"]),
                                    "startup_p50_ms": _num(r["startup_p50_ms"])} for r in rows}

    def viewers(self, stream_id: str) -> int | None:
        """Sessions seen in the last viewer window; None when analytics is unreachable."""
        try:
            if self.embedded:
                resp = self._http_client().get(f"/viewers/{stream_id}", timeout=2.0)
                if resp.status_code != 200:
                    return None
                return int(resp.json()["viewers"])
            rows = self._run(VIEWERS_SQL, {"stream_id": stream_id,
                                           "window_s": int(self.settings.qoe_viewer_window_s)})
            return int(rows[0]["viewers"]) if rows else 0
        except (AnalyticsError, httpx.HTTPError, ValueError, KeyError):
            return None

    def close(self) -> None:
        if self._http is not None:
            self._http.close()


