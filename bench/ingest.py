"""Ingest overhead per GOP at 1080p30: chunk + frame + publish, against the bare PyAV demux of the same file.

    .venv/bin/python -m bench.ingest [--seconds 30] [--gop 2]

Makes a 1080p30 H.264/AAC file (Debian ffmpeg, fixed GOP), then in one run:
  anchor   - PyAV demux of the file, packets grouped into GOPs (ms per GOP);
  measured - the same demux through the agent's path: MediaPackets -> GopChunker (chunk) ->
             Avro framing (frame) -> produce to floodlight.gops on the real broker and wait for
             the ack (publish), per GOP.
Prints p50/p99 of each stage and the ratio (demux + chunk + frame + publish) / demux.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
import uuid
from fractions import Fraction
from pathlib import Path


def make_file(path: Path, seconds: int, gop: int) -> None:
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=1920x1080:rate=30",
         "-f", "lavfi", "-i", "sine=f=1000:sample_rate=48000", "-t", str(seconds), "-c:v", "libx264",
         "-preset", "ultrafast", "-b:v", "6M", "-g", str(30 * gop), "-keyint_min", str(30 * gop), "-sc_threshold", "0",
         "-c:a", "aac", "-ac", "2", "-f", "mpegts", str(path)], check=True)


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def demux_anchor(path: Path) -> list[float]:
    """ms per GOP of demuxing alone (keyframe to keyframe)."""
    import av

    per_gop, t_last = [], None
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        t0 = time.perf_counter()
        for pkt in c.demux():
            if pkt.size == 0:
                continue
            _ = bytes(pkt)  # the agent copies every payload too
            if pkt.stream is v and pkt.is_keyframe:
                now = time.perf_counter()
                if t_last is not None:
                    per_gop.append((now - t_last) * 1000)
                t_last = now
        if t_last is not None:
            per_gop.append((time.perf_counter() - t_last) * 1000)
        del t0
    return per_gop


def measured(path: Path, settings) -> dict[str, list[float]]:  # noqa: ANN001 - Settings
    import av

    from floodlight.kafka import make_producer
    from floodlight.partitioner import gop_partition
    from producers.gop.chunker import GopChunker
    from producers.media import MediaPacket
    from producers.sources.demux import audio_params, video_params
    from schemas import codec

    producer = make_producer(settings)
    topic = settings.topic("gops")
    parts = len(producer.list_topics(topic, timeout=10).topics[topic].partitions)
    stages: dict[str, list[float]] = {"demux": [], "chunk": [], "frame": [], "publish": [], "total": []}
    with av.open(str(path)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        ch = GopChunker("bench", "primary", video_params(v), audio_params(a), Fraction(v.time_base),
                        Fraction(a.time_base), wrap_bits=33)
        demux_s = chunk_s = 0.0
        it = iter(c.demux())
        while True:
            t0 = time.perf_counter()
            pkt = next(it, None)
            if pkt is not None and pkt.size == 0:
                continue
            data = bytes(pkt) if pkt is not None else b""
            t1 = time.perf_counter()
            if pkt is None:
                out = ch.flush()
            else:
                kind = "video" if pkt.stream is v else "audio"
                mp = MediaPacket(kind, pkt.pts, pkt.dts, data, bool(pkt.is_keyframe), int(pkt.duration or 0),
                                 int(time.time() * 1000) if kind == "video" else None)
                out = ch.push(mp)
            t2 = time.perf_counter()
            demux_s += t1 - t0
            chunk_s += t2 - t1
            for g in out:
                t3 = time.perf_counter()
                value = codec.encode("GopChunk", dict(g, published_wallclock_ms=int(time.time() * 1000)))
                t4 = time.perf_counter()
                part = gop_partition("bench", g["gop_index"], parts)
                producer.produce(topic, key=b"bench", value=value, partition=part)
                producer.flush(30)
                t5 = time.perf_counter()
                stages["demux"].append(demux_s * 1000)
                stages["chunk"].append(chunk_s * 1000)
                stages["frame"].append((t4 - t3) * 1000)
                stages["publish"].append((t5 - t4) * 1000)
                stages["total"].append((chunk_s + (t5 - t3)) * 1000)
                demux_s = chunk_s = 0.0
            if pkt is None:
                break
    return stages


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=30)
    ap.add_argument("--gop", type=int, default=2)
    args = ap.parse_args()

    from floodlight.settings import get_settings
    from floodlight.topics import apply_topics, delete_prefixed_topics

    s = get_settings().model_copy(update={"topic_prefix": f"bench{uuid.uuid4().hex[:6]}.", "topic_partitions": 3})
    apply_topics(s)
    try:
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "feed1080.ts"
            print(f"making {args.seconds} s of 1080p30 ({args.gop} s GOPs) ...", flush=True)
            make_file(path, args.seconds, args.gop)
            size_mb = path.stat().st_size / 1e6
            demux_anchor(path)  # warm the page cache
            anchor = demux_anchor(path)
            st = measured(path, s)
    finally:
        delete_prefixed_topics(s)
    print(f"file {size_mb:.1f} MB, {len(st['total'])} GOPs of {args.gop} s at 1080p30")
    print(f"anchor  bare PyAV demux     p50 {pct(anchor, .5):7.2f} ms/GOP  p99 {pct(anchor, .99):7.2f}")
    for k in ("chunk", "frame", "publish", "total"):
        print(f"ingest  {k:<8} (per GOP)    p50 {pct(st[k], .5):7.2f} ms      p99 {pct(st[k], .99):7.2f}")
    ratio = (statistics.median(anchor) + statistics.median(st["total"])) / statistics.median(anchor)
    print(f"ratio (demux + chunk + frame + publish) / demux, medians: {ratio:.2f}x")
    print(f"overhead per GOP p50 {pct(st['total'], .5):.2f} ms = {pct(st['total'], .5) / (args.gop * 10):.2f}% "
          f"of the GOP's {args.gop} s real time")


if __name__ == "__main__":
    main()
