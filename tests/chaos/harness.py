"""A whole pipeline on a private broker, with fault injection and invariant watchers.

Private broker (own stack dir and port) so a broker stop/start does not disturb anything else;
the object store sits on a small tmpfs when we may mount one, so a full disk can be simulated.
Roles run as real child processes started from their CLI commands (ops.demo's Supervisor).

A run killed where nothing can clean up (kill -9, a lost CI job) leaves its tmpfs mounted and its
broker running: every run owns its directory through a `chaos.owner` pid file, and the next run
unmounts and stops what belongs to owners that are gone (`clean_stale_runs`) before it starts.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import random
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from floodlight.settings import Settings
from floodlight.topics import apply_topics
from ops import stack
from ops.demo import ChildSpec, DemoOptions, Supervisor, plan_children, register_stream

STREAM = "chaos"
LADDER = [{"name": "360p", "width": 640, "height": 360, "bitrate_kbps": 600},
          {"name": "180p", "width": 320, "height": 180, "bitrate_kbps": 200}]
WATCH = "360p"
OWNER = "chaos.owner"  # pid of the pytest process that owns a chaos run directory


_TAKEN: set[int] = set()


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_port(pair: bool = False) -> int:
    """A free TCP port below the ephemeral range (outgoing connections cannot take it meanwhile), never
    handed out twice in this process; with pair, port+1 is free too (the broker's controller)."""
    rng = random.Random()
    for _ in range(500):
        port = rng.randrange(20000, 32000)
        wanted = {port, port + 1} if pair else {port}
        if wanted & _TAKEN or not all(_bindable(p) for p in wanted):
            continue
        _TAKEN.update(wanted)
        return port
    raise RuntimeError("no free port")


def wall_ms() -> int:
    return int(time.time() * 1000)


def mono_to_wall_ms(t: float) -> int:
    """A time.monotonic() reading as wall-clock ms (GOP capture times are wall clock)."""
    return int((t + time.time() - time.monotonic()) * 1000)


@dataclass
class FaultReport:
    """One row of the chaos report; every figure is measured (None = not measured, printed as such)."""

    fault: str
    measured_by: str = ""  # what recovery means for this fault
    started_ms: int = 0  # wall clock, just before the fault
    back_ms: int = 0  # wall clock, when the role / service was back (recovery counts from here)
    recovery_s: float | None = None
    gops_checked: int | None = None  # published GOPs captured from this fault until the next one
    gops_lost: int | None = None  # of those, not in the DVR playlist at the end
    about_gops: bool = True  # False for rows that are about something else (beacons)
    notes: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _owner_alive(owner: Path) -> bool:
    try:
        pid = int(owner.read_text().strip())
        os.kill(pid, 0)
        return b"pytest" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except (ValueError, OSError):
        return False


def _tmpfs_mounts() -> list[Path]:
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return []
    return [Path(f[1].replace("\\040", " ")) for f in (ln.split() for ln in lines) if len(f) > 2 and f[2] == "tmpfs"]


def _stop_run_dir(run_dir: Path, store: Path) -> None:
    """Stop the private broker of a run directory and lazily unmount its store (idempotent)."""
    try:
        stack.down(Settings(stack_dir=run_dir / "stack"), deadline_s=15)
    except Exception:  # noqa: BLE001 - best effort: the broker may be half gone
        pass
    if store in _tmpfs_mounts():
        subprocess.run(["umount", "-l", str(store)], capture_output=True)


def clean_stale_runs() -> list[str]:
    """Unmount the tmpfs and stop the broker of every chaos run whose owner process is gone."""
    dirs = {m.parent for m in _tmpfs_mounts() if m.name == "store" and (m.parent / OWNER).exists()}
    dirs |= {o.parent for o in Path(tempfile.gettempdir()).glob(f"pytest-of-*/pytest-*/chaos*/{OWNER}")}
    cleaned = []
    for run_dir in sorted(dirs):
        owner = run_dir / OWNER
        if not owner.exists() or _owner_alive(owner):
            continue
        _stop_run_dir(run_dir, run_dir / "store")
        owner.unlink(missing_ok=True)
        cleaned.append(str(run_dir))
    return cleaned


class Watcher(threading.Thread):
    """Polls the store: MSNs must never go backwards, no media object may change its bytes."""

    def __init__(self, root: Path) -> None:
        super().__init__(daemon=True, name="chaos-watcher")
        self.root = root
        self.violations: list[str] = []
        self.history: list[tuple[float, int]] = []  # (monotonic, last listed msn)
        self.timeline: list[tuple[int, int]] = []  # (wall ms, last listed msn) when it changed: evidence
        self.part_timeline: list[tuple[int, str]] = []  # (wall ms, newest listed part) when it changed
        self._seen: dict[str, tuple[int, int, str]] = {}
        self._halt = threading.Event()
        self.last_msn = -1
        self.last_seq = -1

    def stop(self) -> None:
        self._halt.set()
        if self.is_alive():
            self.join(5)

    def run(self) -> None:
        while not self._halt.wait(0.25):
            try:
                self._check_playlist()
                self._check_objects()
            except Exception as exc:  # noqa: BLE001 - a watcher glitch must not end the watch
                self.violations.append(f"watcher error: {exc!r}")

    def _check_playlist(self) -> None:
        path = self.root / "live" / STREAM / WATCH / "playlist.m3u8"
        try:
            text = path.read_text()
        except FileNotFoundError:
            return
        m = re.search(r"#EXT-X-MEDIA-SEQUENCE:(\d+)", text)
        if not m:
            return
        seq = int(m.group(1))
        last = seq + text.count("#EXTINF:") - 1
        if seq < self.last_seq:
            self.violations.append(f"media sequence went back {self.last_seq} -> {seq}")
        if last < self.last_msn:
            self.violations.append(f"last msn went back {self.last_msn} -> {last}")
        self.last_seq, self.last_msn = max(seq, self.last_seq), max(last, self.last_msn)
        self.history.append((time.monotonic(), last))
        if not self.timeline or self.timeline[-1][1] != last:
            self.timeline.append((wall_ms(), last))
        newest = newest_part(text)
        if newest and (not self.part_timeline or self.part_timeline[-1][1] != newest):
            self.part_timeline.append((wall_ms(), newest))  # the newest part a player can fetch

    def _check_objects(self) -> None:
        base = self.root / "live" / STREAM
        if not base.exists():
            return
        for rendition in base.iterdir():
            if not rendition.is_dir():
                continue
            for entry in os.scandir(rendition):
                if not entry.name.endswith((".m4s", ".mp4")):
                    continue
                st = entry.stat()
                key = f"{rendition.name}/{entry.name}"
                seen = self._seen.get(key)
                if seen is not None and (seen[0], seen[1]) == (st.st_ino, st.st_mtime_ns):
                    continue
                try:
                    digest = hashlib.sha256(Path(entry.path).read_bytes()).hexdigest()
                except FileNotFoundError:
                    continue
                if seen is not None and seen[2] != digest:
                    self.violations.append(f"{key} rewritten with different bytes")
                self._seen[key] = (st.st_ino, st.st_mtime_ns, digest)

    def last_msn_at(self, t: float) -> int:
        """The last msn the playlist listed at or before t."""
        before = [last for ts, last in self.history if ts <= t]
        return before[-1] if before else -1

    def advanced_after(self, t: float, msn: int, timeout: float) -> float | None:
        """Seconds from t until the playlist listed a segment beyond msn, or None by the deadline."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for ts, last in self.history:
                if ts >= t and last > msn:
                    return ts - t
            time.sleep(0.1)
        return None


def newest_part(playlist: str) -> str:
    """The newest part (or, without parts, segment) a live playlist lists: what an LL-HLS player waits on."""
    parts = re.findall(r'#EXT-X-PART:[^\n]*URI="([^"]+)"', playlist)
    if parts:
        return parts[-1]
    segs = [ln for ln in playlist.splitlines() if ln and not ln.startswith("#")]
    return segs[-1] if segs else ""


class PlaylistPoller(threading.Thread):
    """Reads a live playlist over HTTP every 100 ms (plain GET, no blocking directives) and keeps when its
    newest part changed: (wall ms, part). Pointed at the api, it says whether a stall came from behind it. (Not at
    the edge: its reads would refresh the cached playlist the player is served and make the player's copies older.)"""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True, name="chaos-playlist-poller")
        self.url = url
        self.timeline: list[tuple[int, str]] = []
        self.failures = 0
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()
        if self.is_alive():
            self.join(5)

    def run(self) -> None:
        with httpx.Client(timeout=2) as client:
            while not self._halt.wait(0.1):
                try:
                    res = client.get(self.url)
                except httpx.HTTPError:
                    self.failures += 1
                    continue
                newest = newest_part(res.text) if res.status_code == 200 else ""
                if newest and (not self.timeline or self.timeline[-1][1] != newest):
                    self.timeline.append((wall_ms(), newest))


class Probe:
    """How recovery from one fault is measured: `before` just ahead of the fault, then `after` returns the
    seconds from `back` (monotonic) until the pipeline showed it works again, or None by the deadline."""

    measured_by = ""

    def before(self, p: ChaosPipeline, watcher: Watcher) -> None:
        return None

    def after(self, p: ChaosPipeline, watcher: Watcher, back: float, timeout: float, row: FaultReport) -> float | None:
        raise NotImplementedError


class PlaylistAdvance(Probe):
    """For the roles on the media path (ingest, encoder, packager, broker, store)."""

    measured_by = "packager's playlist lists a new segment"

    def before(self, p: ChaosPipeline, watcher: Watcher) -> None:
        self.msn = watcher.last_msn

    def after(self, p: ChaosPipeline, watcher: Watcher, back: float, timeout: float, row: FaultReport) -> float | None:
        msn = max(self.msn, watcher.last_msn_at(back))
        row.evidence.update(msn_before=self.msn, msn_at_back=msn)
        return watcher.advanced_after(back, msn, timeout)


class BlockingReload(Probe):
    """For the api: the first LL-HLS blocking reload it answers (the part after the live edge), so the
    answer proves it is up, has rebuilt its view of the stream from the log and follows new updates."""

    measured_by = "first blocking reload (_HLS_msn/_HLS_part) the api answers"

    def after(self, p: ChaosPipeline, watcher: Watcher, back: float, timeout: float, row: FaultReport) -> float | None:
        answers: dict[str, int] = {}
        end = back + timeout
        with httpx.Client(timeout=10) as client:
            while time.monotonic() < end:
                target = watcher.last_msn + 1
                try:
                    res = client.get(f"{p.api}/live/{STREAM}/{WATCH}/playlist.m3u8",
                                     params={"_HLS_msn": target, "_HLS_part": 0})
                    outcome = str(res.status_code)
                except httpx.HTTPError as exc:
                    res, outcome = None, type(exc).__name__
                answers[outcome] = answers.get(outcome, 0) + 1
                if res is not None and res.status_code == 200 and f"{target}.0.m4s" in res.text:
                    took = time.monotonic() - back
                    row.evidence.update(answers=answers, blocking_msn=target, answered_ms=wall_ms())
                    return took
                time.sleep(0.1)
        row.evidence.update(answers=answers)
        return None


def analytics_rows(client: Any) -> int:
    """Rows of the chaos stream in ClickHouse, through the qoe app's analytics endpoint; -1 when it does not answer."""
    try:
        res = client.query(f"SELECT count() AS n FROM stream_analytics WHERE stream_id = '{STREAM}'")
        return int(res[0]["n"])
    except Exception:  # noqa: BLE001 - the qoe app may be down or still starting
        return -1


class AnalyticsRow(Probe):
    """For the qoe app: the first row it writes after the restart, as the analytics endpoint answers it."""

    measured_by = "first new ClickHouse row, as the analytics endpoint answers"

    def before(self, p: ChaosPipeline, watcher: Watcher) -> None:
        from floodlight.analytics import AnalyticsClient

        self.client = AnalyticsClient(p.settings, timeout=5)
        self.rows_before = analytics_rows(self.client)
        assert self.rows_before >= 0, "the analytics endpoint does not answer before the fault"

    def after(self, p: ChaosPipeline, watcher: Watcher, back: float, timeout: float, row: FaultReport) -> float | None:
        end = back + timeout
        unanswered = 0
        while time.monotonic() < end:
            n = analytics_rows(self.client)
            if n > self.rows_before:
                took = time.monotonic() - back
                row.evidence.update(rows_before=self.rows_before, rows_after=n, unanswered_queries=unanswered)
                return took
            unanswered += n < 0
            time.sleep(0.25)
        row.evidence.update(rows_before=self.rows_before, unanswered_queries=unanswered)
        return None


def ingest_drops(log_dir: Path) -> set[int]:
    """gop_index of every GOP an ingest's buffer dropped (its JSON log says which)."""
    out: set[int] = set()
    for name in ("ingest-primary", "ingest-backup"):
        path = log_dir / f"{name}.log"
        if not path.exists():
            continue
        for line in path.read_text(errors="replace").splitlines():
            if "buffer full: dropped oldest GOP" not in line:
                continue
            try:
                out.add(int(json.loads(line)["gop_index"]))
            except (ValueError, KeyError, TypeError):
                pass
    return out


class BeaconSender(threading.Thread):
    """A player's worth of beacons: batches to the api; a refused or failed batch is retried."""

    BATCH = 10

    def __init__(self, api: str) -> None:
        super().__init__(daemon=True, name="chaos-beacons")
        self.api = api
        self.accepted = 0
        self.rejected = 0
        self.retries = 0
        self.posts = 0  # batches posted (answered or not)
        self._halt = threading.Event()
        self._n = 0

    def stop(self) -> None:
        self._halt.set()
        if self.is_alive():
            self.join(15)

    def _batch(self) -> list[dict[str, Any]]:
        now = int(time.time() * 1000)
        out = []
        for _ in range(self.BATCH):
            self._n += 1
            out.append({"event_time": now, "stream_id": STREAM, "session_id": f"chaos-{self._n // 10}",
                        "user_id": "", "device_type": "web", "quality": WATCH, "latency_ms": 2000 + self._n % 50,
                        "bitrate_kbps": 600, "bytes_downloaded": 1000, "watch_ms": 500,
                        "event_type": "heartbeat", "cdn_pop": f"pop-{self._n}"})
        return out

    def run(self) -> None:
        with httpx.Client(timeout=15) as client:  # longer than the api waits for Kafka acks (no ghost retries)
            batch = self._batch()
            while not self._halt.wait(0.5):
                self.posts += 1
                try:
                    res = client.post(f"{self.api}/api/v1/qoe/beacons", json={"beacons": batch})
                except httpx.HTTPError:
                    self.retries += 1
                    continue
                if res.status_code in (200, 202, 207):
                    body = res.json()
                    self.accepted += int(body["accepted"])
                    self.rejected += len(body["rejected"])
                    batch = self._batch()
                elif res.status_code == 429:
                    self.retries += 1
                else:
                    self.retries += 1


@dataclass
class ChaosPipeline:
    tmp: Path
    settings: Settings = field(init=False)
    store_root: Path = field(init=False)
    mounted: bool = False
    sup: Supervisor = field(init=False)
    specs: dict[str, ChildSpec] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    stopped: bool = False
    cleaned_stale: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.cleaned_stale = clean_stale_runs()
        (self.tmp / OWNER).write_text(str(os.getpid()))
        atexit.register(self.stop)  # a run ended by an exception or a signal still unmounts and stops its broker
        self.store_root = self.tmp / "store"
        self.store_root.mkdir(parents=True)
        try:
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=384m", "tmpfs", str(self.store_root)],
                           check=True, capture_output=True)
            self.mounted = True
        except (subprocess.CalledProcessError, FileNotFoundError):
            self.mounted = False
        port = free_port(pair=True)
        prefix = f"c{uuid.uuid4().hex[:6]}."
        self.settings = Settings(
            stack_dir=self.tmp / "stack", kafka_port=port, kafka_bootstrap=f"127.0.0.1:{port}", topic_prefix=prefix,
            topic_partitions=3, store_url=self.store_root.as_uri(), clickhouse_dsn=f"chdb://{self.tmp / 'chdb'}",
            api_port=free_port(), qoe_port=free_port(), log_format="json",
            encoder_group=f"{prefix}encoder", packager_group=f"{prefix}packager",
        )
        self.sup = Supervisor(self.tmp / "logs")

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.settings.api_port}"

    def start(self) -> None:
        stack.up(self.settings, deadline_s=180)
        apply_topics(self.settings)
        (self.settings.stack_dir / "faust").mkdir(parents=True, exist_ok=True)
        opts = DemoOptions(stream_id=STREAM, source="testsrc:640x360@30", latency="low", encoders=2,
                           ladder=LADDER, edge=False, dvr_window_s=900)
        register_stream(self.settings, opts)
        for spec in plan_children(self.settings, opts):
            if spec.name == "ingest":
                spec = ChildSpec("ingest-primary", [*spec.argv, "--ingest-id", "primary"], spec.env)
                backup = ChildSpec("ingest-backup", [*spec.argv[:-1], "backup"], spec.env)
                self.specs[backup.name] = backup
            self.specs[spec.name] = spec
        for name in self.specs:
            self.launch(name)

    def launch(self, name: str) -> None:
        self.procs[name] = self.sup.start(self.specs[name])

    def kill9(self, name: str) -> None:
        proc = self.procs[name]
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(10)

    def alive(self) -> dict[str, bool]:
        return {n: p.poll() is None for n, p in self.procs.items()}

    def log_tail(self, name: str, n: int = 30) -> str:
        path = self.tmp / "logs" / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else ""

    def stop(self) -> None:
        """Stop every role and the broker, unmount the store; idempotent (the fixture and atexit both call it)."""
        if self.stopped:
            return
        self.stopped = True
        if hasattr(self, "sup"):
            self.sup.stop_all(grace=10)
        _stop_run_dir(self.tmp, self.store_root)
        (self.tmp / OWNER).unlink(missing_ok=True)

    def wait_api(self, timeout: float = 60) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                if httpx.get(f"{self.api}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"api not healthy within {timeout}s:\n{self.log_tail('api')}")


# --- a real browser watching the live stream -------------------------------------------------------------

PLAYER_PAGE = """<!doctype html><meta charset="utf-8"><title>plain hls.js watching a chaos run</title>
<video id="v" muted autoplay playsinline width="320"></video>
<script src="/hls.min.js"></script>
<script>
const v = document.getElementById('v');
const w = window.watch = { version: Hls.version, playing: false, firstPlayingAt: null, stop: false,
  stalls: [], waits: [], stalledErrors: [], errors: [], samples: [], levels: [] };
const hls = new Hls();  // every option its default: what a site embedding hls.js gets (lowLatencyMode is on)
hls.on(Hls.Events.ERROR, (_e, d) => {
  const at = Date.now();
  if (d.details === Hls.ErrorDetails.BUFFER_STALLED_ERROR) w.stalledErrors.push(at);
  if (w.errors.length < 300) w.errors.push([at, d.details + (d.fatal ? ':fatal' : '')]);
});
hls.on(Hls.Events.LEVEL_SWITCHED, (_e, d) => w.levels.push([Date.now(), hls.levels[d.level].height]));
// what the player asked for and got, to tell a late playlist from a late player (kept short: ~3000 events)
w.events = [];
const ev = (...x) => { if (w.events.length < 3000) w.events.push([Date.now(), ...x]); };
const dir = (d) => d.deliveryDirectives ? `${d.deliveryDirectives.msn}.${d.deliveryDirectives.part}` : '';
const took = (d) => Math.round(d.stats.loading.end - d.stats.loading.start);
const newest = (det) => `${det.lastPartSn}.${det.lastPartIndex}`;  // the newest part the playlist lists
hls.on(Hls.Events.LEVEL_LOADED, (_e, d) => ev('level', newest(d.details), dir(d), took(d)));
hls.on(Hls.Events.AUDIO_TRACK_LOADED, (_e, d) => ev('audio-pl', newest(d.details), dir(d), took(d)));
hls.on(Hls.Events.FRAG_BUFFERED, (_e, d) => ev('buffered', d.frag.type, d.frag.sn, d.part ? d.part.index : -1,
                                               took(d)));
let waitingAt = null;
v.addEventListener('waiting', () => { if (w.playing && waitingAt === null) waitingAt = Date.now(); });
v.addEventListener('playing', () => {
  const at = Date.now();
  if (!w.playing) { w.playing = true; w.firstPlayingAt = at; w.firstPlayingCt = v.currentTime; }
  if (waitingAt !== null) { w.waits.push([waitingAt, at]); waitingAt = null; }
});
hls.loadSource(new URLSearchParams(location.search).get('src'));
hls.attachMedia(v);
// The playhead against the wall clock, both read at the same moment every 100 ms: an interval in which the
// media time advanced less than the wall clock did lost the difference; consecutive intervals that lost
// more than 20 ms are one stall [start, end, seconds lost]. A late timer does not count as a stall.
let prev = null, cur = null;
function bufferedAhead() {
  for (let i = 0; i < v.buffered.length; i++) {
    if (v.buffered.start(i) <= v.currentTime + 0.05 && v.currentTime < v.buffered.end(i)) {
      return v.buffered.end(i) - v.currentTime;
    }
  }
  return 0;
}
setInterval(() => {
  const at = Date.now(), ct = v.currentTime;
  if (w.playing && prev && !v.paused) {
    const lost = (at - prev[0]) / 1000 - (ct - prev[1]) / (v.playbackRate || 1);
    if (lost > 0.02) {
      if (!cur) cur = [prev[0], at, 0];
      cur[1] = at; cur[2] += lost;
    } else if (cur) { w.stalls.push(cur); cur = null; }
  }
  prev = [at, ct];
}, 100);
setInterval(() => {  // latency behind live (hls.js's own figure, from the playlist) and glass-to-glass (PDT)
  if (!w.playing) return;
  const d = hls.playingDate;
  w.samples.push([Date.now(), hls.latency, d ? (Date.now() - d.getTime()) / 1000 : null, bufferedAhead(),
                  hls.targetLatency]);
}, 500);
window.watchReport = () => ({ ...w, openStall: cur, openWait: waitingAt, currentTime: v.currentTime,
                              now: Date.now() });
setInterval(() => {  // tell the test how far it got; the answer "stop" ends the watch
  fetch('/state', { method: 'POST', body: JSON.stringify({ playing: w.playing, currentTime: v.currentTime,
    now: Date.now(), latency: hls.latency, stalls: w.stalls.length, openStall: cur }) })
    .then((r) => r.text()).then((t) => { if (t === 'stop') w.stop = true; }).catch(() => {});
}, 250);
</script>
"""


class BrowserWatch:
    """Headless chromium (tests/e2e/harness.mjs, playwright-core) playing `src` with plain hls.js from a page on
    an origin of its own, in the background: `state()` is what the page last reported (every 250 ms), `finish()`
    ends the watch and returns everything the page recorded (stalls, waiting events, errors, latency samples).
    Times are wall-clock ms (Date.now() in the page, the same clock as `wall_ms()`)."""

    def __init__(self, src: str, timeout_s: float = 600) -> None:
        import http.server
        import shutil
        from functools import partial

        from tests.e2e.browser import ROOT

        self.src, self.timeout_s = src, timeout_s
        self.root = Path(tempfile.mkdtemp(prefix="fl-chaos-page-"))
        (self.root / "index.html").write_text(PLAYER_PAGE)
        shutil.copy(ROOT / "node_modules" / "hls.js" / "dist" / "hls.min.js", self.root / "hls.min.js")
        self._state: dict[str, Any] = {}
        self._stop = threading.Event()
        self.result: dict[str, Any] | None = None
        watch = self

        class Page(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    watch._state = json.loads(body)
                except ValueError:
                    pass
                answer = b"stop" if watch._stop.is_set() else b"go"
                self.send_response(200)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Page, directory=str(self.root)))
        threading.Thread(target=self.server.serve_forever, daemon=True, name="chaos-page").start()
        self.thread = threading.Thread(target=self._run, daemon=True, name="chaos-browser")
        self.thread.start()

    @property
    def page(self) -> str:
        from urllib.parse import quote

        return f"http://127.0.0.1:{self.server.server_address[1]}/index.html?src={quote(self.src, safe='')}"

    def _run(self) -> None:
        from tests.e2e.browser import run_browser

        try:
            self.result = run_browser([
                {"op": "goto", "url": self.page},
                {"op": "wait", "name": "playing", "expr": "window.watch.playing", "timeout_s": 90},
                {"op": "wait", "name": "stopped", "expr": "window.watch.stop", "timeout_s": self.timeout_s,
                 "optional": True},
                {"op": "eval", "name": "watch", "expr": "window.watchReport()"},
            ], timeout_s=self.timeout_s + 120)
        except Exception as exc:  # noqa: BLE001 - reported by the waits and finish()
            self.result = {"ok": False, "error": repr(exc), "steps": []}

    def state(self) -> dict[str, Any]:
        return dict(self._state)

    def wait(self, pred: Any, timeout: float, what: str) -> dict[str, Any]:
        """Wait until pred(state) holds; fail at the deadline, or at once when the browser has ended."""
        end = time.monotonic() + timeout
        while True:
            st = self.state()
            if st and pred(st):
                return st
            if not self.thread.is_alive():
                raise AssertionError(f"the browser ended while waiting for {what}: {json.dumps(self.result)[:3000]}")
            if time.monotonic() > end:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}; page state {st}")
            time.sleep(0.1)

    def finish(self, timeout: float = 60) -> dict[str, Any]:
        """End the watch; the page's record (window.watchReport()), or an AssertionError saying why there is none."""
        self._stop.set()
        self.thread.join(timeout)
        self.server.shutdown()
        import shutil

        shutil.rmtree(self.root, ignore_errors=True)
        res = self.result or {"ok": False, "error": "the browser did not end", "steps": []}
        for s in res.get("steps", []):
            if s.get("name") == "watch" and s.get("ok"):
                return s["value"]
        raise AssertionError(f"no record from the browser: {json.dumps(res)[:3000]}")


def player_stalls(rec: dict[str, Any], t0_ms: float, t1_ms: float) -> dict[str, Any]:
    """The player's stalls, waiting events and latency in [t0_ms, t1_ms] (wall ms) from a BrowserWatch record;
    a stall or wait that overlaps the window counts whole, one still open at the end counts until then."""
    now = rec["now"]
    stalls = list(rec["stalls"]) + ([rec["openStall"]] if rec.get("openStall") else [])
    waits = [[a, b] for a, b in rec["waits"]] + ([[rec["openWait"], now]] if rec.get("openWait") else [])
    stalls = [s for s in stalls if s[1] > t0_ms and s[0] < t1_ms]
    waits = [x for x in waits if x[1] > t0_ms and x[0] < t1_ms]
    before = [s for s in rec["samples"] if t0_ms - 10_000 <= s[0] < t0_ms]
    during = [s for s in rec["samples"] if t0_ms <= s[0] <= t1_ms]

    def med(xs: list[float | None]) -> float | None:
        xs = sorted(x for x in xs if x is not None)
        return round(xs[len(xs) // 2], 2) if xs else None

    def top(xs: list[float | None]) -> float | None:
        xs = [x for x in xs if x is not None]
        return round(max(xs), 2) if xs else None

    return {
        "hls_js": rec.get("version"),
        "stalls": len(stalls),
        "longest_stall_s": round(max((s[2] for s in stalls), default=0.0), 2),
        "total_stall_s": round(sum(s[2] for s in stalls), 2),
        "stall_spans_ms": [[int(s[0]), int(s[1]), round(s[2], 2)] for s in stalls],
        "waiting_events": len(waits),
        "longest_waiting_s": round(max((b - a for a, b in waits), default=0) / 1000, 2),
        "buffer_stalled_errors": len([t for t in rec["stalledErrors"] if t0_ms <= t <= t1_ms]),
        "errors": [e for e in rec["errors"] if t0_ms <= e[0] <= t1_ms][:50],
        "fatal_errors": [e for e in rec["errors"] if e[1].endswith(":fatal")][:10],
        "latency_before_s": med([s[1] for s in before]),
        "latency_max_s": top([s[1] for s in during]),
        "latency_end_s": during[-1][1] if during else None,
        "glass_to_glass_before_s": med([s[2] for s in before]),
        "glass_to_glass_max_s": top([s[2] for s in during]),
        "buffer_before_s": med([s[3] for s in before]),
        "target_latency_s": med([s[4] for s in before]),
        "events_around": [e for e in rec.get("events", []) if t0_ms - 3000 <= e[0] <= t0_ms + 12_000],
        "samples_before": len(before), "samples_during": len(during),
        "last_sample_ms": int(rec["samples"][-1][0]) if rec["samples"] else 0,
        "window_s": round((t1_ms - t0_ms) / 1000, 1),
    }
