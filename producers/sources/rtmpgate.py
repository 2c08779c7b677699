"""Stream-key gate in front of PyAV's RTMP listener.

FFmpeg's RTMP listener (`listen=1`) accepts any stream name, so the key in the pusher's URL is
never checked. The gate owns the public port, relays bytes to the listener on a private loopback
port, and reads the client's RTMP chunk stream as it goes: the `connect` app and the stream name
of `releaseStream` / `FCPublish` / `publish` are checked before those messages are forwarded; a
wrong key closes the connection, so not one media byte reaches the demuxer. After the check the
connection is a plain byte relay. The chunk reader (`RtmpCommandReader`) is pure and unit-tested.
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from schemas.errors import FloodlightError

log = logging.getLogger("producers.sources.rtmpgate")

HANDSHAKE_C0C1 = 1 + 1536
HANDSHAKE_C2 = 1536
KEY_COMMANDS = ("releaseStream", "FCPublish", "publish")


class RtmpRefused(FloodlightError, ConnectionError):
    pass


# --- AMF0 (just what commands use) -------------------------------------------------------------
def amf0_values(buf: bytes) -> list[Any]:
    out, i = [], 0
    while i < len(buf):
        v, i = _amf0(buf, i)
        out.append(v)
    return out


def _amf0(b: bytes, i: int) -> tuple[Any, int]:
    t = b[i]
    i += 1
    if t == 0x00:
        return struct.unpack(">d", b[i: i + 8])[0], i + 8
    if t == 0x01:
        return bool(b[i]), i + 1
    if t == 0x02:
        n = struct.unpack(">H", b[i: i + 2])[0]
        return b[i + 2: i + 2 + n].decode("utf-8", "replace"), i + 2 + n
    if t in (0x05, 0x06):
        return None, i
    if t in (0x03, 0x08):
        if t == 0x08:
            i += 4
        obj: dict[str, Any] = {}
        while i + 3 <= len(b):
            n = struct.unpack(">H", b[i: i + 2])[0]
            if n == 0 and b[i + 2] == 0x09:
                return obj, i + 3
            key = b[i + 2: i + 2 + n].decode("utf-8", "replace")
            obj[key], i = _amf0(b, i + 2 + n)
        raise ValueError("unterminated AMF0 object")
    if t == 0x0A:
        n = struct.unpack(">I", b[i: i + 4])[0]
        i += 4
        arr = []
        for _ in range(n):
            v, i = _amf0(b, i)
            arr.append(v)
        return arr, i
    if t == 0x0C:
        n = struct.unpack(">I", b[i: i + 4])[0]
        return b[i + 4: i + 4 + n].decode("utf-8", "replace"), i + 4 + n
    raise ValueError(f"unsupported AMF0 type 0x{t:02x}")


# --- chunk stream reader ----------------------------------------------------------------------
@dataclass
class _Csid:
    ts: int = 0
    length: int = 0
    type_id: int = 0
    extended: bool = False
    payload: bytearray = field(default_factory=bytearray)


class RtmpCommandReader:
    """Incremental reader of the client->server byte stream: handshake, then chunks.

    `feed(data)` returns a list of (end_offset, command_values) for complete command messages,
    end_offset counting bytes since the start of the connection, so a relay can hold a command
    back until it has been checked.
    """

    def __init__(self) -> None:
        self.buf = bytearray()
        self.consumed = 0  # bytes of the connection fully parsed
        self.stage = 0  # 0: C0C1, 1: C2, 2: chunks
        self.chunk_size = 128
        self.streams: dict[int, _Csid] = {}

    def feed(self, data: bytes) -> list[tuple[int, list[Any]]]:
        self.buf += data
        out: list[tuple[int, list[Any]]] = []
        while True:
            if self.stage == 0:
                if len(self.buf) < HANDSHAKE_C0C1:
                    return out
                if self.buf[0] not in (3, 6):
                    raise RtmpRefused(f"not an RTMP handshake (version byte {self.buf[0]})")
                self._take(HANDSHAKE_C0C1)
                self.stage = 1
            elif self.stage == 1:
                if len(self.buf) < HANDSHAKE_C2:
                    return out
                self._take(HANDSHAKE_C2)
                self.stage = 2
            else:
                msg = self._chunk()
                if msg is None:
                    return out
                if msg is not True:
                    out.append((self.consumed, msg))

    def _take(self, n: int) -> bytes:
        b = bytes(self.buf[:n])
        del self.buf[:n]
        self.consumed += n
        return b

    def _chunk(self) -> list[Any] | bool | None:
        b = self.buf
        if not b:
            return None
        fmt, csid, i = b[0] >> 6, b[0] & 0x3F, 1
        if csid == 0:
            if len(b) < 2:
                return None
            csid, i = 64 + b[1], 2
        elif csid == 1:
            if len(b) < 3:
                return None
            csid, i = 64 + b[1] + b[2] * 256, 3
        st = self.streams.setdefault(csid, _Csid())
        hdr = (11, 7, 3, 0)[fmt]
        if len(b) < i + hdr:
            return None
        h = b[i: i + hdr]
        i += hdr
        ts_field = int.from_bytes(h[0:3], "big") if fmt < 3 else 0
        ext = (ts_field == 0xFFFFFF) if fmt < 3 else st.extended
        if ext:
            if len(b) < i + 4:
                return None
            i += 4
        length, type_id = st.length, st.type_id
        if fmt <= 1:
            length, type_id = int.from_bytes(h[3:6], "big"), h[6]
        have = len(st.payload) if fmt == 3 else 0
        take = min(self.chunk_size, length - have)
        if take < 0 or length > 16 * 1024 * 1024:
            raise RtmpRefused("bad RTMP chunk header")
        if len(b) < i + take:
            return None
        # header complete and payload present: commit the state
        if fmt <= 1:
            st.length, st.type_id = length, type_id
        if fmt < 3:
            st.extended = ext
            st.payload = bytearray()
        st.payload += b[i: i + take]
        self._take(i + take)
        if len(st.payload) < st.length:
            return True
        payload, st.payload = bytes(st.payload), bytearray()
        if st.type_id == 1 and len(payload) >= 4:
            self.chunk_size = max(1, int.from_bytes(payload[:4], "big") & 0x7FFFFFFF)
        if st.type_id in (20, 17):
            data = payload[1:] if st.type_id == 17 else payload
            try:
                return amf0_values(data)
            except (ValueError, IndexError, struct.error):
                raise RtmpRefused("malformed RTMP command") from None
        return True


# --- the relay -------------------------------------------------------------------------------
Verify = Callable[[str, str], bool]  # (app, stream name without query) -> allowed


class RtmpGate:
    """Accepts pushers on (host, port), checks the key, relays to 127.0.0.1:backend_port."""

    def __init__(self, host: str, port: int, backend_port: int, app: str, verify: Verify,
                 on_refused: Callable[[str], None] | None = None) -> None:
        self.host, self.port, self.backend_port, self.app = host, port, backend_port, app
        self.verify = verify
        self.on_refused = on_refused or (lambda reason: None)
        self._sock: socket.socket | None = None
        self._stop = threading.Event()
        self.refused = 0
        self.accepted = 0

    def start(self) -> RtmpGate:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.host, self.port))
        s.listen(8)
        s.settimeout(0.5)
        self._sock = s
        self.port = s.getsockname()[1]
        threading.Thread(target=self._accept_loop, name="rtmp-gate", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._sock is not None:
            self._sock.close()

    def _accept_loop(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                client, addr = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client, addr), name="rtmp-gate-conn", daemon=True).start()

    def _connect_backend(self, deadline_s: float = 10.0) -> socket.socket:
        end = time.monotonic() + deadline_s
        while True:
            try:
                return socket.create_connection(("127.0.0.1", self.backend_port), timeout=2)
            except OSError:
                if time.monotonic() > end or self._stop.is_set():
                    raise
                time.sleep(0.05)  # the listener re-opens between sessions

    def _serve(self, client: socket.socket, addr: Any) -> None:
        reader = RtmpCommandReader()
        backend: socket.socket | None = None
        app = ""
        try:
            client.settimeout(10)
            backend = self._connect_backend()
            backend.settimeout(None)  # the pumps block; a quiet direction is normal
            back_thread = threading.Thread(target=_pump, args=(backend, client), daemon=True)
            back_thread.start()
            checked = False
            while not checked:
                data = client.recv(65536)
                if not data:
                    return
                messages = reader.feed(data)
                pending = bytes(data)  # a key command only completes in the recv that is checked here
                for _end, values in messages:
                    name = values[0] if values and isinstance(values[0], str) else ""
                    if name == "connect" and len(values) > 2 and isinstance(values[2], dict):
                        app = str(values[2].get("app", "")).strip("/")
                    if name in KEY_COMMANDS:
                        key = next((v for v in values[3:] if isinstance(v, str)), "")
                        key = key.split("?", 1)[0]
                        if app.split("?", 1)[0] != self.app or not self.verify(app, key):
                            self.refused += 1
                            reason = f"stream key refused (app {app!r}) from {addr[0]}"
                            log.warning("rtmp push refused: wrong stream key", extra={"peer": addr[0], "app": app})
                            self.on_refused(reason)
                            return  # the command (and anything after it) is never forwarded
                        checked = True
                        break
                # forward everything received so far (the key command included, once checked)
                backend.sendall(pending)
            self.accepted += 1
            log.info("rtmp pusher accepted", extra={"peer": addr[0], "app": app})
            client.settimeout(None)
            _pump(client, backend)
        except (OSError, RtmpRefused) as exc:
            log.info("rtmp connection ended", extra={"peer": addr[0], "reason": str(exc)})
        finally:
            for s in (client, backend):
                if s is not None:
                    # shutdown first: a bare close() does not reach the peer while the other pump
                    # thread is still blocked in recv() on this socket, and FFmpeg would wait forever
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    try:
                        s.close()
                    except OSError:
                        pass


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
