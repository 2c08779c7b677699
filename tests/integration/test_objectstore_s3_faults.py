"""S3 failures, injected for real: a small HTTP proxy between boto3 and moto's server answers chosen
requests with a 5xx / 429 / 403 or cuts the connection, and forwards everything else untouched.

A transient failure (connection cut, 5xx, throttling) is retried with backoff, a bounded number of
times; what still fails, and anything permanent, is a StoreError (a FloodlightError), never a raw
botocore error. The packager sliding its DVR window over such a store keeps going.
"""

from __future__ import annotations

import copy
import http.client
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

import boto3
import m3u8
import pytest

from floodlight.objectstore import S3Store, StoreError
from schemas.errors import FloodlightError
from sinks.packager.core import StreamPackager
from sinks.packager.state import StreamConfig
from tests.integration.test_packager_s3 import aws_env, s3_endpoint  # noqa: F401 - fixtures
from tests.support import sample_records

HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection", "expect"}
ERRORS = {500: "InternalError", 503: "ServiceUnavailable", 429: "SlowDown", 403: "AccessDenied"}


def op_of(method: str, query: str) -> str:
    """The S3 operation a request is: put, get, head, delete or list."""
    if method == "GET":
        return "list" if "list-type=2" in query else "get"
    return {"PUT": "put", "HEAD": "head", "DELETE": "delete"}.get(method, method.lower())


@dataclass
class Fault:
    op: str
    action: int | str  # an HTTP status, or "reset" (close the connection without an answer)
    times: int


@dataclass
class FaultPlan:
    faults: list[Fault] = field(default_factory=list)
    seen: list[tuple[str, str]] = field(default_factory=list)  # (op, outcome) of every request
    lock: threading.Lock = field(default_factory=threading.Lock)

    def inject(self, op: str, action: int | str, times: int = 1) -> None:
        with self.lock:
            self.faults.append(Fault(op, action, times))

    def clear(self) -> None:
        with self.lock:
            self.faults.clear()
            self.seen.clear()

    def take(self, op: str) -> int | str | None:
        with self.lock:
            for f in self.faults:
                if f.op == op and f.times > 0:
                    f.times -= 1
                    self.seen.append((op, str(f.action)))
                    return f.action
            self.seen.append((op, "forwarded"))
            return None

    def count(self, op: str, outcome: str | None = None) -> int:
        with self.lock:
            return sum(1 for o, out in self.seen if o == op and (outcome is None or out == outcome))


def faulting_proxy(upstream: str, plan: FaultPlan) -> ThreadingHTTPServer:
    up = urlparse(upstream)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive like a real endpoint; answers Expect: 100-continue

        def log_message(self, *args: object) -> None:
            pass

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                out = b""
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return out
                    out += self.rfile.read(size)
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _handle(self) -> None:
            body = self._body()
            path, _, query = self.path.partition("?")
            action = plan.take(op_of(self.command, query))
            if action == "reset":
                # RST instead of an answer: the client sees its connection cut mid-request
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                self.connection.close()
                return
            if isinstance(action, int):
                err = (f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{ERRORS.get(action, 'Injected')}</Code>"
                       f"<Message>injected by the test proxy</Message></Error>").encode()
                self.send_response(action)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(err)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(err)
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
            headers["Content-Length"] = str(len(body))
            conn = http.client.HTTPConnection(up.hostname, up.port, timeout=30)
            try:
                conn.request(self.command, self.path, body=body, headers=headers)
                res = conn.getresponse()
                data = res.read()
            finally:
                conn.close()
            self.send_response(res.status)
            for k, v in res.getheaders():
                if k.lower() not in HOP and k.lower() != "content-length":
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_PUT = do_DELETE = do_HEAD = do_POST = _handle

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True, name="s3-fault-proxy").start()
    return server


@pytest.fixture
def proxied(s3_endpoint: str, aws_env: None) -> Iterator[tuple[S3Store, FaultPlan, str]]:  # noqa: F811
    plan = FaultPlan()
    server = faulting_proxy(s3_endpoint, plan)
    try:
        store = S3Store("faults", "origin", f"http://127.0.0.1:{server.server_address[1]}", backoff_s=0.02)
        store.ensure_bucket()
        plan.clear()
        yield store, plan, s3_endpoint
    finally:
        server.shutdown()
        server.server_close()


def keys_in_moto(endpoint: str, prefix: str) -> set[str]:
    s3 = boto3.client("s3", endpoint_url=endpoint)
    return {o["Key"] for o in s3.list_objects_v2(Bucket="faults", Prefix=prefix).get("Contents", [])}


def test_transient_errors_on_delete_and_list_are_retried(proxied) -> None:
    store, plan, moto = proxied
    for i in range(3):
        store.put(f"live/t/a/{i}.m4s", b"x")
    plan.inject("delete", 503, times=2)
    plan.inject("delete", "reset", times=1)
    store.delete("live/t/a/0.m4s")
    assert plan.count("delete") == 4 and plan.count("delete", "forwarded") == 1
    assert keys_in_moto(moto, "origin/live/t/") == {"origin/live/t/a/1.m4s", "origin/live/t/a/2.m4s"}

    plan.inject("list", "reset", times=1)
    plan.inject("list", 500, times=1)
    plan.inject("list", 429, times=1)
    assert sorted(store.list("live/t/")) == ["live/t/a/1.m4s", "live/t/a/2.m4s"]
    assert plan.count("list") == 4

    plan.inject("put", 503, times=1)
    plan.inject("get", "reset", times=1)
    store.put("live/t/a/3.m4s", b"three")
    assert store.get("live/t/a/3.m4s").data == b"three"
    plan.inject("head", 500, times=1)
    assert store.exists("live/t/a/3.m4s") and not store.exists("live/t/a/9.m4s")


def test_a_lasting_outage_is_a_store_error_after_bounded_attempts(proxied) -> None:
    store, plan, _ = proxied
    store.put("live/t/b/0.m4s", b"x")
    for op, call in (("delete", lambda: store.delete("live/t/b/0.m4s")),
                     ("list", lambda: list(store.list("live/t/"))),
                     ("head", lambda: store.exists("live/t/b/0.m4s"))):
        plan.clear()
        plan.inject(op, 503, times=1000)
        t0 = time.monotonic()
        with pytest.raises(StoreError) as info:
            call()
        assert isinstance(info.value, FloodlightError) and info.value.transient
        assert plan.count(op) == store.attempts, plan.seen  # bounded: exactly `attempts` tries
        assert time.monotonic() - t0 < 5
    plan.clear()
    assert list(store.list("live/t/b/")) == ["live/t/b/0.m4s"]  # the outage is over: it works again


def test_a_permanent_error_is_not_retried(proxied) -> None:
    store, plan, _ = proxied
    plan.inject("delete", 403, times=1000)
    with pytest.raises(StoreError) as info:
        store.delete("live/t/c/0.m4s")
    assert not info.value.transient and "AccessDenied" in str(info.value)
    assert plan.count("delete") == 1


def seg(g: int) -> dict:
    r = copy.deepcopy(sample_records()["RenditionSegment"])
    r.update(stream_id="flaky", gop_index=500 + g, pts=(500 + g) * 90000, duration=90000,
             capture_wallclock_ms=1_795_000_000_000 + g * 1000, data=bytes([g]) * 64,
             parts=[{"duration": 0.5, "offset": 0, "length": 32, "independent": True},
                    {"duration": 0.5, "offset": 32, "length": 32, "independent": False}])
    return r


def test_packager_slides_its_dvr_window_through_s3_errors(proxied) -> None:
    """Before StoreError wrapped delete/list, the first 503 while the window slid was a raw ClientError
    out of flush(), which took the packager down."""
    store, plan, moto = proxied
    p = StreamPackager.open(store, "flaky", config=StreamConfig(dvr_window_s=5, live_window_s=5))
    for g in range(8):
        p.add(seg(g), now=0)
        p.flush(1_795_000_100_000)
    # transient trouble on every kind of request while segments leave the window
    for op in ("delete", "list", "put", "get"):
        plan.inject(op, 503, times=2)
        plan.inject(op, "reset", times=1)
    for g in range(8, 12):
        p.add(seg(g), now=0)
        p.flush(1_795_000_100_000)
    assert plan.count("delete", "503") == 2 and plan.count("delete", "reset") == 1

    # a lasting delete outage: flush fails with StoreError (the worker retries it), not a botocore error
    plan.inject("delete", 503, times=1000)
    p.add(seg(12), now=0)
    with pytest.raises(StoreError):
        p.flush(1_795_000_100_000)
    plan.clear()  # S3 is back: the next flush deletes what the failed one could not
    p.add(seg(13), now=0)
    p.flush(1_795_000_100_000)
    p.refresh_dvr()
    keys = keys_in_moto(moto, "origin/live/flaky/720p/")
    assert {f"origin/live/flaky/720p/{m}.m4s" for m in range(13 - 4, 14)} <= keys
    assert not {k for k in keys if k.endswith(".m4s") and int(k.rsplit("/", 1)[1].split(".")[0]) < 8}, keys
    dvr = m3u8.loads(store.get("live/flaky/720p/dvr.m3u8").data.decode())
    assert dvr.media_sequence >= 8 and dvr.segments[-1].uri == "13.m4s"
