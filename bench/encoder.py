"""Encoder throughput: one `ffmpeg` command vs our encoder group with Kafka in the loop.

Same source (N s of 1080p30 test pattern, 2 s GOPs), same 4-rung ladder, same x264 preset and
GOP/B-frame settings, measured in one run. Prints the ratio (target >= 1.2x ffmpeg) and the
p50/p99 transcode time per GOP (target < 1 s with the low-latency preset).

    .venv/bin/python -m bench.encoder [--seconds 60] [--presets ultrafast,veryfast] [--concurrent-gops 1]

Needs the local broker (./run stack up); uses topics under a private prefix and deletes them.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from floodlight.kafka import consumer_config, make_producer, wait_for_broker
from floodlight.registry import DEFAULT_LADDER, new_stream_record, publish_stream
from floodlight.settings import Settings
from floodlight.topics import apply_topics
from producers.publish.publisher import publish_gops
from producers.sources.testsrc import generate_gops
from schemas import codec

ROOT = Path(__file__).resolve().parent.parent
FPS = 30
GOP_SECONDS = 2.0


def x264_params(preset_frames: int, kbps: int) -> str:
    """What processors.encoder.transcode gives libx264 (fixed GOP, no scene-cut, no B-frames)."""
    return (f"keyint={preset_frames}:min-keyint={preset_frames}:scenecut=0:open-gop=0:bframes=0:"
            f"vbv-maxrate={int(kbps * 1.2)}:vbv-bufsize={kbps * 2}")


def write_elementary_stream(gops: list[dict], path: Path) -> int:
    """The GOPs' H.264 as one Annex B file (SPS/PPS before each IDR), for ffmpeg's input."""
    frames = 0
    with path.open("wb") as f:
        for g in gops:
            for i, p in enumerate(g["video_packets"]):
                if i == 0:
                    f.write(g["video"]["extradata"])
                f.write(p["data"])
                frames += 1
    return frames


def run_ffmpeg(src: Path, out_dir: Path, preset: str) -> float:
    frames = int(GOP_SECONDS * FPS)
    graph = [f"[0:v]split={len(DEFAULT_LADDER)}" + "".join(f"[s{i}]" for i in range(len(DEFAULT_LADDER)))]
    for i, r in enumerate(DEFAULT_LADDER):
        graph.append(f"[s{i}]scale={r['width']}:{r['height']}:flags=bilinear[o{i}]")
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "h264", "-framerate", str(FPS),
           "-i", str(src), "-filter_complex", ";".join(graph)]
    for i, r in enumerate(DEFAULT_LADDER):
        cmd += ["-map", f"[o{i}]", "-c:v", "libx264", "-preset", preset, "-b:v", f"{r['bitrate_kbps']}k",
                "-pix_fmt", "yuv420p", "-x264-params", x264_params(frames, r["bitrate_kbps"]),
                "-f", "mp4", "-movflags", "+empty_moov+default_base_moof+frag_keyframe",
                str(out_dir / f"{r['name']}.mp4")]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t0


def run_group(settings: Settings, gops: list[dict], preset: str, concurrent_gops: int, members: int,
              pace_s: float | None = None) -> dict:
    """Backlog mode (pace_s None): all GOPs published first, throughput measured. Live mode: one GOP
    published every pace_s seconds, as an ingest would, for the per-GOP transcode time."""
    stream_id = f"bench-{preset}-{'live' if pace_s else 'backlog'}"
    mode = "LOW" if preset == "ultrafast" else "STANDARD"
    producer = make_producer(settings)
    publish_stream(producer, settings, new_stream_record(stream_id, stream_id, status="LIVE", latency_mode=mode,
                                                         encoder_preset=preset))
    mine = [dict(g, stream_id=stream_id) for g in gops]
    pacer = None
    if pace_s is None:
        publish_gops(settings, mine)
    else:
        def paced() -> None:
            for g in mine:
                t = time.monotonic()
                publish_gops(settings, [g], producer=producer)
                time.sleep(max(0.0, pace_s - (time.monotonic() - t)))
        pacer = threading.Thread(target=paced, daemon=True)
    want = len(mine) * (len(DEFAULT_LADDER) + 1)
    env = dict(os.environ, FLOODLIGHT_TOPIC_PREFIX=settings.topic_prefix,
               FLOODLIGHT_KAFKA_BOOTSTRAP=settings.kafka_bootstrap,
               FLOODLIGHT_ENCODER_GROUP=f"bench-{uuid.uuid4().hex[:6]}",
               FLOODLIGHT_ENCODER_CONCURRENT_GOPS=str(concurrent_gops), FLOODLIGHT_LOG_LEVEL="WARNING",
               PYTHONPATH=str(ROOT))
    topic = settings.topic("segments")
    reader = Consumer(consumer_config(settings, f"bench-reader-{uuid.uuid4().hex[:6]}"))
    parts = reader.list_topics(topic, timeout=10).topics[topic].partitions
    reader.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
    t0 = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-m", "ops.cli", "encoder"], cwd=ROOT, env=env)
             for _ in range(members)]
    if pacer is not None:
        pacer.start()
    recs: list[dict] = []
    try:
        while len(recs) < want:
            for msg in reader.consume(100, timeout=0.5):
                if not msg.error():
                    rec = codec.decode(msg.value(), expect="RenditionSegment")
                    if rec["stream_id"] == stream_id:
                        rec.pop("data")
                        rec.pop("init_segment")
                        recs.append(rec)
            if time.perf_counter() - t0 > 1800 or any(p.poll() is not None for p in procs):
                raise RuntimeError(f"encoder run failed: {len(recs)} of {want} segments")
        wall = time.perf_counter() - t0
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(60)
        reader.close()
    first_start = min(r["encode_started_ms"] for r in recs)
    last_done = max(r["encoded_wallclock_ms"] for r in recs)
    per_gop: dict[int, list[dict]] = {}
    for r in recs:
        per_gop.setdefault(r["gop_index"], []).append(r)
    skip = 3 if pace_s else 0  # live mode: the first GOPs queue while the member joins the group
    gop_s = sorted((max(r["encoded_wallclock_ms"] for r in rs) - min(r["encode_started_ms"] for r in rs)) / 1000
                   for _, rs in sorted(per_gop.items())[skip:])
    return {"busy_s": (last_done - first_start) / 1000, "wall_s": wall, "gop_s": gop_s}


def load_source(cache: Path, seconds: float) -> list[dict]:
    """The 1080p30 test pattern as GopChunks, cached (framed records, length-prefixed) across runs."""
    if cache.exists():
        data, gops, pos = cache.read_bytes(), [], 0
        while pos < len(data):
            n = int.from_bytes(data[pos:pos + 4], "big")
            gops.append(codec.decode(data[pos + 4:pos + 4 + n], expect="GopChunk"))
            pos += 4 + n
        return gops
    gops = generate_gops("bench", seconds, width=1920, height=1080, fps=FPS, gop_seconds=GOP_SECONDS,
                         start_ms=1_795_000_000_000)
    cache.parent.mkdir(parents=True, exist_ok=True)
    with cache.open("wb") as f:
        for g in gops:
            blob = codec.encode("GopChunk", g)
            f.write(len(blob).to_bytes(4, "big") + blob)
    return gops


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--presets", default="ultrafast,veryfast")
    ap.add_argument("--concurrent-gops", type=int, default=0, help="0 = the setting's default")
    ap.add_argument("--members", type=int, default=1, help="encoder processes in the group")
    ap.add_argument("--live-gops", type=int, default=10, help="GOPs of the live-paced latency run (0 = skip)")
    args = ap.parse_args()

    base = Settings()
    wait_for_broker(base, 10)
    settings = base.model_copy(update={"topic_prefix": f"bench{uuid.uuid4().hex[:6]}.", "topic_partitions": 6})
    apply_topics(settings)
    concurrent = args.concurrent_gops or settings.encoder_concurrent_gops
    try:
        t0 = time.perf_counter()
        gops = load_source(base.stack_dir / "bench" / f"encoder-source-{args.seconds:g}s.bin", args.seconds)
        frames = sum(len(g["video_packets"]) for g in gops)
        print(f"source: {len(gops)} GOPs, {frames} frames of 1080p{FPS} test pattern "
              f"(ready in {time.perf_counter() - t0:.1f} s)")
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "source.h264"
            write_elementary_stream(gops, src)
            for preset in args.presets.split(","):
                load = os.getloadavg()[0]
                c0 = children_cpu()
                ff = run_ffmpeg(src, Path(tmp), preset)
                c1 = children_cpu()
                ours = run_group(settings, gops, preset, concurrent, args.members)
                c2 = children_cpu()
                ff_fps, our_fps = frames / ff, frames / ours["busy_s"]
                print(f"[{preset}] load average before the pair: {load:.1f} (2 cores; > 2 means others compete)")
                print(f"[{preset}] CPU per frame: ffmpeg {(c1 - c0) / frames * 1000:.1f} ms, encoder processes "
                      f"{(c2 - c1) / frames * 1000:.1f} ms (incl. Kafka, Avro, start-up)")
                print(f"[{preset}] ffmpeg (one command, 4 rungs): {ff:.1f} s = {ff_fps:.1f} fps")
                print(f"[{preset}] encoder group ({args.members} member(s), {concurrent} GOP(s) at once, Kafka in "
                      f"the loop): {ours['busy_s']:.1f} s first GOP taken -> last segment out = {our_fps:.1f} fps "
                      f"(wall incl. process start + group join: {ours['wall_s']:.1f} s)")
                print(f"[{preset}] ratio encoder/ffmpeg = {our_fps / ff_fps:.2f}x  (target >= 1.2x)")
                print(f"[{preset}] transcode time per {GOP_SECONDS:g} s GOP, backlog (GOPs overlap): "
                      f"p50 {pct(ours['gop_s'], 50):.3f} s, p99 {pct(ours['gop_s'], 99):.3f} s")
                if args.live_gops:
                    live = run_group(settings, gops[:args.live_gops + 3], preset, concurrent, 1, pace_s=GOP_SECONDS)
                    print(f"[{preset}] transcode time per {GOP_SECONDS:g} s GOP, live pace ({args.live_gops} GOPs): "
                          f"p50 {pct(live['gop_s'], 50):.3f} s, p99 {pct(live['gop_s'], 99):.3f} s "
                          f"(target < 1 s with ultrafast)")
    finally:
        admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
        names = [n for n in admin.list_topics(timeout=10).topics if n.startswith(settings.topic_prefix)]
        if names:
            for fut in admin.delete_topics(names, operation_timeout=10).values():
                try:
                    fut.result()
                except Exception:  # noqa: BLE001
                    pass


if __name__ == "__main__":
    main()
