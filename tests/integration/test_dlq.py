from confluent_kafka import TopicPartition

from floodlight.kafka import dead_letter, make_consumer, make_producer
from floodlight.settings import Settings
from ops.dlq import group_counts, read_dead_letters, retry, select
from tests.support import wait_until


def test_dead_letters_are_listed_grouped_and_retried(isolated: Settings) -> None:
    producer = make_producer(isolated)
    for i in range(3):
        dead_letter(producer, isolated, None, reason=f"bad {i}", error_class="decode", stage="encoder",
                    stream_id="s1", gop_index=i, value=f"payload-{i}".encode(), key=b"s1")
    dead_letter(producer, isolated, None, reason="absurd", error_class="invalid", stage="qoe", stream_id="s2",
                value=b"x", key=b"s2")
    producer.flush(10)
    entries = list(read_dead_letters(isolated))
    assert len(entries) == 4
    assert group_counts(entries)[0] == ("encoder", "decode", "s1", 3)
    chosen = select(entries, stream_id="s1", error_class="decode")
    assert [e.record["gop_index"] for e in chosen] == [0, 1, 2]

    # The entries were dead-lettered without an original message: point them at the cues topic to retry.
    target = isolated.topic("cues")
    for e in chosen:
        e.record.update(original_topic=target, partition=0)
    assert retry(isolated, chosen) == 3
    consumer = make_consumer(isolated, "dlq-retry-check")
    consumer.assign([TopicPartition(target, 0, 0)])
    got: list[bytes] = []

    def poll() -> bool:
        msg = consumer.poll(0.2)
        if msg is not None and not msg.error():
            got.append(msg.value())
        return len(got) >= 3

    wait_until(poll, 20, what="retried records on the original topic")
    consumer.close()
    assert sorted(got) == [b"payload-0", b"payload-1", b"payload-2"]
