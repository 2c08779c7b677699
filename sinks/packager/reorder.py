"""Reorder buffer by media sequence number, with a gap deadline.

Encoders finish GOPs out of order. Each track releases segments strictly in msn order; when the
next one is missing while later ones wait, a clock starts, and after `deadline_s` the missing
numbers are released as gaps (None) so the stream does not stall. A segment that turns up after
its gap was published comes back from `offer` as late, for the caller to fill in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class Released(Generic[T]):
    msn: int
    item: T | None  # None: a gap (the deadline passed without it)
    late: bool = False  # arrived after its number was released (as a gap or a duplicate)


@dataclass
class ReorderBuffer(Generic[T]):
    deadline_s: float
    next_msn: int | None = None
    pending: dict[int, T] = field(default_factory=dict)
    waiting_since: float | None = None

    def offer(self, msn: int, item: T, now: float) -> list[Released[T]]:
        if self.next_msn is None:
            self.next_msn = msn
        if msn < self.next_msn:
            ready = self._drain(now) if self.next_msn in self.pending else []
            return [Released(msn, item, late=True)] + ready
        self.pending[msn] = item
        return self._drain(now)

    def expire(self, now: float) -> list[Released[T]]:
        """Publish the missing numbers as gaps once the oldest waiter is past the deadline."""
        if self.next_msn is not None and self.next_msn in self.pending:  # put back after a failed write
            return self._drain(now)
        if not self.pending or self.waiting_since is None or now - self.waiting_since < self.deadline_s:
            return []
        assert self.next_msn is not None
        first = min(self.pending)
        out: list[Released[T]] = [Released(m, None) for m in range(self.next_msn, first)]
        self.next_msn = first
        self.waiting_since = None
        return out + self._drain(now)

    def flush(self) -> list[Released[T]]:
        """Release everything now (stream end): holes become gaps."""
        out: list[Released[T]] = []
        while self.pending:
            out += self.expire(float("inf")) if self.waiting_since is not None else self._drain(0.0)
            if self.pending and self.waiting_since is None:
                self.waiting_since = float("-inf")
        return out

    @property
    def holding(self) -> int:
        return len(self.pending)

    def _drain(self, now: float) -> list[Released[T]]:
        out: list[Released[T]] = []
        assert self.next_msn is not None
        while self.next_msn in self.pending:
            out.append(Released(self.next_msn, self.pending.pop(self.next_msn)))
            self.next_msn += 1
        if self.pending:
            if self.waiting_since is None or out:
                self.waiting_since = now
        else:
            self.waiting_since = None
        return out
