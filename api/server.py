"""Run the api app with uvicorn: in the foreground (CLI) or in a background thread (tests, bench)."""

from __future__ import annotations

import signal
import socket
import threading
import time
from types import TracebackType
from typing import TYPE_CHECKING

import uvicorn

from floodlight.settings import Settings, refuse_default_secrets

if TYPE_CHECKING:
    from api.context import Context


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def serve(settings: Settings, host: str, port: int) -> None:
    """Foreground; returns on SIGTERM/SIGINT (uvicorn's handlers) after the lifespan shuts down.
    Raises InsecureSettings before binding a non-loopback address with a default secret."""
    from api.app import create_app

    refuse_default_secrets(settings, host, "api")

    # uvicorn stops gracefully on SIGTERM/SIGINT, then re-raises the signal to the handler it found here:
    # with Python's defaults the process dies of it (-15). A requested stop is a clean exit, as for the
    # other roles: exit 0, whether the signal comes before or after uvicorn took over.
    def _stop(signum: int, frame: object) -> None:
        raise SystemExit(0)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stop)
    uvicorn.run(create_app(settings), host=host, port=port, log_level="warning", access_log=False,
                timeout_keep_alive=30, backlog=4096, lifespan="on")


class BackgroundServer:
    """`with BackgroundServer(settings) as srv:` -> the api on srv.base_url until the block ends."""

    def __init__(self, settings: Settings, host: str = "127.0.0.1", port: int = 0) -> None:
        from api.app import create_app

        refuse_default_secrets(settings, host, "api")
        self.settings = settings
        self.host = host
        self.port = port or free_port(host)
        self.app = create_app(settings)
        self.server = uvicorn.Server(uvicorn.Config(self.app, host=host, port=self.port, log_level="warning",
                                                    access_log=False, lifespan="on", backlog=4096))
        self.server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self.thread = threading.Thread(target=self.server.run, name="api-server", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ctx(self) -> Context:
        ctx: Context = self.app.state.ctx
        return ctx

    def start(self, ready_timeout: float = 30.0) -> BackgroundServer:
        self.thread.start()
        end = time.monotonic() + ready_timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > end:
                raise RuntimeError("api server did not start")
            time.sleep(0.02)
        if not self.ctx.registry.wait_caught_up(max(1.0, end - time.monotonic())):
            raise RuntimeError("registry view did not catch up")
        self.ctx.follower.caught_up.wait(max(1.0, end - time.monotonic()))
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
