"""Packager cost per GOP at a deep DVR window, against writing the same media bytes alone.

Anchor: put every object of one GOP (5 renditions: segment + 3 parts + init) into a directory
store, nothing else. Measured: the packaging core doing the same plus the live/delta/DVR playlists,
master and MPD, with the DVR window already holding N segments per rendition (2 h of 4 s GOPs =
1800, of 1 s GOPs = 7200). Prints the ratio; lower is better.

    .venv/bin/python -m bench.packager [--depth 1800] [--gops 40]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from floodlight.objectstore import DirectoryStore, ObjectStore, StoredObject, etag_of
from sinks.packager.core import StreamPackager
from sinks.packager.state import StreamConfig

RENDITIONS = [("1080p", "VIDEO", 1_000_000), ("720p", "VIDEO", 500_000), ("480p", "VIDEO", 250_000),
              ("240p", "VIDEO", 60_000), ("audio", "AUDIO", 64_000)]
T0 = 1_795_000_000_000


def record(g: int, name: str, media: str, size: int, seconds: float) -> dict:
    n = size
    return {
        "stream_id": "bench", "gop_index": g, "epoch": 0, "pts": int(g * seconds * 90000),
        "duration": int(seconds * 90000), "timescale": 90000, "capture_wallclock_ms": T0 + int(g * seconds * 1000),
        "ingest_published_ms": 0, "encode_started_ms": 0, "encoded_wallclock_ms": 0, "init_hash": "i" * 64,
        "init_segment": b"\0" * 800, "data": bytes([g % 256]) * n,
        "rendition": {"name": name, "media_type": media, "bandwidth": 8 * n, "average_bandwidth": 8 * n,
                      "target_bitrate": 8 * n, "width": 1280, "height": 720, "frame_rate": 30.0,
                      "codecs": "mp4a.40.2" if media == "AUDIO" else "avc1.64001f", "sample_rate": 48000,
                      "channels": 2},
        "parts": [{"duration": seconds / 3, "offset": i * (n // 3), "length": n // 3 if i < 2 else n - 2 * (n // 3),
                   "independent": i == 0} for i in range(3)],
    }


class NullStore(ObjectStore):
    """Keeps nothing: fills the DVR window fast, and isolates the CPU cost of packaging."""

    def put(self, key: str, data: bytes, **kw: str | None) -> str:  # type: ignore[override]
        return etag_of(data)

    def get(self, key: str) -> StoredObject | None:
        return None

    def exists(self, key: str) -> bool:
        return False

    def delete(self, key: str) -> None:
        pass

    def list(self, prefix: str) -> Iterator[str]:
        return iter(())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--depth", type=int, default=1800, help="segments already in the DVR window per rendition")
    ap.add_argument("--gops", type=int, default=40, help="GOPs measured")
    ap.add_argument("--seconds", type=float, default=4.0, help="GOP length")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        pk = StreamPackager.open(NullStore(), "bench",
                                 config=StreamConfig(dvr_window_s=int(a.depth * a.seconds + 3600)))
        t = time.perf_counter()
        for g in range(a.depth):  # fill the window (not measured)
            for name, media, _size in RENDITIONS:
                pk.add(record(g, name, media, 2000, a.seconds), now=0)
        pk.flush(T0)
        fill_s = time.perf_counter() - t
        cpu_recs = [[record(a.depth + g, n, m, s, a.seconds) for n, m, s in RENDITIONS] for g in range(a.gops)]
        t = time.process_time()
        for rs in cpu_recs:
            for r in rs:
                pk.add(r, now=0)
            pk.flush(T0)
        cpu = (time.process_time() - t) / a.gops  # CPU seconds: robust to a busy machine
        pk.store = DirectoryStore(root / "pkg")
        pk.checkpoint()  # the whole state once; later checkpoints only rewrite changed chunks
        base = a.depth + a.gops
        raw = DirectoryStore(root / "raw")
        recs = [[record(base + g, n, m, s, a.seconds) for n, m, s in RENDITIONS] for g in range(a.gops)]
        t = time.perf_counter()
        for g, rs in enumerate(recs):
            for r in rs:
                base = f"live/bench/{r['rendition']['name']}"
                raw.put(f"{base}/init.mp4", r["init_segment"])
                for j, p in enumerate(r["parts"]):
                    raw.put(f"{base}/{g}.{j}.m4s", r["data"][p["offset"]:p["offset"] + p["length"]])
                raw.put(f"{base}/{g}.m4s", r["data"])
        anchor = (time.perf_counter() - t) / a.gops
        t = time.perf_counter()
        for rs in copy.deepcopy(recs):
            for r in rs:
                pk.add(r, now=0)
            pk.flush(T0)
        measured = (time.perf_counter() - t) / a.gops
        t = time.perf_counter()
        pk.checkpoint()
        ckpt = time.perf_counter() - t
    print(f"DVR depth {a.depth} segments x {len(RENDITIONS)} renditions (filled in {fill_s:.1f} s)")
    print(f"anchor  (media objects only):        {anchor * 1000:8.2f} ms per GOP")
    print(f"packager (media + all manifests):    {measured * 1000:8.2f} ms per GOP")
    print(f"  CPU of packaging alone (null store): {cpu * 1000:7.2f} ms CPU per GOP")
    print(f"incremental checkpoint after {a.gops} GOPs: {ckpt * 1000:.1f} ms")
    print(f"ratio packager/anchor: {measured / anchor:.2f}x  (real-time budget per GOP: {a.seconds * 1000:.0f} ms)")


if __name__ == "__main__":
    main()
