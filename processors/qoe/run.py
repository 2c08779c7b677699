"""Process entry of `floodlight qoe`: schema, registry, analytics port, metrics, then the Faust worker."""

from __future__ import annotations

import logging

from floodlight.log import setup_logging
from floodlight.metrics import serve_metrics
from floodlight.settings import get_settings

log = logging.getLogger("floodlight.qoe")


def main() -> None:
    from faust import Worker

    from processors.qoe.app import QoeService, build_app
    from processors.qoe.queryserver import serve

    settings = get_settings()
    setup_logging("qoe", settings.log_level, settings.log_format)
    service = QoeService(settings)
    service.start()
    http = serve(service, settings.qoe_host, settings.qoe_port)
    metrics_port = serve_metrics("qoe", settings.metrics_port)
    app = build_app(settings, service)
    log.info("qoe app starting", extra={"topic": service.topic, "analytics_port": http.server_port,
                                        "metrics_port": metrics_port,
                                        "batch_rows": settings.qoe_batch_rows,
                                        "batch_seconds": settings.qoe_batch_seconds})
    worker = Worker(app, loglevel=settings.log_level.lower(), override_logging=False, quiet=True)
    try:
        worker.execute_from_commandline()
    finally:
        http.shutdown()
        service.close()
        log.info("qoe app stopped")
