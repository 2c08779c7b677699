"""The native local stack: one Apache Kafka 4.x node in KRaft mode, from Maven Central jars.

No Docker engine on the dev machines, so `./run stack up` starts the real broker as a
plain Java process with logs and data under .stack/. Idempotent: `up` twice is harmless.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

from floodlight.settings import ROOT, Settings, get_settings
from schemas.errors import FloodlightError

POM_DIR = ROOT / "compose" / "local" / "kafka"
LIBS_DIR = ROOT / ".stack" / "kafka" / "libs"
BROKER_MSG_BYTES = 16 * 1024 * 1024 + 1024 * 1024

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


def _dirs(settings: Settings) -> dict[str, Path]:
    base = settings.stack_dir / "kafka"
    # Jars are shared by every stack dir (tests start private brokers in temp dirs).
    return {"base": base, "libs": LIBS_DIR, "data": base / "data", "logs": base / "logs"}


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


def _server_properties(settings: Settings) -> Path:
    d = _dirs(settings)
    port = settings.kafka_port
    props = d["base"] / "server.properties"
    props.write_text("\n".join([
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.voters=1@127.0.0.1:{port + 1}",
        f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{port + 1}",
        f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names=CONTROLLER",
        "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "inter.broker.listener.name=PLAINTEXT",
        f"log.dirs={d['data']}",
        "num.partitions=1",
        "offsets.topic.replication.factor=1",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
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
        "",
    ]))
    (d["base"] / "log4j2.properties").write_text(LOG4J.format(log=d["logs"] / "server.log"))
    return props


def _java(settings: Settings, main: str, *args: str, **popen: object) -> subprocess.Popen[bytes]:
    d = _dirs(settings)
    cmd = ["java", "-Xms256m", "-Xmx1g", "-XX:+UseG1GC", "-Djava.awt.headless=true",
           f"-Dlog4j2.configurationFile={d['base'] / 'log4j2.properties'}",
           f"-Dkafka.logs.dir={d['logs']}", "-cp", f"{d['libs']}/*", main, *args]
    return subprocess.Popen(cmd, **popen)  # type: ignore[call-overload]


def _pidfile(settings: Settings) -> Path:
    return _dirs(settings)["base"] / "broker.pid"


def broker_pid(settings: Settings) -> int | None:
    pf = _pidfile(settings)
    if not pf.exists():
        return None
    try:
        pid = int(pf.read_text().strip())
        os.kill(pid, 0)
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        return pid if b"kafka.Kafka" in cmdline else None
    except (ValueError, ProcessLookupError, PermissionError, FileNotFoundError):
        return None


def _log_tail(settings: Settings, n: int = 40) -> str:
    log = _dirs(settings)["logs"] / "server.log"
    out = _dirs(settings)["logs"] / "stdout.log"
    text = ""
    for f in (log, out):
        if f.exists():
            text += f"--- {f} ---\n" + "\n".join(f.read_text(errors="replace").splitlines()[-n:]) + "\n"
    return text


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def up(settings: Settings | None = None, deadline_s: float = 90.0) -> int:
    """Start the broker unless it already runs; return its pid once a metadata request succeeds."""
    from floodlight.kafka import wait_for_broker

    settings = settings or get_settings()
    pid = broker_pid(settings)
    if pid:
        wait_for_broker(settings, deadline_s)
        return pid
    if _port_open(settings.kafka_port) or _port_open(settings.kafka_port + 1):
        raise StackError(f"port {settings.kafka_port} or {settings.kafka_port + 1} is taken by a process that is not "
                         f"this stack's broker: stop it or set FLOODLIGHT_KAFKA_PORT")
    fetch_jars(settings)
    d = _dirs(settings)
    d["base"].mkdir(parents=True, exist_ok=True)
    for k in ("data", "logs"):
        d[k].mkdir(parents=True, exist_ok=True)
    props = _server_properties(settings)
    if not (d["data"] / "meta.properties").exists():
        fmt = _java(settings, "kafka.tools.StorageTool", "format", "-t", uuid.uuid4().hex[:22],
                    "-c", str(props), "--ignore-formatted", stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out, _ = fmt.communicate(timeout=120)
        if fmt.returncode != 0:
            raise StackError(f"formatting Kafka storage failed:\n{out.decode(errors='replace')}")
    with open(d["logs"] / "stdout.log", "ab") as out:
        proc = _java(settings, "kafka.Kafka", str(props), stdout=out, stderr=subprocess.STDOUT,
                     stdin=subprocess.DEVNULL, start_new_session=True)
    _pidfile(settings).write_text(str(proc.pid))
    try:
        wait_for_broker(settings, deadline_s)
    except TimeoutError as exc:
        raise StackError(f"{exc}\n{_log_tail(settings)}") from exc
    if proc.poll() is not None:
        raise StackError(f"broker exited with {proc.returncode}\n{_log_tail(settings)}")
    return proc.pid


def down(settings: Settings | None = None, deadline_s: float = 30.0) -> bool:
    """Stop the broker (SIGTERM, then SIGKILL after the deadline). True if one was running."""
    settings = settings or get_settings()
    pid = broker_pid(settings)
    if not pid:
        _pidfile(settings).unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    end = time.monotonic() + deadline_s
    while time.monotonic() < end and broker_pid(settings):
        time.sleep(0.2)
    if broker_pid(settings):
        os.kill(pid, signal.SIGKILL)
    _pidfile(settings).unlink(missing_ok=True)
    return True


def status(settings: Settings | None = None) -> dict[str, object]:
    from confluent_kafka.admin import AdminClient

    settings = settings or get_settings()
    pid = broker_pid(settings)
    info: dict[str, object] = {"broker": "down", "bootstrap": settings.kafka_bootstrap, "pid": pid,
                               "kafka_version": kafka_version()}
    try:
        md = AdminClient({"bootstrap.servers": settings.kafka_bootstrap, "log_level": 0}).list_topics(timeout=3)
        info["broker"] = "up"
        info["cluster_id"] = md.cluster_id
        info["topics"] = {n: len(t.partitions) for n, t in sorted(md.topics.items()) if not n.startswith("__")}
    except Exception as exc:  # noqa: BLE001 - status reports, never raises
        info["error"] = str(exc)
    return info


def main(argv: list[str]) -> int:
    cmd = argv[0] if argv else "status"
    settings = get_settings()
    try:
        if cmd == "up":
            pid = up(settings)
            print(f"kafka {kafka_version()} (KRaft) up on {settings.kafka_bootstrap}, pid {pid}")
        elif cmd == "down":
            print("kafka stopped" if down(settings) else "kafka was not running")
        elif cmd == "status":
            st = status(settings)
            print(f"kafka {st['kafka_version']}: {st['broker']} on {st['bootstrap']} (pid {st['pid']})")
            for name, parts in dict(st.get("topics", {})).items():  # type: ignore[call-overload]
                print(f"  topic {name}: {parts} partition(s)")
            if st["broker"] != "up":
                return 1
        else:
            print(f"usage: stack up|down|status (got {cmd!r})", file=sys.stderr)
            return 2
    except StackError as exc:
        print(f"stack: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
