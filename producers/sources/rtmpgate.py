"""Stream-key gate in front of PyAV's RTMP listener: nothing reaches FFmpeg before a valid `publish`.

FFmpeg's RTMP listener (`listen=1`) accepts any stream name, and it takes media without any
publish command at all (its open returns on the first audio/video message). So the gate owns the
public port and speaks RTMP itself until the pusher has authenticated:

1. it answers the handshake and the commands a publisher sends before `publish` (`connect`,
   `releaseStream`, `FCPublish`, `createStream`, `_checkbw`) the way FFmpeg's listener would;
   a wrong app or a wrong key in `releaseStream`/`FCPublish` ends the connection at once;
2. any other message type before an accepted `publish` — audio (8), video (9), data (18), AMF3
   data, shared objects, aggregates — or any other command ends the connection: the chunk
   header names the type, so not even the first chunk of a media message is kept;
3. before authentication a connection may send at most `PRE_AUTH_MAX_BYTES` (handshake included)
   within `auth_timeout` seconds; that small record is all the gate holds for it;
4. only on a `publish` whose key verifies does the gate dial the private listener, do the
   handshake with it, replay the recorded commands, drop FFmpeg's replies to the commands it
   already answered (everything before the `onStatus` of the publish) and then relay both ways
   (server->client messages are re-chunked, so the client's view of the chunk stream stays whole).

So an unauthenticated connection never touches the private listener: it cannot feed it a byte or
hold it busy. Connections are capped (`max_connections` in all, `max_pre_auth_per_peer` not yet
authenticated from one address); one over the cap is closed as soon as it is accepted, with no
thread and no read. The pure parts (`ChunkReader`, `ChunkWriter`, `PreAuth`) are unit-tested.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from schemas.errors import FloodlightError

log = logging.getLogger("producers.sources.rtmpgate")

HANDSHAKE_SIZE = 1536
HANDSHAKE_C0C1 = 1 + HANDSHAKE_SIZE
HANDSHAKE_C2 = HANDSHAKE_SIZE
KEY_COMMANDS = ("releaseStream", "FCPublish", "publish")
PRE_AUTH_TYPES = frozenset({1, 2, 3, 4, 5, 6, 17, 20})  # protocol + user control, AMF0/AMF3 commands
PRE_AUTH_COMMANDS = frozenset({"connect", "releaseStream", "FCPublish", "createStream", "_checkbw", "publish"})
PRE_AUTH_MAX_BYTES = 64 * 1024  # handshake (3,073 bytes) + commands; a real publisher sends ~4 KiB
PRE_AUTH_MAX_COMMANDS = 16
OUT_CHUNK_SIZE = 128  # the gate never changes its outgoing chunk size
SERVER_BW = 2_500_000  # window ack size / peer bandwidth, as FFmpeg's listener announces them


class RtmpRefused(FloodlightError, ConnectionError):
    """The gate ends this connection; `kind` is the metric label (wrong_key, media_before_publish...)."""

    def __init__(self, reason: str, kind: str = "refused") -> None:
        super().__init__(reason)
        self.kind = kind


# --- AMF0 (what commands use) -----------------------------------------------------------------
def amf0_values(buf: bytes) -> list[Any]:
    out, i = [], 0
    while i < len(buf):
        v, i = _amf0(buf, i, 0)
        out.append(v)
    return out


def _amf0(b: bytes, i: int, depth: int) -> tuple[Any, int]:
    if depth > 16:
        raise ValueError("AMF0 nested too deeply")
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
            obj[key], i = _amf0(b, i + 2 + n, depth + 1)
        raise ValueError("unterminated AMF0 object")
    if t == 0x0A:
        n = struct.unpack(">I", b[i: i + 4])[0]
        i += 4
        if n > len(b):
            raise ValueError("AMF0 array longer than its message")
        arr = []
        for _ in range(n):
            v, i = _amf0(b, i, depth + 1)
            arr.append(v)
        return arr, i
    if t == 0x0C:
        n = struct.unpack(">I", b[i: i + 4])[0]
        return b[i + 4: i + 4 + n].decode("utf-8", "replace"), i + 4 + n
    raise ValueError(f"unsupported AMF0 type 0x{t:02x}")


def amf0(*values: Any) -> bytes:
    """Encode numbers, strings, booleans, None (null) and dicts (objects) as AMF0."""
    out = bytearray()
    for v in values:
        if v is None:
            out += b"\x05"
        elif isinstance(v, bool):
            out += b"\x01" + (b"\x01" if v else b"\x00")
        elif isinstance(v, int | float):
            out += b"\x00" + struct.pack(">d", float(v))
        elif isinstance(v, str):
            raw = v.encode()
            out += b"\x02" + struct.pack(">H", len(raw)) + raw
        elif isinstance(v, dict):
            out += b"\x03"
            for k, item in v.items():
                raw = k.encode()
                out += struct.pack(">H", len(raw)) + raw + amf0(item)
            out += b"\x00\x00\x09"
        else:
            raise TypeError(f"cannot encode {type(v).__name__} as AMF0")
    return bytes(out)


# --- chunk streams ------------------------------------------------------------------------------
@dataclass
class Message:
    csid: int
    type_id: int
    msid: int
    ts: int
    payload: bytes

    def command(self) -> list[Any] | None:
        """The AMF values of a command message (type 20, or 17 = AMF3 envelope of AMF0), else None."""
        if self.type_id not in (17, 20):
            return None
        data = self.payload[1:] if self.type_id == 17 else self.payload
        try:
            return amf0_values(data)
        except (ValueError, IndexError, struct.error):
            raise RtmpRefused("malformed RTMP command", "malformed") from None


@dataclass
class _Csid:
    ts: int = 0
    delta: int = 0
    length: int = 0
    type_id: int = 0
    msid: int = 0
    extended: bool = False
    payload: bytearray = field(default_factory=bytearray)


class ChunkReader:
    """Incremental RTMP chunk-stream parser (after the handshake): bytes in, whole messages out.

    `allowed` (message type ids) is checked as soon as a chunk header names its message's type, so
    a refused message is rejected before any of its payload is kept. `max_message` bounds each
    message. Set Chunk Size (1) and Abort (2) are applied here and also returned.
    """

    def __init__(self, max_message: int = 16 * 1024 * 1024, allowed: frozenset[int] | None = None) -> None:
        self.buf = bytearray()
        self.chunk_size = 128
        self.max_message = max_message
        self.allowed = allowed
        self.streams: dict[int, _Csid] = {}
        self.consumed = 0  # bytes fully parsed

    def feed(self, data: bytes) -> None:
        self.buf += data

    def next(self) -> Message | None:
        """The next complete message, or None when more bytes are needed."""
        while True:
            got = self._chunk()
            if got is None:
                return None
            if got is not True:
                return got

    def _chunk(self) -> Message | bool | None:
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
        st = self.streams.get(csid) or _Csid()
        hdr = (11, 7, 3, 0)[fmt]
        if len(b) < i + hdr:
            return None
        h = b[i: i + hdr]
        i += hdr
        ts_field = int.from_bytes(h[0:3], "big") if fmt < 3 else 0
        ext = (ts_field == 0xFFFFFF) if fmt < 3 else st.extended
        length, type_id, msid = st.length, st.type_id, st.msid
        if fmt <= 1:
            length, type_id = int.from_bytes(h[3:6], "big"), h[6]
        if fmt == 0:
            msid = int.from_bytes(h[7:11], "little")
        if fmt > 0 and csid not in self.streams:
            raise RtmpRefused("RTMP chunk continues a message that never started", "malformed")
        if self.allowed is not None and type_id not in self.allowed:
            kind = "media_before_publish" if type_id in (8, 9, 15, 18, 22) else "unexpected_message"
            raise RtmpRefused(f"RTMP message type {type_id} before an accepted publish", kind)
        if length > self.max_message:
            raise RtmpRefused(f"RTMP message of {length} bytes over the {self.max_message}-byte limit", "too_big")
        tsv = 0
        if ext:
            if len(b) < i + 4:
                return None
            tsv = int.from_bytes(b[i: i + 4], "big")
            i += 4
        have = len(st.payload) if fmt == 3 else 0
        take = min(self.chunk_size, length - have)
        if take < 0:
            raise RtmpRefused("bad RTMP chunk header", "malformed")
        if len(b) < i + take:
            return None
        # header complete and payload present: commit the state
        self.streams[csid] = st
        stamp = tsv if ext else ts_field
        if fmt == 0:
            st.ts, st.delta = stamp, 0
        elif fmt in (1, 2):
            st.delta = stamp
            st.ts += stamp
        elif not st.payload:  # fmt 3 starting a new message: the previous delta again
            st.ts += st.delta
        if fmt <= 1:
            st.length, st.type_id = length, type_id
        st.msid = msid
        if fmt < 3:
            st.extended = ext
            st.payload = bytearray()
        st.payload += b[i: i + take]
        del self.buf[: i + take]
        self.consumed += i + take
        if len(st.payload) < st.length:
            return True
        msg = Message(csid, st.type_id, st.msid, st.ts & 0xFFFFFFFF, bytes(st.payload))
        st.payload = bytearray()
        if msg.type_id == 1 and len(msg.payload) >= 4:
            self.chunk_size = max(1, int.from_bytes(msg.payload[:4], "big") & 0x7FFFFFFF)
        elif msg.type_id == 2 and len(msg.payload) >= 4:
            aborted = self.streams.get(int.from_bytes(msg.payload[:4], "big"))
            if aborted is not None:
                aborted.payload = bytearray()
        return msg


class ChunkWriter:
    """Serialises messages as full-header (fmt 0) chunks plus fmt 3 continuations."""

    def __init__(self, chunk_size: int = OUT_CHUNK_SIZE) -> None:
        self.chunk_size = chunk_size

    def write(self, csid: int, type_id: int, payload: bytes, msid: int = 0, ts: int = 0) -> bytes:
        ts = ts if 0 <= ts < 0xFFFFFF else 0
        if csid < 64:
            basic = bytes([csid])
        elif csid < 320:
            basic = bytes([0, csid - 64])
        else:
            basic = bytes([1, (csid - 64) & 0xFF, (csid - 64) >> 8])
        out = bytearray(basic)
        out += ts.to_bytes(3, "big") + len(payload).to_bytes(3, "big") + bytes([type_id]) + msid.to_bytes(4, "little")
        out += payload[: self.chunk_size]
        for at in range(self.chunk_size, len(payload), self.chunk_size):
            cont = bytearray(basic)
            cont[0] |= 0xC0
            out += cont + payload[at: at + self.chunk_size]
        return bytes(out)


# --- the pre-authentication side of the server (pure) -------------------------------------------
Verify = Callable[[str, str], bool]  # (app, stream name without query) -> allowed


def stream_key(values: list[Any]) -> str:
    """The stream name of releaseStream / FCPublish / publish, without its ?query."""
    key = next((v for v in values[3:] if isinstance(v, str)), "") if len(values) > 3 else ""
    return key.split("?", 1)[0]


class PreAuth:
    """The gate's own RTMP server until a `publish` with a valid key: `feed` client bytes, send back
    what it returns. Raises RtmpRefused on anything a publisher does not send before publishing.
    Once `authorized`, `replay` holds the client's bytes after the handshake (commands, and whatever
    followed the publish in the same reads), to be replayed to the real listener."""

    def __init__(self, app: str, verify: Verify, max_bytes: int = PRE_AUTH_MAX_BYTES) -> None:
        self.app, self.verify, self.max_bytes = app, verify, max_bytes
        self.stage = 0  # 0: C0C1, 1: C2, 2: chunks
        self.hs = bytearray()
        self.received = 0
        self.reader = ChunkReader(max_message=max_bytes, allowed=PRE_AUTH_TYPES)
        self.recorded = bytearray()
        self.writer = ChunkWriter()
        self.connected_app: str | None = None
        self.commands = 0
        self.authorized = False
        self.key_ok: str | None = None  # the key already verified on this connection
        self.publish_name = ""

    @property
    def replay(self) -> bytes:
        return bytes(self.recorded)

    def feed(self, data: bytes) -> bytes:
        if self.authorized:
            raise RuntimeError("already authorized: relay the bytes instead")
        self.received += len(data)
        if self.received > self.max_bytes:
            raise RtmpRefused(f"over {self.max_bytes} bytes before an accepted publish", "too_big")
        out = bytearray()
        if self.stage < 2:
            self.hs += data
            data = b""
            if self.stage == 0 and len(self.hs) >= HANDSHAKE_C0C1:
                if self.hs[0] != 3:
                    raise RtmpRefused(f"not an RTMP handshake (version byte {self.hs[0]})", "not_rtmp")
                c1 = bytes(self.hs[1:HANDSHAKE_C0C1])
                s1 = c1[:4] + b"\x00\x00\x00\x00" + os.urandom(HANDSHAKE_SIZE - 8)
                out += b"\x03" + s1 + c1  # S0, S1, S2 (= C1)
                del self.hs[:HANDSHAKE_C0C1]
                self.stage = 1
            if self.stage == 1 and len(self.hs) >= HANDSHAKE_C2:
                data = bytes(self.hs[HANDSHAKE_C2:])
                self.hs = bytearray()
                self.stage = 2
            if self.stage < 2:
                return bytes(out)
        self.recorded += data
        self.reader.feed(data)
        while not self.authorized:
            msg = self.reader.next()
            if msg is None:
                break
            values = msg.command()
            if values is not None:
                out += self._command(msg, values)
        return bytes(out)

    def _command(self, msg: Message, values: list[Any]) -> bytes:
        name = values[0] if values and isinstance(values[0], str) else ""
        txn = values[1] if len(values) > 1 and isinstance(values[1], float) else 0.0
        self.commands += 1
        if self.commands > PRE_AUTH_MAX_COMMANDS:
            raise RtmpRefused("too many commands before publish", "unexpected_message")
        if name not in PRE_AUTH_COMMANDS:
            raise RtmpRefused(f"command {name[:40]!r} before an accepted publish", "unexpected_message")
        if name == "connect":
            if self.connected_app is not None:
                raise RtmpRefused("second connect", "unexpected_message")
            obj = values[2] if len(values) > 2 and isinstance(values[2], dict) else {}
            app = str(obj.get("app", "")).strip("/").split("?", 1)[0]
            if app != self.app:
                raise RtmpRefused(f"unknown RTMP app {app[:64]!r}", "wrong_app")
            self.connected_app = app
            return self._connect_reply(txn)
        if self.connected_app is None:
            raise RtmpRefused(f"{name} before connect", "unexpected_message")
        if name in KEY_COMMANDS:
            key = stream_key(values)
            if key != self.key_ok:
                if not key or not self.verify(self.connected_app, key):
                    raise RtmpRefused(f"stream key refused (app {self.connected_app!r})", "wrong_key")
                self.key_ok = key
        w = self.writer
        if name == "publish":
            self.authorized = True
            self.publish_name = self.key_ok or ""
            return b""
        if name == "FCPublish":
            return w.write(3, 20, amf0("onFCPublish"))
        if name == "createStream":
            return w.write(3, 20, amf0("_result", txn, None, 1.0))
        return w.write(3, 20, amf0("_result", txn, None))  # releaseStream, _checkbw

    def _connect_reply(self, txn: float) -> bytes:
        w = self.writer
        return b"".join([
            w.write(2, 5, SERVER_BW.to_bytes(4, "big")),  # window acknowledgement size
            w.write(2, 6, SERVER_BW.to_bytes(4, "big") + b"\x02"),  # set peer bandwidth (dynamic)
            w.write(2, 4, b"\x00\x00" + b"\x00" * 4),  # user control: stream begin 0
            w.write(3, 20, amf0("_result", txn, {"fmsVer": "FMS/3,0,1,123", "capabilities": 31.0},
                                {"level": "status", "code": "NetConnection.Connect.Success",
                                 "description": "Connection succeeded.", "objectEncoding": 0.0})),
            w.write(3, 20, amf0("onBWDone", 0.0, None, 8192.0)),
        ])


# --- the gate ------------------------------------------------------------------------------------
class RtmpGate:
    """Accepts pushers on (host, port), authenticates them itself, relays to 127.0.0.1:backend_port."""

    def __init__(self, host: str, port: int, backend_port: int, app: str, verify: Verify,
                 on_refused: Callable[[str, str], None] | None = None, *, max_connections: int = 8,
                 max_pre_auth_per_peer: int | None = None, auth_timeout: float = 10.0,
                 backend_timeout: float = 10.0) -> None:
        self.host, self.port, self.backend_port, self.app = host, port, backend_port, app
        self.verify = verify
        self.on_refused = on_refused or (lambda kind, reason: None)
        self.max_connections = max(1, max_connections)
        self.max_pre_auth_per_peer = max_pre_auth_per_peer or max(1, self.max_connections // 2)
        self.auth_timeout, self.backend_timeout = auth_timeout, backend_timeout
        self._sock: socket.socket | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._active = 0
        self._pre_auth: dict[str, int] = {}
        self.refused = 0  # failed authentication (wrong key, media before publish, bad protocol, timeout)
        self.over_capacity = 0  # closed on accept: over the connection caps
        self.accepted = 0  # authenticated and relayed

    @property
    def active(self) -> int:
        with self._lock:
            return self._active

    def start(self) -> RtmpGate:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.host, self.port))
        s.listen(16)
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
            peer = addr[0]
            with self._lock:
                admit = self._active < self.max_connections and \
                    self._pre_auth.get(peer, 0) < self.max_pre_auth_per_peer
                if admit:
                    self._active += 1
                    self._pre_auth[peer] = self._pre_auth.get(peer, 0) + 1
                else:
                    self.over_capacity += 1
            if not admit:
                _close(client, reset=True)
                if self.over_capacity in (1, 10, 100) or self.over_capacity % 1000 == 0:
                    log.warning("rtmp connection refused: over the connection cap", extra={
                        "peer": peer, "max_connections": self.max_connections, "refused": self.over_capacity})
                self.on_refused("over_capacity", f"rtmp connection from {peer} over the connection cap")
                continue
            threading.Thread(target=self._serve, args=(client, peer), name="rtmp-gate-conn", daemon=True).start()

    def _release_pre_auth(self, peer: str) -> None:
        with self._lock:
            n = self._pre_auth.get(peer, 0) - 1
            if n > 0:
                self._pre_auth[peer] = n
            else:
                self._pre_auth.pop(peer, None)

    def _serve(self, client: socket.socket, peer: str) -> None:
        backend: socket.socket | None = None
        pre_auth = True
        try:
            pre = self._authenticate(client, peer)
            if pre is None:
                return
            self._release_pre_auth(peer)
            pre_auth = False
            backend = self._open_backend()
            backend.sendall(pre.replay)  # connect ... publish, exactly as the client sent them
            with self._lock:
                self.accepted += 1
            log.info("rtmp pusher accepted", extra={"peer": peer, "app": pre.connected_app})
            back = threading.Thread(target=_server_to_client, args=(backend, client, pre.writer),
                                    name="rtmp-gate-back", daemon=True)
            back.start()
            client.settimeout(None)
            backend.settimeout(None)
            _pump(client, backend)
            back.join(5)
        except (OSError, RtmpRefused) as exc:
            log.info("rtmp connection ended", extra={"peer": peer, "reason": str(exc)})
        finally:
            if pre_auth:
                self._release_pre_auth(peer)
            with self._lock:
                self._active -= 1
            for s in (client, backend):
                if s is not None:
                    _close(s)

    def _authenticate(self, client: socket.socket, peer: str) -> PreAuth | None:
        """Play the server until a publish with a valid key; None when the client went away or was refused."""
        pre = PreAuth(self.app, self.verify)
        deadline = time.monotonic() + self.auth_timeout
        try:
            while not pre.authorized:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RtmpRefused(f"no accepted publish within {self.auth_timeout:g} s", "auth_timeout")
                client.settimeout(left)
                try:
                    data = client.recv(4096)
                except TimeoutError:
                    continue
                if not data:
                    return None
                reply = pre.feed(data)
                if reply:
                    client.sendall(reply)
        except RtmpRefused as exc:
            with self._lock:
                self.refused += 1
            log.warning("rtmp push refused: %s", exc, extra={"peer": peer, "kind": exc.kind,
                                                             "app": pre.connected_app})
            self.on_refused(exc.kind, f"{exc} (from {peer})")
            return None
        return pre

    def _open_backend(self) -> socket.socket:
        """Connect to the private listener (it re-opens between sessions) and do the client handshake."""
        end = time.monotonic() + self.backend_timeout
        while True:
            try:
                backend = socket.create_connection(("127.0.0.1", self.backend_port), timeout=5)
                break
            except OSError:
                if time.monotonic() > end or self._stop.is_set():
                    raise
                time.sleep(0.05)
        c1 = b"\x00" * 8 + os.urandom(HANDSHAKE_SIZE - 8)
        backend.sendall(b"\x03" + c1)
        s0s1s2 = _recv_exact(backend, 1 + 2 * HANDSHAKE_SIZE)
        backend.sendall(s0s1s2[1: 1 + HANDSHAKE_SIZE])  # C2 = S1
        return backend


def _server_to_client(backend: socket.socket, client: socket.socket, writer: ChunkWriter) -> None:
    """Relay the listener's messages, re-chunked with the gate's own writer. Its replies to the commands
    the gate already answered (connect ... createStream) are dropped: forwarding starts with the
    onStatus that answers the publish."""
    reader = ChunkReader(max_message=1024 * 1024)
    started = False
    try:
        while True:
            data = backend.recv(65536)
            if not data:
                break
            reader.feed(data)
            out = bytearray()
            while (msg := reader.next()) is not None:
                if msg.type_id in (1, 2):
                    continue  # chunking of the listener's side; the client sees the gate's
                if not started:
                    values = msg.command() if msg.type_id in (17, 20) else None
                    if not values or values[0] != "onStatus":
                        continue
                    started = True
                out += writer.write(msg.csid, msg.type_id, msg.payload, msg.msid, msg.ts)
            if out:
                client.sendall(out)
    except (OSError, RtmpRefused):
        pass
    finally:
        for s in (backend, client):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("the RTMP listener closed during the handshake")
        buf += chunk
    return bytes(buf)


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


def _close(s: socket.socket, reset: bool = False) -> None:
    # shutdown first: a bare close() does not reach the peer while another thread is blocked in recv()
    if reset:  # refused on accept: RST, no TIME_WAIT kept for it
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    else:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    try:
        s.close()
    except OSError:
        pass
