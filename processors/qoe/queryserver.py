"""The qoe app's small HTTP endpoint: read-only analytics and live viewers for the api and the CLI.

Needed because chDB locks its directory to one process: in embedded mode the qoe app owns the
analytics store and everybody else reads through here. Threads, never the Faust event loop.
Binds 127.0.0.1 by default; queries are single SELECTs run with readonly=1 and result limits.

  POST /query            {"sql": "...", "parameters": {...}} -> {"rows": [...]}   (400 if not a SELECT)
  GET  /viewers/{stream} -> {"stream_id", "viewers", "updated_ms"}
  GET  /healthz
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import date, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from uuid import UUID

from floodlight import ids
from floodlight.clickhouse import NotReadOnly

log = logging.getLogger("floodlight.qoe.http")
MAX_BODY = 64 * 1024


def to_json(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal | UUID):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


class Handler(BaseHTTPRequestHandler):
    service: Any = None  # set by serve()
    server_version = "floodlight-qoe"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("http " + format % args)

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body, default=to_json).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            self._reply(200, {"ok": True})
        elif path.startswith("/viewers/"):
            stream_id = path[len("/viewers/"):]
            if not ids.is_stream_id(stream_id):
                self._reply(400, {"error": "invalid stream_id"})
                return
            self._reply(200, {"stream_id": stream_id, "viewers": self.service.viewer_count(stream_id),
                              "updated_ms": self.service.viewers_updated_ms})
        else:
            self._reply(404, {"error": "not found"})

    def do_POST(self) -> None:  # noqa: N802
        if self.path.split("?", 1)[0] != "/query":
            self._reply(404, {"error": "not found"})
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length <= 0 or length > MAX_BODY:
            self._reply(400, {"error": f"body must be 1..{MAX_BODY} bytes of JSON"})
            return
        try:
            body = json.loads(self.rfile.read(length))
            sql = body["sql"]
            params = body.get("parameters") or {}
            if not isinstance(sql, str) or not isinstance(params, dict):
                raise TypeError("sql must be a string, parameters an object")
        except (ValueError, KeyError, TypeError) as exc:
            self._reply(400, {"error": f"bad request: {exc}"})
            return
        try:
            rows = self.service.query(sql, params)
        except NotReadOnly as exc:
            self._reply(400, {"error": str(exc)})
            return
        except Exception as exc:  # noqa: BLE001 - ClickHouse errors go back to the analyst
            log.info("analytics query failed", extra={"error": str(exc)[:300]})
            self._reply(422, {"error": str(exc)[:2000]})
            return
        self._reply(200, {"rows": rows})


def serve(service: Any, host: str, port: int) -> ThreadingHTTPServer:
    """Start the endpoint in a daemon thread; returns the server (server_port is the bound port)."""
    handler = type("BoundHandler", (Handler,), {"service": service})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="qoe-http", daemon=True).start()
    return server
