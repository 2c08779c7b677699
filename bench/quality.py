"""Quality per bit: each rung of our ladder vs the same rung of one `ffmpeg` command.

Both sides get the same source (1080p30, fixed closed GOPs), the same ladder, bitrates, x264 preset and
x264 options per rung (`processors.encoder.ladder.x264_options`, or the sub-GOP path's zero-latency
`streaming.x264_stream_options` for LOW) and the same scaler (libavfilter `scale`, bilinear). Ours runs
the production code in-process (Kafka plays no part in quality): whole GOPs through `transcode_gop`, and
LOW streams the way the worker gets them by default, in sub-GOP chunks of FLOODLIGHT_INGEST_PART_SECONDS
through `streaming.GopStream`; one fresh encoder per GOP per rung either way. The anchor is Debian's
/usr/bin/ffmpeg doing the whole ladder in one command, one continuous encoder per rung, in the same run.

Scores: each output upscaled to the source size (bicubic) against the decoded source with ffmpeg's `psnr`
and `ssim` filters (VMAF too when this ffmpeg has `libvmaf`; Debian's has only `vmafmotion`), and PSNR at
the rung's own size against the source scaled down as both ladders scale it, which isolates the encoder
from the scaling loss that dominates low rungs against the source. Bitrates are the ones achieved (video
sample bytes / duration). "At equal bitrate": the anchor runs at several multiples of the target
(`--anchor-scales`) and its score is interpolated (in log bitrate) at the bitrate ours achieved. Target:
every rung within 0.2 dB PSNR of ffmpeg's against the source, or better; rungs where both are above
50 dB (near-lossless, e.g. the test pattern's 1080p) do not count.

Sources: `testsrc` is the demo's own feed (producers.sources.testsrc: bars, a moving box, burnt-in
clock; easy to code); `zoom` is a slow Mandelbrot zoom with film-grain-like noise (fine texture in
motion everywhere, closer to sports than bars are; encoded once at CRF 12 and cached in .stack/bench);
`lavfi:GRAPH` any lavfi graph; or a file path.

    .venv/bin/python -m bench.quality [--seconds 20] [--sources testsrc,zoom] [--modes low,standard]
                                      [--presets superfast,veryfast --gop 2] [--anchor-scales 0.7,1,1.4]

`--modes` runs each latency mode's default preset at its ingest GOP length (producers.agent);
`--presets` instead runs the given presets on whole GOPs of `--gop` seconds.
"""

from __future__ import annotations

import argparse
import math
import re
import resource
import subprocess
import tempfile
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from bench.encoder import ffmpeg_ladder_cmd, whole_gop_options
from floodlight.registry import DEFAULT_LADDER
from floodlight.settings import Settings
from processors.encoder import cmaf
from processors.encoder.ladder import PART_SECONDS_BY_MODE, PRESET_BY_MODE, select_rungs
from processors.encoder.streaming import KEYINT, GopStream, x264_stream_options
from processors.encoder.transcode import transcode_gop
from producers.agent import GOP_SECONDS_BY_MODE

FPS = 30
WIDTH, HEIGHT = 1920, 1080
SOURCES = {
    "zoom": f"mandelbrot=s={WIDTH}x{HEIGHT}:r={FPS}:maxiter=100:end_pts=4000,noise=alls=2:allf=t",
}
TARGET_DB = 0.2
SATURATED_DB = 50.0  # both above: MSE < 0.65, visually lossless; the delta is noise, not quality


@dataclass
class Score:
    kbps: float
    psnr: float
    psnr_y: float
    psnr_rung: float  # at the rung's size, against the source scaled down (the encoder alone)
    ssim: float
    vmaf: float | None
    codecs: str
    frames: int


def cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run(cmd: list[str]) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stderr


def has_vmaf() -> bool:
    out = subprocess.run(["ffmpeg", "-hide_banner", "-filters"], capture_output=True, text=True).stdout
    return any(line.split()[1:2] == ["libvmaf"] for line in out.splitlines() if line.strip())


# --- sources ----------------------------------------------------------------------------------------

def testsrc_source(seconds: float, gop_seconds: float, tmp: Path) -> tuple[list[dict], Path]:
    """The demo's feed as GopChunks, plus the same H.264 as an Annex B file for ffmpeg."""
    from producers.sources.testsrc import generate_gops

    gops = generate_gops("quality", seconds, width=WIDTH, height=HEIGHT, fps=FPS, gop_seconds=gop_seconds,
                         start_ms=1_795_000_000_000)
    path = tmp / f"testsrc-{gop_seconds:g}.h264"
    with path.open("wb") as f:
        for g in gops:
            f.write(g["video"]["extradata"])  # SPS/PPS before each IDR
            for p in g["video_packets"]:
                f.write(p["data"])
    return gops, path


def encoded_source(graph_or_file: str, seconds: float, gop_seconds: float, tmp: Path, cache: Path) -> Path:
    """A contribution-quality H.264 feed (CRF 12, fixed closed GOPs, no B-frames) in MPEG-TS, cached."""
    keyint = round(gop_seconds * FPS)
    safe = re.sub(r"[^A-Za-z0-9]+", "_", graph_or_file)[:80]
    path = cache / f"quality-{safe}-{seconds:g}s-gop{keyint}.ts"
    if path.exists():
        return path
    cache.mkdir(parents=True, exist_ok=True)
    src = (["-f", "lavfi", "-i", graph_or_file] if not Path(graph_or_file).exists() else ["-i", graph_or_file])
    part = tmp / "source.ts"
    run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *src, "-t", f"{seconds:g}", "-an",
         "-vf", f"scale={WIDTH}:{HEIGHT},fps={FPS},format=yuv420p", "-c:v", "libx264", "-preset", "veryfast",
         "-crf", "12", "-x264-params", f"keyint={keyint}:min-keyint={keyint}:scenecut=0:open-gop=0:bframes=0",
         "-f", "mpegts", str(part)])
    part.replace(path)
    return path


def gops_from_file(path: Path, stream_id: str = "quality") -> list[dict]:
    """GopChunk dicts (the fields transcode_gop reads) from an H.264 file with closed GOPs."""
    gops: list[dict] = []
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        cc = vs.codec_context
        rate = Fraction(vs.average_rate or FPS).limit_denominator(1001)
        video = {"codec": "h264", "width": cc.width, "height": cc.height, "frame_rate_num": rate.numerator,
                 "frame_rate_den": rate.denominator, "extradata": bytes(cc.extradata or b"")}
        for pkt in c.demux(vs):
            if pkt.size == 0 or pkt.pts is None:
                continue
            if pkt.is_keyframe or not gops:
                gops.append({"stream_id": stream_id, "gop_index": len(gops), "chunk_index": 0, "is_last_chunk": True,
                             "time_base_num": vs.time_base.numerator, "time_base_den": vs.time_base.denominator,
                             "capture_wallclock_ms": 0, "video": video, "video_packets": [], "audio": None,
                             "audio_packets": []})
            gops[-1]["video_packets"].append({"data": bytes(pkt), "pts": pkt.pts, "dts": pkt.dts,
                                              "keyframe": bool(pkt.is_keyframe)})
    return gops


# --- the two ladders -----------------------------------------------------------------------------

def chunks_of(gop: dict, frames_per_chunk: int) -> list[dict]:
    """A whole GOP cut into sub-GOP chunks of whole frames, as a LOW-latency ingest publishes it."""
    packets = gop["video_packets"]
    n = -(-len(packets) // frames_per_chunk)
    return [{**gop, "chunk_index": i, "is_last_chunk": i == n - 1, "audio": None, "audio_packets": [],
             "video_packets": packets[i * frames_per_chunk:(i + 1) * frames_per_chunk]} for i in range(n)]


def ours(gops: list[dict], rungs: list[dict], preset: str, part_seconds: float, chunk_frames: int,
         out_dir: Path) -> dict[str, Path]:
    """Our ladder, in-process: whole GOPs through transcode_gop, or (chunk_frames > 0) each GOP in chunks
    through the sub-GOP path (streaming.GopStream), as the worker runs LOW streams."""
    files = {r["name"]: out_dir / f"ours-{r['name']}.mp4" for r in rungs}
    names = {r["name"] for r in rungs}
    handles = {name: p.open("wb") for name, p in files.items()}
    written: set[str] = set()

    def write(rec: dict) -> None:
        name = rec["rendition"]["name"]
        if name not in names:
            return
        if name not in written:
            handles[name].write(rec["init_segment"])
            written.add(name)
        handles[name].write(rec["data"])

    try:
        for g in gops:
            if chunk_frames:
                chunks = chunks_of(g, chunk_frames)
                stream = GopStream(chunks[0], rungs, preset=preset, renditions=names)
                for c in chunks:
                    for rec in stream.feed(c):
                        write(rec)
            else:
                for rec in transcode_gop(g, rungs, preset=preset, part_seconds=part_seconds, renditions=names):
                    write(rec)
    finally:
        for h in handles.values():
            h.close()
    return files


def anchor_options(preset: str, keyint: int, chunked: bool):
    """The x264 options ours gives each rung, for the anchor: the sub-GOP path's zero-latency options
    (with the anchor's GOP length in place of 'one IDR per fresh encoder'), or the whole-GOP ones."""
    if not chunked:
        return whole_gop_options(preset, keyint)

    def opts(r: dict) -> dict[str, str]:
        o = x264_stream_options(preset, r["bitrate_kbps"], r["height"])
        return {**o, "x264-params": o["x264-params"].replace(f"keyint={KEYINT}", f"keyint={keyint}")}
    return opts


def ffmpeg_ladder(src: Path, rungs: list[dict], options, out_dir: Path, scale: float = 1.0) -> dict[str, Path]:
    """The anchor: one ffmpeg command, every rung at `scale` x its bitrate, with `options(rung)`."""
    rungs = [{**r, "bitrate_kbps": round(r["bitrate_kbps"] * scale)} for r in rungs]
    files = {r["name"]: out_dir / f"ffmpeg-{scale:g}-{r['name']}.mp4" for r in rungs}
    subprocess.run(ffmpeg_ladder_cmd(src_args(src), files, rungs, options), check=True)
    return files


def src_args(src: Path) -> list[str]:
    return ["-f", "h264", "-framerate", str(FPS), "-i", str(src)] if src.suffix == ".h264" else ["-i", str(src)]


# --- scoring -----------------------------------------------------------------------------------

def achieved(path: Path) -> tuple[float, int, str]:
    """(kbps of the video samples, frame count, RFC 6381 codecs string)."""
    data = path.read_bytes()
    codecs = cmaf.avc_codecs(cmaf.split_fmp4(data).init) if b"moof" in data[:4096] else "?"
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        rate = vs.average_rate or FPS
        sizes = [p.size for p in c.demux(vs) if p.size]
    return sum(sizes) * 8 / (len(sizes) / float(rate)) / 1000, len(sizes), codecs


def score(dist: Path, src: Path, vmaf: bool, width: int, height: int) -> Score:
    """Against the source (the rung upscaled, bicubic): PSNR, SSIM (and VMAF); plus PSNR at the rung's own
    size against the source scaled down as both ladders scale it (bilinear), which isolates the encoder
    from the scaling loss that dominates the low rungs' numbers against the source."""
    n = 3 if vmaf else 2
    graph = (f"[0:v]setpts=PTS-STARTPTS,format=yuv420p,split=2[dn][du];"
             f"[du]scale={WIDTH}:{HEIGHT}:flags=bicubic,split={n}" + "".join(f"[d{i}]" for i in range(n)) + ";"
             f"[1:v]setpts=PTS-STARTPTS,format=yuv420p,split={n + 1}" + "".join(f"[r{i}]" for i in range(n)) + "[rs];"
             f"[rs]scale={width}:{height}:flags=bilinear[rn];"
             "[d0][r0]psnr@full;[d1][r1]ssim@full;[dn][rn]psnr@rung")
    if vmaf:
        graph += ";[d2][r2]libvmaf"
    err = run(["ffmpeg", "-hide_banner", "-nostats", "-i", str(dist), *src_args(src), "-lavfi", graph,
               "-f", "null", "-"])
    psnr = re.search(r"psnr@full .*PSNR y:([\d.]+|inf) .*average:([\d.]+|inf)", err)
    rung = re.search(r"psnr@rung .*PSNR .*average:([\d.]+|inf)", err)
    ssim = re.search(r"ssim@full .*SSIM .*All:([\d.]+)", err)
    vm = re.search(r"VMAF score: ([\d.]+)", err)
    if not psnr or not ssim or not rung:
        raise RuntimeError(f"no psnr/ssim in ffmpeg's output for {dist}:\n{err[-2000:]}")
    kbps, frames, codecs = achieved(dist)
    return Score(kbps, float(psnr.group(2)), float(psnr.group(1)), float(rung.group(1)), float(ssim.group(1)),
                 float(vm.group(1)) if vm else None, codecs, frames)


def at_rate(curve: list[Score], kbps: float, attr: str) -> tuple[float, bool]:
    """The anchor's `attr` at `kbps`: piecewise linear in log(bitrate) between its points; outside
    them (or on a flat curve, where the bitrate hardly follows the target) the nearest point, flagged."""
    pts = sorted((math.log(c.kbps), getattr(c, attr)) for c in curve)
    x = math.log(kbps)
    if pts[-1][0] - pts[0][0] < math.log(1.05) or x <= pts[0][0] or x >= pts[-1][0]:
        near = min(pts, key=lambda p: abs(p[0] - x))
        return near[1], abs(near[0] - x) > math.log(1.02)
    for (x0, y0), (x1, y1) in zip(pts, pts[1:], strict=False):
        if x0 <= x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0) if x1 > x0 else y0, False
    return pts[-1][1], True


def compare(label: str, gops: list[dict], src: Path, preset: str, gop_seconds: float, part_seconds: float,
            chunk_frames: int, vmaf: bool, tmp: Path, scales: list[float]) -> tuple[float, float]:
    """Encode ours and the anchor ladders, print the table, return the worst PSNR deltas (ours - ffmpeg
    at ours' bitrate) against the source and at the rung's size; rungs where both are above SATURATED_DB
    count as 0."""
    rungs = select_rungs(DEFAULT_LADDER, gops[0]["video"]["width"], gops[0]["video"]["height"])
    keyint = round(gop_seconds * FPS)
    out = tmp / f"{label}-{preset}"
    out.mkdir(parents=True, exist_ok=True)
    frames = sum(len(g["video_packets"]) for g in gops)
    c0, t0 = cpu_self(), time.perf_counter()
    mine = ours(gops, rungs, preset, part_seconds, chunk_frames, out)
    c1, t1 = cpu_self(), time.perf_counter()
    cc0 = cpu_children()
    options = anchor_options(preset, keyint, chunked=chunk_frames > 0)
    anchors = {1.0: ffmpeg_ladder(src, rungs, options, out)}
    cc1, t2 = cpu_children(), time.perf_counter()
    for m in scales:
        if m != 1.0:
            anchors[m] = ffmpeg_ladder(src, rungs, options, out, m)
    path = (f"sub-GOP path, {chunk_frames}-frame chunks" if chunk_frames else "whole GOPs")
    print(f"\n[{label}] {gop_seconds:g} s GOPs ({path}), {frames} frames of {WIDTH}x{HEIGHT}@{FPS}; x264 options "
          f"(both sides): top rung {options(rungs[0])}, bottom rung {options(rungs[-1])['x264-params'][-40:]}")
    print(f"[{label}] CPU per frame: ours {(c1 - c0) / frames * 1000:.1f} ms, "
          f"ffmpeg {(cc1 - cc0) / frames * 1000:.1f} ms "
          f"(wall {t1 - t0:.1f} s vs {t2 - t1:.1f} s; in-process, no Kafka; noisy on a shared machine)")
    print(f"[{label}] anchor = ffmpeg at {', '.join(f'{m:g}x' for m in sorted(anchors))} the target bitrate, "
          f"interpolated at ours' achieved bitrate (log-rate); '~' = nearest anchor point, outside their range")
    head = (f"{'rung':6} {'target':>6} | {'kbps ours':>9} {'ffmpeg':>6} | "
            f"{'PSNR ours':>9} {'ffmpeg':>7} {'delta':>6} | {'SSIM ours':>9} {'ffmpeg':>8} {'delta':>8} | "
            f"{'at rung size: ours':>18} {'ffmpeg':>7} {'delta':>6} |")
    head += f" {'VMAF ours':>9} {'ffmpeg':>6} |" if vmaf else ""
    head += f" {'at target: PSNR':>15} {'kbps':>6} | {'profile ours':>12} {'ffmpeg':>11}"
    print(head)
    worst = worst_rung = float("inf")
    for r in rungs:
        a = score(mine[r["name"]], src, vmaf, r["width"], r["height"])
        curve = [score(files[r["name"]], src, vmaf, r["width"], r["height"]) for _, files in sorted(anchors.items())]
        base = curve[sorted(anchors).index(1.0)]
        if any(c.frames != frames for c in [a, *curve]):
            raise RuntimeError(f"{r['name']}: frame counts differ: ours {a.frames}, "
                               f"ffmpeg {[c.frames for c in curve]}, source {frames}")
        p, p_out = at_rate(curve, a.kbps, "psnr")
        q, _ = at_rate(curve, a.kbps, "ssim")
        pr, _ = at_rate(curve, a.kbps, "psnr_rung")
        delta = a.psnr - p
        saturated = min(a.psnr, p) >= SATURATED_DB
        worst = min(worst, 0.0 if saturated else delta)
        worst_rung = min(worst_rung, 0.0 if min(a.psnr_rung, pr) >= SATURATED_DB else a.psnr_rung - pr)
        line = (f"{r['name']:6} {r['bitrate_kbps']:>6} | {a.kbps:>9.0f} {base.kbps:>6.0f} | {a.psnr:>9.2f} "
                f"{p:>6.2f}{'~' if p_out else ' '} {delta:>+6.2f} | {a.ssim:>9.5f} {q:>8.5f} {a.ssim - q:>+8.5f} | "
                f"{a.psnr_rung:>18.2f} {pr:>7.2f} {a.psnr_rung - pr:>+6.2f} |")
        if vmaf:
            v, _ = at_rate(curve, a.kbps, "vmaf")
            line += f" {a.vmaf:>9.2f} {v:>6.2f} |"
        line += f" {base.psnr:>15.2f} {base.kbps:>6.0f} | {a.codecs:>12} {base.codecs:>11}"
        line += "  (both near-lossless)" if saturated else ""
        print(line, flush=True)
    verdict = "ok" if worst >= -TARGET_DB else "BELOW TARGET"
    print(f"[{label}] worst PSNR delta ours - ffmpeg at equal bitrate: {worst:+.2f} dB against the source (target >= "
          f"-{TARGET_DB} dB): {verdict}; at the rung's size {worst_rung:+.2f} dB")
    return worst, worst_rung


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--sources", default="testsrc,zoom", help="testsrc, zoom, lavfi:GRAPH or a file, comma-separated")
    ap.add_argument("--modes", default="low,standard", help="latency modes: their default preset and GOP")
    ap.add_argument("--presets", default="", help="instead of --modes: these x264 presets at --gop seconds")
    ap.add_argument("--gop", type=float, default=2.0, help="GOP seconds with --presets")
    ap.add_argument("--anchor-scales", default="0.7,1,1.4",
                    help="bitrate multipliers of the anchor ladders (ffmpeg at equal bitrate is interpolated)")
    args = ap.parse_args()

    settings = Settings()
    # LOW streams reach the encoder as sub-GOP chunks of FLOODLIGHT_INGEST_PART_SECONDS (0 = whole GOPs)
    low_chunk = round(settings.ingest_part_seconds * FPS)
    if args.presets:
        runs = [(p, p, args.gop, PART_SECONDS_BY_MODE["STANDARD"], 0) for p in args.presets.split(",")]
    else:
        runs = [(m, PRESET_BY_MODE[m], GOP_SECONDS_BY_MODE[m], PART_SECONDS_BY_MODE[m], low_chunk if m == "LOW" else 0)
                for m in (x.strip().upper() for x in args.modes.split(","))]
    vmaf = has_vmaf()
    print("VMAF: " + ("libvmaf filter present, scored" if vmaf else
                      "not scored (this ffmpeg has no libvmaf filter, only vmafmotion)"))
    cache = settings.stack_dir / "bench"
    results: list[tuple[str, tuple[float, float]]] = []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        for source in args.sources.split(","):
            for label, preset, gop_s, part_s, chunk in runs:
                if source == "testsrc":
                    gops, src = testsrc_source(args.seconds, gop_s, tmp)
                else:
                    graph = SOURCES.get(source, source.removeprefix("lavfi:"))
                    src = encoded_source(graph, args.seconds, gop_s, tmp, cache)
                    gops = gops_from_file(src)
                name = f"{source} {label}"
                results.append((name, compare(name.replace(" ", "-"), gops, src, preset, gop_s, part_s, chunk, vmaf,
                                              tmp, [float(x) for x in args.anchor_scales.split(",")])))
    print("\nsummary: worst rung, PSNR ours - ffmpeg at equal bitrate (target >= -0.2 dB against the source)")
    for name, (worst, worst_rung) in results:
        print(f"  {name:24} against the source {worst:+.2f} dB, at the rung's size {worst_rung:+.2f} dB")


if __name__ == "__main__":
    main()
