"""Dead letters: list them by reason and stream, show one, re-publish chosen ones to their topic.

Every role dead-letters what it cannot process (floodlight.kafka.dead_letter); this is the
operator's side: see what failed and, once the cause is fixed, retry it from the original bytes.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from floodlight.follow import read_to_end
from floodlight.kafka import make_producer
from floodlight.settings import Settings


@dataclass(frozen=True)
class DeadLetterEntry:
    offset: int
    record: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        r = self.record
        return {"dlq_offset": self.offset, "stage": r["stage"], "error_class": r["error_class"],
                "stream_id": r["stream_id"], "gop_index": r["gop_index"], "reason": r["reason"],
                "from": f"{r['original_topic']}[{r['partition']}]@{r['offset']}", "attempt": r["attempt"],
                "failed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(r["failed_ms"] / 1000)),
                "bytes": len(r["value"] or b"")}


def read_dead_letters(settings: Settings, timeout_s: float = 10.0) -> Iterator[DeadLetterEntry]:
    """Every dead letter currently in the topic, oldest first (reads to the end, then stops)."""
    # a dead letter of a dead letter is not worth a crash: undecodable ones are skipped quietly
    for rec in read_to_end(settings, {settings.topic("dlq"): "DeadLetter"}, timeout_s=timeout_s, name="dlq-reader",
                           group_id="dlq-reader-unused", on_bad=lambda _rec, _exc: None):
        yield DeadLetterEntry(rec.offset, rec.value)


def group_counts(entries: list[DeadLetterEntry]) -> list[tuple[str, str, str, int]]:
    """(stage, error_class, stream_id) -> count, most frequent first."""
    counts = Counter((e.record["stage"], e.record["error_class"], e.record["stream_id"] or "-") for e in entries)
    return [(s, c, sid, n) for (s, c, sid), n in counts.most_common()]


def select(entries: list[DeadLetterEntry], *, offsets: set[int] | None = None, stream_id: str | None = None,
           error_class: str | None = None, stage: str | None = None) -> list[DeadLetterEntry]:
    out = []
    for e in entries:
        r = e.record
        if offsets is not None and e.offset not in offsets:
            continue
        if stream_id and r["stream_id"] != stream_id:
            continue
        if error_class and r["error_class"] != error_class:
            continue
        if stage and r["stage"] != stage:
            continue
        out.append(e)
    return out


def retry(settings: Settings, entries: list[DeadLetterEntry]) -> int:
    """Re-publish the original bytes of each entry to its original topic (and partition when it exists)."""
    if not entries:
        return 0
    producer = make_producer(settings)
    errors: list[Any] = []
    for e in entries:
        r = e.record
        if not r["original_topic"] or r["value"] is None:
            continue
        kwargs: dict[str, Any] = {}
        if r["partition"] >= 0:
            kwargs["partition"] = r["partition"]
        producer.produce(r["original_topic"], key=r["key"], value=r["value"],
                         headers={"floodlight-retry-of": f"dlq@{e.offset}", "floodlight-attempt": str(r["attempt"])},
                         on_delivery=lambda err, _m: errors.append(err), **kwargs)
    producer.flush(30)
    failed = [err for err in errors if err is not None]
    if failed:
        raise RuntimeError(f"{len(failed)} retries were not acknowledged: {failed[0]}")
    return len(errors)
