"""Third-party players as any site embeds them play the demo through the Varnish edge as close to live as
straight from the api (issue 14): hls.js with `lowLatencyMode: true` and every other option its default,
and Shaka Player 4 with `streaming.lowLatencyMode: true`.

One `floodlight demo` (640x360 source, a ladder with the default ladder's bitrates - 8000/4000/2000/500
kbit/s - LOW latency, two api processes behind the edge), one page per player with two of it side by side
in headless chromium: one on the edge, one on an api process directly, the same minute on the same CPU.
Glass-to-glass = now - program-date-time of the playhead (hls.playingDate, Shaka's
getPlayheadTimeAsDate), sampled every 250 ms. Before issue 14 the nginx edge held coalesced LL-HLS waiters
on a 500 ms lock poll and served stale blocking playlists: 6.5 s through the edge vs 3.1 s direct, with
levelLoadTimeOut.

Shaka stayed on the lowest rung on loopback, edge or not: its bandwidth estimator counts the time to the
first byte as transfer time (`abr.removeLatencyFromFirstPacketTime` is false by default), and an LL-HLS
request for the preload-hinted part is held by the server until the part exists, so every sample is about
the bitrate of the rung it is on. With that one option on it climbs at once; the test sets it and pins
the climb (top rung within 20 s).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
from collections.abc import Iterator
from pathlib import Path

import pytest

from floodlight.settings import Settings
from tests.e2e.browser import ROOT, run_browser, summary
from tests.e2e.demo import running_demo, two_free_ports
from tests.e2e.static_origin import page_origin

pytestmark = pytest.mark.usefixtures("browser_tools")  # skips locally, fails under CI=true

HOLD_S = 30  # sampling window after both players play
WARMUP_S = 12  # samples before this are the players settling after start
TARGET_GAP_S = 0.3  # issue 14's target for edge p50 - direct p50: measured and reported (house rule 4: speed is
# measured, not asserted in timed tests; on the shared 2-core box it came out 0.0-0.45 s with the load)
MAX_GAP_S = 1.0  # asserted: a regression guard that still fails the old edge (nginx's 500 ms cache-lock poll
# put plain hls.js 3.4 s and Shaka 1.7 s behind direct)

LADDER = "hd:640x360:8000,md:640x360:4000,sd:426x240:2000,ld:256x144:500"
TOP_WITHIN_S = 20

SHAKA_PAGE = """<!doctype html><meta charset="utf-8"><title>plain Shaka Player</title>
<video id="edge" muted autoplay playsinline width="320"></video>
<video id="direct" muted autoplay playsinline width="320"></video>
<script src="/shaka-player.compiled.js"></script>
<script>
const q = new URLSearchParams(location.search);
window.plain = {};
shaka.polyfill.installAll();
for (const name of ['edge', 'direct']) {
  const v = document.getElementById(name);
  const st = window.plain[name] = { samples: [], errors: [], level: null, playing: false, topAt: null };
  const t0 = performance.now();
  const player = new shaka.Player();
  // lowLatencyMode, and the one ABR option that lets it measure held LL-HLS requests (module docstring)
  player.configure({ streaming: { lowLatencyMode: true }, abr: { removeLatencyFromFirstPacketTime: true } });
  player.addEventListener('error', (e) => st.errors.push('shaka:' + (e.detail && e.detail.code)));
  v.addEventListener('playing', () => { st.playing = true; });
  player.attach(v).then(() => player.load(q.get(name))).catch((e) => st.errors.push('load:' + (e.code || e)));
  setInterval(() => {
    const tracks = player.getVariantTracks();
    const active = tracks.find((t) => t.active);
    const top = Math.max(0, ...tracks.map((t) => t.bandwidth || 0));
    if (active) st.level = active.height;
    if (active && st.playing && st.topAt === null && active.bandwidth === top) {
      st.topAt = (performance.now() - t0) / 1000;
    }
    const d = player.getPlayheadTimeAsDate();
    if (d && !v.paused && st.playing) st.samples.push([performance.now(), Date.now() - d.getTime()]);
  }, 250);
}
</script>
"""

PAGE = """<!doctype html><meta charset="utf-8"><title>plain hls.js</title>
<video id="edge" muted autoplay playsinline width="320"></video>
<video id="direct" muted autoplay playsinline width="320"></video>
<script src="/hls.min.js"></script>
<script>
const q = new URLSearchParams(location.search);
window.plain = {};
for (const name of ['edge', 'direct']) {
  const v = document.getElementById(name);
  const hls = new Hls({ lowLatencyMode: true });  // defaults otherwise: what a site embedding hls.js gets
  const st = window.plain[name] = { samples: [], errors: [], level: null, playing: false };
  hls.on(Hls.Events.ERROR, (_e, d) => st.errors.push(d.details + (d.fatal ? ':fatal' : '')));
  hls.on(Hls.Events.LEVEL_SWITCHED, (_e, d) => { st.level = hls.levels[d.level].height; });
  v.addEventListener('playing', () => { st.playing = true; });
  hls.loadSource(q.get(name));
  hls.attachMedia(v);
  setInterval(() => {
    const d = hls.playingDate;
    if (d && !v.paused && st.playing) st.samples.push([performance.now(), Date.now() - d.getTime()]);
  }, 250);
}
</script>
"""


@pytest.fixture(scope="module")
def two_apis(broker: Settings) -> Iterator[tuple[str, str]]:
    """A demo with two api processes behind the edge: (edge URL, one api's URL)."""
    # the second api process takes the port after the first
    with running_demo(broker, "edge", "--api-processes", "2", "--ladder", LADDER, api_port=two_free_ports()) as d:
        edge, api = f"http://127.0.0.1:{d.base.edge_port}", f"http://127.0.0.1:{d.base.api_port + 1}"
        d.wait_listed([f"{u}/live/demo/hd/playlist.m3u8" for u in (edge, api)],
                      "the demo's playlists through the edge and the second api")
        yield edge, api


@pytest.fixture(scope="module")
def page_server() -> Iterator[str]:
    """The plain page and hls.js from node_modules, on an origin of their own (the players go cross-origin)."""
    def fill(root: Path) -> None:
        (root / "index.html").write_text(PAGE)
        (root / "shaka.html").write_text(SHAKA_PAGE)
        shutil.copy(ROOT / "node_modules" / "hls.js" / "dist" / "hls.min.js", root / "hls.min.js")
        shutil.copy(ROOT / "node_modules" / "shaka-player" / "dist" / "shaka-player.compiled.js",
                    root / "shaka-player.compiled.js")

    with page_origin(fill, "plain") as url:
        yield url


def _p50(samples: list[list[float]]) -> float:
    t0 = samples[0][0]
    settled = [lat for t, lat in samples if t - t0 >= WARMUP_S * 1000]
    return statistics.median(settled) / 1000


def _play(two_apis: tuple[str, str], page: str, artifact: str) -> dict:
    """Both players of `page` for HOLD_S; returns {edge|direct: {p50_s, n, errors, level, topAt}}, checked
    for playing throughout, no load timeouts or fatal errors, and the edge within MAX_GAP_S of direct."""
    edge, api = two_apis
    src = {"edge": f"{edge}/live/demo/master.m3u8", "direct": f"{api}/live/demo/master.m3u8"}
    url = f"{page}?" + "&".join(f"{k}={v}" for k, v in src.items())
    res = run_browser([
        {"op": "goto", "url": url},
        {"op": "wait", "name": "playing", "expr": "window.plain.edge.playing && window.plain.direct.playing",
         "timeout_s": 90},
        {"op": "hold", "s": HOLD_S},
        {"op": "eval", "name": "plain", "expr": "window.plain"},
    ], timeout_s=HOLD_S + 120)
    assert res["ok"], summary(res)
    plain = next(s for s in res["steps"] if s["name"] == "plain")["value"]
    report = {k: {"p50_s": round(_p50(v["samples"]), 3), "n": len(v["samples"]), "errors": v["errors"][:20],
                  "level": v["level"], "topAt": v.get("topAt")} for k, v in plain.items()}
    artifacts = Path(os.environ.get("FLOODLIGHT_E2E_ARTIFACTS", "/tmp/floodlight-e2e"))
    artifacts.mkdir(parents=True, exist_ok=True)
    (artifacts / artifact).write_text(json.dumps(report, indent=1))
    failed = {}
    for name in ("edge", "direct"):
        assert len(plain[name]["samples"]) > 4 * (HOLD_S - WARMUP_S) * 0.8, report  # it kept playing
        errs = plain[name]["errors"]
        assert not [e for e in errs if e.endswith(":fatal") or e.startswith("load:")], report
        failed[name] = [e for e in errs if "TimeOut" in e]
    # a load timeout is the edge's doing only if the player straight on the api had none at the same
    # moment: when the pipeline itself stalls (a loaded machine), both players time out together
    assert len(failed["edge"]) <= len(failed["direct"]), report
    gap = report["edge"]["p50_s"] - report["direct"]["p50_s"]
    print(f"edge p50 - direct p50 = {gap:.2f} s (target <= {TARGET_GAP_S} s)")
    assert gap <= MAX_GAP_S, report
    return report


def test_plain_hls_js_through_the_edge_is_as_live_as_direct(two_apis: tuple[str, str], page_server: str) -> None:
    _play(two_apis, f"{page_server}/index.html", "edge-hls-js.json")


def test_shaka_through_the_edge_is_as_live_as_direct_and_climbs_to_the_top(two_apis: tuple[str, str],
                                                                          page_server: str) -> None:
    report = _play(two_apis, f"{page_server}/shaka.html", "edge-shaka.json")
    for name in ("edge", "direct"):
        assert report[name]["topAt"] is not None and report[name]["topAt"] <= TOP_WITHIN_S, report
