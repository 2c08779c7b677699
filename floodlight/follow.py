"""The one "read a topic to its end, then keep following it" loop (DESIGN §1: the follow loop).

Every role keeps some state derived from a whole topic: the registry view (floodlight.streams), the
api's manifest follower (floodlight.manifests), the packager's cues, the demo's status table; the dead
letter tools read a topic once to its end. `Follower` does it for all of them:

- assigns every partition of its topics (no consumer group, nothing committed), from the beginning
  or from given offsets;
- waits out, with backoff, a broker that is down or a topic that does not exist yet at start-up;
- reads up to the high watermarks each partition had when reading began, then sets `caught_up`
  (and calls `on_caught_up`); in follow mode it goes on delivering records, otherwise it returns;
- decodes each value with the topic's schema and hands a `Record` to `on_record`; an undecodable
  value goes to `on_bad` (default: a warning) and never stops the loop, nor does a failing callback;
- if the client fails unexpectedly it starts again from the next offset it had not delivered.

`start()` runs it on a daemon thread, `run()` in the caller's thread; `read_to_end()` is the
read-once form. Callbacks run on the follower's thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Self

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition

from floodlight.kafka import consumer_config
from floodlight.settings import Settings
from schemas import codec

log = logging.getLogger("floodlight.follow")

TP = tuple[str, int]


@dataclass(frozen=True)
class Record:
    """One consumed record; `value` is the decoded dict (raw bytes for a topic read without a schema,
    None for a tombstone)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: Any
    timestamp_ms: int


def backoff(first_s: float = 0.5, cap_s: float = 5.0) -> Iterator[float]:
    """Delays between start-up attempts: doubling from first_s, never above cap_s."""
    delay = first_s
    while True:
        yield delay
        delay = min(delay * 2, cap_s)


class EndTracker:
    """Which partitions still have records below the end they had when reading began."""

    def __init__(self, starts: Mapping[TP, int], ends: Mapping[TP, int]) -> None:
        self.ends = dict(ends)
        self.pending = {tp for tp, end in ends.items() if starts.get(tp, 0) < end}

    @property
    def done(self) -> bool:
        return not self.pending

    def took(self, tp: TP, offset: int) -> None:
        if tp in self.pending and offset + 1 >= self.ends[tp]:
            self.pending.discard(tp)

    def at_eof(self, tp: TP) -> None:
        """The client reached the partition's end (covers offsets compaction or markers left out)."""
        self.pending.discard(tp)


class Follower:
    """Reads `topics` ({topic: schema name, or None for raw bytes}) to their end, then follows them."""

    def __init__(self, settings: Settings, topics: Mapping[str, str | None], on_record: Callable[[Record], None], *,
                 name: str, group_id: str | None = None, follow: bool = True,
                 offsets: Mapping[TP, int] | None = None, on_caught_up: Callable[[], None] | None = None,
                 on_bad: Callable[[Record, codec.CodecError], None] | None = None, tombstones: bool = False,
                 logger: logging.Logger | None = None, consumer_overrides: Mapping[str, Any] | None = None,
                 poll_s: float = 0.2, metadata_timeout_s: float = 5.0) -> None:
        self.settings = settings
        self.topics = dict(topics)
        self.name = name
        self.group_id = group_id or f"{name}-follower-unused"
        self.follow = follow
        self.log = logger or log
        self.caught_up = threading.Event()
        self.assigned = False  # the topics were found and assigned at least once
        self.records = 0
        self._on_record = on_record
        self._on_caught_up = on_caught_up
        self._on_bad = on_bad or self._warn_bad
        self._tombstones = tombstones
        self._next: dict[TP, int] = dict(offsets or {})  # the next offset to deliver, per partition
        self._overrides = dict(consumer_overrides or {})
        self._poll_s = poll_s
        self._metadata_timeout_s = metadata_timeout_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- control -------------------------------------------------------------------------------
    def start(self) -> Self:
        self._thread = threading.Thread(target=self.run, name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        """The thread started by start() is still running."""
        return self._thread is not None and self._thread.is_alive()

    def wait_caught_up(self, timeout: float, cancel: threading.Event | None = None) -> bool:
        """True once caught up; False at the timeout, or early when `cancel` is set."""
        end = time.monotonic() + timeout
        while not self.caught_up.wait(min(0.2, max(0.0, end - time.monotonic()))):
            if time.monotonic() >= end or (cancel is not None and cancel.is_set()):
                return False
        return True

    def run(self, idle_timeout_s: float | None = None) -> bool:
        """The loop, in this thread, until stopped (follow mode) or caught up (read-to-end mode).
        idle_timeout_s: give up when nothing arrives for that long (start-up included). Returns caught_up."""
        delays = backoff()
        idle_end = None if idle_timeout_s is None else time.monotonic() + idle_timeout_s
        while not self._stop.is_set():
            try:
                self._session(idle_end, idle_timeout_s)
                break
            except Exception:  # noqa: BLE001 - start again from the next undelivered offset
                self.log.exception(f"{self.name}: follower failed, starting again")
                if self._stop.wait(next(delays)):
                    break
        return self.caught_up.is_set()

    # --- the loop ------------------------------------------------------------------------------
    def _session(self, idle_end: float | None, idle_timeout_s: float | None) -> None:
        conf = {"enable.partition.eof": True, "log_level": 3, **self._overrides}
        consumer = Consumer(consumer_config(self.settings, group_id=self.group_id, **conf))
        try:
            plan = self._plan(consumer, idle_end)
            if plan is None:
                return
            starts, ends = plan
            tracker = EndTracker(starts, ends)
            consumer.assign([TopicPartition(t, p, off) for (t, p), off in starts.items()])
            self.assigned = True
            if tracker.done:
                self._reached_end()
            while not self._stop.is_set():
                if tracker.done and not self.follow:
                    return
                if idle_end is not None and time.monotonic() >= idle_end:
                    self.log.warning(f"{self.name}: nothing read for {idle_timeout_s:.0f}s, stopping",
                                     extra={"pending": sorted(tracker.pending)})
                    return
                msg = consumer.poll(self._poll_s)
                if msg is None:
                    continue
                tp = (msg.topic(), msg.partition())
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        tracker.at_eof(tp)
                    else:
                        self.log.warning(f"{self.name} consumer error", extra={"error": str(err)})
                else:
                    if idle_timeout_s is not None:
                        idle_end = time.monotonic() + idle_timeout_s
                    self._next[tp] = msg.offset() + 1
                    tracker.took(tp, msg.offset())
                    self._take(msg)
                if tracker.done and not self.caught_up.is_set():
                    self._reached_end()
        finally:
            consumer.close()

    def _plan(self, consumer: Consumer, idle_end: float | None) -> tuple[dict[TP, int], dict[TP, int]] | None:
        """(first offset to read, high watermark) per partition of every topic; waits out a broker that is
        down and topics that do not exist yet. None when stopped or out of time."""
        delays = backoff()
        while not self._stop.is_set():
            try:
                starts: dict[TP, int] = {}
                ends: dict[TP, int] = {}
                timeout = self._metadata_timeout_s
                if idle_end is not None:
                    timeout = max(0.5, min(timeout, idle_end - time.monotonic()))
                for topic in self.topics:
                    md = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
                    if md is None or md.error is not None or not md.partitions:
                        raise LookupError(f"topic {topic} has no partitions yet"
                                          + (f" ({md.error})" if md is not None and md.error else ""))
                    for p in sorted(md.partitions):
                        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout,
                                                                   cached=False)
                        nxt = self._next.get((topic, p), OFFSET_BEGINNING)
                        starts[(topic, p)] = max(nxt, low) if nxt >= 0 else low
                        ends[(topic, p)] = high
                return starts, ends
            except (KafkaException, LookupError) as exc:
                self.log.warning(f"{self.name}: broker or topic not reachable yet", extra={"error": str(exc)})
            wait = next(delays)
            if idle_end is not None:
                wait = min(wait, idle_end - time.monotonic())
                if wait <= 0:
                    return None
            if self._stop.wait(wait):
                return None
        return None

    def _reached_end(self) -> None:
        self.caught_up.set()
        self.log.info(f"{self.name}: caught up", extra={"records": self.records})
        if self._on_caught_up is not None:
            try:
                self._on_caught_up()
            except Exception:  # noqa: BLE001 - a callback must not stop the follower
                self.log.exception(f"{self.name}: caught-up callback failed")

    def _take(self, msg: Message) -> None:
        raw = msg.value()
        if raw is None and not self._tombstones:
            return
        rec = Record(msg.topic(), msg.partition(), msg.offset(), msg.key(), raw, msg.timestamp()[1])
        kind = self.topics.get(rec.topic)
        if raw is not None and kind is not None:
            try:
                rec = Record(rec.topic, rec.partition, rec.offset, rec.key, codec.decode(raw, expect=kind),
                             rec.timestamp_ms)
            except codec.CodecError as exc:
                self._on_bad(rec, exc)
                return
        self.records += 1
        try:
            self._on_record(rec)
        except Exception:  # noqa: BLE001 - a callback must not stop the follower
            self.log.exception(f"{self.name}: record handler failed", extra={"offset": rec.offset})

    def _warn_bad(self, rec: Record, exc: codec.CodecError) -> None:
        self.log.warning(f"skipping bad {self.topics.get(rec.topic)}", extra={
            "reason": str(exc), "topic": rec.topic, "partition": rec.partition, "offset": rec.offset})


def read_to_end(settings: Settings, topics: Mapping[str, str | None], *, timeout_s: float = 10.0,
                **kwargs: Any) -> list[Record]:
    """Every record now in `topics`, in the order read; stops at the ends they had when reading began.
    Gives up after timeout_s without a record (partial list); TimeoutError when the topics could not
    be reached at all in that time."""
    out: list[Record] = []
    kwargs.setdefault("name", "read-to-end")
    f = Follower(settings, topics, out.append, follow=False, **kwargs)
    f.run(idle_timeout_s=timeout_s)
    if not f.assigned:
        raise TimeoutError(f"{', '.join(topics)}: broker or topic not reachable within {timeout_s:.0f}s "
                           f"({settings.kafka_bootstrap})")
    return out
