"""GopPublisher's bounded buffer: capture never blocks, the oldest GOPs go first when it is full."""

from __future__ import annotations

import socket
import time

from floodlight.settings import Settings
from producers.publish.publisher import GopPublisher


def gop(i: int, seconds: float = 1.0) -> dict:
    return {"stream_id": "s1", "gop_index": i, "duration": int(seconds * 90000), "time_base_num": 1,
            "time_base_den": 90000}


def dead_broker() -> Settings:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return Settings(kafka_bootstrap=f"127.0.0.1:{port}", topic_prefix="unit.")


def test_buffer_keeps_the_newest_gops_within_its_window_and_counts_drops():
    dropped: list[int] = []
    pub = GopPublisher(dead_broker(), buffer_seconds=3, on_dropped=lambda g: dropped.append(g["gop_index"]))
    try:
        t0 = time.monotonic()
        for i in range(10):
            pub.submit(gop(i))
        assert time.monotonic() - t0 < 0.5  # submit never waits for Kafka
        assert pub.queued() == 3 and pub.buffered_seconds() == 3.0
        assert dropped == [0, 1, 2, 3, 4, 5, 6] and pub.dropped == 7
        assert [g["gop_index"] for g in pub._queue] == [7, 8, 9]
    finally:
        pub._stop = True


def test_buffer_window_counts_media_seconds_not_gops():
    pub = GopPublisher(dead_broker(), buffer_seconds=8)
    try:
        for i in range(10):
            pub.submit(gop(i, seconds=4.0))
        assert pub.queued() == 2  # 2 x 4 s GOPs fit in 8 s
    finally:
        pub._stop = True
