"""Encoder throughput: one `ffmpeg` command vs our encoder group with Kafka in the loop.

Same source (N s of the demo's 1080p30 test pattern, 2 s GOPs), same 4-rung ladder, same x264 preset and
the very same x264 options per rung (`processors.encoder.ladder.x264_options`), measured in one run,
one preset after the other, both sides by wall clock:

  ffmpeg  process start -> process exit (every rung's file written)
  ours    encoder process start -> the bench has read the last RenditionSegment back from Kafka (acked);
          includes interpreter start-up, the registry catch-up and the consumer-group join; the GOPs
          wait in Kafka beforehand, as ffmpeg's input waits on disk

and CPU per output frame (user + sys of the child processes, ffmpeg's vs the encoder process's, which
includes its start-up, Kafka and Avro): less sensitive than wall time to other load on a shared machine.
Every run gets fresh topics, so a member never re-encodes GOPs left over from an earlier run.
Targets (DESIGN §10): ratio >= 1.2x, CPU per frame <= 1.1x ffmpeg's, at every preset.

Then, per latency mode, at live pace (each record published when its last frame would be captured, the
mode's own GOP length and default preset): whole GOPs, p50/p99 from taking a GOP to its last segment
(target p99 < 1 s for LOW); and for LOW also the default sub-GOP transport (chunks of
FLOODLIGHT_INGEST_PART_SECONDS), p50/p99 from a chunk's hand-over to Kafka to its part encoded in every rung.

    .venv/bin/python -m bench.encoder [--seconds 30] [--presets ultrafast,superfast,veryfast] [--repeat 1]
                                      [--live-modes low,standard] [--live-gops 10]

Needs the local broker (./run stack up); uses topics under private prefixes and deletes them.
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
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from floodlight.kafka import consumer_config, make_producer, wait_for_broker
from floodlight.registry import DEFAULT_LADDER, new_stream_record, publish_stream
from floodlight.settings import Settings
from floodlight.topics import apply_topics, delete_prefixed_topics
from processors.encoder.ladder import PRESET_BY_MODE, select_rungs, x264_options
from producers.agent import GOP_SECONDS_BY_MODE
from producers.publish.publisher import publish_gops
from producers.sources.testsrc import generate_gops
from schemas import codec

ROOT = Path(__file__).resolve().parent.parent
FPS = 30
GOP_SECONDS = 2.0  # the throughput pair (the same for both sides); live runs use each mode's ingest default


def ffmpeg_ladder_cmd(src_args: list[str], outputs: dict[str, Path], rungs: list[dict],
                      options: Callable[[dict], dict[str, str]]) -> list[str]:
    """One ffmpeg command for the whole ladder: decode once, split, bilinear scale per rung (as ours),
    libx264 with `options(rung)` (the x264 options ours gives that rung), fragmented mp4 per rung."""
    graph = [f"[0:v]split={len(rungs)}" + "".join(f"[s{i}]" for i in range(len(rungs)))]
    for i, r in enumerate(rungs):
        graph.append(f"[s{i}]scale={r['width']}:{r['height']}:flags=bilinear[o{i}]")
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *src_args, "-filter_complex", ";".join(graph)]
    for i, r in enumerate(rungs):
        cmd += ["-map", f"[o{i}]", "-c:v", "libx264", "-b:v", f"{r['bitrate_kbps']}k", "-pix_fmt", "yuv420p"]
        for k, v in options(r).items():
            cmd += [f"-{k}", v]
        cmd += ["-f", "mp4", "-movflags", "+empty_moov+default_base_moof+frag_keyframe", str(outputs[r["name"]])]
    return cmd


def whole_gop_options(preset: str, keyint: int) -> Callable[[dict], dict[str, str]]:
    """Per rung, the options processors.encoder gives a rung of a whole GOP."""
    return lambda r: x264_options(preset, keyint, r["bitrate_kbps"], r["height"])


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


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_ffmpeg(src: Path, out_dir: Path, preset: str, gop_seconds: float) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one ffmpeg command encoding the whole ladder."""
    rungs = select_rungs(DEFAULT_LADDER, 1920, 1080)
    cmd = ffmpeg_ladder_cmd(["-f", "h264", "-framerate", str(FPS), "-i", str(src)],
                            {r["name"]: out_dir / f"{r['name']}.mp4" for r in rungs}, rungs,
                            whole_gop_options(preset, round(gop_seconds * FPS)))
    c0, t0 = children_cpu(), time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t0, children_cpu() - c0


def fresh_topics(base: Settings) -> Settings:
    settings = base.model_copy(update={"topic_prefix": f"bench{uuid.uuid4().hex[:6]}.", "topic_partitions": 6})
    apply_topics(settings)
    return settings


def run_group(settings: Settings, gops: list[dict], *, mode: str, preset: str | None, concurrent_gops: int,
              members: int, live: bool = False) -> dict:
    """Backlog mode: every record published first, then the member(s) start; throughput. Live mode: each
    record (a whole GOP, or a sub-GOP chunk) published when its last frame would have been captured, as an
    ingest does. `preset` None = the latency mode's default (no encoder_preset on the stream record)."""
    stream_id = f"bench-{(preset or mode).lower()}-{'live' if live else 'backlog'}"
    producer = make_producer(settings)
    publish_stream(producer, settings, new_stream_record(stream_id, stream_id, status="LIVE", latency_mode=mode,
                                                         encoder_preset=preset))
    mine = [dict(g, stream_id=stream_id) for g in gops]
    pacer = None
    if not live:
        publish_gops(settings, mine)
    else:
        def paced() -> None:
            t = time.monotonic()
            for g in mine:
                t += g["duration"] * g["time_base_num"] / g["time_base_den"]
                time.sleep(max(0.0, t - time.monotonic()))
                publish_gops(settings, [g], producer=producer)
        pacer = threading.Thread(target=paced, daemon=True)
    segments = {g["gop_index"] for g in mine}
    want = len(segments) * (len(DEFAULT_LADDER) + 1)  # (GOP, rendition) pairs complete
    env = dict(os.environ, FLOODLIGHT_TOPIC_PREFIX=settings.topic_prefix,
               FLOODLIGHT_KAFKA_BOOTSTRAP=settings.kafka_bootstrap,
               FLOODLIGHT_ENCODER_GROUP=f"bench-{uuid.uuid4().hex[:6]}",
               FLOODLIGHT_ENCODER_CONCURRENT_GOPS=str(concurrent_gops), FLOODLIGHT_LOG_LEVEL="WARNING",
               PYTHONPATH=str(ROOT))
    topic = settings.topic("segments")
    reader = Consumer(consumer_config(settings, f"bench-reader-{uuid.uuid4().hex[:6]}"))
    parts = reader.list_topics(topic, timeout=10).topics[topic].partitions
    reader.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
    c0 = children_cpu()
    t0 = time.perf_counter()
    t0_ms = time.time() * 1000
    procs = [subprocess.Popen([sys.executable, "-m", "ops.cli", "encoder"], cwd=ROOT, env=env)
             for _ in range(members)]
    if pacer is not None:
        pacer.start()
    recs: list[dict] = []
    done: set[tuple[int, str]] = set()
    try:
        while len(done) < want:
            for msg in reader.consume(100, timeout=0.2):
                if not msg.error():
                    rec = codec.decode(msg.value(), expect="RenditionSegment")
                    if rec["stream_id"] == stream_id:
                        rec.pop("data")
                        rec.pop("init_segment")
                        recs.append(rec)
                        if rec["is_last_part"]:
                            done.add((rec["gop_index"], rec["rendition"]["name"]))
            if time.perf_counter() - t0 > 1800 or any(p.poll() is not None for p in procs):
                raise RuntimeError(f"encoder run failed: {len(done)} of {want} segments complete")
        wall = time.perf_counter() - t0
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(60)
        reader.close()
    cpu = children_cpu() - c0
    first_start = min(r["encode_started_ms"] for r in recs)
    per_gop: dict[int, list[dict]] = {}
    for r in recs:
        per_gop.setdefault(r["gop_index"], []).append(r)
    skip = 3 if live else 0  # live mode: the first GOPs queue while the member starts and joins
    kept = [rs for _, rs in sorted(per_gop.items())[skip:]]
    gop_s = sorted((max(r["encoded_wallclock_ms"] for r in rs) - min(r["encode_started_ms"] for r in rs)) / 1000
                   for rs in kept)
    # sub-GOP chunks: from the chunk's hand-over to Kafka to its part of every video rendition encoded
    by_part: dict[tuple[int, int], list[dict]] = {}
    for rs in kept:
        for r in rs:
            if r["part_index"] >= 0 and r["rendition"]["media_type"] == "VIDEO" and r["ingest_published_ms"]:
                by_part.setdefault((r["gop_index"], r["part_index"]), []).append(r)
    part_s = sorted((max(r["encoded_wallclock_ms"] for r in rs) - rs[0]["ingest_published_ms"]) / 1000
                    for rs in by_part.values())
    codecs = {r["rendition"]["name"]: r["rendition"]["codecs"] for r in recs if r["rendition"]["codecs"]}
    return {"wall_s": wall, "cpu_s": cpu, "startup_s": (first_start - t0_ms) / 1000, "gop_s": gop_s,
            "part_s": part_s, "codecs": codecs}


def load_source(cache: Path, seconds: float, gop_seconds: float = GOP_SECONDS,
                part_seconds: float | None = None) -> list[dict]:
    """The 1080p30 test pattern as GopChunks (whole GOPs, or sub-GOP chunks of part_seconds), cached
    (framed records, length-prefixed) across runs."""
    if cache.exists():
        data, gops, pos = cache.read_bytes(), [], 0
        while pos < len(data):
            n = int.from_bytes(data[pos:pos + 4], "big")
            gops.append(codec.decode(data[pos + 4:pos + 4 + n], expect="GopChunk"))
            pos += 4 + n
        return gops
    gops = generate_gops("bench", seconds, width=1920, height=1080, fps=FPS, gop_seconds=gop_seconds,
                         start_ms=1_795_000_000_000, part_seconds=part_seconds)
    cache.parent.mkdir(parents=True, exist_ok=True)
    with cache.open("wb") as f:
        for g in gops:
            blob = codec.encode("GopChunk", g)
            f.write(len(blob).to_bytes(4, "big") + blob)
    return gops


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--presets", default="ultrafast,superfast,veryfast", help="'' = only the live runs")
    ap.add_argument("--concurrent-gops", type=int, default=0, help="0 = the setting's default")
    ap.add_argument("--members", type=int, default=1, help="encoder processes in the group")
    ap.add_argument("--live-modes", default="low,standard", help="latency modes of the live-paced run ('' = skip)")
    ap.add_argument("--live-gops", type=int, default=10, help="GOPs measured in each live-paced run")
    ap.add_argument("--repeat", type=int, default=1, help="ffmpeg/ours pairs per preset (alternating; median)")
    args = ap.parse_args()

    base = Settings()
    wait_for_broker(base, 10)
    concurrent = args.concurrent_gops or base.encoder_concurrent_gops
    cache = base.stack_dir / "bench"
    t0 = time.perf_counter()
    gops = load_source(cache / f"encoder-source-{args.seconds:g}s.bin", args.seconds)
    frames = sum(len(g["video_packets"]) for g in gops)
    print(f"source: {len(gops)} GOPs, {frames} frames of 1080p{FPS} test pattern "
          f"(ready in {time.perf_counter() - t0:.1f} s); {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "source.h264"
        write_elementary_stream(gops, src)
        for preset in [p for p in args.presets.split(",") if p]:
            pairs = []
            for rep in range(args.repeat):
                tag = f"[{preset}]" if args.repeat == 1 else f"[{preset} #{rep + 1}]"
                load = os.getloadavg()[0]
                ff_wall, ff_cpu = run_ffmpeg(src, Path(tmp), preset, GOP_SECONDS)
                settings = fresh_topics(base)
                try:
                    ours = run_group(settings, gops, mode="STANDARD", preset=preset, concurrent_gops=concurrent,
                                     members=args.members)
                finally:
                    delete_prefixed_topics(settings)
                ff_ms, our_ms = ff_cpu / frames * 1000, ours["cpu_s"] / frames * 1000
                pairs.append((ff_wall / ours["wall_s"], our_ms / ff_ms))
                print(f"{tag} load average before the pair: {load:.1f} (2 cores; > 2 means others compete)")
                print(f"{tag} ffmpeg (one command, {len(DEFAULT_LADDER)} rungs): {ff_wall:.1f} s = "
                      f"{frames / ff_wall:.1f} fps, CPU {ff_ms:.1f} ms/frame")
                print(f"{tag} encoder group ({args.members} member(s), {concurrent} GOP(s) at once, Kafka in the "
                      f"loop): {ours['wall_s']:.1f} s = {frames / ours['wall_s']:.1f} fps, CPU {our_ms:.1f} ms/frame "
                      f"(process start -> first GOP taken: {ours['startup_s']:.1f} s)")
                print(f"{tag} ratio by wall clock = {ff_wall / ours['wall_s']:.2f}x (target >= 1.2x); CPU per frame "
                      f"ours/ffmpeg = {our_ms / ff_ms:.2f}x (target <= 1.1x); codecs {ours['codecs']}")
                print(f"{tag} transcode time per {GOP_SECONDS:g} s GOP, backlog (GOPs overlap): "
                      f"p50 {pct(ours['gop_s'], 50):.3f} s, p99 {pct(ours['gop_s'], 99):.3f} s", flush=True)
            if args.repeat > 1:
                print(f"[{preset}] median of {args.repeat} pairs: ratio by wall clock "
                      f"{statistics.median(p[0] for p in pairs):.2f}x, CPU per frame ours/ffmpeg "
                      f"{statistics.median(p[1] for p in pairs):.2f}x", flush=True)
        for mode in [m.strip().upper() for m in args.live_modes.split(",") if m.strip()]:
            gop_s = GOP_SECONDS_BY_MODE[mode]
            n = args.live_gops + 3
            # whole GOPs (STANDARD's transport, and LOW's with FLOODLIGHT_INGEST_PART_SECONDS=0), then for LOW
            # the default transport: sub-GOP chunks of FLOODLIGHT_INGEST_PART_SECONDS, transcoded as they come
            transports = [0.0] + ([base.ingest_part_seconds] if mode == "LOW" and base.ingest_part_seconds else [])
            for part in transports:
                name = f"encoder-source-{n * gop_s:g}s-gop{gop_s:g}" + (f"-part{part:g}" if part else "")
                live_src = load_source(cache / f"{name}.bin", n * gop_s, gop_s, part or None)
                settings = fresh_topics(base)
                try:
                    live = run_group(settings, live_src, mode=mode, preset=None, concurrent_gops=concurrent,
                                     members=1, live=True)
                finally:
                    delete_prefixed_topics(settings)
                label = f"{part:g} s chunks" if part else "whole GOPs"
                line = (f"[live {mode}] default preset {PRESET_BY_MODE[mode]}, {gop_s:g} s GOPs as {label} at live "
                        f"pace ({len(live['gop_s'])} GOPs, load {os.getloadavg()[0]:.1f}): ")
                if part:
                    line += (f"chunk handed to Kafka -> its part encoded in every rung "
                             f"p50 {pct(live['part_s'], 50):.3f} s, p99 {pct(live['part_s'], 99):.3f} s")
                else:
                    line += (f"GOP taken -> last segment encoded p50 {pct(live['gop_s'], 50):.3f} s, "
                             f"p99 {pct(live['gop_s'], 99):.3f} s" + (" (target p99 < 1 s)" if mode == "LOW" else ""))
                print(line + f"; 1080p {live['codecs'].get('1080p')}", flush=True)


if __name__ == "__main__":
    main()
