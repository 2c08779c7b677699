"""`floodlight encoder`: one member of the encoder consumer group (run more to scale out)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    app.command("encoder")(encoder)


def encoder(
    renditions: str = typer.Option(None, "--renditions",
                                   help="all, or rung names like 1080p,720p (add 'audio' for the audio rendition)."),
    group: str = typer.Option(None, "--group", help="Consumer group id (default FLOODLIGHT_ENCODER_GROUP; "
                                                     "a rendition subset gets its own group)."),
    threads: int = typer.Option(None, "--threads", help="libx264 threads per rung encoder (0 = auto)."),
    concurrent_gops: int = typer.Option(None, "--concurrent-gops", help="GOPs transcoded at once."),
) -> None:
    """Transcode GOPs from floodlight.gops into the stream's ABR ladder of CMAF segments."""
    import signal

    from floodlight.log import setup_logging
    from floodlight.metrics import serve_metrics
    from floodlight.settings import get_settings
    from processors.encoder.transcode import keep_freed_memory
    from processors.encoder.worker import EncoderWorker, parse_renditions

    settings = get_settings()
    setup_logging("encoder", settings.log_level, settings.log_format)
    try:
        wanted = parse_renditions(renditions if renditions is not None else settings.encoder_renditions)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    if threads is not None and threads < 0:
        raise typer.BadParameter("--threads must be >= 0")
    if concurrent_gops is not None and concurrent_gops < 1:
        raise typer.BadParameter("--concurrent-gops must be >= 1")
    keep_freed_memory()
    serve_metrics("encoder", settings.metrics_port)
    worker = EncoderWorker(settings, group=group, renditions=wanted, x264_threads=threads,
                           concurrent_gops=concurrent_gops)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: worker.stop())
    worker.run()
