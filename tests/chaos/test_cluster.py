"""Chaos on a private three-node KRaft cluster (issue 16): the media path rides through broker faults.

One live stream (ingest -> 2 encoders -> 2 packagers) on topics with replication factor 3 and
min.insync.replicas 2. One fault at a time:
  - kill -9 the node leading the partitions of the live stream's GOPs, mid-event;
  - kill -9 the active KRaft controller;
  - a rolling restart of all three nodes, one at a time (controlled shutdown, back, in sync);
  - a stalled packager: SIGSTOP the member writing the stream past its session timeout, the other
    member takes the partition over, SIGCONT: the woken member must not write one object after that.
Each fault: the time from the fault to the next segment listed, and the longest stall of the live
playlist around it. Through the leader kill a real browser watches the stream through the Varnish edge
(the api and the edge in front of the store, plain hls.js in headless chromium, every option its default)
from before the kill until the node is back in sync: its longest stall in that window is printed against
the 2 s target and held under a 4 s guard (the file's last test), and its stalls, waiting events, latency
behind live and how long the store and the api listed no new part go into the report. Across the run:
0 GOPs lost (the published (stream, gop_index) set against the DVR playlist), MSNs continuous (no gap,
never back), no media object rewritten with other bytes, and the packagers' write log shows no write of a
fenced epoch after the claim that fenced it.
"""

from __future__ import annotations

import os
import random
import re
import signal
import threading
import time
from typing import Any

import httpx
import pytest
from confluent_kafka.admin import AdminClient

from floodlight.topics import apply_topics
from ops import stack
from ops.demo import ChildSpec, DemoOptions, plan_children, register_stream
from sinks.packager.fence import read_write_log
from tests.chaos import harness
from tests.chaos.conftest import EVIDENCE, REPORT
from tests.chaos.harness import (
    LADDER,
    STREAM,
    WATCH,
    BrowserWatch,
    ChaosPipeline,
    FaultReport,
    PlaylistPoller,
    Watcher,
    free_port,
    ingest_drops,
    mono_to_wall_ms,
    player_stalls,
    wall_ms,
)
from tests.conftest import TOOLS, require_tool
from tests.support import wait_until

NODES = 3
RECOVERY_BOUND_S = 20.0  # generous for 2 shared cores; the report prints the measured values
STALL_WINDOW_S = 25.0  # the longest playlist stall is looked for from the fault to this much after it
PLAYER_STALL_TARGET_S = 2.0  # issue 16: a browser watching through the edge stalls at most this long at the leader kill
# measured and printed against the target (house rule 4: speed is measured, not asserted); asserted is a guard that
# still fails a pipeline that does not ride through (with an encoder hung at the kill players stalled 5-7 s)
PLAYER_STALL_GUARD_S = 4.0
PLAYER_SETTLE_S = 8.0  # media seconds the player plays before the kill (past its start-up)
PLAYER_TAIL_S = 3.0  # media seconds it plays after the killed node is back in sync
BROWSER_TOOLS = ("node", "chromium", "playwright-core", "varnishd")
KILL_LEADER = "kill -9 leader of the GOPs' partitions"


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def cluster_port() -> int:
    """A base port with PORT..PORT+5 free (three nodes, each a client and a controller port)."""
    rng = random.Random()
    for _ in range(500):
        port = rng.randrange(20000, 31990, 2)
        wanted = set(range(port, port + 2 * NODES))
        if wanted & harness._TAKEN or not all(harness._bindable(p) for p in wanted):
            continue
        harness._TAKEN.update(wanted)
        return port
    raise RuntimeError("no free port range")


class ClusterPipeline(ChaosPipeline):
    """The harness pipeline on a three-node cluster: the media path (ingest, 2 encoders, 2 packagers), and the
    api with the Varnish edge in front of it for the browser that watches the leader kill (when varnishd is
    here; no qoe)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        port = cluster_port()
        self.settings = self.settings.model_copy(update={
            "kafka_nodes": NODES, "kafka_port": port,
            "kafka_bootstrap": ",".join(f"127.0.0.1:{port + 2 * i}" for i in range(NODES)),
            "packager_write_log": str(self.tmp / "writes.jsonl"),
            "edge_port": free_port(), "edge_cache_max_size": "64m",
        })
        self.with_edge = TOOLS["varnishd"][0]()
        self.admin = AdminClient({"bootstrap.servers": self.settings.kafka_bootstrap, "log_level": 0})

    def start(self) -> None:
        stack.up(self.settings, deadline_s=180)
        apply_topics(self.settings)
        opts = DemoOptions(stream_id=STREAM, source="testsrc:640x360@30", latency="low", encoders=2,
                           ladder=LADDER, edge=self.with_edge, dvr_window_s=900)
        register_stream(self.settings, opts)
        for spec in plan_children(self.settings, opts):
            if spec.name == "qoe" or (spec.name == "api" and not self.with_edge):
                continue  # the qoe app's faults are test_faults' job; the api serves the edge the browser watches
            if spec.name == "ingest":
                spec = ChildSpec("ingest-primary", [*spec.argv, "--ingest-id", "primary"], spec.env)
            self.specs[spec.name] = spec
            if spec.name == "packager":
                self.specs["packager-2"] = ChildSpec("packager-2", spec.argv, spec.env)
        for name in self.specs:
            self.launch(name)

    @property
    def edge(self) -> str:
        return f"http://127.0.0.1:{self.settings.edge_port}"

    # --- the cluster ------------------------------------------------------------------------------
    def nodes(self) -> list[stack.Node]:
        return stack.nodes(self.settings, NODES)

    def metadata(self) -> Any:
        return self.admin.list_topics(timeout=5)

    def ours(self, md: Any) -> dict[str, Any]:
        return {n: t for n, t in md.topics.items() if n.startswith(self.settings.topic_prefix)}

    def leaders(self) -> dict[tuple[str, int], int]:
        return {(name, pid): part.leader for name, t in self.ours(self.metadata()).items()
                for pid, part in t.partitions.items()}

    def controller(self) -> int:
        quorum = stack.active_controller(self.settings)
        assert quorum is not None and quorum["leader_id"] > 0, "no active controller answers"
        return int(quorum["leader_id"])

    def wait_in_sync(self, timeout: float = 90) -> float:
        """All nodes serving and every partition (internal ones too) fully in sync; returns seconds taken."""
        t0 = time.monotonic()
        stack.up(self.settings, deadline_s=timeout)

        def synced() -> bool:
            try:
                md = self.metadata()
            except Exception:  # noqa: BLE001 - a metadata answer may fail mid-election
                return False
            health = stack.partition_health(md)
            return len(md.brokers) == NODES and not health["under_replicated"] and not health["offline"]

        wait_until(synced, timeout, interval=0.25, what="every partition back in sync on three nodes")
        return time.monotonic() - t0

    def wait_leaders_off(self, node_id: int, partitions: list[tuple[str, int]], timeout: float = 30) -> float | None:
        """Seconds until none of `partitions` is led by `node_id` (or leaderless)."""
        t0 = time.monotonic()
        end = t0 + timeout
        while time.monotonic() < end:
            try:
                leaders = self.leaders()
                if all(leaders.get(tp, -1) not in (node_id, -1) for tp in partitions):
                    return time.monotonic() - t0
            except Exception:  # noqa: BLE001 - metadata unavailable for a moment
                pass
            time.sleep(0.05)
        return None


def segments_partition(settings: Any, stream_id: str) -> int:
    """The partition librdkafka's default partitioner (consistent_random: crc32 of the key) gives the key."""
    import zlib

    return zlib.crc32(stream_id.encode()) % settings.topic_partitions


def longest_stall(watcher: Watcher, t0: float, t1: float) -> float:
    """Longest time in [t0, t1] (monotonic) the live playlist listed nothing new."""
    changes = [t0]
    last = watcher.last_msn_at(t0)
    for ts, msn in list(watcher.history):
        if t0 < ts <= t1 and msn > last:
            changes.append(ts)
            last = msn
    changes.append(min(t1, time.monotonic()))
    return max(b - a for a, b in zip(changes, changes[1:], strict=False))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    old_term = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is threading.main_thread() and old_term is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt)
    p = ClusterPipeline(tmp_path_factory.mktemp("chaos-cluster"))
    watcher = Watcher(p.store_root)
    EVIDENCE["cluster"] = {"faults": {}}
    try:
        p.start()
        watcher.start()
        wait_until(lambda: watcher.last_msn >= 6, 150, interval=0.5,
                   what=f"the chaos stream to list 7 segments\n{p.log_tail('packager')}\n{p.log_tail('encoder-1')}")
        yield p, watcher
    finally:
        watcher.stop()
        try:
            EVIDENCE["cluster"]["playlist_timeline"] = watcher.timeline
            EVIDENCE["cluster"]["watcher_violations"] = watcher.violations
            EVIDENCE["cluster"]["status"] = stack.format_status(stack.status(p.settings))
        except Exception as exc:  # noqa: BLE001 - never mask the failure being unwound
            EVIDENCE["cluster"]["evidence_error"] = repr(exc)
        finally:
            p.stop()
            if old_term is signal.SIG_DFL and threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGTERM, old_term)


def _measure(p: ClusterPipeline, watcher: Watcher, row: FaultReport, fault_at: float) -> None:
    """The time from the fault to the next segment listed, and the longest stall after it."""
    msn = watcher.last_msn_at(fault_at)
    nxt = watcher.advanced_after(fault_at, msn, 60)
    row.recovery_s = nxt
    # wait out the stall window (or as long as the playlist keeps moving normally) before judging it
    time.sleep(max(0.0, min(STALL_WINDOW_S, 10.0) - (time.monotonic() - fault_at)))
    stall = longest_stall(watcher, fault_at, time.monotonic())
    row.evidence.update(msn_at_fault=msn, next_segment_s=nxt, longest_stall_s=round(stall, 2))
    dead = [n for n, ok in p.alive().items() if not ok]
    if dead:
        row.notes = f"dead after: {dead}"
    assert not dead, "roles died: " + "\n".join(f"{d}:\n{p.log_tail(d)}" for d in dead)
    assert nxt is not None, f"{row.fault}: no new segment listed within 60 s"
    assert stall <= RECOVERY_BOUND_S, f"{row.fault}: the live playlist stalled {stall:.1f} s"


def test_the_cluster_is_replicated(cluster) -> None:
    p, _ = cluster
    st = stack.status(p.settings)
    EVIDENCE["cluster"]["status_at_start"] = stack.format_status(st)
    assert [n["state"] for n in st["nodes"]] == ["up"] * NODES, st["nodes"]
    assert st["controller"] and st["controller"]["node"] in (1, 2, 3)
    assert st["under_replicated"] == [] and st["offline"] == []
    ours = {n: rf for n, rf in st["replication"].items() if n.startswith(p.settings.topic_prefix)}
    assert ours and set(ours.values()) == {3}, ours
    from confluent_kafka.admin import ConfigResource

    futures = p.admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, n) for n in ours])
    assert {f.result()["min.insync.replicas"].value for f in futures.values()} == {"2"}


def _kill_node(p: ClusterPipeline, watcher: Watcher, victim: int, name: str,
               evidence: dict[str, Any]) -> FaultReport:
    node = p.nodes()[victim - 1]
    leaders = p.leaders()
    led = sorted(tp for tp, leader in leaders.items() if leader == victim)
    row = FaultReport(fault=name, measured_by="next segment listed after the kill", started_ms=wall_ms())
    REPORT.append(row)
    fault_at = time.monotonic()
    stack.stop_node(node, kill=True)
    row.back_ms = mono_to_wall_ms(fault_at)
    moved = p.wait_leaders_off(victim, led)
    row.evidence.update(node=victim, partitions_led=[f"{t}-{i}" for t, i in led], leaders_moved_s=moved, **evidence)
    _measure(p, watcher, row, fault_at)
    row.evidence["node_back_in_sync_s"] = round(p.wait_in_sync(), 2)
    row.notes = (f"node {victim} led {len(led)} partitions; new leaders after {moved:.1f} s; "
                 f"longest stall {row.evidence['longest_stall_s']} s" if moved is not None else "leaders did not move")
    EVIDENCE["cluster"]["faults"][name] = row.as_dict()
    assert moved is not None, f"{name}: partitions of node {victim} got no new leader within 30 s"
    return row


def test_kill_the_leader_of_the_streams_gops(cluster) -> None:
    p, watcher = cluster
    missing = [t for t in BROWSER_TOOLS if not TOOLS[t][0]()]
    browser = None
    pollers: dict[str, PlaylistPoller] = {}
    if not missing:  # a browser through the edge watches from before the kill until the node is back in sync
        edge_playlist = f"{p.edge}/live/{STREAM}/{WATCH}/playlist.m3u8"

        def edge_lists() -> bool:
            try:
                return httpx.get(edge_playlist, timeout=2).text.count(".m4s\n") >= 3
            except httpx.HTTPError:
                return False

        wait_until(edge_lists, 60, interval=0.25,
                   what=f"the live playlist through the edge\n{p.log_tail('api')}\n{p.log_tail('edge')}")
        browser = BrowserWatch(f"{p.edge}/live/{STREAM}/master.m3u8")
        pollers = {"api": PlaylistPoller(f"{p.api}/live/{STREAM}/{WATCH}/playlist.m3u8")}
        for poller in pollers.values():
            poller.start()
    row: FaultReport | None = None
    record: dict[str, Any] | None = None
    t_end = 0
    try:
        if browser is not None:
            started = browser.wait(lambda s: s.get("playing"), 90, "the player to play through the edge")
            browser.wait(lambda s: s["currentTime"] >= started["currentTime"] + PLAYER_SETTLE_S, PLAYER_SETTLE_S + 30,
                         f"the player to play {PLAYER_SETTLE_S} s before the kill")
        controller = p.controller()
        leaders = p.leaders()
        gops, segments = p.settings.topic("gops"), p.settings.topic("segments")
        seg_part = segments_partition(p.settings, STREAM)
        # the stream's GOPs rotate over every gops partition; the segments of the stream stay on one
        score: dict[int, int] = {}
        for (topic, part), leader in leaders.items():
            if topic == gops or (topic == segments and part == seg_part):
                score[leader] = score.get(leader, 0) + 1
        # the controller has a test of its own: take the busiest other node
        victim = max((n for n in score if n != controller), key=lambda n: score[n], default=None)
        if victim is None:
            victim = max(score, key=lambda n: score[n])
        name = KILL_LEADER
        try:
            row = _kill_node(p, watcher, victim, name, {
                "controller": controller, "stream_partitions_led": score.get(victim, 0),
                "segments_partition": seg_part})
        finally:
            row = row or next((r for r in reversed(REPORT) if r.fault == name), None)
        if browser is not None:  # the player goes on past the node's return
            back = browser.state()["currentTime"]
            browser.wait(lambda s: s["currentTime"] >= back + PLAYER_TAIL_S, PLAYER_TAIL_S + 30,
                         f"the player to play {PLAYER_TAIL_S} s after the node is back")
    finally:
        if browser is not None:
            t_end = wall_ms()
            for poller in pollers.values():
                poller.stop()
            try:
                record = browser.finish()
            finally:
                if row is not None and record is not None:
                    _player_report(row, record, t_end, watcher, pollers)
    if browser is None:
        row.notes += f"; no browser ({', '.join(missing)} missing)"
        require_tool(missing[0])  # skips on a workstation, fails under CI: the player bound was not checked
        return
    player = row.evidence["player"]
    assert not player["fatal_errors"], f"the player hit fatal errors: {player}"
    assert player["samples_before"] >= 10 and player["samples_during"] >= player["window_s"], (
        f"the browser did not watch the whole window around the kill: {player}")
    assert player["last_sample_ms"] >= t_end - 2000, f"the player stopped reporting before the end: {player}"
    # the stall bound itself: test_a_player_through_the_edge_stalls_at_most_2_s_at_the_leader_kill (last)


def _part_gap(timeline: list[tuple[int, str]], t0_ms: int, t1_ms: int) -> tuple[float | None, list[Any]]:
    """Longest time a live playlist listed no new part (what an LL-HLS player waits on) from the last part
    listed before t0_ms to t1_ms, and the part timeline around it."""
    around = [(t, uri) for t, uri in timeline if t0_ms - 3000 <= t <= t1_ms]
    if not around:
        return None, []
    last_before = max((t for t, _ in around if t <= t0_ms), default=t0_ms)  # the freeze began there
    times = [last_before] + [t for t, _ in around if t > t0_ms] + [t1_ms]
    return round(max(b - a for a, b in zip(times, times[1:], strict=False)) / 1000, 2), around


def _player_report(row: FaultReport, record: dict[str, Any], t_end: int, watcher: Watcher,
                   pollers: dict[str, PlaylistPoller]) -> None:
    """The browser's numbers from the kill (row.back_ms) to t_end into the row's notes and evidence, with how
    long the live playlist listed no new part in the store and on the api."""
    player = player_stalls(record, row.back_ms, t_end)
    player["part_gap_s"], row.evidence["part_timeline"] = _part_gap(watcher.part_timeline, row.back_ms, t_end)
    for where, poller in pollers.items():
        player[f"part_gap_{where}_s"], row.evidence[f"part_timeline_{where}"] = _part_gap(
            poller.timeline, row.back_ms, t_end)
    row.evidence["player"] = player
    row.notes += (
        f"; browser (hls.js {player['hls_js']} via edge, {player['window_s']:.0f} s from the kill): "
        f"longest stall {player['longest_stall_s']} s, total {player['total_stall_s']} s in {player['stalls']} "
        f"stall(s), {player['waiting_events']} waiting (longest {player['longest_waiting_s']} s), "
        f"{player['buffer_stalled_errors']} bufferStalledError; behind live {player['latency_before_s']} s before, "
        f"max {player['latency_max_s']} s (glass-to-glass {player['glass_to_glass_before_s']} -> max "
        f"{player['glass_to_glass_max_s']} s; buffer {player['buffer_before_s']} s before); "
        f"no new part listed for {player['part_gap_s']} s in the store, {player.get('part_gap_api_s')} s on the "
        f"api")
    EVIDENCE["cluster"]["faults"][row.fault] = row.as_dict()


def test_kill_the_active_controller(cluster) -> None:
    p, watcher = cluster
    controller = p.controller()
    t0 = time.monotonic()
    elected: list[float] = []

    def watch_quorum() -> None:  # how long the quorum has no other leader
        while time.monotonic() - t0 < 30:
            quorum = stack.active_controller(p.settings)
            if quorum is not None and quorum["leader_id"] not in (controller, -1):
                elected.append(time.monotonic() - t0)
                return
            time.sleep(0.1)

    watcher_thread = threading.Thread(target=watch_quorum, daemon=True)
    watcher_thread.start()
    row = _kill_node(p, watcher, controller, "kill -9 active controller", {"controller": controller})
    watcher_thread.join(30)
    quorum = stack.active_controller(p.settings)
    row.evidence["new_controller_s"] = round(elected[0], 2) if elected else None
    row.notes += f"; new controller after {row.evidence['new_controller_s']} s"
    EVIDENCE["cluster"]["faults"][row.fault] = row.as_dict()
    assert elected, "no new active controller within 30 s"
    assert quorum is not None and len(quorum["voters"]) == NODES


def test_rolling_restart_of_all_three_nodes(cluster) -> None:
    p, watcher = cluster
    controller = p.controller()
    order = [n for n in (1, 2, 3) if n != controller] + [controller]  # the active controller last
    row = FaultReport(fault="rolling restart of 3 nodes", measured_by="longest playlist stall during the roll",
                      started_ms=wall_ms())
    REPORT.append(row)
    t_start = time.monotonic()
    steps = []
    for node_id in order:
        node = p.nodes()[node_id - 1]
        t0 = time.monotonic()
        stack.stop_node(node, kill=False)  # SIGTERM: controlled shutdown moves its leaders away first
        stopped = time.monotonic() - t0
        synced = p.wait_in_sync()
        steps.append({"node": node_id, "stop_s": round(stopped, 2), "back_in_sync_s": round(synced, 2),
                      "longest_stall_s": round(longest_stall(watcher, t0, time.monotonic()), 2)})
    row.back_ms = wall_ms()
    # and the stream keeps going after the last node is back
    after = time.monotonic()
    msn = watcher.last_msn_at(after)
    nxt = watcher.advanced_after(after, msn, 60)
    stall = longest_stall(watcher, t_start, time.monotonic())
    row.recovery_s = round(stall, 2)
    row.evidence.update(order=order, steps=steps, roll_s=round(after - t_start, 2), longest_stall_s=round(stall, 2),
                        next_segment_after_roll_s=nxt)
    row.notes = f"order {order}; roll took {after - t_start:.0f} s; longest stall {stall:.1f} s"
    EVIDENCE["cluster"]["faults"][row.fault] = row.as_dict()
    dead = [n for n, ok in p.alive().items() if not ok]
    assert not dead, "roles died: " + "\n".join(f"{d}:\n{p.log_tail(d)}" for d in dead)
    assert nxt is not None, "no new segment after the rolling restart"
    assert stall <= RECOVERY_BOUND_S, f"the live playlist stalled {stall:.1f} s during the rolling restart"


def _writer_of(p: ClusterPipeline) -> tuple[str, int, int]:
    """(child name, pid, partition) of the packager member writing the stream now (from the write log)."""
    writes = [e for e in read_write_log(p.settings.packager_write_log)
              if e.get("op") == "put" and e.get("stream") == STREAM]
    assert writes, "no packager write logged for the stream"
    last = writes[-1]
    for name in ("packager", "packager-2"):
        if p.procs[name].pid == last["pid"]:
            return name, last["pid"], int(last["partition"])
    raise AssertionError(f"the writer pid {last['pid']} is not one of the packagers")


def test_stalled_packager_writes_nothing_after_it_is_fenced(cluster) -> None:
    p, watcher = cluster
    name, pid, part = _writer_of(p)
    other = "packager-2" if name == "packager" else "packager"
    log_path = p.settings.packager_write_log
    row = FaultReport(fault="stalled packager (SIGSTOP 10 s+)", measured_by="next segment listed after the stop",
                      started_ms=wall_ms())
    REPORT.append(row)
    stopped_at = time.monotonic()
    os.killpg(pid, signal.SIGSTOP)
    try:
        def claim_by_other() -> dict[str, Any] | None:
            claims = [e for e in read_write_log(log_path)
                      if e.get("op") == "claim" and e.get("partition") == part and e.get("pid") != pid
                      and e["t_ms"] >= row.started_ms]
            return claims[0] if claims else None

        claim = wait_until(claim_by_other, 60, interval=0.2,
                           what=f"{other} to claim partition {part} after {name} stopped\n{p.log_tail(other)}")
        nxt = watcher.advanced_after(stopped_at, watcher.last_msn_at(stopped_at), 60)
        time.sleep(2)  # the new owner writes for a while; the stopped one is still asleep
    finally:
        os.killpg(pid, signal.SIGCONT)
    woke_ms = wall_ms()
    # the woken member runs into the fence (or learns of the loss at its poll) and drops the partition
    wait_until(lambda: "fenced" in p.log_tail(name, 200) or "partitions lost" in p.log_tail(name, 200), 30,
               interval=0.25, what=f"{name} to notice it lost partition {part}\n{p.log_tail(name)}")
    time.sleep(3)  # room for any late write to show in the log
    entries = read_write_log(log_path)
    mine = [e for e in entries if e.get("pid") == pid and e.get("op") in ("put", "delete")
            and e.get("partition") == part]
    old_epochs = {e["epoch"] for e in mine if e["t_ms"] < claim["t_ms"]}
    after_fence = [e for e in mine if e["t_ms"] > claim["t_ms"] and e["epoch"] < claim["epoch"]]
    checked_after = [e for e in after_fence if e["t_check_ms"] > claim["t_ms"]]
    stall = longest_stall(watcher, stopped_at, time.monotonic())
    row.recovery_s = nxt
    row.back_ms = woke_ms
    row.evidence.update(stopped=name, pid=pid, partition=part, claim=claim, writes_before=len(mine),
                        old_epochs=sorted(old_epochs), writes_after_fence=after_fence, next_segment_s=nxt,
                        longest_stall_s=round(stall, 2),
                        fenced_in_log="fenced" in p.log_tail(name, 200))
    row.notes = (f"{other} claimed epoch {claim['epoch']} {(claim['t_ms'] - row.started_ms) / 1000:.1f} s after the "
                 f"stop; writes by the woken member after it: {len(after_fence)}")
    EVIDENCE["cluster"]["faults"][row.fault] = row.as_dict()
    assert old_epochs, f"{name} wrote nothing for partition {part} before it was stopped"
    assert checked_after == [], f"writes checked against a fenced epoch after the claim: {checked_after[:5]}"
    assert after_fence == [], f"{len(after_fence)} writes of the stopped member after the claim: {after_fence[:5]}"
    assert p.alive()[name], f"{name} died after SIGCONT:\n{p.log_tail(name)}"
    assert nxt is not None and nxt <= RECOVERY_BOUND_S + 10, f"the stream did not move on within {nxt} s"


def test_nothing_lost_across_the_cluster_faults(cluster) -> None:
    p, watcher = cluster
    settle_msn = watcher.last_msn + 3
    wait_until(lambda: watcher.last_msn >= settle_msn, 60, interval=0.5, what="the stream to keep advancing")
    assert watcher.violations == [], watcher.violations[:10]

    published = _published_gops(p)
    import json

    state = json.loads((p.store_root / "packager" / "live" / STREAM / "state.json").read_text())
    base = state["base_gop"]
    dvr = (p.store_root / "live" / STREAM / WATCH / "dvr.m3u8").read_text()
    listed, gaps = _listed(dvr)
    listed_gops = {msn + base for msn in listed}
    last = max(listed_gops)
    expected = {(STREAM, g) for g in published if base <= g < last - 2}
    have = {(STREAM, g) for g in listed_gops}
    missing = expected - have
    dropped = {(STREAM, g) for g in ingest_drops(p.tmp / "logs")}
    msns = sorted(listed)
    holes = sorted(set(range(msns[0], msns[-1] + 1)) - set(msns))
    faults = [r for r in REPORT if r.started_ms and r.fault in EVIDENCE["cluster"]["faults"]]
    for i, row in enumerate(faults):
        end = faults[i + 1].started_ms if i + 1 < len(faults) else float("inf")
        window = {(STREAM, g) for (_s, g) in expected if row.started_ms <= published[g] < end}
        row.gops_checked, row.gops_lost = len(window), len(window & missing)
        row.evidence["gops_lost"] = sorted(g for _s, g in window & missing)
    REPORT.append(FaultReport(
        fault="cluster: whole run", measured_by="DVR playlist vs published (stream, gop_index) sets",
        gops_checked=len(expected), gops_lost=len(missing),
        notes=f"msn {msns[0]}..{msns[-1]}, holes {len(holes)}, gaps {len(gaps)}, ingest drops {len(dropped)}"))
    EVIDENCE["cluster"].update(base_gop=base, missing=sorted(g for _s, g in missing), gap_msns=gaps, holes=holes,
                               expected_range=[min(g for _s, g in expected), max(g for _s, g in expected)],
                               published_capture_ms={str(g): published[g] for g in sorted(published)},
                               fault_windows={r.fault: [r.started_ms, r.gops_checked] for r in faults})
    assert not missing, f"GOPs published but not in the DVR playlist: {sorted(missing)[:20]} (ingest drops {dropped})"
    assert not holes and not gaps, f"MSNs not continuous: holes {holes[:10]}, gaps {gaps[:10]}"


def test_a_player_through_the_edge_rides_through_the_leader_kill(cluster) -> None:
    """Issue 16: a real browser (plain hls.js through the edge) watching during the leader kill stalls at most
    2 s (the target, printed; a 4 s guard asserted). Measured by test_kill_the_leader_of_the_streams_gops; judged
    last, so a miss here does not hide the other faults' proofs under -x."""
    missing = [t for t in BROWSER_TOOLS if not TOOLS[t][0]()]
    if missing:
        require_tool(missing[0])  # skips on a workstation, fails under CI
    row = next((r for r in REPORT if r.fault == KILL_LEADER), None)
    assert row is not None and "player" in row.evidence, "the leader kill recorded no player numbers"
    player = row.evidence["player"]
    longest = max(player["longest_stall_s"], player["longest_waiting_s"])
    verdict = "met" if longest <= PLAYER_STALL_TARGET_S else "MISSED"
    print(f"\nplayer through the edge at the leader kill: longest stall {longest} s "
          f"(target <= {PLAYER_STALL_TARGET_S} s: {verdict})")
    assert longest <= PLAYER_STALL_GUARD_S, (
        f"the player stalled {longest} s at the leader kill (guard {PLAYER_STALL_GUARD_S} s; the playlist listed "
        f"no new part for {player['part_gap_s']} s in the store, {player.get('part_gap_api_s')} s on the api; "
        f"the player had {player['buffer_before_s']} s buffered): "
        f"{ {k: v for k, v in player.items() if k != 'events_around'} }")


def _listed(playlist: str) -> tuple[set[int], list[int]]:
    """MSNs the playlist lists with media, and the ones marked EXT-X-GAP."""
    seq = int(re.search(r"#EXT-X-MEDIA-SEQUENCE:(\d+)", playlist).group(1))
    out, gaps, msn, gap = set(), [], seq, False
    for line in playlist.splitlines():
        if line.startswith("#EXT-X-GAP"):
            gap = True
        elif line and not line.startswith("#"):
            (gaps.append(msn) if gap else out.add(msn))
            msn += 1
            gap = False
    return out, gaps


def _published_gops(p: ClusterPipeline) -> dict[int, int]:
    """gop_index -> capture wall clock (ms) of every GOP of the stream on floodlight.gops."""
    from confluent_kafka import KafkaError, TopicPartition

    from floodlight.kafka import make_consumer
    from schemas import codec

    topic = p.settings.topic("gops")
    c = make_consumer(p.settings, "chaos-cluster-audit", **{"enable.partition.eof": True})
    parts = sorted(c.list_topics(topic, timeout=10).topics[topic].partitions)
    c.assign([TopicPartition(topic, x, 0) for x in parts])
    eof: set[int] = set()
    out: dict[int, int] = {}
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
            g = rec["gop_index"]
            out[g] = min(out.get(g, rec["capture_wallclock_ms"]), rec["capture_wallclock_ms"])
    c.close()
    assert eof == set(parts), f"could not read {topic} to its end within 60 s"
    return out
