"""The whole pipeline in a real browser: `floodlight demo` (every role a child process, nginx edge
in front) with a 640x360 test pattern and a small ladder, played by hls.js and dash.js in Debian's
chromium, decoded by ffmpeg, beacons followed into ClickHouse, then a clean stop and a second run.

Tests in this module run in order against one demo run (module fixture); the last one stops it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from floodlight.settings import Settings
from ops.demo import demo_settings, port_free
from tests.e2e.browser import run_browser, step, summary
from tests.e2e.demo import running_demo, start_demo, stop
from tests.support import wait_until

pytestmark = pytest.mark.usefixtures("browser_tools")  # skips locally, fails under CI=true

LEVEL = "(window.floodlight.currentLevel || {}).name"
VIDEO_T = "document.querySelector('video').currentTime"
ARTIFACTS = Path(os.environ.get("FLOODLIGHT_E2E_ARTIFACTS", "/tmp/floodlight-e2e"))


@dataclass
class DemoRun:
    base: Settings
    settings: Settings  # what the demo's children run with
    proc: subprocess.Popen
    out: Path
    url: str
    session_id: str | None = None  # the playback test's session, followed into ClickHouse

    def snapshots(self) -> list[dict]:
        return [json.loads(ln) for ln in self.out.read_text().splitlines() if ln.startswith('{"uptime_s"')]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def demo(broker: Settings) -> Iterator[DemoRun]:
    with running_demo(broker, "demo") as d:
        run = DemoRun(d.base, demo_settings(d.base), d.proc, d.out, f"http://127.0.0.1:{d.base.edge_port}")
        d.wait_listed([f"{run.url}/live/demo/360p/playlist.m3u8"], "the demo's 360p playlist through the edge")
        yield run


def test_player_plays_the_live_pipeline_through_the_edge(demo: DemoRun) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "player-hls.png"
    res = run_browser([
        {"op": "goto", "url": f"{demo.url}/watch/demo"},
        {"op": "wait", "name": "playing", "expr": "window.floodlight.state === 'playing'", "timeout_s": 40},
        {"op": "eval", "name": "t0", "expr": f"window.__t0 = {VIDEO_T}"},
        {"op": "wait", "name": "advanced", "expr": f"{VIDEO_T} - window.__t0 >= 10.2 && {VIDEO_T} - window.__t0",
         "timeout_s": 45},
        {"op": "screenshot", "path": str(shot)},
        {"op": "eval", "name": "target", "expr": "(() => { const h = window.floodlight.engine, "
                                                 "d = h.latestLevelDetails; return [h.config.liveSyncDuration, "
                                                 "d.partTarget, d.partHoldBack]; })()"},
        # the session's beacons: start + events now, the rest at the 10 s heartbeat
        {"op": "wait", "name": "beacons", "expr": "window.floodlight.beacons.sent >= 2 && window.floodlight.sessionId",
         "timeout_s": 20},
    ])
    assert res["ok"], summary(res)
    st = res["state"]
    assert step(res, "advanced")["value"] >= 10
    # LL-HLS: our page aims one part closer to the edge than PART-HOLD-BACK (player.js)
    sync, part_target, part_hold_back = step(res, "target")["value"]
    assert part_target and part_hold_back, step(res, "target")
    assert abs(sync - (max(2 * part_target, part_hold_back - part_target) + 0.15)) < 0.01 and sync < part_hold_back
    assert st["errors"] == [] and res["pageErrors"] == [], summary(res)
    assert st["src"]["hls"].endswith("/live/demo/master.m3u8")
    assert [lv["name"] for lv in sorted(st["levels"], key=lambda lv: -lv["bitrate"])] == ["360p", "240p", "144p"]
    # glass-to-glass: now - program-date-time (the capture clock) at the playhead
    assert 0 < st["latencyMs"] < 20_000, st["latencyMs"]
    assert st["beacons"]["failed"] == 0 and st["beacons"]["lastStatus"] == 200
    assert shot.stat().st_size > 20_000
    demo.session_id = step(res, "beacons")["value"]


def test_beacons_from_the_session_reach_clickhouse(demo: DemoRun) -> None:
    from floodlight.analytics import AnalyticsClient

    sid = demo.session_id
    if sid is None:
        pytest.skip("needs the playback test's session")
    assert re.fullmatch(r"[0-9a-f-]{36}", sid)
    client = AnalyticsClient(demo.settings, timeout=10)
    sql = ("SELECT count() AS n, countIf(event_type = 'start') AS starts, max(latency_ms) AS lat,"
           f" max(bytes_downloaded) AS bytes FROM stream_analytics WHERE session_id = '{sid}'")

    def rows() -> dict | None:
        r = client.query(sql)[0]
        # the start beacon may go out before the player has a latency or byte count: wait for one that has
        return r if int(r["n"]) >= 2 and int(r["lat"]) > 0 and int(r["bytes"]) > 0 else None

    row = wait_until(rows, 45, interval=0.5, what="the session's beacons (with latency and bytes) in ClickHouse")
    assert int(row["starts"]) == 1


def test_ffmpeg_decodes_the_master_playlist(demo: DemoRun) -> None:
    res = subprocess.run(["ffmpeg", "-hide_banner", "-v", "error", "-i", f"{demo.url}/live/demo/master.m3u8",
                          "-t", "10", "-f", "null", "-"], capture_output=True, text=True, timeout=90)
    assert res.returncode == 0 and res.stderr.strip() == "", res.stderr[-2000:]


def test_player_switches_down_under_throttling_and_back_up(demo: DemoRun) -> None:
    res = run_browser([
        {"op": "goto", "url": f"{demo.url}/watch/demo"},
        {"op": "wait", "name": "top", "expr": f"window.floodlight.state === 'playing' && {LEVEL} === '360p'",
         "timeout_s": 40},
        {"op": "throttle", "kbps": 450, "latency_ms": 20},
        {"op": "wait", "name": "down", "expr": f"{LEVEL} !== '360p' && {LEVEL}", "timeout_s": 45},
        {"op": "unthrottle"},
        {"op": "wait", "name": "up", "expr": f"{LEVEL} === '360p' && {LEVEL}", "timeout_s": 75},
    ])
    assert res["ok"], summary(res)
    assert res["state"]["errors"] == []
    switches = res["state"]["switches"]
    # the start-up ramp may switch up first; what matters is a switch down from the top and back up last
    assert any(sw["from"] == "360p" and sw["to"] != "360p" for sw in switches), switches
    assert switches[-1]["to"] == "360p", switches


def test_dash_plays(demo: DemoRun) -> None:
    res = run_browser([
        {"op": "goto", "url": f"{demo.url}/watch/demo?format=dash"},
        {"op": "wait", "name": "playing", "expr": "window.floodlight.state === 'playing'", "timeout_s": 40},
        {"op": "eval", "name": "t0", "expr": f"window.__t0 = {VIDEO_T}"},
        {"op": "wait", "name": "advanced", "expr": f"{VIDEO_T} - window.__t0 >= 10.2", "timeout_s": 45},
        {"op": "screenshot", "path": str(ARTIFACTS / "player-dash.png")},
    ])
    assert res["ok"], summary(res)
    st = res["state"]
    assert st["format"] == "dash" and st["src"]["dash"].endswith("/live/demo/manifest.mpd")
    assert st["errors"] == [] and res["pageErrors"] == [], summary(res)
    assert len(st["levels"]) == 3


def test_demo_status_then_clean_stop_and_a_second_run(demo: DemoRun) -> None:
    # The status table (printed as JSON lines when stdout is not a terminal) saw the whole flow.
    def full_status() -> dict | None:
        snaps = demo.snapshots()
        good = [s for s in snaps if s["gops"] > 0 and s["latency_ms"] and s["viewers"] >= 1
                and set(s["renditions"]) >= {"360p", "240p", "144p", "audio"}]
        return good[-1] if good else None

    snap = wait_until(full_status, 20, interval=0.5, what="a status line with GOPs, segments, latency, viewers")
    assert all(r["segments"] > 0 for r in snap["renditions"].values())
    assert set(snap["lag"]) == {"encoder", "packager", "qoe"}

    pids = json.loads((demo.settings.stack_dir / "children.json").read_text())
    assert len(pids) == 7  # qoe, api, edge, packager, 2 encoders, ingest
    assert stop(demo.proc) == 0, demo.out.read_text()[-3000:]
    assert not [n for n, p in pids.items() if pid_alive(p)]
    assert port_free(demo.base.api_port) and port_free(demo.base.edge_port) and port_free(demo.base.qoe_port)

    # Second run on the same settings, no clean-up in between: fresh topics and store, plays again.
    out2 = demo.out.with_name("demo2.out")
    proc2 = start_demo(demo.base, out2, "--duration", "15", "--encoders", "1")
    try:
        rc = proc2.wait(90)
    finally:
        stop(proc2)
    assert rc == 0, out2.read_text()[-3000:]
    snaps = [json.loads(ln) for ln in out2.read_text().splitlines() if ln.startswith('{"uptime_s"')]
    assert snaps and snaps[-1]["renditions"].get("360p", {}).get("segments", 0) >= 5, out2.read_text()[-2000:]
    # msn restarts small: the second run did not continue the first run's playlists
    assert snaps[-1]["renditions"]["360p"]["msn"] < 40
