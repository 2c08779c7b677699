"""The native local stack: Apache Kafka 4.x in KRaft mode, from Maven Central jars.

No Docker engine on the dev machines, so `./run stack up` starts the real broker as a plain Java
process with logs and data under .stack/. One combined broker+controller node by default; with
FLOODLIGHT_KAFKA_NODES=3 (or `--nodes 3`) three of them on loopback form a 3-voter KRaft quorum
(static `controller.quorum.voters`), node i listening on PORT+2(i-1) and its controller on the next
port, with replicated internal topics and small heaps. Idempotent: `up` twice is harmless, and `up`
restarts only the nodes that are down.

Layout: one node keeps .stack/kafka/{data,logs,broker.pid}; a cluster keeps .stack/kafka/node-<i>/...
and the cluster id in .stack/kafka/cluster.id. `down` and `status` find what runs from the pid files.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from floodlight.settings import ROOT, Settings, get_settings
from schemas.errors import FloodlightError

POM_DIR = ROOT / "compose" / "local" / "kafka"
LIBS_DIR = ROOT / ".stack" / "kafka" / "libs"
BROKER_MSG_BYTES = 16 * 1024 * 1024 + 1024 * 1024
# One node has the machine to itself; a three-node cluster shares it, so each node gets a small heap
# (measured idle figures in README "Local stack").
HEAP_ONE_NODE = ["-Xms256m", "-Xmx1g", "-XX:+UseG1GC"]
HEAP_CLUSTER_NODE = ["-Xms64m", "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
                     "-XX:ReservedCodeCacheSize=64m", "-Xss512k"]

LOG4J = """\
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
"""


class StackError(FloodlightError, RuntimeError):
    pass


@dataclass(frozen=True)
class Node:
    """One KRaft node of the local stack (combined broker + controller)."""

    id: int
    port: int  # client (PLAINTEXT) listener
    controller_port: int
    base: Path  # server.properties, broker.pid, data/, logs/

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def logs(self) -> Path:
        return self.base / "logs"

    @property
    def pidfile(self) -> Path:
        return self.base / "broker.pid"


def _kafka_dir(settings: Settings) -> Path:
    return settings.stack_dir / "kafka"


def _dirs(settings: Settings) -> dict[str, Path]:
    base = _kafka_dir(settings)
    # Jars are shared by every stack dir (tests start private brokers in temp dirs).
    return {"base": base, "libs": LIBS_DIR, "data": base / "data", "logs": base / "logs"}


def nodes(settings: Settings, count: int | None = None) -> list[Node]:
    """The nodes of a `count`-node stack (default: what runs in this stack dir, else the setting)."""
    count = count or layout(settings)
    base = _kafka_dir(settings)
    if count == 1:
        return [Node(1, settings.kafka_port, settings.kafka_port + 1, base)]
    return [Node(i, settings.kafka_port + 2 * (i - 1), settings.kafka_port + 2 * (i - 1) + 1, base / f"node-{i}")
            for i in range(1, count + 1)]


def bootstrap_of(settings: Settings, count: int | None = None) -> str:
    return ",".join(n.address for n in nodes(settings, count))


def kafka_version() -> str:
    text = (POM_DIR / "pom.xml").read_text()
    return text.split("<kafka.version>")[1].split("<")[0]


def fetch_jars(settings: Settings) -> Path:
    """Resolve the broker jars once with Maven (offline-tolerant afterwards)."""
    libs = _dirs(settings)["libs"]
    stamp = libs / ".pom-sha256"
    want = hashlib.sha256((POM_DIR / "pom.xml").read_bytes()).hexdigest()
    marker = libs / f"kafka_2.13-{kafka_version()}.jar"
    if marker.exists() and stamp.exists() and stamp.read_text() == want:
        return libs
    if libs.exists():
        shutil.rmtree(libs)
    libs.mkdir(parents=True, exist_ok=True)
    print(f"fetching Apache Kafka {kafka_version()} jars from Maven Central ...", flush=True)
    cmd = ["mvn", "-q", "-B", "-f", str(POM_DIR / "pom.xml"), "dependency:copy-dependencies",
           f"-DoutputDirectory={libs}", "-DincludeScope=runtime"]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0 or not marker.exists():
        raise StackError(f"mvn could not fetch the Kafka jars:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    stamp.write_text(want)
    return libs


def server_properties(settings: Settings, node: Node, count: int) -> list[str]:
    """The broker+controller configuration of one node of a `count`-node stack."""
    voters = ",".join(f"{n.id}@127.0.0.1:{n.controller_port}" for n in nodes(settings, count))
    rf = min(3, count)
    min_isr = 2 if count >= 3 else 1
    props = [
        "process.roles=broker,controller",
        f"node.id={node.id}",
        f"controller.quorum.voters={voters}",
        f"listeners=PLAINTEXT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}",
        f"advertised.listeners=PLAINTEXT://127.0.0.1:{node.port}",
        "controller.listener.names=CONTROLLER",
        "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "inter.broker.listener.name=PLAINTEXT",
        f"log.dirs={node.data}",
        "num.partitions=1",
        f"default.replication.factor={rf}",
        f"min.insync.replicas={min_isr}",
        f"offsets.topic.replication.factor={rf}",
        f"transaction.state.log.replication.factor={rf}",
        f"transaction.state.log.min.isr={min_isr}",
        f"share.coordinator.state.topic.replication.factor={rf}",
        f"share.coordinator.state.topic.min.isr={min_isr}",
        "group.initial.rebalance.delay.ms=0",
        "auto.create.topics.enable=false",
        f"message.max.bytes={BROKER_MSG_BYTES}",
        f"replica.fetch.max.bytes={BROKER_MSG_BYTES}",
        "socket.request.max.bytes=209715200",
        "log.retention.check.interval.ms=60000",
        "log.cleaner.backoff.ms=5000",
        "group.consumer.session.timeout.ms=10000",
        "group.consumer.min.session.timeout.ms=5000",
        "group.consumer.heartbeat.interval.ms=1000",
        "group.consumer.min.heartbeat.interval.ms=500",
        # an open transaction of a member killed mid-way holds back read_committed readers until it times out
        "transaction.abort.timed.out.transaction.cleanup.interval.ms=1000",
    ]
    if count > 1:
        props += [
            # A dead node is fenced (and its partitions get new leaders) 1.5 s after its last heartbeat, not
            # the default 9 s, and a dead active controller is replaced after 1 s without fetches (default
            # 2 s): a leader lost mid-event costs a couple of seconds of stream (README "Local stack").
            "broker.session.timeout.ms=1500",
            "broker.heartbeat.interval.ms=250",
            "controller.quorum.fetch.timeout.ms=1000",
            # a follower that stops fetching leaves the ISR after 10 s (default 30 s holds acks=all back)
            "replica.lag.time.max.ms=10000",
            # small machine, three nodes: fewer threads and internal partitions per node
            "offsets.topic.num.partitions=12",
            "transaction.state.log.num.partitions=12",
            "num.network.threads=2",
            "num.io.threads=4",
            "background.threads=4",
            "log.cleaner.threads=1",
            # bring leadership back to preferred replicas soon after a node returns
            "leader.imbalance.check.interval.seconds=30",
        ]
    return props


def _write_config(settings: Settings, node: Node, count: int) -> Path:
    node.base.mkdir(parents=True, exist_ok=True)
    node.data.mkdir(parents=True, exist_ok=True)
    node.logs.mkdir(parents=True, exist_ok=True)
    props = node.base / "server.properties"
    props.write_text("\n".join([*server_properties(settings, node, count), ""]))
    (node.base / "log4j2.properties").write_text(LOG4J.format(log=node.logs / "server.log"))
    return props


def _java(node: Node, main: str, *args: str, heap: list[str], **popen: Any) -> subprocess.Popen[bytes]:
    cmd = ["java", *heap, "-Djava.awt.headless=true",
           f"-Dlog4j2.configurationFile={node.base / 'log4j2.properties'}",
           f"-Dkafka.logs.dir={node.logs}", "-cp", f"{LIBS_DIR}/*", main, *args]
    return subprocess.Popen(cmd, **popen)


def _pid_of(pidfile: Path) -> int | None:
    if not pidfile.exists():
        return None
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, 0)
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        return pid if b"kafka.Kafka" in cmdline else None
    except (ValueError, ProcessLookupError, PermissionError, FileNotFoundError):
        return None


def _cluster_dirs(settings: Settings) -> list[Path]:
    base = _kafka_dir(settings)
    found = [p for p in base.glob("node-*") if p.is_dir() and p.name[5:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[5:]))


def layout(settings: Settings) -> int:
    """Node count of the stack running in this stack dir; the setting when nothing runs."""
    cluster = _cluster_dirs(settings)
    if any(_pid_of(d / "broker.pid") for d in cluster):
        return len(cluster)
    if _pid_of(_kafka_dir(settings) / "broker.pid"):
        return 1
    return settings.kafka_nodes


def node_pid(node: Node) -> int | None:
    return _pid_of(node.pidfile)


def broker_pid(settings: Settings) -> int | None:
    """Pid of the first running node of this stack dir (None when none runs)."""
    for node in nodes(settings):
        pid = node_pid(node)
        if pid:
            return pid
    return None


def _log_tail(node: Node, n: int = 40) -> str:
    text = ""
    for f in (node.logs / "server.log", node.logs / "stdout.log"):
        if f.exists():
            text += f"--- {f} ---\n" + "\n".join(f.read_text(errors="replace").splitlines()[-n:]) + "\n"
    return text


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _cluster_id(settings: Settings, count: int) -> str:
    if count == 1:
        return uuid.uuid4().hex[:22]
    path = _kafka_dir(settings) / "cluster.id"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(uuid.uuid4().hex[:22])
    return path.read_text().strip()


def start_node(settings: Settings, node: Node, count: int) -> int:
    """Format the node's storage the first time, then start it; returns the pid (does not wait)."""
    pid = node_pid(node)
    if pid:
        return pid
    if _port_open(node.port) or _port_open(node.controller_port):
        raise StackError(f"port {node.port} or {node.controller_port} is taken by a process that is not this stack's "
                         f"node {node.id}: stop it or set FLOODLIGHT_KAFKA_PORT")
    props = _write_config(settings, node, count)
    heap = HEAP_ONE_NODE if count == 1 else HEAP_CLUSTER_NODE
    if not (node.data / "meta.properties").exists():
        fmt = _java(node, "kafka.tools.StorageTool", "format", "-t", _cluster_id(settings, count), "-c", str(props),
                    "--ignore-formatted", heap=HEAP_CLUSTER_NODE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out, _ = fmt.communicate(timeout=120)
        if fmt.returncode != 0:
            raise StackError(f"formatting Kafka storage of node {node.id} failed:\n{out.decode(errors='replace')}")
    with open(node.logs / "stdout.log", "ab") as out:
        proc = _java(node, "kafka.Kafka", str(props), heap=heap, stdout=out, stderr=subprocess.STDOUT,
                     stdin=subprocess.DEVNULL, start_new_session=True)
    node.pidfile.write_text(str(proc.pid))
    return proc.pid


def stop_node(node: Node, *, kill: bool = False, deadline_s: float = 30.0) -> bool:
    """SIGTERM (controlled shutdown: leadership moves away first) or SIGKILL one node; SIGKILL after the
    deadline. True if it was running."""
    pid = node_pid(node)
    if not pid:
        node.pidfile.unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGKILL if kill else signal.SIGTERM)
    _reap(pid, deadline_s)
    if node_pid(node):
        os.kill(pid, signal.SIGKILL)
        _reap(pid, 10)
    node.pidfile.unlink(missing_ok=True)
    return True


def _reap(pid: int, deadline_s: float) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:  # our child (tests): reap it, or it lingers as a zombie
                return
        except ChildProcessError:
            pass
        try:
            os.kill(pid, 0)
            if b"kafka.Kafka" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                return  # a zombie has an empty cmdline
        except (ProcessLookupError, FileNotFoundError):
            return
        time.sleep(0.1)


def node_serves(node: Node, timeout: float = 2.0) -> bool:
    """The node itself answers a metadata request and lists itself as a live broker."""
    from confluent_kafka.admin import AdminClient

    if not _port_open(node.port):
        return False
    try:
        md = AdminClient({"bootstrap.servers": node.address, "log_level": 0}).list_topics(timeout=timeout)
    except Exception:  # noqa: BLE001 - not serving yet
        return False
    return node.id in md.brokers


def wait_nodes(settings: Settings, count: int, deadline_s: float = 90.0, bootstrap: str | None = None,
               fresh: list[Node] | None = None) -> str:
    """Block until `count` brokers are registered and unfenced (a metadata request lists them all) and
    every node in `fresh` (just started) answers on its own listener."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap or bootstrap_of(settings, count), "log_level": 0})
    end = time.monotonic() + deadline_s
    seen: object = None
    waiting = list(fresh or [])
    while time.monotonic() < end:
        waiting = [n for n in waiting if not node_serves(n)]
        try:
            md = admin.list_topics(timeout=2)
            seen = sorted(md.brokers)
            if len(md.brokers) >= count and not waiting:
                return md.cluster_id or "?"
        except KafkaException as exc:
            seen = exc
        time.sleep(0.3)
    raise TimeoutError(f"{count} Kafka node(s) not all up at {bootstrap or bootstrap_of(settings, count)} after "
                       f"{deadline_s}s (brokers seen: {seen}; not serving yet: {[n.id for n in waiting]})")


def up(settings: Settings | None = None, deadline_s: float = 90.0) -> int:
    """Start every node of the stack that is not running; return node 1's pid once all are registered."""
    settings = settings or get_settings()
    count = settings.kafka_nodes
    running = layout(settings)
    any_running = any(node_pid(n) for n in nodes(settings, running))
    if any_running and running != count:
        if count == 1:
            count = running  # a cluster runs in this stack dir: use it (the default asks for one node)
        else:
            raise StackError(f"a {running}-node stack runs in {settings.stack_dir}: stop it first (./run stack down)")
    fetch_jars(settings)
    procs = {}
    for node in nodes(settings, count):
        if not node_pid(node):
            procs[node.id] = start_node(settings, node, count)
    try:
        wait_nodes(settings, count, deadline_s, fresh=[n for n in nodes(settings, count) if n.id in procs])
    except TimeoutError as exc:
        tails = "".join(_log_tail(n) for n in nodes(settings, count) if n.id in procs)
        raise StackError(f"{exc}\n{tails}") from exc
    for node in nodes(settings, count):
        if node.id in procs and not node_pid(node):
            raise StackError(f"node {node.id} exited\n{_log_tail(node)}")
    return node_pid(nodes(settings, count)[0]) or 0


def down(settings: Settings | None = None, deadline_s: float = 30.0) -> bool:
    """Stop every node running in this stack dir (SIGTERM, SIGKILL after the deadline). True if any ran."""
    settings = settings or get_settings()
    pidfiles = [_kafka_dir(settings) / "broker.pid", *(d / "broker.pid" for d in _cluster_dirs(settings))]
    pids = [(pf, _pid_of(pf)) for pf in pidfiles]
    running = [(pf, pid) for pf, pid in pids if pid]
    for pf, pid in pids:
        if not pid:
            pf.unlink(missing_ok=True)
    for _, pid in running:
        os.kill(pid, signal.SIGTERM)
    end = time.monotonic() + deadline_s
    for pf, pid in running:
        _reap(pid, max(0.0, end - time.monotonic()))
        if _pid_of(pf):
            os.kill(pid, signal.SIGKILL)
            _reap(pid, 10)
        pf.unlink(missing_ok=True)
    return bool(running)


# --- what `status` shows: the quorum (DescribeQuorum over the Kafka protocol) and the partitions -----

def _uvarint(n: int) -> bytes:
    out = b""
    while True:
        b, n = n & 0x7F, n >> 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def _read_uvarint(buf: bytes, i: int) -> tuple[int, int]:
    shift = n = 0
    while True:
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


def describe_quorum(address: str, timeout: float = 3.0) -> dict[str, Any]:
    """The KRaft quorum as the active controller sees it: DescribeQuorum v1 (api key 55) sent to any broker,
    which forwards it (what kafka-metadata-quorum does; confluent-kafka's AdminClient has no such call).
    Returns leader_id, leader_epoch, high_watermark and voters [{id, log_end_offset, lag, last_fetch_ms}]."""
    host, port = address.rsplit(":", 1)
    name = b"__cluster_metadata"
    body = (_uvarint(2) + _uvarint(len(name) + 1) + name + _uvarint(2) + struct.pack(">i", 0)
            + b"\0" + b"\0" + b"\0")  # partition tags, topic tags, request tags
    client = b"floodlight-stack"
    header = struct.pack(">hhih", 55, 1, 1, len(client)) + client + b"\0"
    msg = header + body
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.settimeout(timeout)
        s.sendall(struct.pack(">i", len(msg)) + msg)
        head = b""
        while len(head) < 4:
            chunk = s.recv(4 - len(head))
            if not chunk:
                raise ConnectionError("connection closed")
            head += chunk
        size = struct.unpack(">i", head)[0]
        buf = b""
        while len(buf) < size:
            chunk = s.recv(size - len(buf))
            if not chunk:
                raise ConnectionError("connection closed")
            buf += chunk
    _, i = _read_uvarint(buf, 4)  # correlation id, then header tagged fields
    (err,) = struct.unpack_from(">h", buf, i)
    i += 2
    if err:
        raise StackError(f"DescribeQuorum error code {err}")
    _, i = _read_uvarint(buf, i)  # topics (one)
    n, i = _read_uvarint(buf, i)
    i += n - 1
    _, i = _read_uvarint(buf, i)  # partitions (one)
    _pidx, perr, leader, epoch, hw = struct.unpack_from(">ihiiq", buf, i)
    i += 22
    if perr:
        raise StackError(f"DescribeQuorum partition error code {perr}")
    out: dict[str, Any] = {"leader_id": leader, "leader_epoch": epoch, "high_watermark": hw}
    for kind in ("voters", "observers"):
        rows = []
        nv, i = _read_uvarint(buf, i)
        for _ in range(nv - 1):
            rid, leo, last_fetch, last_caught_up = struct.unpack_from(">iqqq", buf, i)
            i += 28
            _, i = _read_uvarint(buf, i)
            rows.append({"id": rid, "log_end_offset": leo, "lag": max(0, hw - leo), "last_fetch_ms": last_fetch,
                         "last_caught_up_ms": last_caught_up})
        out[kind] = rows
    return out


def active_controller(settings: Settings, addresses: list[str] | None = None) -> dict[str, Any] | None:
    """DescribeQuorum from the first node that answers; None when none does."""
    for address in addresses or [n.address for n in nodes(settings)]:
        try:
            return describe_quorum(address)
        except (OSError, StackError, struct.error, IndexError):
            continue
    return None


def partition_health(md: Any) -> dict[str, Any]:
    """Under-replicated (ISR smaller than the replica set) and offline (no leader) partitions, and the
    replication factor of every topic, from a metadata answer (confluent-kafka ClusterMetadata)."""
    under, offline, rf = [], [], {}
    for name, t in sorted(md.topics.items()):
        rf[name] = min((len(p.replicas) for p in t.partitions.values()), default=0)
        for pid, p in sorted(t.partitions.items()):
            if p.leader < 0:
                offline.append(f"{name}-{pid}")
            if len(p.isrs) < len(p.replicas):
                under.append(f"{name}-{pid}")
    return {"under_replicated": under, "offline": offline, "replication": rf}


def status(settings: Settings | None = None) -> dict[str, Any]:
    from confluent_kafka.admin import AdminClient

    settings = settings or get_settings()
    count = layout(settings)
    ns = nodes(settings, count)
    pid = broker_pid(settings)
    bootstrap = settings.kafka_bootstrap
    if count > 1 and bootstrap == f"127.0.0.1:{settings.kafka_port}":
        bootstrap = bootstrap_of(settings, count)  # a cluster runs here though the setting says one node
    info: dict[str, Any] = {"broker": "down", "bootstrap": bootstrap, "pid": pid, "kafka_version": kafka_version(),
                            "nodes": [], "controller": None, "prefix": settings.topic_prefix}
    registered: set[int] = set()
    try:
        md = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0}).list_topics(timeout=3)
        info["broker"] = "up"
        info["cluster_id"] = md.cluster_id
        registered = set(md.brokers)
        info["topics"] = {n: len(t.partitions) for n, t in sorted(md.topics.items()) if not n.startswith("__")}
        info.update(partition_health(md))
    except Exception as exc:  # noqa: BLE001 - status reports, never raises
        info["error"] = str(exc)
    quorum = active_controller(settings, [n.address for n in ns if node_pid(n)] or [n.address for n in ns])
    voters = {v["id"]: v for v in (quorum or {}).get("voters", [])}
    if quorum:
        info["controller"] = {"node": quorum["leader_id"], "epoch": quorum["leader_epoch"],
                              "high_watermark": quorum["high_watermark"]}
    for n in ns:
        npid = node_pid(n)
        state = "up" if npid and n.id in registered else ("starting/fenced" if npid else "down")
        info["nodes"].append({"id": n.id, "address": n.address, "pid": npid, "state": state,
                              "quorum": ("leader" if quorum and quorum["leader_id"] == n.id else
                                         f"follower, lag {voters[n.id]['lag']}" if n.id in voters else "-")})
    return info


def format_status(st: dict[str, Any]) -> list[str]:
    ns = st["nodes"]
    lines = [f"kafka {st['kafka_version']} (KRaft), {len(ns)} node(s): {st['broker']} on {st['bootstrap']}"
             + (f", cluster {st['cluster_id']}" if st.get("cluster_id") else "")]
    for n in ns:
        lines.append(f"  node {n['id']}  {n['address']:<16} pid {str(n['pid'] or '-'):<8} {n['state']:<8} "
                     f"voter: {n['quorum']}")
    ctl = st.get("controller")
    lines.append(f"  active controller: node {ctl['node']} (epoch {ctl['epoch']}, metadata offset "
                 f"{ctl['high_watermark']})" if ctl else "  active controller: none answers")
    if st["broker"] == "up":
        urp, off = st.get("under_replicated", []), st.get("offline", [])
        lines.append(f"  under-replicated partitions: {len(urp)}"
                     + (f" ({', '.join(urp[:8])}{' ...' if len(urp) > 8 else ''})" if urp else "")
                     + f"; offline partitions: {len(off)}")
        rf = st.get("replication", {})
        topics = dict(st.get("topics", {}))
        ours = {n: p for n, p in topics.items() if n.startswith(st.get("prefix", ""))}
        for name, parts in ours.items():
            lines.append(f"  topic {name}: {parts} partition(s), replication {rf.get(name, '?')}")
        if len(topics) > len(ours):
            lines.append(f"  ... and {len(topics) - len(ours)} topic(s) of other prefixes")
    elif st.get("error"):
        lines.append(f"  error: {st['error']}")
    return lines


def main(argv: list[str]) -> int:
    args = list(argv)
    settings = get_settings()
    if "--nodes" in args:
        i = args.index("--nodes")
        try:
            n = int(args[i + 1])
        except (IndexError, ValueError):
            print("usage: stack up|down|status [--nodes N]", file=sys.stderr)
            return 2
        del args[i:i + 2]
        settings = Settings(kafka_nodes=n)
    cmd = args[0] if args else "status"
    try:
        if cmd == "up":
            pid = up(settings)
            count = layout(settings)
            print(f"kafka {kafka_version()} (KRaft) up: {count} node(s) on {bootstrap_of(settings, count)}, "
                  f"node 1 pid {pid}")
            if count > 1 and settings.kafka_nodes != count:
                print(f"  (roles: export FLOODLIGHT_KAFKA_NODES={count})")
        elif cmd == "down":
            print("kafka stopped" if down(settings) else "kafka was not running")
        elif cmd == "status":
            st = status(settings)
            print("\n".join(format_status(st)))
            if st["broker"] != "up":
                return 1
        else:
            print(f"usage: stack up|down|status [--nodes N] (got {cmd!r})", file=sys.stderr)
            return 2
    except StackError as exc:
        print(f"stack: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
