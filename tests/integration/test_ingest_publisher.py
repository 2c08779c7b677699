"""GopPublisher on the real broker: a GOP Kafka can never take goes to the dlq, the stream goes on."""

from __future__ import annotations

import uuid

from floodlight.kafka import make_consumer
from floodlight.settings import Settings
from producers.publish.publisher import GopPublisher
from producers.sources.testsrc import generate_gops
from schemas import codec
from tests.support import wait_until


def test_oversized_gop_is_dead_lettered_and_the_next_one_published(isolated: Settings):
    small = generate_gops("pub-t", 2, width=160, height=90, gop_seconds=1.0, start_ms=1_800_000_000_000)
    huge = dict(small[0], gop_index=small[0]["gop_index"] - 1)
    huge["video_packets"] = [dict(small[0]["video_packets"][0], data=b"\x00" * (17 * 1024 * 1024))]
    dead: list[str] = []
    pub = GopPublisher(isolated, on_dead_letter=lambda g, reason: dead.append(reason)).start()
    try:
        pub.submit(huge)
        for g in small:
            pub.submit(g)
        assert pub.drain(30)
    finally:
        pub.close()
    assert pub.dead_lettered == 1 and pub.published == len(small)
    assert "exceeds" in dead[0]
    c = make_consumer(isolated, f"t-{uuid.uuid4().hex[:6]}")
    c.subscribe([isolated.topic("dlq")])
    got: list[dict] = []

    def read() -> bool:
        m = c.poll(0.5)
        if m is not None and not m.error():
            got.append(codec.decode(m.value(), expect="DeadLetter"))
        return bool(got)

    try:
        wait_until(read, 20, interval=0, what="the dead letter")
    finally:
        c.close()
    d = got[0]
    assert (d["stage"], d["error_class"], d["stream_id"], d["gop_index"]) == ("ingest", "oversized", "pub-t",
                                                                              huge["gop_index"])
