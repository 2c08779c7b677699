"""`floodlight demo`: the whole pipeline as child processes with a live status table (ops/demo.py)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def demo(
    duration: float = typer.Option(None, "--duration", help="Stop after this many seconds (default: until Ctrl-C)."),
    stream: str = typer.Option("demo", "--stream", help="Stream id to register and ingest."),
    source: str = typer.Option("testsrc:1920x1080@30", "--source", help="Ingest source (testsrc[:WxH[@FPS]])."),
    latency: str = typer.Option("low", "--latency", help="low | standard"),
    encoders: int = typer.Option(2, "--encoders", help="Encoder group members."),
    ladder: str = typer.Option("default", "--ladder",
                               help="default (1080p..240p), small (360p/240p/144p) or name:WxH:kbps,..."),
    edge: bool = typer.Option(True, "--edge/--no-edge", help="Serve players through the Varnish edge."),
    edges: int = typer.Option(1, "--edges", help="Varnish edges (ports FLOODLIGHT_EDGE_PORT, +1, ...); 2 or more "
                              "are content-steering pathways a, b, ... (issue 18)."),
    api_processes: int = typer.Option(1, "--api-processes",
                                      help="api processes (ports FLOODLIGHT_API_PORT, +1, ...) behind the edge."),
    gop_seconds: float = typer.Option(None, "--gop-seconds", help="GOP length (default by latency mode)."),
) -> None:
    """Run a live event: ingest -> encoders -> packager -> api (+ edge), QoE app; prints the player URL."""
    from floodlight.settings import get_settings
    from ops.demo import DemoOptions, main, parse_ladder

    if latency not in ("low", "standard"):
        raise typer.BadParameter("--latency must be low or standard")
    if encoders < 1:
        raise typer.BadParameter("--encoders must be >= 1")
    if edges < 1 or edges > 26:
        raise typer.BadParameter("--edges must be 1..26")
    if api_processes < 1:
        raise typer.BadParameter("--api-processes must be >= 1")
    if duration is not None and duration <= 0:
        raise typer.BadParameter("--duration must be > 0")
    try:
        rungs = parse_ladder(ladder)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    opts = DemoOptions(stream_id=stream, source=source, latency=latency, encoders=encoders, ladder=rungs,
                       edge=edge, gop_seconds=gop_seconds, duration=duration, api_processes=api_processes,
                       edges=edges)
    raise typer.Exit(main(get_settings(), opts))
