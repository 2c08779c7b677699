"""`floodlight packager`: one member of the packager consumer group (one owner per stream)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    app.command("packager")(packager)


def packager(
    group: str = typer.Option(None, "--group", help="Consumer group id (default FLOODLIGHT_PACKAGER_GROUP)."),
) -> None:
    """Package floodlight.segments into CMAF objects + HLS/LL-HLS/DASH manifests in the object store."""
    import signal

    from floodlight.log import setup_logging
    from floodlight.metrics import serve_metrics
    from floodlight.settings import get_settings
    from sinks.packager.worker import PackagerWorker

    settings = get_settings()
    setup_logging("packager", settings.log_level, settings.log_format)
    serve_metrics("packager", settings.metrics_port)
    worker = PackagerWorker(settings, group=group)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: worker.stop())
    worker.run()
