"""Duplicate window and offset tracking of the encoder group member."""

from __future__ import annotations

import pytest

from processors.encoder.dedup import OffsetTracker, SeenWindow
from processors.encoder.worker import group_id_for, parse_renditions


def test_seen_window_is_bounded_and_evicts_oldest():
    w = SeenWindow(3)
    for i in range(5):
        w.add(("s", i))
    assert len(w) == 3
    assert ("s", 0) not in w and ("s", 1) not in w
    assert ("s", 4) in w
    w.add(("s", 2))  # refreshed: now the newest
    w.add(("s", 5))
    assert ("s", 2) in w and ("s", 3) not in w


def test_seen_window_rejects_zero_capacity():
    with pytest.raises(ValueError):
        SeenWindow(0)


def test_offsets_commit_only_contiguous_done_prefix():
    t = OffsetTracker()
    for off in (10, 11, 12):
        t.add(0, off)
    t.add(1, 5)
    t.done(0, 11)
    assert t.committable() == {}  # 10 still running: committing 12 would skip it after a crash
    t.done(0, 10)
    assert t.committable() == {0: 12}
    assert t.in_flight() == 2
    t.done(0, 12)
    t.done(1, 5)
    assert t.committable() == {0: 13, 1: 6}
    assert t.committable() == {}
    assert t.in_flight() == 0


def test_offsets_drop_forgets_revoked_partitions():
    t = OffsetTracker()
    t.add(2, 1)
    t.add(3, 1)
    t.drop([2])
    assert t.in_flight() == 1 and t.in_flight([2]) == 0
    t.done(2, 1)  # a late completion of a revoked partition is ignored
    assert t.committable() == {}


def test_renditions_and_group_ids():
    from floodlight.settings import Settings

    s = Settings(encoder_group="enc")
    assert parse_renditions("all") is None and parse_renditions(None) is None
    assert parse_renditions("1080p, 720p") == {"1080p", "720p"}
    with pytest.raises(ValueError):
        parse_renditions(" , ")
    assert group_id_for(s, None, None) == "enc"
    assert group_id_for(s, None, {"720p", "1080p"}) == "enc-1080p-720p"
    assert group_id_for(s, "mine", {"720p"}) == "mine"


def test_chunks_of_a_gop_go_in_order_once_each() -> None:
    from processors.encoder.dedup import ChunkSequence

    seq: ChunkSequence[str] = ChunkSequence()
    assert seq.offer(1, "backup-1")  # chunk 1 of the backup before chunk 0 of anyone: it waits
    assert seq.take() is None and not seq.ready
    assert seq.offer(0, "primary-0") and not seq.offer(0, "backup-0")  # per (gop_index, chunk_index)
    assert seq.take() == "primary-0" and seq.ready
    assert not seq.offer(0, "late-0") and seq.take() is None  # one at a time
    seq.done()
    assert not seq.offer(1, "primary-1")
    assert seq.take() == "backup-1"
    seq.done()
    assert not seq.offer(0, "x") and not seq.offer(1, "y") and seq.offer(2, "primary-2")
    assert seq.take() == "primary-2" and seq.next == 2


def test_a_discarded_identity_is_done_again() -> None:
    seen = SeenWindow(4)
    seen.add(("s", 1))
    seen.add(("s", 2))
    seen.discard(("s", 1))  # its output was aborted with a transaction
    seen.discard(("s", 9))  # never seen: nothing happens
    assert ("s", 1) not in seen and ("s", 2) in seen and len(seen) == 1
