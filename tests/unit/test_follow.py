"""The follow loop's pure parts: back-off, "reached the end" bookkeeping, decoding and delivery of one record."""

from __future__ import annotations

import itertools
from typing import Any

from floodlight.follow import EndTracker, Follower, Record, backoff
from floodlight.settings import Settings
from schemas import codec
from tests.support import sample_records


def test_backoff_doubles_up_to_the_cap() -> None:
    assert list(itertools.islice(backoff(0.5, 5.0), 7)) == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]


def test_end_tracker_counts_partitions_until_each_reaches_the_end_it_had() -> None:
    t = EndTracker(starts={("a", 0): 0, ("a", 1): 0, ("a", 2): 7, ("b", 0): 3},
                   ends={("a", 0): 3, ("a", 1): 0, ("a", 2): 7, ("b", 0): 5})
    assert t.pending == {("a", 0), ("b", 0)}  # empty partitions and ones read from their end are done
    t.took(("a", 0), 1)
    assert not t.done
    t.took(("a", 0), 2)  # the last offset below the high watermark
    t.took(("a", 0), 9)  # records written after reading began change nothing
    assert t.pending == {("b", 0)}
    t.at_eof(("b", 0))  # compaction may have removed offset 4: the client's end-of-partition counts
    assert t.done


class FakeMessage:
    def __init__(self, value: bytes | None, topic: str = "t", offset: int = 0, key: bytes | None = b"k") -> None:
        self._v, self._t, self._o, self._k = value, topic, offset, key

    def value(self) -> bytes | None:
        return self._v

    def topic(self) -> str:
        return self._t

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._o

    def key(self) -> bytes | None:
        return self._k

    def timestamp(self) -> tuple[int, int]:
        return 1, 1234


def test_records_are_decoded_bad_ones_reported_and_a_failing_callback_does_not_stop_the_loop() -> None:
    cue = sample_records()["Cue"]
    got: list[Record] = []
    bad: list[tuple[int, str]] = []

    def on_record(rec: Record) -> None:
        got.append(rec)
        if rec.offset == 3:
            raise RuntimeError("a broken handler")

    f = Follower(Settings(), {"t": "Cue", "raw": None}, on_record, name="t",
                 on_bad=lambda rec, exc: bad.append((rec.offset, type(exc).__name__)))
    f._take(FakeMessage(codec.encode("Cue", cue), offset=1))  # type: ignore[arg-type]
    f._take(FakeMessage(b"\xc3\x01junk", offset=2))  # type: ignore[arg-type]
    f._take(FakeMessage(codec.encode("Cue", cue), offset=3))  # type: ignore[arg-type]
    f._take(FakeMessage(None, offset=4))  # type: ignore[arg-type]  # tombstones are skipped unless asked for
    f._take(FakeMessage(b"bytes", topic="raw", offset=5))  # type: ignore[arg-type]
    assert [(r.offset, r.value == cue) for r in got[:2]] == [(1, True), (3, True)]
    assert got[0] == Record("t", 0, 1, b"k", cue, 1234)
    assert got[2].value == b"bytes"  # a topic without a schema delivers the raw value
    assert bad == [(2, "TruncatedRecord")]
    assert f.records == 3


def test_tombstones_are_delivered_as_none_when_asked_for() -> None:
    got: list[Any] = []
    f = Follower(Settings(), {"t": "StreamRecord"}, lambda r: got.append((r.key, r.value)), name="t", tombstones=True)
    f._take(FakeMessage(None, key=b"gone"))  # type: ignore[arg-type]
    assert got == [(b"gone", None)]
