"""The packager's fencing token (sinks/packager/fence.py): a newer claim stops every write of the old owner."""

from __future__ import annotations

import pytest

from floodlight.objectstore import DirectoryStore
from sinks.packager.fence import Fenced, FencedStore, PartitionFence, WriteLog, fence_key, read_write_log


def test_a_newer_claim_fences_every_write_of_the_old_owner(tmp_path) -> None:
    store = DirectoryStore(tmp_path / "store")
    log = WriteLog(str(tmp_path / "writes.jsonl"))
    a = PartitionFence(store, "fl.segments", 2, "member-a", log=log)
    b = PartitionFence(store, "fl.segments", 2, "member-b", log=log)
    assert a.claim() == 1
    view_a = FencedStore(store, a, "s1", log)
    view_a.put("live/s1/360p/0.m4s", b"zero")
    view_a.put("live/s1/360p/playlist.m3u8", b"#EXTM3U v1")

    assert b.claim() == 2  # Kafka gave partition 2 to member b
    with pytest.raises(Fenced):
        view_a.put("live/s1/360p/playlist.m3u8", b"#EXTM3U stale")
    with pytest.raises(Fenced):
        view_a.delete("live/s1/360p/0.m4s")
    with pytest.raises(Fenced):  # identical bytes are not written at all; different ones are refused
        view_a.put_if_changed("live/s1/360p/1.m4s", b"one")
    assert store.get("live/s1/360p/playlist.m3u8").data == b"#EXTM3U v1"
    assert store.exists("live/s1/360p/0.m4s") and not store.exists("live/s1/360p/1.m4s")
    assert view_a.get("live/s1/360p/0.m4s").data == b"zero"  # reads are not fenced

    view_b = FencedStore(store, b, "s1", log)
    view_b.put("live/s1/360p/playlist.m3u8", b"#EXTM3U v2")
    assert store.get("live/s1/360p/playlist.m3u8").data == b"#EXTM3U v2"

    entries = read_write_log(str(tmp_path / "writes.jsonl"))
    claims = [(e["member"], e["epoch"], e["previous"]) for e in entries if e["op"] == "claim"]
    assert claims == [("member-a", 1, None), ("member-b", 2, 1)]
    writes = [(e["member"], e["epoch"], e["key"]) for e in entries if e["op"] != "claim"]
    assert writes == [("member-a", 1, "live/s1/360p/0.m4s"), ("member-a", 1, "live/s1/360p/playlist.m3u8"),
                      ("member-b", 2, "live/s1/360p/playlist.m3u8")]
    assert all(e["t_check_ms"] <= e["t_ms"] for e in entries if e["op"] != "claim")


def test_a_removed_fence_record_fences_too(tmp_path) -> None:
    store = DirectoryStore(tmp_path / "store")
    a = PartitionFence(store, "fl.segments", 0, "member-a")
    a.claim()
    store.delete(fence_key("fl.segments", 0))
    with pytest.raises(Fenced):
        FencedStore(store, a, "s1").put("live/s1/x.m4s", b"x")
