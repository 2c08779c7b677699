"""Glass-to-glass latency of the demo pipeline, per latency mode, with a per-stage breakdown.

For each mode it runs `floodlight demo` headless (own topics, ports, store), plays /watch/demo in
headless chromium (hls.js) and samples, every 250 ms, now - program-date-time of the playhead: the
packager writes the GOP's capture wall-clock (from the ingest) as PDT, so that is glass-to-glass.
The stage shares come from the records' own timestamps, joined per GOP:

  accumulation  capture of the GOP's first frame -> ingest publishes the GOP (includes the GOP length)
  kafka         ingest published -> encoder took it
  transcode     encoder took it -> rendition segment encoded
  packaging     encoded -> media playlist listing it written (floodlight.segments + store write)
  delivery      playlist written -> the player finished loading that segment (edge, api, HTTP)
  player buffer the rest: loaded -> shown

Anchor: one GOP duration, the floor for whole-GOP transport (a segment cannot leave the venue before
its last frame is captured); the ratio says how many GOP durations the glass-to-glass p50 costs. The GOP
is the ingest's own default for the mode (producers.agent.GOP_SECONDS_BY_MODE, what the demo runs);
the report also shows the segment duration measured on the run, and says so if the two differ.

    .venv/bin/python -m bench.latency [--seconds 60] [--modes low,standard] [--source testsrc:1920x1080@30]
                                      [--ladder default] [--encoders 2]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from floodlight.settings import Settings
from ops.demo import demo_settings, settings_env
from tests.e2e.browser import run_browser, summary
from tests.e2e.static_origin import free_port

STAGES = ("accumulation", "kafka", "transcode", "packaging", "delivery", "player buffer")
TARGET_P95_MS = {"low": 3000, "standard": 10000}


def mode_gop_seconds(mode: str) -> float:
    """The GOP the ingest uses by default in this latency mode (no --gop-seconds: what the demo runs)."""
    from producers.agent import GOP_SECONDS_BY_MODE

    return GOP_SECONDS_BY_MODE[mode.upper()]
WARMUP_S = 8.0


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(q / 100 * len(s)) - 1))
    return s[k]


def playlist_pdt(text: str) -> dict[int, int]:
    """msn -> program-date-time (Unix ms) from a media playlist."""
    out: dict[int, int] = {}
    msn = 0
    pdt: int | None = None
    for line in text.splitlines():
        if line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
            msn = int(line.split(":", 1)[1])
        elif line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
            pdt = int(datetime.fromisoformat(line.split(":", 1)[1].replace("Z", "+00:00")).timestamp() * 1000)
        elif line and not line.startswith("#"):
            if pdt is not None:
                out[msn] = pdt
            msn += 1
            pdt = None
    return out


def stage_breakdown(segments: list[dict[str, Any]], written: dict[int, int], msn_of_capture: dict[int, int],
                    loads: dict[int, int], g2g_p50: float) -> dict[str, float]:
    """Median of each stage over the GOPs the player loaded; 'player buffer' is what remains of the p50."""
    per: dict[str, list[float]] = {k: [] for k in STAGES[:-1]}
    loaded_minus_capture: list[float] = []
    for seg in segments:
        msn = msn_of_capture.get(seg["capture_wallclock_ms"])
        if msn is None or msn not in loads or msn not in written:
            continue
        c = seg["capture_wallclock_ms"]
        per["accumulation"].append(seg["ingest_published_ms"] - c)
        per["kafka"].append(seg["encode_started_ms"] - seg["ingest_published_ms"])
        per["transcode"].append(seg["encoded_wallclock_ms"] - seg["encode_started_ms"])
        per["packaging"].append(written[msn] - seg["encoded_wallclock_ms"])
        per["delivery"].append(loads[msn] - written[msn])
        loaded_minus_capture.append(loads[msn] - c)
    out = {k: statistics.median(v) if v else float("nan") for k, v in per.items()}
    out["player buffer"] = g2g_p50 - (statistics.median(loaded_minus_capture) if loaded_minus_capture else 0.0)
    out["gops"] = len(loaded_minus_capture)
    return out


def read_topic(settings: Settings, short: str, schema: str, stream_id: str) -> list[dict[str, Any]]:
    """Every record of one stream on a (finished) topic, read to the end."""
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
            rec.pop("data", None)
            rec.pop("init_segment", None)
            out.append(rec)
    c.close()
    return out


def run_mode(broker: Settings, mode: str, seconds: float, source: str, ladder: str, encoders: int,
             query: str = "") -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="fl-bench-latency-"))
    base = broker.model_copy(update={
        "topic_prefix": f"latbench{uuid.uuid4().hex[:8]}.", "stack_dir": tmp / "stack",
        "api_port": free_port(), "edge_port": free_port(), "qoe_port": free_port(),
    })
    s = demo_settings(base)
    url = f"http://127.0.0.1:{base.edge_port}"
    out = tmp / "demo.out"
    cmd = [sys.executable, "-m", "ops.cli", "demo", "--latency", mode, "--source", source,
           "--ladder", ladder, "--encoders", str(encoders)]
    proc = subprocess.Popen(cmd, env={**os.environ, **settings_env(base)}, stdout=out.open("wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"demo did not start: {out.read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/live/demo/master.m3u8", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        print(f"[{mode}] pipeline up, playing for {WARMUP_S:.0f} s warm-up + {seconds:.0f} s", flush=True)
        res = run_browser([
            {"op": "goto", "url": f"{url}/watch/demo{'?' + query if query else ''}"},
            {"op": "wait", "name": "playing", "expr": "window.floodlight.state === 'playing'", "timeout_s": 60},
            {"op": "hold", "s": WARMUP_S},
            {"op": "eval", "name": "mark", "expr": "window.__mark = Date.now()"},
            {"op": "hold", "s": seconds},
            {"op": "eval", "name": "data", "expr": "({samples: window.floodlight.latencySamples.filter("
             "s => s[0] >= window.__mark), loads: window.floodlight.fragLoads, stalls: window.floodlight.stalls,"
             " level: (window.floodlight.currentLevel || {}).name, errors: window.floodlight.errors,"
             " resyncs: window.floodlight.resyncs || 0})"},
        ], timeout_s=seconds + WARMUP_S + 120)
        if not res["ok"]:
            raise RuntimeError(f"player run failed: {summary(res)}")
        data = next(st for st in res["steps"] if st["name"] == "data")["value"]
        rendition = data["level"]
        dvr = httpx.get(f"{url}/live/demo/{rendition}/dvr.m3u8", timeout=10)
        if dvr.status_code != 200:
            dvr = httpx.get(f"{url}/live/demo/{rendition}/playlist.m3u8", timeout=10)
        pdt = playlist_pdt(dvr.text)
        live = httpx.get(f"{url}/live/demo/{rendition}/playlist.m3u8", timeout=10).text
        control = next((ln for ln in live.splitlines() if ln.startswith("#EXT-X-SERVER-CONTROL")), "")
    except BaseException:
        _stop_demo(proc)
        _delete_topics(s)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _stop_demo(proc)
    try:
        segments = [r for r in read_topic(s, "segments", "RenditionSegment", "demo")
                    if r["rendition"]["name"] == rendition]
        updates = [r for r in read_topic(s, "manifests", "ManifestUpdate", "demo") if r["rendition"] == rendition]
    finally:
        _delete_topics(s)
        shutil.rmtree(tmp, ignore_errors=True)
    written: dict[int, int] = {}
    for u in updates:  # first write that lists the segment complete (or a part of the next one)
        msn = u["msn"] if u["part"] == -1 else u["msn"] - 1
        written.setdefault(msn, u["written_wallclock_ms"])
    loads: dict[int, int] = {}
    for sn, name, _part, t in data["loads"]:
        if name == rendition:
            loads[int(sn)] = max(loads.get(int(sn), 0), int(t))
    g2g = [float(v) for _t, v in data["samples"]]
    p50, p95 = pct(g2g, 50), pct(g2g, 95)
    stages = stage_breakdown(segments, written, {v: k for k, v in pdt.items()}, loads, p50)
    return {"mode": mode, "rendition": rendition, "samples": len(g2g), "p50_ms": p50, "p95_ms": p95,
            "max_ms": max(g2g) if g2g else float("nan"), "stalls": data["stalls"], "resyncs": data["resyncs"],
            "errors": data["errors"],
            "stages_ms": stages, "server_control": control, "target_p95_ms": TARGET_P95_MS[mode],
            "anchor_gop_ms": mode_gop_seconds(mode) * 1000,
            "measured_segment_ms": statistics.median(r["duration"] * 1000 / r["timescale"] for r in segments)
            if segments else float("nan")}


def _stop_demo(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def _delete_topics(s: Settings) -> None:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": s.kafka_bootstrap, "log_level": 0})
    prefix = s.topic_prefix  # only the demo's own topics (<unique prefix>demo.*): nothing anyone else made
    assert prefix.startswith("latbench") and prefix.endswith(".demo."), prefix
    names = [n for n in admin.list_topics(timeout=10).topics if n.startswith(prefix)]
    if names:
        for fut in admin.delete_topics(names, operation_timeout=10).values():
            try:
                fut.result()
            except Exception:  # noqa: BLE001 - best effort
                pass


def report(r: dict[str, Any]) -> str:
    ok = "OK" if r["p95_ms"] < r["target_p95_ms"] else "MISSED"
    lines = [f"{r['mode']:9} glass-to-glass p50 {r['p50_ms'] / 1000:.2f} s  p95 {r['p95_ms'] / 1000:.2f} s  "
             f"(target p95 < {r['target_p95_ms'] / 1000:.0f} s: {ok})"
             f"  samples {r['samples']}  stalls {r['stalls']}  resyncs {r['resyncs']}  rendition {r['rendition']}",
             f"          ratio p50 / anchor (one GOP, {r['anchor_gop_ms'] / 1000:g} s, the mode's default; "
             f"segments measured {r['measured_segment_ms'] / 1000:.2f} s) = "
             f"{r['p50_ms'] / r['anchor_gop_ms']:.2f}x   {r['server_control']}"]
    if abs(r["measured_segment_ms"] - r["anchor_gop_ms"]) > 0.05 * r["anchor_gop_ms"]:
        lines.append(f"          WARNING: the run's segments ({r['measured_segment_ms'] / 1000:.2f} s) are not the "
                     f"mode's default GOP ({r['anchor_gop_ms'] / 1000:g} s): was --gop-seconds given?")
    st = r["stages_ms"]
    total = r["p50_ms"] or 1
    lines.append("          " + "  ".join(f"{k} {st[k] / 1000:.2f} s ({100 * st[k] / total:.0f}%)" for k in STAGES)
                 + f"  [{st['gops']} GOPs]")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--modes", default="low,standard")
    ap.add_argument("--source", default="testsrc:1920x1080@30")
    ap.add_argument("--ladder", default="default")
    ap.add_argument("--encoders", type=int, default=2)
    ap.add_argument("--query", default="", help="player page query, e.g. target_latency=2")
    ap.add_argument("--json", action="store_true", help="also print the results as JSON")
    a = ap.parse_args(argv)
    from floodlight.kafka import wait_for_broker

    broker = Settings()
    wait_for_broker(broker, 10)
    results: list[dict[str, Any]] = []
    failed: list[str] = []
    for mode in a.modes.split(","):
        if mode not in TARGET_P95_MS:
            ap.error(f"unknown mode {mode}")
        try:
            results.append(run_mode(broker, mode, a.seconds, a.source, a.ladder, a.encoders, a.query))
        except RuntimeError as exc:  # e.g. the machine cannot keep this ladder in real time
            print(f"{mode:9} NOT MEASURED: {str(exc)[:1500]}", flush=True)
            failed.append(mode)
            continue
        print(report(results[-1]), flush=True)
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\nsource {a.source}, ladder {a.ladder}, {a.encoders} encoders, {a.seconds:.0f} s per mode, "
          f"{os.cpu_count()} CPUs, load average {load}")
    for r in results:
        print(report(r))
    for mode in failed:
        print(f"{mode:9} NOT MEASURED (see above)")
    if a.json:
        print(json.dumps(results, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
