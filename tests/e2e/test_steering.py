"""Multi-CDN content steering in a real browser (issue 18): `floodlight demo --edges 2` (two Varnish edges =
pathways a and b), hls.js in Debian's chromium playing the demo while the test breaks and mends pathway a.

Two sessions, one browser run; a thread on the Python side acts on the pathways when the page says where it
plays from (a fetch to a local marker port); the QoE rows are checked at the end:
1. the player starts on a; edge a is stopped -> within the steering TTL + one segment it plays from b, no
   fatal error, no stall over 2 s; the session's rows show cdn_pop a, then b;
2. edge a is started again -> the steering server puts a first only after the hold window: a new session
   starts on b before it, on a after it (the first session stays on b: hls.js keeps a pathway that failed
   it out for 5 minutes);
3. an operator drains a -> the second session moves to b within the TTL + one segment, no stall over 2 s.
"""

from __future__ import annotations

import json
import os
import queue
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.auth import mint_jwt
from api.edge import start_edge
from floodlight.analytics import AnalyticsClient
from floodlight.settings import Settings
from ops.demo import demo_settings
from tests.e2e.browser import run_browser, summary
from tests.e2e.demo import running_demo, two_free_ports
from tests.support import wait_until

pytestmark = pytest.mark.usefixtures("browser_tools")

TTL_S = 2
HOLD_S = 8.0
SEGMENT_S = 1.0  # low-latency demo: 1 s GOPs
ARTIFACTS = Path(os.environ.get("FLOODLIGHT_E2E_ARTIFACTS", "/tmp/floodlight-e2e"))


@dataclass
class Steered:
    base: Settings
    settings: Settings
    proc: Any
    out: Path
    tmp: Path
    api: str
    edges: dict[str, str]
    extra_edges: list[Any] = field(default_factory=list)
    # Varnish started by a thread dies with that thread (PR_SET_PDEATHSIG follows the starting thread), so edges
    # the test starts come from one thread that lives as long as the module's demo
    jobs: queue.Queue[tuple[Any, queue.Queue[Any]]] = field(default_factory=queue.Queue)

    def keep(self) -> None:
        while True:
            fn, back = self.jobs.get()
            if fn is None:
                return
            try:
                back.put(fn())
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                back.put(exc)

    def start_edge(self, pathway: str, prefix: Path) -> None:
        port = int(self.edges[pathway].rsplit(":", 1)[1])
        back: queue.Queue[Any] = queue.Queue()
        self.jobs.put((lambda: start_edge(self.settings, port=port, origin=f"127.0.0.1:{self.base.api_port}",
                                          prefix=prefix), back))
        proc = back.get(timeout=30)
        if isinstance(proc, BaseException):
            raise proc
        self.extra_edges.append(proc)

    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {mint_jwt(self.settings.jwt_secret, 'op', roles=['admin'])}"}

    def priority(self) -> list[str]:
        return httpx.get(f"{self.api}/api/v1/steering/demo", timeout=5).json()["PATHWAY-PRIORITY"]


@pytest.fixture(scope="module")
def steered(broker: Settings) -> Iterator[Steered]:
    edge_port = two_free_ports()
    with running_demo(broker, "steer", "--edges", "2", "--encoders", "1", edge_port=edge_port,
                      steering_ttl_s=TTL_S, steering_hold_s=HOLD_S, steering_probe_interval_s=0.5,
                      edge_purge_secret="e2e-purge-secret") as d:
        run = Steered(d.base, demo_settings(d.base, True, 2), d.proc, d.out, d.tmp,
                      f"http://127.0.0.1:{d.base.api_port}",
                      {"a": f"http://127.0.0.1:{edge_port}", "b": f"http://127.0.0.1:{edge_port + 1}"})
        keeper = threading.Thread(target=run.keep, name="edge-keeper", daemon=True)
        keeper.start()
        try:
            d.wait_listed([f"{e}/live/demo/360p/playlist.m3u8" for e in run.edges.values()],
                          "the demo's 360p playlist through both edges")
            yield run
        finally:
            for p in run.extra_edges:
                p.terminate()
                p.wait(10)
            run.jobs.put((None, queue.Queue()))


class Markers:
    """The page tells the test where it is (a fetch to /NAME on a local port); the test waits for a name."""

    def __init__(self) -> None:
        import http.server

        seen = self.seen = {}  # name -> time.time()
        cond = self.cond = threading.Condition()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                with cond:
                    seen.setdefault(self.path.strip("/"), time.time())
                    cond.notify_all()
                self.send_response(204)
                self.send_header("Access-Control-Allow-Origin", "*")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def step(self, name: str) -> dict[str, Any]:
        return {"op": "eval", "name": f"mark {name}", "expr": f"fetch('{self.url}/{name}').then(() => true)"}

    def wait(self, name: str, timeout: float) -> float:
        with self.cond:
            if not self.cond.wait_for(lambda: name in self.seen, timeout):
                raise AssertionError(f"the page never said {name!r}")
            return self.seen[name]

    def close(self) -> None:
        self.server.shutdown()


class Operator(threading.Thread):
    """Breaks and mends pathway a as the page says where it plays from; records when."""

    def __init__(self, run: Steered, marks: Markers) -> None:
        super().__init__(name="steering-operator", daemon=True)
        self.run_ = run
        self.marks = marks
        self.t: dict[str, float] = {}
        self.new_session_on: dict[str, str] = {}  # when -> the pathway a new session would start on
        self.error: BaseException | None = None

    def new_session_pathway(self) -> str:
        """Where a session starting now begins: its playback URL's edge and its master's PATHWAY-ID."""
        r = self.run_
        url = httpx.get(f"{r.api}/api/v1/live/streams/demo", timeout=5).json()["playback_url"]
        by_url = next(p for p, base in r.edges.items() if url.startswith(base + "/"))
        first = httpx.get(url, timeout=5).text.split('PATHWAY-ID="', 1)[1].split('"', 1)[0]
        assert by_url == first, (url, first)
        return first

    def run(self) -> None:
        r = self.run_
        try:
            self.marks.wait("s1-on-a", 90)
            time.sleep(6 + random.uniform(0, TTL_S))  # a few seconds of steady play (and beacons) on a
            pids = json.loads((r.settings.stack_dir / "children.json").read_text())
            self.t["kill"] = time.time()
            os.killpg(pids["edge"], 15)  # edge a (varnishd and its floodlight edge parent) goes away
            self.marks.wait("s1-on-b", 60)
            time.sleep(4)
            # edge a comes back (a fresh Varnish on its port): first again only after the hold window
            r.start_edge("a", r.tmp / "edge-a-again")
            wait_until(lambda: _healthy(r.edges["a"]), 15, 0.05, "edge a back")
            self.t["restart"] = time.time()
            time.sleep(1)
            self.new_session_on["restart+1s"] = self.new_session_pathway()
            wait_until(lambda: r.priority()[0] == "a", 3 * HOLD_S + 10, 0.1, "a first again")
            self.t["a_first_again"] = time.time()
            self.new_session_on["after hold"] = self.new_session_pathway()
            self.marks.wait("s2-on-a", 90)  # the second session, on a
            time.sleep(4 + random.uniform(0, TTL_S))  # any phase of the player's steering reloads
            self.t["drain"] = time.time()
            resp = httpx.post(f"{r.api}/api/v1/steering/demo/override", json={"action": "drain", "pathway": "a"},
                              headers=r.admin(), timeout=20)
            assert resp.status_code == 200, resp.text
            self.t["drained"] = time.time()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


def _healthy(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


SNAP = ("JSON.parse(JSON.stringify({sessionId: window.floodlight.sessionId, errors: window.floodlight.errors, "
        "pathwayChanges: window.floodlight.pathwayChanges, stallLog: window.floodlight.stallLog, "
        "steering: window.floodlight.steering, warnings: window.floodlight.warnings, "
        "resyncs: window.floodlight.resyncs || 0, trace: window.floodlight.trace || []}))")


def test_players_move_off_a_failing_pathway_new_sessions_return_after_the_hold_and_a_drain_moves_them(
        steered: Steered) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    marks = Markers()
    op = Operator(steered, marks)
    op.start()
    pathway = "window.floodlight.pathway"
    page = f"{steered.api}/watch/demo?beacon_ms=2000&trace=1"
    a_first = "fetch('/api/v1/steering/demo').then((r) => r.json()).then((j) => j['PATHWAY-PRIORITY'][0] === 'a')"
    res = run_browser([
        # session 1: starts on a; a is stopped
        {"op": "goto", "url": page},
        {"op": "wait", "name": "playing on a", "expr": f"window.floodlight.state === 'playing' && {pathway} === 'a'",
         "timeout_s": 60},
        marks.step("s1-on-a"),
        {"op": "wait", "name": "moved to b", "expr": f"{pathway} === 'b'", "timeout_s": 120},
        marks.step("s1-on-b"),
        {"op": "hold", "s": 4},
        {"op": "eval", "name": "session 1", "expr": SNAP},
        # a is back; once the steering server ranks it first again, a new session starts there
        {"op": "wait", "name": "a first again", "expr": a_first, "timeout_s": 90, "poll_ms": 500},
        {"op": "goto", "url": page},
        {"op": "wait", "name": "session 2 on a", "expr": f"window.floodlight.state === 'playing' && {pathway} === 'a'",
         "timeout_s": 60},
        marks.step("s2-on-a"),
        {"op": "wait", "name": "drained to b", "expr": f"{pathway} === 'b'", "timeout_s": 120},
        {"op": "hold", "s": 4},
        {"op": "screenshot", "path": str(ARTIFACTS / "player-steered.png")},
    ], timeout_s=480)
    op.join(30)
    marks.close()
    assert op.error is None, f"{op.error!r} {op.t} {summary(res)}"
    assert res["ok"], summary(res)
    t = op.t
    s1 = next(s["value"] for s in res["steps"] if s["name"] == "session 1")
    s2 = res["state"]
    for st in (s1, s2):
        assert st["errors"] == [], summary(res)
    assert res["pageErrors"] == [], summary(res)
    # session 1: moved to b within the steering TTL + one segment of a stopping, no stall over 2 s
    moves1 = [(c["to"], c["t"] / 1000) for c in s1["pathwayChanges"] if c["from"] is not None]
    assert [to for to, _ in moves1] == ["b"], s1["pathwayChanges"]
    failover_s = moves1[0][1] - t["kill"]
    stalls1 = [x for x in s1["stallLog"] if x["t"] / 1000 >= t["kill"] - 1]
    # session 2: started on a after the hold, drained to b
    moves2 = [(c["to"], c["t"] / 1000) for c in s2["pathwayChanges"] if c["from"] is not None]
    assert [to for to, _ in moves2] == ["b"], s2["pathwayChanges"]
    drain_s = moves2[0][1] - t["drain"]
    stalls2 = [x for x in s2["stallLog"] if x["t"] / 1000 >= t["drain"] - 1]
    (ARTIFACTS / "steering-trace.json").write_text(json.dumps({"t": t, "s1": s1, "s2": s2,
                                                               "failed": res["failedRequests"]}))
    report = {"t": t, "resyncs": [s1.get("resyncs"), s2.get("resyncs")], "failover_s": round(failover_s, 2),
              "stalls_after_kill": stalls1,
              "a_first_again_after_restart_s": round(t["a_first_again"] - t["restart"], 2),
              "new_session_on": op.new_session_on, "drain_s": round(drain_s, 2),
              "drain_write_s": round(t["drained"] - t["drain"], 2), "stalls_after_drain": stalls2,
              "session1_warnings": s1["warnings"][-8:], "steering_loads": [s1["steering"]["loads"],
                                                                          s2["steering"]["loads"]]}
    print("steering e2e:", json.dumps(report))
    (ARTIFACTS / "steering.json").write_text(json.dumps(report, indent=1))
    assert 0 < failover_s <= TTL_S + SEGMENT_S, report
    assert all(x["ms"] is not None and x["ms"] <= 2000 for x in stalls1 + stalls2), report
    # recovery: new sessions go to b until a has passed the hold window, then to a
    # (the api's probe may see a up to one probe interval before this test does)
    assert HOLD_S - 0.5 <= t["a_first_again"] - t["restart"] <= HOLD_S + 3, report
    assert op.new_session_on == {"restart+1s": "b", "after hold": "a"}, report
    assert 0 < drain_s <= TTL_S + SEGMENT_S + (t["drained"] - t["drain"]), report
    # the QoE rows show the moves: session 1 a then b, session 2 a then b
    client = AnalyticsClient(steered.settings, timeout=10)

    def pops(sid: str) -> list[str]:
        rows = client.query(f"SELECT cdn_pop FROM stream_analytics WHERE session_id = '{sid}' ORDER BY event_time_ms")
        seq = [r["cdn_pop"] for r in rows]
        return [p for i, p in enumerate(seq) if i == 0 or seq[i - 1] != p]

    wait_until(lambda: pops(s1["sessionId"]) == ["a", "b"] and pops(s2["sessionId"]) == ["a", "b"], 60, 0.5,
               "both sessions' QoE rows moving a -> b")


def test_dash_js_follows_the_steering_server_too(steered: Steered) -> None:
    """dash.js 5 reads the MPD's ContentSteering and BaseURL@serviceLocation: it starts on the first pathway and
    a drain moves it within the TTL + one segment."""
    admin = steered.admin()
    r = httpx.post(f"{steered.api}/api/v1/steering/demo/override", json={"action": "clear"}, headers=admin, timeout=20)
    assert r.status_code == 200, r.text
    try:
        wait_until(lambda: steered.priority()[0] == "a", 3 * HOLD_S + 10, 0.2, "a first once the drain is cleared")
    except AssertionError as exc:
        status = httpx.get(f"{steered.api}/api/v1/steering/demo/status", headers=admin, timeout=10).json()
        raise AssertionError(f"{exc}: {json.dumps(status)}") from None
    marks = Markers()
    t: dict[str, float] = {}

    def drain() -> None:
        marks.wait("dash-on-a", 90)
        time.sleep(4 + random.uniform(0, TTL_S))
        t["drain"] = time.time()
        httpx.post(f"{steered.api}/api/v1/steering/demo/override", json={"action": "drain", "pathway": "a"},
                   headers=admin, timeout=20)
        t["drained"] = time.time()

    th = threading.Thread(target=drain, daemon=True)
    th.start()
    try:
        res = run_browser([
            {"op": "goto", "url": f"{steered.api}/watch/demo?format=dash&beacon_ms=2000"},
            {"op": "wait", "name": "playing on a",
             "expr": "window.floodlight.state === 'playing' && window.floodlight.pathway === 'a'", "timeout_s": 60},
            marks.step("dash-on-a"),
            {"op": "wait", "name": "drained to b", "expr": "window.floodlight.pathway === 'b'", "timeout_s": 60},
            {"op": "hold", "s": 3},
        ], timeout_s=180)
        th.join(30)
    finally:
        marks.close()
    assert res["ok"], summary(res)
    st = res["state"]
    assert st["errors"] == [] and res["pageErrors"] == [], summary(res)
    moved = [c["t"] / 1000 for c in st["pathwayChanges"] if c["from"] == "a" and c["to"] == "b"]
    # dash.js applies a new priority at its next segment request; 0.5 s for the steering request's own round trip
    assert len(moved) == 1 and 0 < moved[0] - t["drain"] <= TTL_S + SEGMENT_S + 0.5 + (t["drained"] - t["drain"]), (
        t, st)
    assert all(s["ms"] is not None and s["ms"] <= 2000 for s in st["stallLog"]), st["stallLog"]
    print("steering e2e dash:", json.dumps({"drain_s": round(moved[0] - t["drain"], 2), "stalls": st["stallLog"]}))
