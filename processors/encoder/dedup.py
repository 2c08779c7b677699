"""Pure bookkeeping for at-least-once consumption: a bounded window of seen GOP identities, and
per-partition offset tracking that only lets contiguous finished offsets be committed."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterable


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
