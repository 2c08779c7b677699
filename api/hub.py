"""Wakes blocked LL-HLS requests from floodlight.manifests and coalesces their store reads.

A thread follows the manifests topic (every api instance reads all of it) and hands each
ManifestUpdate to the event loop with call_soon_threadsafe. Per (stream, rendition) the hub keeps
the newest PlaylistState and one "changed" future: one notification wakes every waiter at once.
Reads are cached per (object, version), so thousands of waiters released by the same update cost
one object-store read and one rendering per distinct token.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from api import metrics
from api.llhls import BlockRequest, PlaylistState, carries_targets, parse_state, satisfied, state_from_update
from floodlight.follow import Follower, Record
from floodlight.objectstore import StoredObject
from floodlight.settings import Settings

log = logging.getLogger("api.hub")
UNVERSIONED_TTL_S = 0.5  # cache life of reads of objects no ManifestUpdate has versioned yet
MAX_RENDERS_PER_VERSION = 256


@dataclass
class _Rendition:
    state: PlaylistState | None = None
    version: int = 0
    changed: asyncio.Event | None = None  # set (and replaced) by the next update
    updated_monotonic: float = 0.0
    learned: bool = False  # target durations known: from an update that carries them, else read from the playlist


@dataclass
class _Cached:
    version: int
    loaded_at: float
    task: asyncio.Future[StoredObject | None]
    renders: dict[str, bytes] = field(default_factory=dict)


class PlaylistHub:
    """Asyncio side: states, waiters, coalesced reads. All methods run on the loop."""

    def __init__(self, read: Callable[[str], Awaitable[StoredObject | None]]) -> None:
        self._read = read
        self._renditions: dict[tuple[str, str], _Rendition] = {}
        self._cache: dict[str, _Cached] = {}
        self.last_update_ms: dict[str, int] = {}  # stream -> wallclock of its newest update
        self.first_update_ms: dict[str, int] = {}

    def _rend(self, stream_id: str, rendition: str) -> _Rendition:
        key = (stream_id, rendition)
        r = self._renditions.get(key)
        if r is None:
            r = self._renditions[key] = _Rendition()
        return r

    def state(self, stream_id: str, rendition: str) -> PlaylistState | None:
        r = self._renditions.get((stream_id, rendition))
        return r.state if r else None

    def learned(self, stream_id: str, rendition: str) -> bool:
        r = self._renditions.get((stream_id, rendition))
        return bool(r and r.learned)

    def version(self, stream_id: str, rendition: str) -> int:
        r = self._renditions.get((stream_id, rendition))
        return r.version if r else 0

    def on_update(self, rec: dict[str, Any], received_ms: int | None = None) -> None:
        """Apply one ManifestUpdate and wake everyone waiting on that rendition."""
        stream_id, rendition = rec["stream_id"], rec["rendition"]
        metrics.MANIFEST_UPDATES.inc()
        written = int(rec.get("written_wallclock_ms") or 0)
        self.last_update_ms[stream_id] = max(self.last_update_ms.get(stream_id, 0), written)
        self.first_update_ms.setdefault(stream_id, written)
        r = self._rend(stream_id, rendition)
        if rec["version"] < r.version:
            return  # an older update replayed after a newer one
        r.state = state_from_update(rec, r.state)
        r.learned = r.learned or carries_targets(rec)
        r.version = int(rec["version"])
        r.updated_monotonic = time.monotonic()
        if received_ms and written:
            metrics.WAKE_LATENCY.observe(max(0.0, (received_ms - written) / 1000))
        if r.changed is not None:
            r.changed.set()  # one notification wakes every waiter of this rendition
        r.changed = None

    def learn_from_playlist(self, stream_id: str, rendition: str, text: str) -> PlaylistState | None:
        """Fill in target durations (and the state itself when no update has been seen) from a playlist."""
        parsed = parse_state(text)
        if parsed is None:
            return None
        r = self._rend(stream_id, rendition)
        r.learned = True
        if r.state is None or r.version == 0:
            r.state = parsed
        else:
            s = r.state
            r.state = PlaylistState(s.msn, s.part, s.ended, parsed.target_duration, parsed.part_target)
        return r.state

    async def wait_for(self, stream_id: str, rendition: str, req: BlockRequest, hold_s: float) -> bool:
        """Hold until the rendition's state satisfies req; False on timeout."""
        end = time.monotonic() + hold_s
        r = self._rend(stream_id, rendition)
        metrics.BLOCKED.inc()
        try:
            while not satisfied(r.state, req):
                left = end - time.monotonic()
                if left <= 0:
                    return False
                if r.changed is None:
                    r.changed = asyncio.Event()
                changed = r.changed
                try:
                    async with asyncio.timeout(left):
                        await changed.wait()
                except TimeoutError:
                    return False
            return True
        finally:
            metrics.BLOCKED.dec()

    async def get(self, key: str, stream_id: str, rendition: str) -> StoredObject | None:
        """Read `key`, once per playlist version however many requests ask for it."""
        version = self.version(stream_id, rendition)
        now = time.monotonic()
        c = self._cache.get(key)
        failed = c is not None and c.task.done() and c.task.exception() is not None
        if c is not None and not failed and c.version == version and (
                version > 0 or now - c.loaded_at < UNVERSIONED_TTL_S):
            return await asyncio.shield(c.task)
        task = asyncio.ensure_future(self._read(key))
        self._cache[key] = _Cached(version, now, task)
        if len(self._cache) > 4096:
            for k in list(self._cache)[:1024]:
                self._cache.pop(k, None)
        return await asyncio.shield(task)

    def rendered(self, key: str, obj: StoredObject, token: str, render: Callable[[], bytes]) -> bytes:
        """The signed body for (object version, token), rendered once."""
        c = self._cache.get(key)
        if c is None or not c.task.done() or c.task.result() is not obj:
            metrics.PLAYLIST_RENDERS.inc()
            return render()
        body = c.renders.get(token)
        if body is None:
            metrics.PLAYLIST_RENDERS.inc()
            body = render()
            if len(c.renders) < MAX_RENDERS_PER_VERSION:
                c.renders[token] = body
        return body


class ManifestFollower(Follower):
    """Thread: follow floodlight.manifests from the start, hand each update to the loop (floodlight.follow:
    waits out a broker that is down at start-up; `caught_up` feeds /readyz)."""

    def __init__(self, settings: Settings, deliver: Callable[[dict[str, Any], int], None]) -> None:
        super().__init__(settings, {settings.topic("manifests"): "ManifestUpdate"}, self._take_update,
                         name="manifests", group_id="api-manifests-unused", logger=log,
                         consumer_overrides={"fetch.wait.max.ms": 10, "fetch.min.bytes": 1})
        self._deliver = deliver

    def _take_update(self, rec: Record) -> None:
        received = int(time.time() * 1000)
        self._deliver(rec.value, received if self.caught_up.is_set() else 0)
