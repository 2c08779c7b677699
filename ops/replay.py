"""Replay: transcode and package any retained stretch of a stream again, from floodlight.gops.

Kafka keeps the source GOPs, so a past range can be re-run after a fix, with another ladder,
or cut as a highlight. Like the demo and the CLI this module wires roles together (encoder +
packager cores, imported lazily); it runs in its own consumer group (`replay-<asset>`), so the live
consumers are not disturbed, and it is resumable: the group's committed offsets and the packager's
checkpoint in the store say what is done, and re-running the same command continues from there.

Order: GOPs of one stream are spread round-robin over the partitions, each partition in gop_index
order, so a k-way merge over the partitions yields the stream in gop_index order without holding
more than one record per partition.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import Consumer, KafkaError, TopicPartition

from floodlight import ids
from floodlight.kafka import make_consumer
from floodlight.settings import Settings
from schemas import codec
from schemas.errors import FloodlightError

log = logging.getLogger(__name__)
_REL_RE = re.compile(r"^-(\d+(?:\.\d+)?)([smhd])$")
SLACK_MS = 30_000  # record timestamps (publish) vs capture clock: widen offset lookups
LAG_MS = 10_000  # capture -> publish lag allowed when checking retention
_UNITS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


class ReplayError(FloodlightError):
    """A replay that cannot run as asked (bad range, outside retention, bad ladder); the message says why."""


# --- pure parts ------------------------------------------------------------------------------
def parse_when(text: str, now_ms: int | None = None) -> int:
    """Unix ms from ISO 8601 ('2026-11-29T12:00:00Z'), Unix seconds or ms, or relative to now ('-90s', '-5m')."""
    text = text.strip()
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    if m := _REL_RE.match(text):
        return now_ms - int(float(m.group(1)) * _UNITS[m.group(2)])
    if text.isdigit():
        n = int(text)
        return n if n > 10**11 else n * 1000
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ReplayError(f"cannot read time {text!r}: use ISO 8601, Unix seconds/ms, or -90s/-5m/-1h") from exc
    if dt.tzinfo is None:
        raise ReplayError(f"time {text!r} has no time zone: add Z or +00:00")
    return int(dt.timestamp() * 1000)


def load_ladder(path: Path) -> list[dict[str, Any]]:
    """A ladder file (JSON or YAML): a list of {name, width, height, bitrate_kbps}, highest first."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ReplayError(f"cannot read ladder {path}: {exc}") from exc
    if isinstance(data, dict):
        data = data.get("ladder")
    if not isinstance(data, list) or not data:
        raise ReplayError(f"ladder {path} must be a non-empty list of rungs")
    rungs = []
    for i, r in enumerate(data):
        try:
            rung = {"name": str(r["name"]), "width": int(r["width"]), "height": int(r["height"]),
                    "bitrate_kbps": int(r["bitrate_kbps"])}
        except (KeyError, TypeError, ValueError) as exc:
            raise ReplayError(f"ladder rung {i} needs name, width, height, bitrate_kbps: {exc}") from exc
        if not ids.is_rung_name(rung["name"]):
            raise ReplayError(f"ladder rung {i}: invalid name {rung['name']!r} (use {ids.RENDITION_PATTERN}, "
                              f"not {ids.AUDIO_RENDITION!r})")
        if rung["width"] <= 0 or rung["height"] <= 0 or rung["width"] % 2 or rung["height"] % 2:
            raise ReplayError(f"ladder rung {rung['name']}: width and height must be positive and even")
        if not 50 <= rung["bitrate_kbps"] <= 100_000:
            raise ReplayError(f"ladder rung {rung['name']}: bitrate_kbps out of range")
        rungs.append(rung)
    return sorted(rungs, key=lambda r: -r["height"])


def merge_by_gop(heads: dict[int, deque[dict[str, Any]]]) -> int | None:
    """The partition whose head GOP comes first (lowest gop_index), or None when all are empty."""
    best: tuple[int, int] | None = None
    for p, q in heads.items():
        if q and (best is None or q[0]["gop_index"] < best[0]):
            best = (q[0]["gop_index"], p)
    return None if best is None else best[1]


def fmt_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000).astimezone().strftime("%Y-%m-%dT%H:%M:%S%z")


# --- Kafka side --------------------------------------------------------------------------------
@dataclass
class Plan:
    topic: str
    start: dict[int, int]  # partition -> first offset at/after T1
    end: dict[int, int]  # partition -> first offset at/after T2 (exclusive)
    retained: tuple[int, int]  # (earliest, latest) timestamps retained in the topic
    resumed: dict[int, int] = field(default_factory=dict)


def _first_timestamp(consumer: Consumer, tp: TopicPartition, timeout: float = 10.0) -> int | None:
    consumer.assign([tp])
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        msg = consumer.poll(0.5)
        if msg is not None and not msg.error():
            return msg.timestamp()[1]
    return None


def plan_range(settings: Settings, consumer: Consumer, t1: int, t2: int) -> Plan:
    """Offsets for [t1, t2) in every partition of floodlight.gops; refuse what is not retained."""
    if t2 <= t1:
        raise ReplayError(f"empty range: --to ({fmt_ms(t2)}) must be after --from ({fmt_ms(t1)})")
    topic = settings.topic("gops")
    md = consumer.list_topics(topic, timeout=10)
    if topic not in md.topics or md.topics[topic].error is not None:
        raise ReplayError(f"topic {topic} does not exist")
    parts = sorted(md.topics[topic].partitions)
    firsts, lasts, trimmed = [], [], False
    for p in parts:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        trimmed = trimmed or low > 0
        if high <= low:
            continue
        first = _first_timestamp(consumer, TopicPartition(topic, p, low))
        last = _first_timestamp(consumer, TopicPartition(topic, p, high - 1))
        if first is not None and last is not None:
            firsts.append(first)
            lasts.append(last)
    if not firsts:
        raise ReplayError(f"{topic} retains nothing (retention {settings.gops_retention_ms // 60000} min)")
    # Once retention has deleted anything, every partition must still hold T1 (a stream's GOPs are
    # spread over all of them); before that, the topic holds everything since its first record.
    retained = (max(firsts) if trimmed else min(firsts), max(lasts))
    if t1 < retained[0] - LAG_MS:
        raise ReplayError(f"{fmt_ms(t1)} is outside retention: {topic} retains {fmt_ms(retained[0])} .. "
                          f"{fmt_ms(retained[1])} (retention.ms={settings.gops_retention_ms})")
    if t1 > retained[1]:
        raise ReplayError(f"nothing at or after {fmt_ms(t1)}: {topic} retains {fmt_ms(retained[0])} .. "
                          f"{fmt_ms(retained[1])}")
    # Record timestamps are publish times, a GOP or so after capture: look a little wider, then
    # filter exactly on capture_wallclock_ms.
    starts = consumer.offsets_for_times([TopicPartition(topic, p, max(0, t1 - SLACK_MS)) for p in parts], timeout=10)
    ends = consumer.offsets_for_times([TopicPartition(topic, p, t2 + SLACK_MS) for p in parts], timeout=10)
    plan = Plan(topic, {}, {}, retained)
    for s, e in zip(starts, ends, strict=True):
        high = consumer.get_watermark_offsets(TopicPartition(topic, s.partition), timeout=10)[1]
        plan.start[s.partition] = s.offset if s.offset >= 0 else high
        plan.end[s.partition] = e.offset if e.offset >= 0 else high
    return plan


def _records(consumer: Consumer, plan: Plan, stream_id: str, t1: int, t2: int,
             on_skip: Callable[[], None]) -> Iterator[tuple[int, int, dict[str, Any]]]:
    """(partition, offset, GopChunk) of the stream in [t1, t2), merged into gop_index order. A GOP published
    in sub-GOP chunks (LOW mode) comes whole, assembled from its chunks (the first copy of each), at the
    offset of the chunk that completed it."""
    from processors.encoder.streaming import assemble, is_chunk

    chunks: dict[tuple[int, int, int], dict[int, dict[str, Any]]] = {}  # (partition, epoch, gop) -> index -> chunk
    begin = {p: max(plan.start[p], plan.resumed.get(p, -1)) for p in plan.start}
    live = {p for p in plan.start if begin[p] < plan.end[p]}
    consumer.assign([TopicPartition(plan.topic, p, begin[p]) for p in sorted(live)])
    heads: dict[int, deque[tuple[int, dict[str, Any]]]] = {p: deque() for p in live}
    done: set[int] = set()
    while True:
        # Fill: every partition not finished needs a head before we can pick the smallest.
        while any(not heads[p] and p not in done for p in live):
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() != KafkaError._PARTITION_EOF:
                    log.warning("replay consumer error", extra={"error": str(msg.error())})
                continue
            p = msg.partition()
            if p in done:
                continue
            if msg.offset() >= plan.end[p]:
                done.add(p)
                consumer.incremental_unassign([TopicPartition(plan.topic, p)])
                continue
            try:
                rec = codec.decode(msg.value(), expect="GopChunk")
            except codec.CodecError:
                on_skip()
                continue
            if rec["stream_id"] != stream_id or not t1 <= rec["capture_wallclock_ms"] < t2:
                if msg.offset() + 1 >= plan.end[p]:
                    done.add(p)
                continue
            if is_chunk(rec):
                got = chunks.setdefault((p, rec["epoch"], rec["gop_index"]), {})
                got.setdefault(rec["chunk_index"], rec)
                last = [i for i, c in got.items() if c["is_last_chunk"]]
                if last and all(i in got for i in range(min(last) + 1)):
                    del chunks[(p, rec["epoch"], rec["gop_index"])]
                    rec = assemble([got[i] for i in range(min(last) + 1)])
                else:
                    rec = None
            if rec is not None:
                rec["_offset"] = msg.offset()
                heads[p].append(rec)
            if msg.offset() + 1 >= plan.end[p]:
                done.add(p)
        q = {p: h for p, h in heads.items()}
        p = merge_by_gop(q)  # type: ignore[arg-type]
        if p is None:
            return
        rec = heads[p].popleft()
        yield p, rec.pop("_offset"), rec


def _done_gops(state: Any) -> set[int]:
    """GOPs already packaged in every rendition (a resumed run skips them)."""
    per_track = [{m + (state.base_gop or 0) for m, seg in t.segments.items() if not seg.gap}
                 for t in state.tracks.values()]
    return set.intersection(*per_track) if per_track else set()


# --- the run ---------------------------------------------------------------------------------
@dataclass
class ReplayResult:
    asset_id: str
    root: str
    gops: int = 0
    duplicates: int = 0
    failed: int = 0
    skipped_resumed: int = 0
    media_seconds: float = 0.0
    wall_seconds: float = 0.0
    first_gop: int | None = None
    last_gop: int | None = None
    failures: list[str] = field(default_factory=list)

    def count_failed(self) -> None:
        self.failed += 1

    @property
    def speed(self) -> float:
        return self.media_seconds / self.wall_seconds if self.wall_seconds else 0.0


def run_replay(settings: Settings, stream_id: str, t1: int, t2: int, *, ladder: list[dict[str, Any]] | None = None,
               as_id: str | None = None, vod: bool = False, progress: bool = True,
               stop_after: int | None = None) -> ReplayResult:
    """Transcode + package [t1, t2) of `stream_id` as `as_id` (VOD under vod/, else a new live-like stream).

    `stop_after` stops after that many GOPs without finalising (tests use it to interrupt halfway).
    """
    from floodlight.keystore import open_key_provider
    from floodlight.objectstore import open_store
    from floodlight.registry import RegistryView, ladder_of, new_stream_record, publish_stream
    from processors.encoder.ladder import part_seconds_for, preset_for
    from processors.encoder.transcode import TranscodeError, transcode_gop
    from sinks.packager.core import StreamPackager
    from sinks.packager.state import StreamConfig

    asset = as_id or f"{stream_id}-replay-{t1 // 1000}"
    if not ids.is_stream_id(asset):
        raise ReplayError(f"invalid asset id {asset!r}: use {ids.STREAM_ID_PATTERN}")
    if asset == stream_id and not vod:
        raise ReplayError("a live-like replay needs --as NEW_ID (it would overwrite the live stream)")

    view = RegistryView(settings).start()
    view.wait_caught_up(15)
    source = view.get(stream_id)
    view.stop()
    rungs = ladder or ladder_of(source or {})
    preset, part_s = preset_for(source), part_seconds_for(source)
    config = StreamConfig(latency_mode=(source or {}).get("latency_mode", "STANDARD"),
                          dvr_window_s=max(int((t2 - t1) / 1000) + 60, (source or {}).get("dvr_window_seconds", 0)),
                          drm=bool((source or {}).get("drm_required")),
                          key_rotation_segments=(source or {}).get("key_rotation_segments", 10))

    store = open_store(settings.resolved_store_url(), settings.s3_endpoint_url)
    prefix = "vod" if vod else "live"
    pk = StreamPackager.open(store, asset, prefix=prefix, config=config,
                             keys=open_key_provider(settings.stack_dir) if config.drm else None,
                             gap_deadline_s=1e9)
    result = ReplayResult(asset, pk.state.root)
    group = f"replay-{asset}"
    consumer = make_consumer(settings, group, **{"enable.partition.eof": True})
    try:
        plan = plan_range(settings, consumer, t1, t2)
        committed = consumer.committed([TopicPartition(plan.topic, p) for p in plan.start], timeout=10)
        plan.resumed = {tp.partition: tp.offset for tp in committed if tp.offset >= 0}
        if plan.resumed:
            log.info("resuming replay", extra={"asset": asset, "committed": plan.resumed})
        record = dict(source or new_stream_record(asset, f"Replay of {stream_id}"))
        record.update(stream_id=asset, title=f"Replay of {record.get('title') or stream_id}", ladder=rungs,
                      status="ENDED" if vod else "LIVE", ingest_endpoints=[],
                      updated_ms=int(time.time() * 1000))
        from floodlight.kafka import make_producer

        publish_stream(make_producer(settings), settings, record)

        est_total = None
        seen = _done_gops(pk.state)
        started = time.monotonic()
        bar = _Progress(progress, asset)
        for p, offset, gop in _records(consumer, plan, stream_id, t1, t2,
                                       on_skip=result.count_failed):
            g = gop["gop_index"]
            dur_s = gop["duration"] * gop["time_base_num"] / gop["time_base_den"]
            if est_total is None:
                est_total = max(1, round((t2 - t1) / 1000 / max(dur_s, 0.1)))
                bar.start(est_total)
            pk.state.msn_of(g)  # fixes msn 0 at the first GOP: the merge yields the smallest gop_index first
            if g in seen:
                result.duplicates += 1
                consumer.commit(offsets=[TopicPartition(plan.topic, p, offset + 1)], asynchronous=False)
                continue
            seen.add(g)
            try:
                segments = transcode_gop(gop, rungs, preset=preset, part_seconds=part_s)
            except TranscodeError as exc:
                result.failed += 1
                result.failures.append(f"gop {g}: {exc.reason}")
                log.warning("replay GOP failed", extra={"stream_id": stream_id, "gop_index": g, "reason": exc.reason})
                continue
            for seg in segments:
                seg["stream_id"] = asset
                pk.add(seg, now=0.0)
            pk.flush()
            pk.checkpoint()
            consumer.commit(offsets=[TopicPartition(plan.topic, p, offset + 1)], asynchronous=False)
            result.gops += 1
            result.media_seconds += dur_s
            result.first_gop = g if result.first_gop is None else min(result.first_gop, g)
            result.last_gop = g if result.last_gop is None else max(result.last_gop, g)
            result.wall_seconds = time.monotonic() - started
            bar.advance(result)
            if stop_after is not None and result.gops >= stop_after:
                return result
        pk.end(vod=vod)
        pk.checkpoint()
        bar.finish(result)
        result.wall_seconds = time.monotonic() - started
        return result
    finally:
        consumer.close()


class _Progress:
    """A rich progress bar: GOPs done/total and speed against real time."""

    def __init__(self, enabled: bool, asset: str) -> None:
        self.enabled = enabled
        self.asset = asset
        self.progress: Any = None
        self.task: Any = None

    def start(self, total: int) -> None:
        if not self.enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(TextColumn(f"replay {self.asset}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("GOPs  {task.fields[speed]}"), TimeRemainingColumn())
        self.task = self.progress.add_task("replay", total=total, speed="")
        self.progress.start()

    def advance(self, r: ReplayResult) -> None:
        if self.progress is not None:
            total = max(self.progress.tasks[0].total or 0, r.gops)
            self.progress.update(self.task, completed=r.gops, total=total, speed=f"{r.speed:.2f}x real time")

    def finish(self, r: ReplayResult) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=r.gops, total=r.gops)
            self.progress.stop()


def result_json(r: ReplayResult) -> str:
    return json.dumps({k: getattr(r, k) for k in ("asset_id", "root", "gops", "duplicates", "failed",
                                                  "media_seconds", "wall_seconds", "first_gop", "last_gop")}
                      | {"speed": round(r.speed, 3)})
