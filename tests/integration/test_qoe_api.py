"""GET /api/v1/analytics/streams/{id}/qoe on the real api app, reading through a running qoe app (embedded chDB)."""

from __future__ import annotations

import time
from pathlib import Path

from fastapi.testclient import TestClient

from api.app import create_app
from api.auth import mint_jwt
from floodlight.settings import Settings
from tests.integration import test_qoe_pipeline as pipeline
from tests.integration.test_qoe_pipeline import qoe_settings  # noqa: F401, F811 - the fixture
from tests.support import wait_until


def test_analytics_endpoint_series_summary_and_errors(qoe_settings: Settings, tmp_path: Path):  # noqa: F811
    now_ms = int(time.time() * 1000)
    beacons = pipeline.make_beacons(600, now_ms, seed=11)
    enc = pipeline.Encoder()
    pipeline.produce(qoe_settings, [(b["session_id"].encode(), enc(b)) for b in beacons])
    qoe = pipeline.QoeProcess(qoe_settings, tmp_path).start()
    try:
        wait_until(lambda: qoe.count() == 600, 90, interval=0.3, what="600 rows")
        wait_until(lambda: qoe.client().query("SELECT sum(beacons) AS b FROM qoe_minute")[0]["b"] == 600, 30,
                   what="aggregates")
        settings = qoe_settings.model_copy(update={"qoe_port": qoe.port, "stack_dir": tmp_path / "api-stack"})
        admin = {"Authorization": "Bearer " + mint_jwt(settings.jwt_secret, "ops", roles=["admin"])}
        viewer = {"Authorization": "Bearer " + mint_jwt(settings.jwt_secret, "fan")}
        with TestClient(create_app(settings)) as http:
            url = "/api/v1/analytics/streams/qoe-b/qoe"
            r = http.get(url, params={"from": now_ms - 600_000, "to": now_ms + 60_000}, headers=admin)
            assert r.status_code == 200, r.text
            body = r.json()
            mine = [b for b in beacons if b["stream_id"] == "qoe-b"]
            assert body["summary"]["beacons"] == len(mine)
            assert sum(p["beacons"] for p in body["series"]) == len(mine)
            assert body["series"] == sorted(body["series"], key=lambda p: p["minute_ms"])
            assert body["summary"]["stall_count"] == sum(b["buffer_events"] for b in mine)
            # ISO 8601 works too; an empty range has no summary
            r = http.get(url, params={"from": "2020-01-01T00:00:00Z", "to": "2020-01-01T01:00:00Z"}, headers=admin)
            assert r.status_code == 200 and r.json() == {**r.json(), "series": [], "summary": None}
            assert http.get(url, params={"from": "soon"}, headers=admin).status_code == 400
            assert http.get(url, params={"from": now_ms, "to": now_ms - 1}, headers=admin).status_code == 400
            assert http.get(url).status_code == 401
            assert http.get(url, headers=viewer).status_code == 403
            assert http.get("/api/v1/analytics/streams/not-registered/qoe", headers=admin).status_code == 404
            assert http.get("/api/v1/analytics/streams/Bad_Id/qoe", headers=admin).status_code == 400
    finally:
        qoe.stop()
