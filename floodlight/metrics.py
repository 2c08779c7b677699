"""Prometheus exposition for a role: one HTTP port per process."""

from __future__ import annotations

import logging

from prometheus_client import start_http_server

DEFAULT_PORTS = {"ingest": 9101, "encoder": 9102, "packager": 9103, "qoe": 9104, "api": 0, "replay": 9105}
log = logging.getLogger("floodlight.metrics")


def serve_metrics(role: str, port: int = 0) -> int:
    """Start the /metrics endpoint; port 0 picks the role default, and a busy port is not fatal."""
    port = port or DEFAULT_PORTS.get(role, 0)
    if not port:
        return 0
    try:
        start_http_server(port, addr="127.0.0.1")
    except OSError as exc:  # a second member of the same role on this host
        server, _thread = start_http_server(0, addr="127.0.0.1")
        port = server.server_port
        log.info("metrics port busy, using another", extra={"wanted": exc.strerror, "port": port})
    return port
