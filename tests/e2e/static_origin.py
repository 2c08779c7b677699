"""A live HLS + DASH stream made by Debian's ffmpeg, served with the player routes by a real HTTP server.

It exercises the player and the harness without the Kafka pipeline (ABR ladder 360p/240p/144p, fMP4,
program-date-time, 1 s segments), so a player regression shows up even when another role is broken.
"""

from __future__ import annotations

import http.server
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

LADDER = [("360p", "640x360", "1500k"), ("240p", "426x240", "400k"), ("144p", "256x144", "120k")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ffmpeg_hls(out: Path) -> list[str]:
    """ffmpeg command writing a live ABR HLS stream (fMP4, 1 s segments, PDT) into `out`."""
    n = len(LADDER)
    split = f"[0:v]split={n}" + "".join(f"[v{i}]" for i in range(n))
    scales = ";".join(f"[v{i}]scale={size.replace('x', ':')}[o{i}]" for i, (_, size, _) in enumerate(LADDER))
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re",
           "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30",
           "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
           "-filter_complex", f"{split};{scales}"]
    for i in range(n):
        cmd += ["-map", f"[o{i}]"]
    cmd += ["-map", "1:a", "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency",
            "-g", "30", "-keyint_min", "30", "-sc_threshold", "0", "-c:a", "aac", "-b:a", "64k"]
    for i, (_, _, rate) in enumerate(LADDER):
        cmd += [f"-b:v:{i}", rate, f"-maxrate:v:{i}", rate, f"-bufsize:v:{i}", rate]
    vmap = " ".join(f"v:{i},agroup:aud,name:{name}" for i, (name, _, _) in enumerate(LADDER))
    cmd += ["-f", "hls", "-hls_time", "1", "-hls_list_size", "60", "-hls_segment_type", "fmp4",
            "-hls_flags", "independent_segments+program_date_time", "-master_pl_name", "master.m3u8",
            "-var_stream_map", f"{vmap} a:0,agroup:aud,name:audio",
            "-hls_fmp4_init_filename", "init.mp4", "-hls_segment_filename", str(out / "%v" / "%d.m4s"),
            str(out / "%v" / "playlist.m3u8")]
    return cmd


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def page_origin(fill: Callable[[Path], None], label: str = "page") -> Iterator[str]:
    """A directory `fill` writes (player pages, player libraries) served on a free port of its own, so the players
    on it go cross-origin to the stream like a site embedding them; yields the base URL, removes the files after."""
    root = Path(tempfile.mkdtemp(prefix=f"fl-{label}-"))
    fill(root)
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(root)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def static_origin(root: Path, stream_id: str = "static") -> Iterator[str]:
    """Start ffmpeg + an HTTP server (player routes + /live/{stream_id}/...); yield the base URL."""
    import uvicorn
    from fastapi import FastAPI
    from fastapi.staticfiles import StaticFiles

    from api.player.routes import router

    live = root / "live" / stream_id
    live.mkdir(parents=True)
    proc = subprocess.Popen(ffmpeg_hls(live), cwd=live, stdin=subprocess.DEVNULL, start_new_session=True)
    app = FastAPI()
    app.include_router(router)
    app.mount("/live", StaticFiles(directory=root / "live"), name="live")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        end = time.monotonic() + 30
        while not ((live / "master.m3u8").exists() and server.started):
            if proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError(f"ffmpeg/server did not start (ffmpeg rc={proc.poll()})")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        thread.join(10)
