"""`floodlight ingest`: the venue ingest agent (producers/)."""

from __future__ import annotations

from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    app.command("ingest")(ingest_cmd)


def ingest_cmd(
    stream: Annotated[str, typer.Option("--stream", help="registered stream id")],
    source: Annotated[str, typer.Option("--source", help="testsrc[:1920x1080@30] | file:PATH[?loop=1] | "
                                        "rtmp://0.0.0.0:1935/live/{stream_key} | srt://0.0.0.0:9000?streamid=... | "
                                        "tcp://HOST:PORT | udp://HOST:PORT")],
    ingest_id: Annotated[str, typer.Option("--ingest-id", help="primary | backup")] = "primary",
    normalize: Annotated[str, typer.Option(
        "--normalize", help="auto (default): pass a conforming feed (H.264 + AAC, closed regular GOPs) through "
        "untouched and re-encode one that is not (open GOPs, B-frames across GOPs, scene-cut or long GOPs, HEVC), "
        "switching back when it conforms; always: re-encode every feed to fixed closed GOPs (libx264 + AAC); "
        "never: refuse a feed that does not conform")] = "auto",
    no_normalize: Annotated[bool, typer.Option("--no-normalize", help="same as --normalize never")] = False,
    gop_seconds: Annotated[float | None, typer.Option("--gop-seconds", help="GOP length of testsrc/--normalize "
                                                      "(default by latency mode: 1 s, LOW and STANDARD)")] = None,
    duration: Annotated[float | None, typer.Option("--duration", help="stop after this many media seconds")] = None,
    no_registry: Annotated[bool, typer.Option("--no-registry", help="do not require a registered stream "
                                              "(tests, benches); RTMP then checks the key in the URL")] = False,
    status_interval: Annotated[float, typer.Option("--status-interval", help="seconds between status lines; 0 "
                                                   "= none")] = 5.0,
    preset: Annotated[str | None, typer.Option("--preset", help="x264 preset of testsrc/--normalize")] = None,
) -> None:
    """Capture a feed, cut it into closed GOPs and publish them to floodlight.gops."""
    import signal
    import threading

    from floodlight import ids
    from floodlight.log import setup_logging
    from floodlight.metrics import serve_metrics
    from floodlight.settings import get_settings
    from producers.agent import AgentConfig, IngestAgent

    if not ids.is_ingest_id(ingest_id):
        raise typer.BadParameter("--ingest-id: primary, backup or another [a-z0-9-] name of up to 32")
    if normalize not in ("auto", "always", "never"):
        raise typer.BadParameter(f"--normalize: auto, always or never, not {normalize!r}")
    if no_normalize:
        normalize = "never"
    s = get_settings()
    setup_logging("ingest", s.log_level, s.log_format)
    serve_metrics("ingest", s.metrics_port)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    cfg = AgentConfig(stream_id=stream, source=source, ingest_id=ingest_id, normalize=normalize,
                      gop_seconds=gop_seconds, duration=duration, use_registry=not no_registry,
                      status_interval=status_interval, preset=preset)
    # capture runs on a worker thread: a signal handler only runs on the main thread, and never while
    # it is blocked inside FFmpeg (av.open waiting for a pusher), so the main thread just waits
    agent = IngestAgent(s, cfg, stop)
    result: list[int] = []
    worker = threading.Thread(target=lambda: result.append(agent.run()), name="ingest-capture")
    worker.start()
    while worker.is_alive():
        worker.join(0.5)
    raise typer.Exit(result[0] if result else 1)
