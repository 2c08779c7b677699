"""Glass-to-glass latency of the demo pipeline, per latency mode and player, with a per-stage breakdown.

For each mode it runs `floodlight demo` headless (own topics, ports, store; default 1080p30, the default
4-rung ladder, two encoders, through the edge) and plays it in headless chromium with a plain player page
(bench/player/plain.html): hls.js with `lowLatencyMode: true` and every other option its default, or dash.js
with its defaults, as any site would embed them (`--players hls,dash,page`: `page` is our own /watch page).
Every 250 ms it samples two figures:

  PDT    now - program-date-time of the playhead (hls.playingDate, dash.js timeAsUTC): the packager writes the
         GOP's capture wall-clock as PDT, so a right PDT makes this glass-to-glass;
  pixel  now - the capture clock burnt into the frame on screen, drawn into a canvas and decoded
         (bench/player/clock.js, the geometry of producers.sources.testsrc.read_clock): a wrong PDT cannot
         flatter this one.

The stage shares come from the records' own timestamps, joined per part (sub-GOP transport, LOW) or per
segment (whole GOPs):

  accumulation  capture of the part's (GOP's) first frame -> the ingest publishes it (includes its length)
  kafka         ingest published -> encoder took it
  transcode     encoder took it -> part (segment) encoded
  packaging     encoded -> the media playlist listing it written (floodlight.segments + store write)
  delivery      playlist written -> the player finished loading it (edge, api, HTTP)
  player buffer the rest: loaded -> shown

Anchor (`--whole-gop`): the same mode with whole-GOP transport (FLOODLIGHT_INGEST_PART_SECONDS=0: a GOP
leaves the venue only once captured, every part of a segment appears together), measured in the same run;
the ratio says what sub-GOP streaming buys. Without it the anchor is one GOP duration.

    .venv/bin/python -m bench.latency [--seconds 60] [--modes low,standard] [--players hls,dash]
                                      [--whole-gop] [--source testsrc:1920x1080@30] [--ladder default]
                                      [--encoders 2] [--joins 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import AbstractContextManager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from floodlight.settings import Settings
from floodlight.topics import delete_prefixed_topics
from ops.demo import demo_settings, settings_env
from tests.e2e.browser import ROOT, run_browser, summary
from tests.e2e.static_origin import free_port, page_origin

STAGES = ("accumulation", "kafka", "transcode", "packaging", "delivery", "player buffer")
TARGET_P95_MS = {("low", "hls"): 2000, ("low", "page"): 1500, ("low", "dash"): 3000, ("standard", "hls"): 8000,
                 ("standard", "page"): 8000, ("standard", "dash"): 8000}
WARMUP_S = 10.0
BROWSER_SETTLE_S = 3.0
PLAYER_DIR = Path(__file__).resolve().parent / "player"
ASSETS = {"hls.min.js": ROOT / "node_modules" / "hls.js" / "dist" / "hls.min.js",
          "dash.all.min.js": ROOT / "node_modules" / "dashjs" / "dist" / "legacy" / "umd" / "dash.all.min.js"}


def mode_gop_seconds(mode: str) -> float:
    """The GOP the ingest uses by default in this latency mode (no --gop-seconds: what the demo runs)."""
    from producers.agent import GOP_SECONDS_BY_MODE

    return GOP_SECONDS_BY_MODE[mode.upper()]


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(q / 100 * len(s)) - 1))
    return s[k]


def pdt_ms(line: str) -> int:
    """Unix ms of an #EXT-X-PROGRAM-DATE-TIME line."""
    return int(datetime.fromisoformat(line.split(":", 1)[1].replace("Z", "+00:00")).timestamp() * 1000)


def variants(master: str) -> list[tuple[int, int, str]]:
    """(bandwidth, height, URI) of each variant of a master playlist."""
    lines = master.splitlines()
    out = []
    for ln, nxt in zip(lines, lines[1:], strict=False):
        bw, res = re.search(r"[:,]BANDWIDTH=(\d+)", ln), re.search(r"RESOLUTION=\d+x(\d+)", ln)
        if ln.startswith("#EXT-X-STREAM-INF:") and bw and res:
            out.append((int(bw.group(1)), int(res.group(1)), nxt.strip()))
    return out


def playlist_pdt(text: str) -> dict[int, int]:
    """msn -> program-date-time (Unix ms) from a media playlist."""
    out: dict[int, int] = {}
    msn = 0
    pdt: int | None = None
    for line in text.splitlines():
        if line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
            msn = int(line.split(":", 1)[1])
        elif line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
            pdt = pdt_ms(line)
        elif line and not line.startswith("#"):
            if pdt is not None:
                out[msn] = pdt
            msn += 1
            pdt = None
    return out


def edge_age_s(text: str, now_ms: int) -> float | None:
    """How old the newest media in a live media playlist is: now - the wall-clock end of its last part (or
    segment), from the PDT of its segment plus the durations after it. None without a PDT."""
    start: float | None = None
    extinf = parts = 0.0
    for line in text.splitlines():
        if line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
            start = float(pdt_ms(line))
        elif line.startswith("#EXTINF:"):
            extinf = float(line.split(":", 1)[1].split(",")[0]) * 1000
        elif line.startswith("#EXT-X-PART:"):
            parts += float(line.split("DURATION=", 1)[1].split(",")[0]) * 1000
        elif line and not line.startswith("#") and start is not None:
            start, parts = start + extinf, 0.0
    return None if start is None else (now_ms - (start + parts)) / 1000


def wait_settled(url: str, whole_gop: bool, hold_s: float = 5.0, deadline_s: float = 120.0) -> tuple[float, float]:
    """Wait until the pipeline keeps up: the newest part of the playlist at `url` stays younger than one part + 1 s
    for `hold_s` (whole segments, or whole-GOP transport where parts appear a segment at a time: two segments +
    0.5 s, as a segment is listed only once encoded). A viewer joins a running event, not the demo's start-up,
    when the encoders still warm up and catch up a backlog (a player that joins then stays behind by the backlog,
    as hls.js and dash.js do by default). Returns (seconds waited, the newest age seen last); on the deadline it
    goes on."""
    t0 = time.monotonic()
    good_since: float | None = None
    age = float("nan")
    while time.monotonic() - t0 < deadline_s:
        try:
            text = httpx.get(url, timeout=5).text
        except httpx.HTTPError:
            text = ""
        unit = None if whole_gop else next((float(ln.split("PART-TARGET=")[1].split(",")[0])
                                            for ln in text.splitlines() if ln.startswith("#EXT-X-PART-INF:")), None)
        limit = unit + 1.0 if unit is not None else 2 * next(
            (float(ln.split(":", 1)[1]) for ln in text.splitlines() if ln.startswith("#EXT-X-TARGETDURATION:")),
            2.0) + 0.5
        got = edge_age_s(text, int(time.time() * 1000))
        now = time.monotonic()
        if got is not None and got < limit:
            age = got
            good_since = now if good_since is None else good_since
            if now - good_since >= hold_s:
                return now - t0, age
        else:
            good_since = None
        time.sleep(0.25)
    return time.monotonic() - t0, age


def stage_breakdown(segments: list[dict[str, Any]], written: dict[Any, int], msn_of_capture: dict[int, int],
                    loads: dict[Any, int], g2g_p50: float) -> dict[str, float]:
    """Median of each stage over the parts (or whole segments) the player loaded; 'player buffer' is what
    remains of the p50. A record with part_index >= 0 is keyed (msn, part) in `written` and `loads` and its
    capture is the GOP's plus the part's offset in it; a whole segment is keyed msn."""
    per: dict[str, list[float]] = {k: [] for k in STAGES[:-1]}
    loaded_minus_capture: list[float] = []
    starts: dict[tuple[str, int], int] = {}  # (rendition, gop) -> pts of part 0
    for seg in segments:
        if seg.get("part_index", -1) == 0:
            starts[(seg["rendition"]["name"] if "rendition" in seg else "", seg["gop_index"])] = seg["pts"]
    for seg in segments:
        msn = msn_of_capture.get(seg["capture_wallclock_ms"])
        part = seg.get("part_index", -1)
        if msn is None or (part >= 0 and not seg.get("parts")):
            continue
        key: Any = msn if part < 0 else (msn, part)
        if key not in loads or key not in written:
            continue
        c = seg["capture_wallclock_ms"]
        if part > 0:
            first = starts.get((seg["rendition"]["name"] if "rendition" in seg else "", seg["gop_index"]))
            if first is None:
                continue
            c += round((seg["pts"] - first) * 1000 / seg["timescale"])
        per["accumulation"].append(seg["ingest_published_ms"] - c)
        per["kafka"].append(seg["encode_started_ms"] - seg["ingest_published_ms"])
        per["transcode"].append(seg["encoded_wallclock_ms"] - seg["encode_started_ms"])
        per["packaging"].append(written[key] - seg["encoded_wallclock_ms"])
        per["delivery"].append(loads[key] - written[key])
        loaded_minus_capture.append(loads[key] - c)
    out = {k: statistics.median(v) if v else float("nan") for k, v in per.items()}
    out["player buffer"] = g2g_p50 - (statistics.median(loaded_minus_capture) if loaded_minus_capture else 0.0)
    out["gops"] = len(loaded_minus_capture)
    return out


def first_written(updates: list[dict[str, Any]]) -> dict[Any, int]:
    """When each segment (msn) and each part ((msn, part)) was first listed, from the ManifestUpdates: an
    update (m, p) lists parts 0..p of m and everything before m; (m, -1) lists m whole."""
    out: dict[Any, int] = {}
    for u in sorted(updates, key=lambda u: (u["written_wallclock_ms"], u["version"])):
        m, p, t = u["msn"], u["part"], u["written_wallclock_ms"]
        whole = m if p == -1 else m - 1
        for msn in range(max(0, whole - 3), whole + 1):
            out.setdefault(msn, t)
        for k in range(p + 1):
            out.setdefault((m, k), t)
    return out


def read_topic(settings: Settings, short: str, schema: str, stream_id: str) -> list[dict[str, Any]]:
    """Every record of one stream on a (finished) topic, read to the end (media bytes dropped)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    from floodlight.kafka import consumer_config
    from schemas import codec

    topic = settings.topic(short)
    c = Consumer(consumer_config(settings, f"bench-latency-{uuid.uuid4().hex[:6]}", log_level=0,
                                 **{"enable.partition.eof": True}))
    parts = list(c.list_topics(topic, timeout=15).topics[topic].partitions)
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
    out, eof, deadline = [], set(), time.monotonic() + 120
    while len(eof) < len(parts) and time.monotonic() < deadline:
        msg = c.poll(1.0)
        if msg is None:
            continue
        if msg.error():
            if msg.error().code() == KafkaError._PARTITION_EOF:
                eof.add(msg.partition())
            continue
        rec = codec.decode(msg.value(), expect=schema)
        if rec["stream_id"] == stream_id:
            rec.pop("init_segment", None)
            if "data" in rec:
                rec["data"] = len(rec["data"])
            out.append(rec)
    c.close()
    return out


def page_server() -> AbstractContextManager[str]:
    """The plain player page, its clock decoder, hls.js and dash.js on an origin of their own."""
    def fill(root: Path) -> None:
        for f in PLAYER_DIR.iterdir():
            shutil.copy(f, root / f.name)
        for name, path in ASSETS.items():
            shutil.copy(path, root / name)

    return page_origin(fill, "bench-page")


def play(page: str, edge: str, player: str, seconds: float, src_width: int) -> dict[str, Any]:
    """One player for WARMUP_S + seconds; its samples after the warm-up, loads, stalls, errors."""
    if player == "page":
        url, state = f"{edge}/watch/demo", "window.floodlight"
        data = ("({samples: fl.latencySamples.filter(s => s[0] >= window.__mark), pixel: [], loads: fl.fragLoads.map("
                "l => [l[0], l[2], l[3]]), stalls: fl.stalls, stall_ms: 0, level: (fl.currentLevel || {}).height,"
                " errors: fl.errors, unreadable: 0})")
        wait = "window.floodlight && window.floodlight.state === 'playing'"
    else:
        src = f"{edge}/live/demo/{'manifest.mpd' if player == 'dash' else 'master.m3u8'}"
        url, state = f"{page}/plain.html?player={player}&srcw={src_width}&src={src}", "window.fl"
        data = ("({samples: fl.samples.filter(s => s[0] >= window.__mark), pixel: fl.pixel.filter(s => s[0] >= "
                "window.__mark), loads: fl.loads, stalls: fl.stalls - window.__stalls0, stall_ms: fl.stall_ms - "
                "window.__stallms0, level: fl.level, errors: fl.errors, unreadable: fl.unreadable})")
        wait = "window.fl && window.fl.playing"
    res = run_browser([
        {"op": "goto", "url": "about:blank"},  # the browser's own start-up (CPU-heavy here) before the player joins
        {"op": "hold", "s": BROWSER_SETTLE_S},
        {"op": "goto", "url": url},
        {"op": "wait", "name": "playing", "expr": wait, "timeout_s": 60},
        {"op": "hold", "s": WARMUP_S},
        {"op": "eval", "name": "mark", "expr": f"(() => {{ const fl = {state}; window.__mark = Date.now(); "
                                               "window.__stalls0 = fl.stalls; window.__stallms0 = fl.stall_ms || 0; "
                                               "return 1; })()"},
        {"op": "hold", "s": seconds},
        {"op": "eval", "name": "data", "expr": f"(() => {{ const fl = {state}; return {data}; }})()"},
    ], timeout_s=seconds + WARMUP_S + 150)
    if not res["ok"]:
        raise RuntimeError(f"{player} player run failed: {summary(res)}")
    return next(st for st in res["steps"] if st["name"] == "data")["value"]


def merge_joins(each: list[dict[str, Any]]) -> dict[str, Any]:
    """Several joins of one player as one run: their samples, loads and stalls together."""
    out = dict(each[-1])
    for key in ("samples", "pixel", "loads", "errors"):
        out[key] = [x for d in each for x in d[key]]
    for key in ("stalls", "stall_ms", "unreadable"):
        out[key] = sum(d.get(key, 0) or 0 for d in each)
    return out


def run_demo(broker: Settings, mode: str, seconds: float, source: str, ladder: str, encoders: int,
             players: list[str], whole_gop: bool = False, joins: int = 1) -> list[dict[str, Any]]:
    """One demo in `mode` (whole-GOP transport if asked), each player in turn on it; one result per player."""
    tmp = Path(tempfile.mkdtemp(prefix="fl-bench-latency-"))
    base = broker.model_copy(update={
        "topic_prefix": f"latbench{uuid.uuid4().hex[:8]}.", "stack_dir": tmp / "stack",
        "api_port": free_port(), "edge_port": free_port(), "qoe_port": free_port(),
        **({"ingest_part_seconds": 0.0} if whole_gop else {}),
    })
    s = demo_settings(base)
    edge = f"http://127.0.0.1:{base.edge_port}"
    out = tmp / "demo.out"
    cmd = [sys.executable, "-m", "ops.cli", "demo", "--latency", mode, "--source", source,
           "--ladder", ladder, "--encoders", str(encoders)]
    proc = subprocess.Popen(cmd, env={**os.environ, **settings_env(base)}, stdout=out.open("wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    src_width = int(source.split(":")[1].split("x")[0]) if ":" in source else 640
    label = f"{mode}{' whole-GOP' if whole_gop else ''}"
    runs: list[tuple[str, dict[str, Any], float]] = []
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"demo did not start: {out.read_text()[-2000:]}")
            try:
                if httpx.get(f"{edge}/live/demo/master.m3u8", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        top = max(variants(httpx.get(f"{edge}/live/demo/master.m3u8", timeout=10).text),
                  default=(0, 0, "1080p/playlist.m3u8"))[2]
        waited, age = wait_settled(f"{edge}/live/demo/{top}", whole_gop)
        print(f"[{label}] pipeline settled after {waited:.0f} s (newest media {age:.2f} s old)", flush=True)
        with page_server() as page:
            for player in players:
                print(f"[{label}] {player}: {joins} x ({WARMUP_S:.0f} s warm-up + {seconds:.0f} s)", flush=True)
                try:
                    each = [play(page, edge, player, seconds, src_width) for _ in range(joins)]
                    if joins > 1:
                        print(f"[{label}] {player} per join p50/p95: " + ", ".join(
                            f"{pct([v for _t, v in d['samples']], 50) / 1000:.2f}/"
                            f"{pct([v for _t, v in d['samples']], 95) / 1000:.2f} s" for d in each), flush=True)
                    runs.append((player, merge_joins(each), os.getloadavg()[0]))
                except RuntimeError as exc:  # one player failing does not lose the others' figures
                    print(f"[{label}] {player} NOT MEASURED: {str(exc)[:600]}", flush=True)
                    runs.append((player, {"samples": [], "pixel": [], "loads": [], "stalls": 0, "errors":
                                          [str(exc)[:300]], "level": None}, os.getloadavg()[0]))
        master = httpx.get(f"{edge}/live/demo/master.m3u8", timeout=10).text
        renditions = {height: uri for _bw, height, uri in variants(master)}
        lists: dict[str, tuple[dict[int, int], str]] = {}
        for name in set(renditions.values()):
            base_uri = name.rsplit("/", 1)[0]
            dvr = httpx.get(f"{edge}/live/demo/{base_uri}/dvr.m3u8", timeout=10)
            live = httpx.get(f"{edge}/live/demo/{base_uri}/playlist.m3u8", timeout=10).text
            control = next((ln for ln in live.splitlines() if ln.startswith("#EXT-X-SERVER-CONTROL")), "")
            lists[base_uri] = (playlist_pdt(dvr.text if dvr.status_code == 200 else live), control)
    except BaseException:
        _stop_demo(proc)
        _delete_topics(s)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _stop_demo(proc)
    try:
        segments = read_topic(s, "segments", "RenditionSegment", "demo")
        updates = read_topic(s, "manifests", "ManifestUpdate", "demo")
    finally:
        _delete_topics(s)
        shutil.rmtree(tmp, ignore_errors=True)
    results = []
    for player, data, load1 in runs:
        rendition = next((renditions[h].rsplit("/", 1)[0] for h in sorted(renditions, reverse=True)
                          if data.get("level") == h), next(iter(lists)))
        pdt, control = lists[rendition]
        mine = [r for r in segments if r["rendition"]["name"] == rendition]
        written = first_written([u for u in updates if u["rendition"] == rendition])
        loads: dict[Any, int] = {}
        for sn, part, t in data["loads"]:
            for key in (int(sn), (int(sn), int(part))) if int(part) >= 0 else (int(sn),):
                loads[key] = max(loads.get(key, 0), int(t))  # a segment is loaded with its last part
        g2g = [float(v) for _t, v in data["samples"]]
        pixel = [float(v) for _t, v in data["pixel"]]
        p50 = pct(g2g, 50)
        whole = [r for r in mine if r.get("part_index", -1) < 0 or r.get("is_last_part")]
        seg_ms = [r["duration"] * 1000 / r["timescale"] for r in mine if r.get("part_index", -1) < 0]
        if not seg_ms:  # parts: a segment is the sum of its parts
            per: dict[int, float] = {}
            for r in mine:
                per[r["gop_index"]] = per.get(r["gop_index"], 0.0) + r["duration"] * 1000 / r["timescale"]
            seg_ms = list(per.values())
        results.append({
            "mode": mode, "transport": "whole-GOP" if whole_gop or not any(r.get("part_index", -1) >= 0 for r in mine)
            else "sub-GOP", "player": player, "rendition": rendition, "samples": len(g2g), "p50_ms": p50,
            "p95_ms": pct(g2g, 95), "max_ms": max(g2g) if g2g else float("nan"),
            "pixel_samples": len(pixel), "pixel_p50_ms": pct(pixel, 50), "pixel_p95_ms": pct(pixel, 95),
            "pixel_unreadable": data.get("unreadable", 0),
            "stalls": data["stalls"], "stall_ms": data.get("stall_ms", 0), "errors": data["errors"][:20],
            "stages_ms": stage_breakdown(mine if player != "dash" else whole, written,
                                         {v: k for k, v in pdt.items()}, loads, p50),
            "server_control": control, "target_p95_ms": TARGET_P95_MS.get((mode, player), 8000),
            "anchor_gop_ms": mode_gop_seconds(mode) * 1000, "load1": load1,
            "measured_segment_ms": statistics.median(seg_ms) if seg_ms else float("nan")})
    return results


def _stop_demo(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def _delete_topics(s: Settings) -> None:
    prefix = s.topic_prefix  # only the demo's own topics (<unique prefix>demo.*): nothing anyone else made
    assert prefix.startswith("latbench") and prefix.endswith(".demo."), prefix
    delete_prefixed_topics(s)


def report(r: dict[str, Any], anchor: dict[str, Any] | None = None) -> str:
    ok = "OK" if r["p95_ms"] < r["target_p95_ms"] else "MISSED"
    gap = abs(r["pixel_p50_ms"] - r["p50_ms"]) if r["pixel_samples"] else float("nan")
    lines = [f"{r['mode']:8} {r['transport']:9} {r['player']:4} glass-to-glass PDT p50 {r['p50_ms'] / 1000:.2f} s  "
             f"p95 {r['p95_ms'] / 1000:.2f} s (target p95 < {r['target_p95_ms'] / 1000:g} s: {ok})   pixel p50 "
             f"{r['pixel_p50_ms'] / 1000:.2f} s  p95 {r['pixel_p95_ms'] / 1000:.2f} s  (|pixel - PDT| p50 "
             f"{gap / 1000:.2f} s)",
             f"{'':28}samples {r['samples']}/{r['pixel_samples']}  stalls {r['stalls']} ({r['stall_ms'] / 1000:.1f} s)"
             f"  rendition {r['rendition']}  segments {r['measured_segment_ms'] / 1000:.2f} s  load {r['load1']:.1f}"
             f"  errors {len(r['errors'])}  {r['server_control']}"]
    if anchor is not None and anchor is not r:
        lines.append(f"{'':28}ratio p50 / whole-GOP p50 of this run ({anchor['p50_ms'] / 1000:.2f} s) = "
                     f"{r['p50_ms'] / anchor['p50_ms']:.2f}x; p95 {r['p95_ms'] / anchor['p95_ms']:.2f}x")
    else:
        lines.append(f"{'':28}ratio p50 / one GOP ({r['anchor_gop_ms'] / 1000:g} s) = "
                     f"{r['p50_ms'] / r['anchor_gop_ms']:.2f}x")
    st = r["stages_ms"]
    total = r["p50_ms"] or 1
    lines.append(f"{'':28}" + "  ".join(f"{k} {st[k] / 1000:.2f} s ({100 * st[k] / total:.0f}%)" for k in STAGES)
                 + f"  [{st['gops']} {'parts' if r['transport'] == 'sub-GOP' and r['player'] != 'dash' else 'GOPs'}]")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--modes", default="low,standard")
    ap.add_argument("--players", default="hls", help="hls (plain hls.js), dash (plain dash.js), page (our /watch)")
    ap.add_argument("--whole-gop", action="store_true", help="also run each LOW mode with whole-GOP transport")
    ap.add_argument("--source", default="testsrc:1920x1080@30")
    ap.add_argument("--ladder", default="default")
    ap.add_argument("--encoders", type=int, default=2)
    ap.add_argument("--joins", type=int, default=1,
                    help="each player joins this many times (a fresh page each; where it lands varies per join)")
    ap.add_argument("--json", action="store_true", help="also print the results as JSON")
    a = ap.parse_args(argv)
    from floodlight.kafka import wait_for_broker

    broker = Settings()
    wait_for_broker(broker, 10)
    players = a.players.split(",")
    results: list[tuple[dict[str, Any], dict[str, Any] | None]] = []
    failed: list[str] = []
    for mode in a.modes.split(","):
        if mode not in ("low", "standard"):
            ap.error(f"unknown mode {mode}")
        variants = [False, True] if a.whole_gop and mode == "low" else [False]
        got: dict[bool, list[dict[str, Any]]] = {}
        for whole in variants:
            try:
                got[whole] = run_demo(broker, mode, a.seconds, a.source, a.ladder, a.encoders,
                                      ["hls"] if whole else players, whole_gop=whole, joins=a.joins)
            except RuntimeError as exc:  # e.g. the machine cannot keep this ladder in real time
                print(f"{mode:9} NOT MEASURED: {str(exc)[:1500]}", flush=True)
                failed.append(mode)
        anchor = next((r for r in got.get(True, []) if r["player"] == "hls"), None)
        for r in got.get(False, []) + got.get(True, []):
            results.append((r, anchor))
            print(report(r, anchor), flush=True)
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\nsource {a.source}, ladder {a.ladder}, {a.encoders} encoders, through the edge, {a.seconds:.0f} s per "
          f"player after {WARMUP_S:.0f} s, {os.cpu_count()} CPUs, load average now {load}")
    for r, anchor in results:
        print(report(r, anchor))
    for mode in failed:
        print(f"{mode:9} NOT MEASURED (see above)")
    if a.json:
        print(json.dumps([r for r, _ in results], default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
