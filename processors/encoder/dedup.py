"""Pure bookkeeping for at-least-once consumption: a bounded window of seen GOP identities,
per-partition offset tracking that only lets contiguous finished offsets be committed, and the chunk
order of a GOP that arrives in sub-GOP chunks (deduplicated per (gop_index, chunk_index))."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterable
from typing import Generic, TypeVar

T = TypeVar("T")


class SeenWindow:
    """The last `capacity` identities, oldest evicted first (bounded memory for endless streams)."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self._items: OrderedDict[Hashable, None] = OrderedDict()

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def add(self, key: Hashable) -> None:
        self._items[key] = None
        self._items.move_to_end(key)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def discard(self, key: Hashable) -> None:
        """Forget `key` (its output was aborted with a transaction: it must be done again)."""
        self._items.pop(key, None)


class OffsetTracker:
    """Offsets taken from each partition, in order; an offset is committable once it and every
    earlier taken offset of its partition are done (so a crash never skips an unfinished GOP)."""

    def __init__(self) -> None:
        self._pending: dict[int, OrderedDict[int, bool]] = {}

    def add(self, partition: int, offset: int) -> None:
        self._pending.setdefault(partition, OrderedDict())[offset] = False

    def done(self, partition: int, offset: int) -> None:
        offsets = self._pending.get(partition)
        if offsets is not None and offset in offsets:
            offsets[offset] = True

    def in_flight(self, partitions: Iterable[int] | None = None) -> int:
        parts = self._pending if partitions is None else {p: self._pending.get(p, {}) for p in partitions}
        return sum(1 for offsets in parts.values() for finished in offsets.values() if not finished)

    def committable(self) -> dict[int, int]:
        """Pop the finished prefix of each partition: {partition: next offset to consume}."""
        out: dict[int, int] = {}
        for partition, offsets in self._pending.items():
            while offsets:
                offset, finished = next(iter(offsets.items()))
                if not finished:
                    break
                offsets.popitem(last=False)
                out[partition] = offset + 1
        return out

    def drop(self, partitions: Iterable[int]) -> None:
        for p in partitions:
            self._pending.pop(p, None)


class ChunkSequence(Generic[T]):
    """The chunks of one GOP (LOW mode), taken in chunk order, one at a time.

    Primary and backup ingests publish the same chunks to the same partition: the first copy of each
    chunk_index is kept, any later one is a duplicate (`offer` says False). A chunk that arrives before
    the one it follows waits; `take` hands out the next chunk only once the one before is `done`.
    """

    def __init__(self) -> None:
        self.next = 0  # index of the next chunk to transcode
        self.waiting: dict[int, T] = {}
        self.running = False

    def offer(self, index: int, item: T) -> bool:
        if index < self.next or index in self.waiting or (self.running and index == self.next):
            return False
        self.waiting[index] = item
        return True

    def take(self) -> T | None:
        if self.running or self.next not in self.waiting:
            return None
        self.running = True
        return self.waiting.pop(self.next)

    def done(self) -> None:
        """The chunk handed out by `take` is transcoded: the next one may go."""
        self.running = False
        self.next += 1

    @property
    def ready(self) -> bool:
        """The next chunk is here (or being transcoded): the GOP is not waiting for its ingest."""
        return self.running or self.next in self.waiting
