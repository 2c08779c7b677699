"""SRT: a key-checking SRT listener (libsrt through ctypes) relaying MPEG-TS to the demuxer on a loopback port.

Why libsrt itself and not an `ffmpeg`/`srt-live-transmit` relay: neither can check the caller's
`streamid` (an ffmpeg listener given `streamid=` accepts a caller with any other streamid, tried
with Debian's ffmpeg 5.1), and PyAV's FFmpeg has no SRT at all. libsrt calls a listen callback with
the caller's streamid during the handshake, before the connection exists: the gate answers there,
so a wrong or missing key is rejected (SRT reject code 1401) before a single media byte is read.
An SRT passphrase (the URL's `passphrase=`, else FLOODLIGHT_INGEST_SRT_PASSPHRASE) is enforced by
libsrt in the same handshake. Only an accepted caller's payload is copied to the private TCP
port the demuxer listens on; one caller at a time (others are rejected as busy, code 1409).

The library is Debian's libsrt 1.5 (`libsrt1.5-gnutls`, a dependency of the `ffmpeg` and
`srt-tools` packages ./run installs); no subprocess, so there is no stderr pipe to fill either.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

from producers.media import SourceError
from producers.sources.demux import DemuxSource, free_port
from producers.sources.keys import Verify, key_check
from producers.sources.spec import SourceContext, SourceSpec

log = logging.getLogger("producers.sources.srt")

# srt.h (libsrt 1.5): socket options and reject codes used here
SRTO_RCVSYN, SRTO_RCVTIMEO, SRTO_LATENCY, SRTO_PASSPHRASE, SRTO_PBKEYLEN = 2, 14, 23, 26, 27
SRTO_STREAMID = 46
SRT_EASYNCRCV = 6002  # a receive timed out (RCVTIMEO): no data yet
REJ_UNAUTHORIZED, REJ_CONFLICT, REJ_ERROR = 1401, 1409, 1500
LIBRARIES = ("libsrt-gnutls.so.1.5", "libsrt-openssl.so.1.5", "libsrt.so.1.5")
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_void_p,
                             ctypes.c_char_p)
_lib: Any = None
_lib_lock = threading.Lock()


def libsrt() -> Any:
    """Debian's libsrt, loaded once (SourceError naming the package when it is missing)."""
    global _lib
    with _lib_lock:
        if _lib is not None:
            return _lib
        names = [*LIBRARIES, *(n for n in (ctypes.util.find_library("srt"),) if n)]
        for name in names:
            try:
                lib = ctypes.CDLL(name)
                break
            except OSError:
                continue
        else:
            raise SourceError("SRT ingest needs libsrt 1.5 (Debian: apt-get install libsrt1.5-gnutls; "
                              "./run installs it with ffmpeg and srt-tools)")
        lib.srt_getlasterror_str.restype = ctypes.c_char_p
        lib.srt_getlasterror.argtypes = [ctypes.c_void_p]
        lib.srt_listen_callback.argtypes = [ctypes.c_int, _CALLBACK, ctypes.c_void_p]
        lib.srt_recvmsg.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.srt_setsockflag.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
        lib.srt_bind.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.srt_accept.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int)]
        if lib.srt_startup() < 0:
            raise SourceError(f"libsrt failed to start: {lib.srt_getlasterror_str().decode(errors='replace')}")
        lib.srt_setloglevel(3)  # errors only: refusals are logged by the gate, once, in our own format
        _lib = lib
        return lib


class SrtSource(DemuxSource):
    """An SRT listener: the key-checking gate on the public port, the demuxer on a private TCP port."""

    def __init__(self, spec: SourceSpec, ctx: SourceContext, normalize: Any = None) -> None:
        if ctx.record is None and not spec.query.get("streamid"):
            raise ValueError("srt with --no-registry needs the key in the URL: srt://HOST:PORT?streamid=KEY")
        port = free_port()
        verify = key_check(ctx.record, ctx.ingest_id, spec.query.get("streamid"))
        passphrase = spec.query.get("passphrase") or ctx.srt_passphrase
        latency_ms = int(spec.query.get("latency", "200000")) // 1000  # µs, as in ffmpeg's srt:// URLs
        self.gate = SrtGate(spec.host, spec.port, port, verify, ctx.stop, passphrase=passphrase,
                            pbkeylen=int(spec.query.get("pbkeylen", "0") or 0), latency_ms=latency_ms,
                            on_refused=lambda kind, reason: ctx.on_bad_input(kind, reason)).start()
        log.info("srt listening", extra={"stream_id": ctx.stream_id, "port": self.gate.port,
                                         "encrypted": bool(passphrase)})
        super().__init__(f"tcp://127.0.0.1:{port}?listen=1", ctx.stop, listen=True, normalize=normalize,
                         label=f"srt :{spec.port}", on_bad_input=ctx.on_bad_input, poke=("127.0.0.1", port))

    def close(self) -> None:
        self.gate.stop_now()


class SrtGate:
    """SRT listener on (host, port) that checks each caller's streamid before accepting it, then copies
    the caller's payload (MPEG-TS) to 127.0.0.1:tcp_port until the caller leaves, and listens again."""

    def __init__(self, host: str, port: int, tcp_port: int, verify: Verify, stop: threading.Event, *,
                 passphrase: str = "", pbkeylen: int = 0, latency_ms: int = 200,
                 on_refused: Callable[[str, str], None] | None = None) -> None:
        self.host, self.port, self.tcp_port, self.verify, self.stop = host, port, tcp_port, verify, stop
        self.passphrase, self.pbkeylen, self.latency_ms = passphrase, pbkeylen, latency_ms
        self.on_refused = on_refused or (lambda kind, reason: None)
        self.lib = libsrt()
        self.refused = 0  # callers rejected in the handshake: wrong or missing key
        self.busy_refused = 0  # callers rejected because another caller is on
        self.accepted = 0
        self.restarts = 0  # caller sessions that ended (the gate listens again after each)
        self.bytes = 0
        self._listener = -1
        self._conn = -1  # the accepted caller's socket, -1 when none
        self._pending_until = 0.0  # a caller approved in the handshake has this long to be accepted
        self._callback = _CALLBACK(self._on_handshake)  # referenced here, or ctypes frees it under libsrt
        self._thread = threading.Thread(target=self._run, name="srt-gate", daemon=True)
        self.listening = threading.Event()

    # --- set-up ---------------------------------------------------------------------------------
    def _flag(self, sock: int, opt: int, value: int | str) -> None:
        if isinstance(value, str):
            raw = value.encode()
            ok = self.lib.srt_setsockflag(sock, opt, ctypes.c_char_p(raw), len(raw))
        else:
            v = ctypes.c_int(value)
            ok = self.lib.srt_setsockflag(sock, opt, ctypes.byref(v), ctypes.sizeof(v))
        if ok < 0:
            raise SourceError(f"SRT option {opt}: {self._error()}")

    def _error(self) -> str:
        return (self.lib.srt_getlasterror_str() or b"").decode(errors="replace")

    def start(self) -> SrtGate:
        lib = self.lib
        s = lib.srt_create_socket()
        if s < 0:
            raise SourceError(f"cannot create an SRT socket: {self._error()}")
        try:
            self._flag(s, SRTO_LATENCY, max(20, self.latency_ms))
            if self.passphrase:
                self._flag(s, SRTO_PASSPHRASE, self.passphrase)  # libsrt enforces it in the handshake
                if self.pbkeylen:
                    self._flag(s, SRTO_PBKEYLEN, self.pbkeylen)
            addr = socket.gethostbyname(self.host or "0.0.0.0")
            sa = struct.pack("=H", socket.AF_INET) + struct.pack("!H", self.port) + socket.inet_aton(addr) + bytes(8)
            if lib.srt_bind(s, sa, len(sa)) < 0:
                raise SourceError(f"cannot listen on srt://{self.host}:{self.port}: {self._error()}")
            if lib.srt_listen_callback(s, self._callback, None) < 0 or lib.srt_listen(s, 4) < 0:
                raise SourceError(f"cannot listen on srt://{self.host}:{self.port}: {self._error()}")
        except BaseException:
            lib.srt_close(s)
            raise
        self._listener = s
        self._thread.start()
        self.listening.set()
        return self

    # --- the handshake: runs on libsrt's receiver thread, before the connection exists ---------------
    def _on_handshake(self, _opaque: Any, sock: int, _hs_version: int, _peer: Any, streamid: bytes | None) -> int:
        try:
            if self.stop.is_set():
                return -1
            if self._conn >= 0 or time.monotonic() < self._pending_until:
                self.busy_refused += 1
                self.lib.srt_setrejectreason(sock, REJ_CONFLICT)
                return -1
            key = (streamid or b"").decode("utf-8", "replace")
            if not self.verify("", key):
                self.refused += 1
                self.lib.srt_setrejectreason(sock, REJ_UNAUTHORIZED)
                reason = "srt caller refused: " + ("no streamid" if not key else "wrong stream key")
                log.warning(reason, extra={"port": self.port})
                self.on_refused("wrong_key", reason)
                return -1
            # accepted within milliseconds, unless the handshake fails after this check (a wrong passphrase)
            self._pending_until = time.monotonic() + 1.0
            return 0
        except Exception as exc:  # noqa: BLE001 - never let an exception cross into libsrt: refuse instead
            log.error("srt handshake check failed", extra={"error": str(exc)})
            try:
                self.lib.srt_setrejectreason(sock, REJ_ERROR)
            except Exception:  # noqa: BLE001
                pass
            return -1

    # --- accepted callers -------------------------------------------------------------------------
    def _run(self) -> None:
        lib = self.lib
        while not self.stop.is_set():
            peer = ctypes.create_string_buffer(128)
            n = ctypes.c_int(128)
            conn = lib.srt_accept(self._listener, peer, ctypes.byref(n))
            if conn < 0:
                if self.stop.is_set():
                    return
                log.warning("srt accept failed", extra={"error": self._error()})
                time.sleep(0.2)
                continue
            self._conn, self._pending_until = conn, 0.0
            self.accepted += 1
            log.info("srt caller accepted", extra={"port": self.port})
            try:
                self._relay(conn)
            finally:
                self._conn = -1
                lib.srt_close(conn)
                self.restarts += 1

    def _relay(self, conn: int) -> None:
        lib = self.lib
        self._flag(conn, SRTO_RCVTIMEO, 500)  # wake up to check stop
        tcp = self._connect_demuxer()
        if tcp is None:
            return
        buf = ctypes.create_string_buffer(1500)
        err = ctypes.c_int(0)
        try:
            while not self.stop.is_set():
                got = lib.srt_recvmsg(conn, buf, len(buf))
                if got < 0:
                    if lib.srt_getlasterror(ctypes.byref(err)) == SRT_EASYNCRCV:
                        continue  # quiet for 0.5 s: the peer-idle timeout (5 s) ends a dead caller
                    log.info("srt caller left", extra={"port": self.port, "reason": self._error()})
                    return
                if got:
                    tcp.sendall(buf.raw[:got])
                    self.bytes += got
        except OSError as exc:
            log.info("srt relay: the demuxer closed", extra={"port": self.port, "reason": str(exc)})
        finally:
            try:
                tcp.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            tcp.close()

    def _connect_demuxer(self, deadline_s: float = 10.0) -> socket.socket | None:
        end = time.monotonic() + deadline_s
        while not self.stop.is_set():
            try:
                return socket.create_connection(("127.0.0.1", self.tcp_port), timeout=2)
            except OSError:
                if time.monotonic() > end:
                    log.error("srt relay: the demuxer is not listening", extra={"tcp_port": self.tcp_port})
                    return None
                time.sleep(0.05)  # the demuxer re-opens its listener between sessions
        return None

    def stop_now(self) -> None:
        self.stop.set()
        if self._listener >= 0:
            self.lib.srt_close(self._listener)  # unblocks srt_accept
            self._listener = -1
        self._thread.join(5)
