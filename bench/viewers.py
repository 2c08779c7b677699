"""bench/viewers: N concurrent simulated LL-HLS (or plain HLS) viewers against the edge, and what reached the origin.

  .venv/bin/python -m bench.viewers [--viewers 2000] [--seconds 60] [--url http://127.0.0.1:8080]
      [--stream demo] [--mode ll|hls] [--link-kbps K] [--origins 127.0.0.1:8000[,...]] [--json]

The viewers are a small Go program (bench/viewers/*.go, standard library only), built here with `go build`
(cached by the hash of its sources under FLOODLIGHT_STACK_DIR/bench) and run with GOMAXPROCS=1: one core.
Each viewer loads the master playlist and follows a video rendition and the audio rendition as an LL-HLS
player does (blocking playlist reloads for the next part, the preload-hinted part at the same time,
rendition reports when switching) or as a plain HLS player (whole segments, playlist polled), picks
renditions with the brief's buffer-based ABR, and keeps a playback model (stalls = the playhead reaching
the end of what it has loaded). Reported: latency = now - program-date-time of the newest part fetched
(every sample, and per-viewer medians), the playhead's latency, stalls, errors, requests/s and Mbit/s at
the viewers, and requests/s that reached the origin (the api processes' own counters, scraped every
second: `floodlight_api_requests_total{kind="live"}` = playlists + media, `kind="edge"` = token checks),
so edge offload = viewer requests / origin requests. Anchor: the same numbers at another N (origin
requests/s should not grow with N). Run against `./run demo` (or `floodlight demo`) with the edge up.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

SRC = Path(__file__).resolve().parent / "viewers"


def build(out_dir: Path) -> Path:
    """go build the simulator once per version of its sources; returns the binary."""
    files = sorted(SRC.glob("*.go")) + [SRC / "go.mod"]
    digest = hashlib.sha256(b"".join(f.name.encode() + f.read_bytes() for f in files)).hexdigest()[:12]
    binary = out_dir / f"viewers-{digest}"
    if binary.exists():
        return binary
    go = shutil.which("go") or "/usr/local/go/bin/go"
    out_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod", "GO111MODULE": "on"}
    subprocess.run([go, "build", "-trimpath", "-o", str(binary), "."], cwd=SRC, env=env, check=True)
    return binary


_LINE = re.compile(r'^floodlight_api_(requests_total|origin_media_requests_total)\{([^}]*)\} ([0-9.e+]+)$', re.M)


def scrape(origins: list[str]) -> dict[str, float]:
    """Sum over the api processes: playback requests (live), token checks (edge), media requests."""
    total = {"live": 0.0, "edge": 0.0, "media": 0.0}
    for o in origins:
        try:
            text = urllib.request.urlopen(f"http://{o}/metrics", timeout=5).read().decode()
        except OSError:
            continue
        for name, labels, value in _LINE.findall(text):
            if name == "origin_media_requests_total":
                total["media"] += float(value)
                continue
            kind = re.search(r'kind="([^"]*)"', labels)
            if kind and kind.group(1) in ("live", "edge"):
                total[kind.group(1)] += float(value)
    return total


class Sampler(threading.Thread):
    """Scrapes the origins once a second; `rate(t0, t1)` = requests/s between two instants."""

    def __init__(self, origins: list[str]) -> None:
        super().__init__(daemon=True)
        self.origins, self.samples, self.stop = origins, [], threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.samples.append((time.time(), scrape(self.origins)))
            self.stop.wait(1.0)

    def at(self, t: float) -> dict[str, float]:
        return min(self.samples, key=lambda s: abs(s[0] - t))[1] if self.samples else {}

    def rate(self, t0: float, t1: float) -> dict[str, float]:
        a, b = self.at(t0), self.at(t1)
        return {k: (b.get(k, 0) - a.get(k, 0)) / max(t1 - t0, 1e-9) for k in ("live", "edge", "media")}


def run(binary: Path, args: argparse.Namespace) -> dict:
    cmd = [str(binary), "-url", args.url, "-stream", args.stream, "-n", str(args.viewers),
           "-duration", f"{args.seconds}s", "-ramp", f"{args.ramp}s", "-mode", args.mode,
           "-link-kbps", str(args.link_kbps), "-procs", "1"]
    if args.token:
        cmd += ["-token", args.token]
    if args.per_viewer:
        cmd += ["-per-viewer", args.per_viewer]
    sampler = Sampler(args.origins.split(",")) if args.origins else None
    if sampler:
        sampler.start()
    out = subprocess.run(cmd, env={**os.environ, "GOMAXPROCS": "1"}, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"viewers exited {out.returncode}: {out.stderr[-3000:]}")
    report = json.loads(out.stdout)
    if sampler:
        sampler.stop.set()
        sampler.join(5)
        rate = sampler.rate(report["window_start_unix"], report["window_end_unix"])
        report["origin_requests_per_s"] = {k: round(v, 1) for k, v in rate.items()}
        at_origin = rate["live"] + rate["edge"]
        report["edge_offload"] = round(report["requests_per_s"] / at_origin, 1) if at_origin else None
    return report


def show(r: dict) -> str:
    lat, vlat, play, st = r["latency_s"], r["viewer_latency_p50_s"], r["play_latency_s"], r["stalls"]
    per = st["stall_ms_per_viewer"]
    o = r.get("origin_requests_per_s") or {}
    lines = [
        f"{r['viewers']} {r['mode'].upper()} viewers ({r['started']} playing) of {r['stream']} via {r['url']}, "
        f"{r['measured_s']:.0f} s measured after a {r['ramp_s']:.0f} s ramp; simulator on {r['gomaxprocs']} core(s), "
        f"used {r['cpu_cores_used']:.2f} core",
        f"  latency (now - PDT of newest part fetched): p50 {lat['p50']} s  p95 {lat['p95']} s  p99 {lat['p99']} s  "
        f"max {lat['max']} s  ({lat['n']} samples); per-viewer p50: median {vlat['p50']} s, p95 {vlat['p95']} s",
        f"  playhead latency: p50 {play['p50']} s  p95 {play['p95']} s",
        f"  stalls: {st['total']} on {st['viewers_with_stalls']} viewers; stall ms per viewer p50 "
        f"{per['p50']}  p95 {per['p95']}  max {per['max']}",
        f"  errors: {r['errors']} {r['error_kinds'] or ''}  renditions at the end: {r['renditions']}  "
        f"switches: {r['switches']}",
        f"  at the viewers: {r['requests_per_s']:.0f} req/s, {r['mbit_per_s']} Mbit/s",
    ]
    if o:
        lines.append(f"  at the origin: {o['live']:.1f} playback req/s (media {o['media']:.1f}/s) + {o['edge']:.1f} "
                     f"token checks/s; edge offload {r['edge_offload']}x")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--viewers", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--ramp", type=float, default=10.0, help="viewers join evenly over this many seconds")
    ap.add_argument("--url", default="", help="edge (or api) base URL (default: the local edge)")
    ap.add_argument("--stream", default="demo")
    ap.add_argument("--token", default="", help="playback token for a non-public stream")
    ap.add_argument("--mode", choices=("ll", "hls"), default="ll")
    ap.add_argument("--link-kbps", type=float, default=0.0, help="emulated access link per viewer (0 = loopback)")
    ap.add_argument("--origins", default=None,
                    help="api host:port list whose /metrics count origin requests (default: the api port)")
    ap.add_argument("--per-viewer", default="", help="write per-viewer results (JSON lines) to this file")
    ap.add_argument("--json", action="store_true", help="print the JSON report instead of the summary")
    args = ap.parse_args(argv)

    from floodlight.settings import Settings

    s = Settings()
    args.url = args.url or f"http://127.0.0.1:{s.edge_port}"
    if args.origins is None:
        args.origins = f"127.0.0.1:{s.api_port}"
    report = run(build(s.stack_dir / "bench"), args)
    print(json.dumps(report, indent=2) if args.json else show(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
