"""Fenced writers: a packager that lost a stream writes not one more object for it (issue 16).

Kafka decides which member owns a stream (the member assigned its floodlight.segments partition), but
a member can lose that without knowing: stopped (SIGSTOP, a long GC or VM pause) past its session
timeout, it is dropped from the group and the partition goes to another member; when it wakes up, its
`assignment()` is still the old one until its next poll, and it would carry on writing the same
playlists as the new owner. The object store cannot see Kafka's group generations, so ownership is
carried into the store as a fencing token:

- an epoch record per segments partition (a stream's key fixes its partition, so this is the epoch of
  every stream on it), `packager/fence/<topic>/<partition>.json` = {epoch, owner token, member},
  written when Kafka assigns the partition (the on_assign callback: the group coordinator has just
  made this member the owner in the current generation): epoch + 1 and a token of its own. A member
  only claims in that callback, so a woken zombie never claims anything back;
- every write for a stream of the partition — media, parts, playlists, MPD, checkpoint, deletes — goes
  through `FencedStore`, which reads the record first and refuses with `Fenced` once the token is not
  its own. The worker then drops the partition's streams and skips its records until Kafka assigns
  it again (a zombie learns of the loss at its next poll; the fence stops it before that).

The check runs before each write, so the one write a member had already begun when it was stopped can
still land after the new claim (a window of one store call, ~0.1 ms on a directory store); a store with
conditional writes (S3 If-Match / If-None-Match) can close it. Reads are not fenced.

`WriteLog` is the audit trail: one JSON line per write and per claim (time, pid, member, stream,
epoch, key), appended by every member to one file (FLOODLIGHT_PACKAGER_WRITE_LOG). The chaos tests read
it to prove that no write of an old epoch happened after a newer claim.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

from floodlight.objectstore import ObjectStore, StoredObject
from schemas.errors import FloodlightError


class Fenced(FloodlightError):
    """Another member claimed the stream: this one must not write for it any more."""


def fence_key(topic: str, partition: int) -> str:
    return f"packager/fence/{topic}/{partition}.json"


class WriteLog:
    """Append-only JSON lines, shared by processes (O_APPEND: one write() per line, lines never interleave)."""

    def __init__(self, path: str) -> None:
        self.path = path
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._lock = threading.Lock()

    def write(self, **entry: Any) -> None:
        line = (json.dumps({"pid": os.getpid(), **entry}, separators=(",", ":")) + "\n").encode()
        with self._lock:
            os.write(self._fd, line)

    def close(self) -> None:
        os.close(self._fd)


def read_write_log(path: str) -> list[dict[str, Any]]:
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


def now_ms() -> float:
    return round(time.time() * 1000, 3)


class PartitionFence:
    """One member's fencing token for one segments partition (and so for every stream on it)."""

    def __init__(self, store: ObjectStore, topic: str, partition: int, member: str, *,
                 log: WriteLog | None = None) -> None:
        self.store = store
        self.partition = partition
        self.member = member
        self.key = fence_key(topic, partition)
        self.log = log
        self.epoch = 0
        self.token = ""

    def read(self) -> dict[str, Any] | None:
        obj = self.store.get(self.key)
        if obj is None:
            return None
        try:
            record = json.loads(obj.data)
        except ValueError:
            return None
        return record if isinstance(record, dict) else None

    def claim(self) -> int:
        """Take the partition: the next epoch, with a token of our own. Call only when Kafka assigns it."""
        current = self.read()
        epoch = int(current.get("epoch", 0)) + 1 if current else 1
        token = uuid.uuid4().hex
        record = {"epoch": epoch, "owner": token, "member": self.member, "pid": os.getpid(), "claimed_ms": now_ms()}
        self.store.put(self.key, json.dumps(record).encode(), content_type="application/json",
                       cache_control="no-store")
        self.epoch, self.token = epoch, token
        if self.log is not None:
            self.log.write(t_ms=now_ms(), op="claim", partition=self.partition, epoch=epoch, member=self.member,
                           previous=current.get("epoch") if current else None)
        return epoch

    def check(self) -> float:
        """Raise Fenced unless our claim is still the stream's; returns when it was checked (wall ms)."""
        current = self.read()
        checked = now_ms()
        if current is None or current.get("owner") != self.token:
            raise Fenced(f"partition {self.partition}: epoch {self.epoch} of {self.member} was fenced by "
                         f"{'nothing (record gone)' if current is None else current.get('member')} "
                         f"(epoch {current.get('epoch') if current else '-'})")
        return checked


class FencedStore(ObjectStore):
    """An ObjectStore view for one stream: every write checks the fence of the stream's partition first."""

    def __init__(self, inner: ObjectStore, fence: PartitionFence, stream_id: str, log: WriteLog | None = None) -> None:
        self.inner = inner
        self.fence = fence
        self.stream_id = stream_id
        self.log = log

    def _logged(self, op: str, key: str, checked: float) -> None:
        if self.log is not None:
            self.log.write(t_ms=now_ms(), t_check_ms=checked, op=op, partition=self.fence.partition,
                           stream=self.stream_id, epoch=self.fence.epoch, member=self.fence.member, key=key)

    def put(self, key: str, data: bytes, *, content_type: str | None = None,
            cache_control: str | None = None) -> str:
        checked = self.fence.check()
        etag = self.inner.put(key, data, content_type=content_type, cache_control=cache_control)
        self._logged("put", key, checked)
        return etag

    def delete(self, key: str) -> None:
        checked = self.fence.check()
        self.inner.delete(key)
        self._logged("delete", key, checked)

    def get(self, key: str) -> StoredObject | None:
        return self.inner.get(key)

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def list(self, prefix: str) -> Iterator[str]:
        return self.inner.list(prefix)
