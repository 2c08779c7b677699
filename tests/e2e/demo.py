"""`floodlight demo` as the e2e tests run it: a child process on private ports and topics, waited on until its
playlists list segments, stopped like Ctrl-C, its topics and files removed afterwards."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from floodlight.settings import Settings
from floodlight.topics import delete_prefixed_topics
from ops.demo import port_free, settings_env
from tests.e2e.static_origin import free_port
from tests.support import wait_until

DEMO_ARGS = ["--source", "testsrc:640x360@30", "--ladder", "small", "--encoders", "2", "--latency", "low"]


def start_demo(base: Settings, out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, **settings_env(base), "COLUMNS": "200"}
    return subprocess.Popen([sys.executable, "-m", "ops.cli", "demo", *DEMO_ARGS, *extra], env=env,
                            stdout=out.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen, timeout: float = 40) -> int:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C sends to the foreground group
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    return proc.returncode


def two_free_ports() -> int:
    """A free port p with p + 1 free too (demos that number their api processes or edges from one port)."""
    for _ in range(50):
        p = free_port()
        if p < 65000 and port_free(p + 1):
            return p
    raise RuntimeError("no two consecutive free ports")


@dataclass
class Demo:
    base: Settings  # what the demo was started with (ports, topic prefix, stack dir)
    proc: subprocess.Popen
    out: Path
    tmp: Path

    def wait_listed(self, playlists: list[str], what: str, *, parts: bool = False) -> None:
        """Until every playlist URL lists 3 segments (and parts, with `parts`); fails at once if the demo exits."""
        def listed() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"demo exited rc={self.proc.returncode}: {self.out.read_text()[-3000:]}")
            try:
                texts = [httpx.get(url, timeout=2).text for url in playlists]
            except httpx.HTTPError:
                return False
            return all(t.count(".m4s\n") >= 3 and (not parts or "#EXT-X-PART:" in t) for t in texts)

        wait_until(listed, 90, interval=0.5, what=what)


@contextmanager
def running_demo(broker: Settings, label: str, *extra: str, **settings: Any) -> Iterator[Demo]:
    """A demo on free ports and fresh topics (`settings` override the base); stopped and cleaned up on exit."""
    tmp = Path(tempfile.mkdtemp(prefix=f"fl-e2e-{label}-"))
    base = broker.model_copy(update={
        "topic_prefix": f"t{uuid.uuid4().hex[:8]}.", "topic_partitions": 3, "stack_dir": tmp / "stack",
        "api_port": free_port(), "edge_port": free_port(), "qoe_port": free_port(), "log_format": "json",
        **settings,
    })
    out = tmp / "demo.out"
    demo = Demo(base, start_demo(base, out, *extra), out, tmp)
    try:
        yield demo
    finally:
        stop(demo.proc)
        shutil.rmtree(tmp, ignore_errors=True)
        delete_prefixed_topics(base)
