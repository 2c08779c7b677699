"""`floodlight demo`: a whole live event on one machine, every role a child process.

Ingest (test pattern with a burnt-in clock) -> two encoder members -> packager -> api -> nginx edge,
plus the QoE app; a stream registered in low-latency mode; a live status table every second.
Every run starts clean: its own topic prefix (`<prefix>demo.`, topics deleted and re-created) and
its own directory (`<stack>/demo`: store, chDB, edge, keys), so a second run needs no clean-up and
never sees the previous run's GOPs. Each child runs in its own process group; stop = SIGTERM to
every group, then SIGKILL after a deadline, so nothing outlives the demo.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from floodlight.settings import Settings

STOP_GRACE_S = 10.0
# A smaller ladder for tests and slow machines (the default is the brief's 1080p..240p).
SMALL_LADDER = [
    {"name": "360p", "width": 640, "height": 360, "bitrate_kbps": 900},
    {"name": "240p", "width": 426, "height": 240, "bitrate_kbps": 400},
    {"name": "144p", "width": 256, "height": 144, "bitrate_kbps": 150},
]


# --------------------------------------------------------------------------- pure parts

@dataclass
class DemoOptions:
    stream_id: str = "demo"
    title: str = "Floodlight demo: live test pattern"
    source: str = "testsrc:1920x1080@30"
    latency: str = "low"  # low | standard
    encoders: int = 2
    ladder: list[dict[str, Any]] | None = None  # None = the default ladder
    edge: bool = True
    gop_seconds: float | None = None
    api_processes: int = 1  # api processes on api_port, api_port+1, ...; the edge balances over them
    edges: int = 1  # Varnish edges on edge_port, edge_port+1, ...; two or more are content-steering pathways a, b, ...
    dvr_window_s: int = 600
    duration: float | None = None


@dataclass
class ChildSpec:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)


def parse_ladder(text: str) -> list[dict[str, Any]] | None:
    """'default' | 'small' | 'name:WxH:kbps,...' -> ladder rungs (None = the stream default)."""
    text = text.strip()
    if text in ("", "default"):
        return None
    if text == "small":
        return [dict(r) for r in SMALL_LADDER]
    rungs = []
    for item in text.split(","):
        try:
            name, size, kbps = item.split(":")
            w, h = size.lower().split("x")
            rungs.append({"name": name, "width": int(w), "height": int(h), "bitrate_kbps": int(kbps)})
        except ValueError:
            raise ValueError(f"bad ladder rung {item!r}: expected name:WxH:kbps") from None
    return rungs


def demo_settings(base: Settings, edge: bool = True, edges: int = 1) -> Settings:
    """The demo's own namespace: topics under `<prefix>demo.`, data under `<stack>/demo`; without the
    edge, players are sent to the api directly; with several edges, each is a pathway (a, b, ...) unless
    FLOODLIGHT_PATHWAYS says otherwise."""
    stack = base.stack_dir / "demo"
    prefix = base.topic_prefix + "demo."
    return base.model_copy(update={
        "pathways": base.pathways or (",".join(f"{pathway_id(i)}=http://127.0.0.1:{base.edge_port + i}"
                                               for i in range(edges)) if edge and edges > 1 else ""),
        "stack_dir": stack,
        "public_base_url": base.public_base_url or ("" if edge else f"http://127.0.0.1:{base.api_port}"),
        "topic_prefix": prefix,
        "store_url": base.store_url or (stack / "store").as_uri(),
        "clickhouse_dsn": base.clickhouse_dsn or f"chdb://{stack / 'chdb'}",
        "encoder_group": f"{prefix}encoder",
        "packager_group": f"{prefix}packager",
    })


def settings_env(settings: Settings) -> dict[str, str]:
    """Every setting as the FLOODLIGHT_* variable a child process reads."""
    env = {}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        env[f"FLOODLIGHT_{name.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


def plan_children(settings: Settings, opts: DemoOptions, python: str = sys.executable) -> list[ChildSpec]:
    """The child processes, in start order (consumers first, the ingest last)."""
    fl = [python, "-m", "ops.cli"]
    env = settings_env(settings)
    children = [
        ChildSpec("qoe", [*fl, "qoe"], env),
    ]
    for i, port in enumerate(api_ports(settings, opts)):
        children.append(ChildSpec("api" if i == 0 else f"api-{i + 1}",
                                  [*fl, "api", "--host", settings.api_host, "--port", str(port)], env))
    if opts.edge:
        origins = ",".join(f"{settings.api_host}:{p}" for p in api_ports(settings, opts))
        for i in range(max(1, opts.edges)):  # each edge its own Varnish working directory
            edge_env = env if i == 0 else {**env, "FLOODLIGHT_STACK_DIR": str(settings.stack_dir / f"edge-{i + 1}")}
            children.append(ChildSpec(edge_name(i), [*fl, "edge", "--port", str(settings.edge_port + i),
                                                     "--origin", origins], edge_env))
    children.append(ChildSpec("packager", [*fl, "packager"], env))
    for i in range(opts.encoders):
        children.append(ChildSpec(f"encoder-{i + 1}", [*fl, "encoder"], env))
    ingest = [*fl, "ingest", "--stream", opts.stream_id, "--source", opts.source]
    if opts.gop_seconds:
        ingest += ["--gop-seconds", str(opts.gop_seconds)]
    children.append(ChildSpec("ingest", ingest, env))
    return children


def pathway_id(i: int) -> str:
    return "abcdefghijklmnopqrstuvwxyz"[i] if i < 26 else f"p{i + 1}"


def edge_name(i: int) -> str:
    return "edge" if i == 0 else f"edge-{i + 1}"


def tolerated(dead: list[tuple[str, int]], opts: DemoOptions) -> list[tuple[str, int]]:
    """With several edges, an edge that stops is a pathway going down (the steering server moves players off
    it), not the end of the demo, as long as one edge still runs; returns the deaths that ARE fatal."""
    if opts.edges < 2:
        return dead
    edges = {edge_name(i) for i in range(opts.edges)}
    dead_edges = {n for n, _ in dead if n in edges}
    if dead_edges == edges:
        return dead
    return [(n, rc) for n, rc in dead if n not in edges]


def api_ports(settings: Settings, opts: DemoOptions) -> list[int]:
    """One port per api process, from FLOODLIGHT_API_PORT up (each process follows floodlight.manifests)."""
    return [settings.api_port + i for i in range(max(1, opts.api_processes))]


def base_url(settings: Settings, opts: DemoOptions) -> str:
    """Where the player page is: the edge, or the api without one or with several (the page and its beacons must
    not depend on one pathway; its media comes from the pathway the steering server picks)."""
    port = settings.edge_port if opts.edge and opts.edges < 2 else settings.api_port
    return f"http://127.0.0.1:{port}"


def render_status(snap: dict[str, Any], urls: dict[str, str]) -> Any:
    """The status table (rich renderable) from a collector snapshot."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    head = Text.assemble(("Floodlight demo  ", "bold"), (f"player {urls['player']}\n", "cyan"),
                         (f"HLS {urls['hls']}   DASH {urls['dash']}\n", "dim"),
                         (f"up {snap.get('uptime_s', 0):.0f} s   Ctrl-C stops every child", "dim"))
    flow = Table(title="pipeline", show_edge=False)
    for col in ("GOPs in", "GOPs/s", "lag encoder", "lag packager", "lag qoe", "glass-to-glass", "viewers"):
        flow.add_column(col, justify="right")
    lat = snap.get("latency_ms")
    lags = snap.get("lag", {})
    flow.add_row(str(snap.get("gops", 0)), f"{snap.get('gops_per_s', 0):.1f}",
                 *(str(lags.get(k, "-")) for k in ("encoder", "packager", "qoe")),
                 "-" if lat is None else f"{lat / 1000:.2f} s", str(snap.get("viewers", "-")))
    rend = Table(title="segments out", show_edge=False)
    rend.add_column("rendition")
    rend.add_column("segments", justify="right")
    rend.add_column("newest msn.part", justify="right")
    for name, r in sorted(snap.get("renditions", {}).items()):
        rend.add_row(name, str(r["segments"]), str(r["msn"]) if r["part"] < 0 else f"{r['msn']}.{r['part']}")
    kids = Table(title="processes", show_edge=False)
    for col in ("role", "pid", "state"):
        kids.add_column(col)
    for c in snap.get("children", []):
        kids.add_row(c["name"], str(c["pid"]), c["state"])
    return Group(head, flow, rend, kids)


# --------------------------------------------------------------------------- processes

class Supervisor:
    """Child processes, each in its own process group, logs to files; stops them all."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.children: list[tuple[ChildSpec, subprocess.Popen]] = []
        self.expected_exit = False

    def start(self, spec: ChildSpec) -> subprocess.Popen:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / f"{spec.name}.log", "ab")  # noqa: SIM115 - owned by the child
        env = {**os.environ, **spec.env}
        proc = subprocess.Popen(spec.argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=Path(__file__).resolve().parent.parent,
                                preexec_fn=_die_with_parent)
        log.close()
        self.children.append((spec, proc))
        return proc

    def states(self) -> list[dict[str, Any]]:
        out = []
        for spec, proc in self.children:
            rc = proc.poll()
            out.append({"name": spec.name, "pid": proc.pid, "state": "running" if rc is None else f"exited {rc}"})
        return out

    def dead(self) -> list[tuple[str, int]]:
        return [(spec.name, proc.returncode) for spec, proc in self.children if proc.poll() is not None]

    def stop_all(self, grace: float = STOP_GRACE_S) -> dict[str, int | None]:
        """SIGTERM every group (ingest first), wait up to `grace`, then SIGKILL the groups left."""
        self.expected_exit = True
        for _spec, proc in reversed(self.children):
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for _spec, proc in self.children:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for _spec, proc in self.children:
            # The group may hold grandchildren (nginx) even when the child itself has exited.
            _signal_group(proc, signal.SIGKILL)
            if proc.poll() is None:
                proc.wait(5)
        return {spec.name: proc.returncode for spec, proc in self.children}


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it if the demo itself is killed (Linux PR_SET_PDEATHSIG)."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
        except OSError:
            pass


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


# --------------------------------------------------------------------------- Kafka side

def reset_topics(settings: Settings, timeout: float = 60.0) -> list[str]:
    """Delete every topic under the demo prefix (only ours), wait until gone, create the table again."""
    from confluent_kafka.admin import AdminClient

    from floodlight.topics import apply_topics, delete_prefixed_topics

    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap, "log_level": 0})
    prefix = settings.topic_prefix
    old = delete_prefixed_topics(settings, admin, timeout=30)
    deadline = time.monotonic() + timeout
    while any(n.startswith(prefix) for n in admin.list_topics(timeout=15).topics):
        if time.monotonic() > deadline:
            raise RuntimeError(f"topics under {prefix} were not deleted within {timeout:.0f}s")
        time.sleep(0.2)
    while True:
        try:
            apply_topics(settings)
            return old
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)  # the broker may still be finishing the deletion


def register_stream(settings: Settings, opts: DemoOptions) -> dict[str, Any]:
    from floodlight.kafka import make_producer
    from floodlight.registry import new_stream_record, publish_stream

    now = int(time.time() * 1000)
    record = new_stream_record(
        opts.stream_id, opts.title, status="LIVE", latency_mode=opts.latency.upper(), public=True,
        ladder=opts.ladder or [], dvr_window_seconds=opts.dvr_window_s, scheduled_start_ms=now,
        actual_start_ms=now, category="demo")
    publish_stream(make_producer(settings, **{"log_level": 3}), settings, record)
    return record


class StatusCollector:
    """Follows floodlight.manifests and floodlight.qoe (small records, floodlight.follow) and polls offsets
    once a second."""

    def __init__(self, settings: Settings, stream_id: str) -> None:
        self.settings = settings
        self.stream_id = stream_id
        self.renditions: dict[str, dict[str, Any]] = {}
        self.latency_ms: int | None = None
        self.sessions: dict[str, float] = {}
        self.gops = 0
        self.lag: dict[str, int | str] = {}
        self._gop_hist: list[tuple[float, int]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-status", daemon=True)
        self._started = time.monotonic()
        self._follower: Any = None

    def start(self) -> StatusCollector:
        from floodlight.follow import Follower

        s = self.settings
        on = {s.topic("manifests"): self.on_manifest, s.topic("qoe"): self.on_beacon}
        self._follower = Follower(s, {s.topic("manifests"): "ManifestUpdate", s.topic("qoe"): "QoeBeacon"},
                                  lambda r: on[r.topic](r.value), name="demo-status",
                                  group_id=f"{s.topic_prefix}demo-status", on_bad=lambda _r, _e: None,
                                  consumer_overrides={"log_level": 0}).start()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._follower is not None:
            self._follower.stop()
        self._thread.join(5)

    def on_manifest(self, rec: dict[str, Any]) -> None:
        if rec["stream_id"] != self.stream_id or rec["rendition"] in ("master", "mpd"):
            return
        with self._lock:
            r = self.renditions.setdefault(rec["rendition"], {"first": rec["msn"], "complete": None,
                                                              "msn": -1, "part": -1})
            # updates are coalesced per write batch: count from the newest complete msn, not per update
            complete = rec["msn"] if rec["part"] == -1 else rec["msn"] - 1
            r["first"] = min(r["first"], rec["msn"])
            if complete >= r["first"] and (r["complete"] is None or complete > r["complete"]):
                r["complete"] = complete
            if (rec["msn"], rec["part"]) > (r["msn"], r["part"]):
                r["msn"], r["part"] = rec["msn"], rec["part"]

    def on_beacon(self, rec: dict[str, Any]) -> None:
        if rec["stream_id"] != self.stream_id:
            return
        with self._lock:
            self.sessions[rec["session_id"]] = time.monotonic()
            if rec.get("latency_ms"):
                self.latency_ms = rec["latency_ms"]

    def snapshot(self) -> dict[str, Any]:
        now = time.monotonic()
        with self._lock:
            window = self.settings.qoe_viewer_window_s
            viewers = sum(1 for t in self.sessions.values() if now - t <= window)
            hist = self._gop_hist
            rate = (hist[-1][1] - hist[0][1]) / (hist[-1][0] - hist[0][0]) if len(hist) > 1 else 0.0
            return {
                "uptime_s": now - self._started, "gops": self.gops, "gops_per_s": rate, "lag": dict(self.lag),
                "latency_ms": self.latency_ms, "viewers": viewers,
                "renditions": {k: {"segments": 0 if v["complete"] is None else v["complete"] - v["first"] + 1,
                                   "msn": v["msn"], "part": v["part"]}
                               for k, v in self.renditions.items()},
            }

    def _run(self) -> None:
        """Once a second: high watermarks and committed offsets -> GOP count, rate and lag per stage."""
        from confluent_kafka import Consumer

        from floodlight.kafka import consumer_config

        s = self.settings
        consumer = Consumer(consumer_config(s, group_id=f"{s.topic_prefix}demo-status", log_level=0))
        # Committed offsets are read through a consumer of each group (never subscribed, so it never joins):
        # AdminClient.list_consumer_group_offsets segfaults in librdkafka 2.16 when the group coordinator is not
        # ready yet (NOT_COORDINATOR on a fresh broker: confluent-kafka-python#1982, librdkafka#5040).
        readers: dict[str, Any] = {}
        md = None
        try:
            while not self._stop.is_set():
                try:
                    md = md or consumer.list_topics(timeout=5)
                    self._poll_offsets(consumer, readers, md)
                except Exception:  # noqa: BLE001 - the table shows '-' until the broker answers
                    pass
                self._stop.wait(1.0)
        finally:
            consumer.close()
            for reader in readers.values():
                reader.close()

    def _poll_offsets(self, consumer: Any, readers: dict[str, Any], md: Any) -> None:
        from confluent_kafka import Consumer, TopicPartition

        from floodlight.kafka import consumer_config

        s = self.settings

        def highs(short: str) -> dict[int, int]:
            t = s.topic(short)
            if t not in md.topics:
                return {}
            return {p: consumer.get_watermark_offsets(TopicPartition(t, p), timeout=2, cached=False)[1]
                    for p in md.topics[t].partitions}

        gops = highs("gops")
        stages = {"encoder": (s.encoder_group, "gops", gops), "packager": (s.packager_group, "segments", None),
                  "qoe": (f"{s.topic_prefix}qoe", "qoe", None)}
        lag: dict[str, int | str] = {}
        for stage, (group, short, hi) in stages.items():
            hi = hi if hi is not None else highs(short)
            try:
                if group not in readers:
                    readers[group] = Consumer(consumer_config(s, group_id=group, log_level=0))
                parts = [TopicPartition(s.topic(short), p) for p in hi]
                got = readers[group].committed(parts, timeout=3) if parts else []
                committed = {tp.partition: tp.offset for tp in got}
            except Exception:  # noqa: BLE001 - group not there yet
                committed = {}
            lag[stage] = sum(max(0, h - max(0, committed.get(p, 0))) for p, h in hi.items())
        now = time.monotonic()
        with self._lock:
            self.gops = sum(gops.values())
            self.lag = lag
            self._gop_hist.append((now, self.gops))
            self._gop_hist = [h for h in self._gop_hist if now - h[0] <= 10]


def wait_http(url: str, timeout: float, alive: Callable[[], bool] = lambda: True) -> bool:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive():
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    return False


# --------------------------------------------------------------------------- the demo

class Demo:
    """Prepare, start, watch and stop one demo run."""

    def __init__(self, base: Settings, opts: DemoOptions, console: Any = None) -> None:
        from rich.console import Console

        self.base = base
        self.opts = opts
        self.settings = demo_settings(base, opts.edge, opts.edges)
        self.console = console or Console()
        self.sup = Supervisor(self.settings.stack_dir / "logs")
        self.stop_event = threading.Event()
        self.collector: StatusCollector | None = None
        self._noted: set[str] = set()  # edges that exited (with several edges: pathways down, not fatal)
        url = base_url(self.settings, opts)
        sid = opts.stream_id
        self.urls = {"player": f"{url}/watch/{sid}", "hls": f"{url}/live/{sid}/master.m3u8",
                     "dash": f"{url}/live/{sid}/manifest.mpd", "api": f"http://127.0.0.1:{self.settings.api_port}"}

    def prepare(self) -> None:
        s = self.settings
        edge_ports = [("edge", s.edge_port + i) for i in range(max(1, self.opts.edges))]
        busy = [f"{n} {p}" for n, p in (*(("api", p) for p in api_ports(s, self.opts)), *edge_ports,
                                        ("qoe", s.qoe_port))
                if (n != "edge" or self.opts.edge) and not port_free(p)]
        if busy:
            raise RuntimeError(f"ports in use ({', '.join(busy)}): is another demo running? "
                               "Set FLOODLIGHT_API_PORT / FLOODLIGHT_EDGE_PORT / FLOODLIGHT_QOE_PORT.")
        if s.stack_dir.exists():
            shutil.rmtree(s.stack_dir)
        s.stack_dir.mkdir(parents=True)
        (s.stack_dir / "faust").mkdir()  # the qoe app's datadir parent (faust creates only the leaf)
        reset_topics(s)
        register_stream(s, self.opts)
        (s.stack_dir / "demo.json").write_text(json.dumps({"urls": self.urls, "topic_prefix": s.topic_prefix,
                                                             "started": time.time()}, indent=2))

    def start(self) -> None:
        for spec in plan_children(self.settings, self.opts):
            self.sup.start(spec)
        self._write_pids()
        self.collector = StatusCollector(self.settings, self.opts.stream_id).start()

    def _write_pids(self) -> None:
        pids = {spec.name: proc.pid for spec, proc in self.sup.children}
        (self.settings.stack_dir / "children.json").write_text(json.dumps(pids))

    def run(self) -> int:
        """The whole run; returns the exit code (0 = every child ran until asked to stop)."""
        from rich.live import Live

        c = self.console
        try:
            c.print(f"[bold]preparing[/] topics {self.settings.topic_prefix}*, data {self.settings.stack_dir}")
            self.prepare()
            self.start()
            alive = lambda: not self._fatal() and not self.stop_event.is_set()  # noqa: E731
            if not wait_http(f"{self.urls['api']}/healthz", 60, alive):
                if not self.stop_event.is_set():
                    c.print("[red]the pipeline did not come up[/]" if self.sup.dead()
                            else "[red]the api did not answer /healthz within 60 s[/]")
                    self._explain_dead()
                return self._finish(failed=not self.stop_event.is_set())
            c.print(f"[bold green]player[/] {self.urls['player']}\n[bold]HLS[/] {self.urls['hls']}\n"
                    f"[bold]DASH[/] {self.urls['dash']}\nlogs: {self.sup.log_dir}")
            end = time.monotonic() + self.opts.duration if self.opts.duration else None
            interactive = c.is_terminal
            last_plain = 0.0
            with Live(console=c, refresh_per_second=1, transient=False, auto_refresh=False) if interactive \
                    else _NoLive() as live:
                while not self.stop_event.is_set():
                    if end is not None and time.monotonic() >= end:
                        break
                    if self._fatal():
                        self._explain_dead()
                        return self._finish(failed=True)
                    self._note_pathways_down()
                    snap = self.snapshot()
                    if interactive:
                        live.update(render_status(snap, self.urls), refresh=True)
                    elif time.monotonic() - last_plain >= 5:
                        last_plain = time.monotonic()
                        # one JSON line (no wrapping) that scripts and tests can read
                        print(json.dumps({k: snap[k] for k in ("uptime_s", "gops", "lag", "latency_ms",
                                                                 "viewers", "renditions")}, default=str), flush=True)
                    self.stop_event.wait(1.0)
            return self._finish(failed=False)
        except Exception as exc:
            c.print(f"[red]demo failed:[/] {exc}")
            return self._finish(failed=True)

    def _fatal(self) -> list[tuple[str, int]]:
        return tolerated(self.sup.dead(), self.opts)

    def _note_pathways_down(self) -> None:
        for name, rc in self.sup.dead():
            if name not in self._noted:
                self._noted.add(name)
                self.console.print(f"[yellow]{name} exited ({rc}): its pathway is down, players are steered off it[/]")

    def _explain_dead(self) -> None:
        """Name each child that exited and show the end of its log."""
        from rich.markup import escape

        for name, rc in self.sup.dead():
            log = self.sup.log_dir / f"{name}.log"
            tail = log.read_text(errors="replace").strip().splitlines()[-4:] if log.exists() else []
            self.console.print(f"[red]{name} exited with {rc}[/] ({log}):", *[escape(f"  {ln[:300]}") for ln in tail],
                               sep="\n", markup=True, highlight=False)

    def snapshot(self) -> dict[str, Any]:
        snap = self.collector.snapshot() if self.collector else {}
        snap["children"] = self.sup.states()
        return snap

    def _finish(self, failed: bool) -> int:
        self.console.print("stopping every child ...")
        codes = self.sup.stop_all()
        if self.collector:
            self.collector.stop()
        self.console.print(f"stopped: {codes}")
        return 1 if failed else 0


class _NoLive:
    def __enter__(self) -> _NoLive:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def main(base: Settings, opts: DemoOptions) -> int:
    demo = Demo(base, opts)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: demo.stop_event.set())
    return demo.run()
