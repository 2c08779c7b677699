"""Stream-key checks shared by the RTMP gate and the SRT gate.

Why one place: both listeners must apply exactly the same rule — the stream's registered key hashes
(for this agent's role, else any role), or the literal key of the --source URL when the agent runs
without the registry — and neither may accept an empty key.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("producers.sources.keys")

Verify = Callable[[str, str], bool]  # (app or "", presented key) -> allowed
CHECKS_PER_SECOND = 8.0  # scrypt checks (~50 ms of CPU each) a listener runs per second, burst twice that


def key_check(record: dict[str, Any] | None, ingest_id: str, literal: str | None,
              checks_per_second: float = CHECKS_PER_SECOND) -> Verify:
    """(app, presented key) -> allowed: registered hashes, or the literal key of --no-registry.

    A key that verified once is remembered by its SHA-256 (never in clear), so a pusher that
    reconnects does not pay the scrypt check again. Other keys are checked at most
    `checks_per_second` (a token bucket): a flood of made-up keys costs the agent a bounded share
    of one core, and a key presented over the budget is refused unchecked (the pusher retries).
    """
    from floodlight.streamkeys import verify_stream_key

    endpoints = (record or {}).get("ingest_endpoints", [])
    hashes = [e["stream_key_hash"] for e in endpoints
              if e.get("stream_key_hash") and e.get("role", ingest_id) in (ingest_id, "")]
    if not hashes:
        hashes = [e["stream_key_hash"] for e in endpoints if e.get("stream_key_hash")]
    good: set[bytes] = set()
    lock = threading.Lock()
    bucket = {"tokens": 2 * checks_per_second, "at": time.monotonic(), "warned": 0.0}

    def budget() -> bool:
        with lock:
            now = time.monotonic()
            bucket["tokens"] = min(2 * checks_per_second, bucket["tokens"] + (now - bucket["at"]) * checks_per_second)
            bucket["at"] = now
            if bucket["tokens"] >= 1:
                bucket["tokens"] -= 1
                return True
            if now - bucket["warned"] > 5:
                bucket["warned"] = now
                log.warning("stream key checks over budget: refusing unchecked",
                            extra={"per_second": checks_per_second})
            return False

    def literal_ok(key: str) -> bool:
        return literal is not None and literal != "" and hmac.compare_digest(key.encode(), literal.encode())

    def verify(_app: str, key: str) -> bool:
        if not key or len(key) > 256:
            return False
        if record is None or not hashes:
            return literal_ok(key)
        digest = hashlib.sha256(key.encode()).digest()
        with lock:
            if digest in good:
                return True
        if not budget():
            return False
        if any(verify_stream_key(key, h) for h in hashes):
            with lock:
                if len(good) < 16:
                    good.add(digest)
            return True
        return False

    return verify
