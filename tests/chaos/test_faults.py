"""One fault at a time against a live pipeline; after each, the stream must be playable again.

Invariants checked across the whole run: media sequence numbers never go back, no media object is
rewritten with different bytes, every GOP published is in the DVR playlist at the end (except
those the ingest buffer had to drop: counted), no beacon lost or counted twice.
Recovery bound: the playlist advances within RECOVERY_BOUND_S of the role being back.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from ops import stack
from tests.chaos.conftest import REPORT
from tests.chaos.harness import STREAM, WATCH, BeaconSender, ChaosPipeline, Watcher
from tests.support import wait_until

RECOVERY_BOUND_S = 20.0  # generous for 2 shared cores; the report prints the measured values


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    p = ChaosPipeline(tmp_path_factory.mktemp("chaos"))
    watcher = Watcher(p.store_root)
    beacons: BeaconSender | None = None
    try:
        p.start()
        p.wait_api(90)
        watcher.start()
        wait_until(lambda: watcher.last_msn >= 4, 120, interval=0.5,
                   what=f"the chaos stream to list 5 segments\n{p.log_tail('packager')}\n{p.log_tail('encoder-1')}")
        beacons = BeaconSender(p.api)
        beacons.start()
        yield p, watcher, beacons
    finally:
        if beacons is not None:
            beacons.stop()
        watcher.stop()
        p.stop()


def _fault(pipe_tuple, name: str, role: str | None, *, back_after: float = 2.0, action=None) -> dict:
    p, watcher, _ = pipe_tuple
    msn_before = watcher.last_msn
    if action is not None:
        back = action(p)
    else:
        p.kill9(role)
        time.sleep(back_after)  # the fault's duration, not a synchronisation
        p.launch(role)
        back = time.monotonic()
    rec = watcher.advanced_after(back, max(msn_before, watcher.last_msn_at(back)), timeout=60)
    dead = [n for n, ok in p.alive().items() if not ok]
    row = {"fault": name, "recovery_s": rec, "gops_lost": 0, "notes": f"dead after: {dead}" if dead else ""}
    REPORT.append(row)
    assert not dead, f"roles died after {name}: {dead}\n" + "\n".join(p.log_tail(d) for d in dead)
    assert rec is not None, f"stream did not advance within 60 s after {name}"
    assert rec <= RECOVERY_BOUND_S, f"{name}: playable again after {rec:.1f} s (bound {RECOVERY_BOUND_S} s)"
    return row


def _kill_primary_while_backup_runs(p: ChaosPipeline) -> float:
    p.kill9("ingest-primary")
    back = time.monotonic()  # the backup keeps the stream going: recovery counts from the kill
    p.launch("ingest-primary")
    return back


def test_kill_primary_ingest(pipe) -> None:
    _fault(pipe, "kill -9 primary ingest", None, action=_kill_primary_while_backup_runs)


def test_kill_one_of_two_encoders(pipe) -> None:
    _fault(pipe, "kill -9 encoder-1", "encoder-1")


def test_kill_packager(pipe) -> None:
    _fault(pipe, "kill -9 packager", "packager")


def test_kill_api(pipe) -> None:
    p = pipe[0]
    _fault(pipe, "kill -9 api", "api")
    p.wait_api(30)


def test_kill_qoe(pipe) -> None:
    _fault(pipe, "kill -9 qoe", "qoe")


def test_broker_stop_start_10s(pipe) -> None:
    def outage(p: ChaosPipeline) -> float:
        stack.down(p.settings)
        time.sleep(10)  # the outage itself
        stack.up(p.settings, deadline_s=180)
        return time.monotonic()

    _fault(pipe, "broker stop/start 10 s", None, action=outage)


def test_object_store_disk_full(pipe) -> None:
    p = pipe[0]
    if not p.mounted:
        pytest.skip("cannot mount a tmpfs here (needs root): the full-disk fault needs its own small filesystem")
    filler = p.store_root / "filler.bin"

    def fill(pp: ChaosPipeline) -> float:
        chunk = b"\0" * (1 << 20)
        with open(filler, "wb") as f:
            try:
                while True:
                    f.write(chunk)
                    f.flush()
            except OSError:
                pass  # ENOSPC: the disk is full
        time.sleep(8)  # the store stays full this long
        filler.unlink()
        return time.monotonic()

    _fault(pipe, "object store disk full 8 s", None, action=fill)


def test_invariants_held_across_all_faults(pipe) -> None:
    p, watcher, beacons = pipe
    # let the pipeline settle: the packager fills late GOPs and the qoe app flushes
    settle_msn = watcher.last_msn + 3
    wait_until(lambda: watcher.last_msn >= settle_msn, 60, interval=0.5, what="the stream to keep advancing")
    beacons.stop()
    assert watcher.violations == [], watcher.violations[:10]

    published = _published_gops(p)
    state = json.loads((p.store_root / "packager" / "live" / STREAM / "state.json").read_text())
    base = state["base_gop"]
    dvr = (p.store_root / "live" / STREAM / WATCH / "dvr.m3u8").read_text()
    listed = _listed_msns(dvr)
    last_listed = max(listed)
    expected = {g - base for g in published if base <= g and g - base < last_listed - 2}
    missing = sorted(expected - listed)
    dropped = _ingest_drops(p)
    REPORT.append({"fault": "whole run", "recovery_s": None, "gops_lost": len(missing),
                   "notes": f"{len(expected)} GOPs checked, ingest buffer drops {dropped}, "
                            f"beacons accepted {beacons.accepted}"})
    assert len(missing) <= dropped, f"GOPs published but not in the DVR playlist: {missing[:20]}"

    from floodlight.analytics import AnalyticsClient

    client = AnalyticsClient(p.settings)

    def rows() -> int:
        try:
            res = client.query(f"SELECT count() AS n FROM stream_analytics WHERE stream_id = '{STREAM}'")
            return int(res[0]["n"])
        except Exception:  # noqa: BLE001 - the qoe app may still be starting
            return -1

    # Every accepted beacon should arrive; wait for that, but settle for what is there at the deadline and
    # judge it: the api answers before Kafka acks (issue 6), so a kill -9 of the api can lose what its
    # producer had not yet sent (~5 ms of linger) — at most a batch or two of one player's beacons.
    end = time.monotonic() + 30
    while rows() < beacons.accepted and time.monotonic() < end:
        time.sleep(0.5)
    stored = rows()
    lost = beacons.accepted - stored
    REPORT.append({"fault": "beacons", "recovery_s": None, "gops_lost": 0,
                   "notes": f"accepted {beacons.accepted}, stored {stored}, lost {max(lost, 0)}"})
    assert stored <= beacons.accepted, f"beacons counted twice: {stored} stored for {beacons.accepted} accepted"
    assert lost <= 2 * BeaconSender.BATCH, f"{lost} accepted beacons never reached ClickHouse"


def _listed_msns(playlist: str) -> set[int]:
    seq = int(re.search(r"#EXT-X-MEDIA-SEQUENCE:(\d+)", playlist).group(1))
    out, msn, gap = set(), seq, False
    for line in playlist.splitlines():
        if line.startswith("#EXT-X-GAP"):
            gap = True
        elif line and not line.startswith("#"):
            if not gap:
                out.add(msn)
            msn += 1
            gap = False
    return out


def _published_gops(p: ChaosPipeline) -> set[int]:
    from confluent_kafka import KafkaError, TopicPartition

    from floodlight.kafka import make_consumer
    from schemas import codec

    topic = p.settings.topic("gops")
    c = make_consumer(p.settings, "chaos-audit", **{"enable.partition.eof": True})
    parts = sorted(c.list_topics(topic, timeout=10).topics[topic].partitions)
    c.assign([TopicPartition(topic, x, 0) for x in parts])
    eof: set[int] = set()
    out: set[int] = set()
    end = time.monotonic() + 60
    while eof != set(parts) and time.monotonic() < end:
        msg = c.poll(0.5)
        if msg is None:
            continue
        if msg.error():
            if msg.error().code() == KafkaError._PARTITION_EOF:
                eof.add(msg.partition())
            continue
        rec = codec.decode(msg.value(), expect="GopChunk")
        if rec["stream_id"] == STREAM:
            out.add(rec["gop_index"])
    c.close()
    return out


def _ingest_drops(p: ChaosPipeline) -> int:
    n = 0
    for name in ("ingest-primary", "ingest-backup"):
        path = Path(p.tmp / "logs" / f"{name}.log")
        if path.exists():
            n += sum(1 for line in path.read_text(errors="replace").splitlines()
                     if "buffer full: dropped oldest GOP" in line)
    return n
