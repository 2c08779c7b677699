"""The foundation against the real broker: topic configs, 10 MiB records, faust <-> confluent-kafka."""

from __future__ import annotations

import asyncio
import os
import uuid

from confluent_kafka import KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource

from floodlight.kafka import make_consumer, make_producer
from floodlight.partitioner import gop_partition
from floodlight.settings import Settings
from floodlight.topics import apply_topics, topic_specs
from schemas import codec
from tests.support import sample_records, wait_until


def test_topics_have_the_configs_of_the_table(isolated: Settings) -> None:
    admin = AdminClient({"bootstrap.servers": isolated.kafka_bootstrap})
    specs = {isolated.topic(s.short): s for s in topic_specs(isolated)}

    def describe() -> dict:  # a topic just created can be unknown to the broker answering for a moment
        if not set(specs) <= set(admin.list_topics(timeout=10).topics):
            return {}
        futures = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, n) for n in specs])
        try:
            return {res: fut.result() for res, fut in futures.items()}
        except KafkaException:
            return {}

    described = wait_until(describe, 15, interval=0.2, what="every topic's configs")
    md = admin.list_topics(timeout=10)
    for res, actual in described.items():
        for key, want in specs[res.name].configs.items():
            assert actual[key].value == want, (res.name, key)
        assert len(md.topics[res.name].partitions) == specs[res.name].partitions
    again = apply_topics(isolated)
    assert again.created == [] and again.drift == []
    assert sorted(again.unchanged) == sorted(specs)


def test_drift_is_reported(isolated: Settings) -> None:
    admin = AdminClient({"bootstrap.servers": isolated.kafka_bootstrap})
    name = isolated.topic("qoe")
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry

    res = ConfigResource(ConfigResource.Type.TOPIC, name, incremental_configs=[
        ConfigEntry("retention.ms", "1000", incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([res])[res].result()
    # the broker applies the controller's change to what it describes a moment later
    drift = wait_until(lambda: apply_topics(isolated).drift, 15, interval=0.2, what="drift in the report")
    assert any(line.startswith(name) and "retention.ms" in line for line in drift)


def test_ten_mib_gop_chunk_round_trips(isolated: Settings) -> None:
    record = sample_records()["GopChunk"]
    payload = os.urandom(10 * 1024 * 1024)
    record["video_packets"] = [dict(record["video_packets"][0], data=payload)]
    value = codec.encode("GopChunk", record)
    assert len(value) > 10 * 1024 * 1024
    topic = isolated.topic("gops")
    part = gop_partition(record["stream_id"], record["gop_index"], isolated.topic_partitions)
    producer = make_producer(isolated)
    errors: list[object] = []
    producer.produce(topic, key=b"s1", value=value, partition=part,
                     on_delivery=lambda err, msg: errors.append(err))
    assert producer.flush(30) == 0
    assert errors == [None]
    consumer = make_consumer(isolated, f"g-{uuid.uuid4().hex[:6]}")
    consumer.assign([TopicPartition(topic, part, 0)])
    msg = None
    for _ in range(60):
        msg = consumer.poll(0.5)
        if msg is not None and not msg.error():
            break
    consumer.close()
    assert msg is not None and msg.error() is None
    out = codec.decode(msg.value(), expect="GopChunk")
    assert out["video_packets"][0]["data"] == payload
    assert out["gop_index"] == record["gop_index"]


async def test_faust_app_and_confluent_producer_exchange_a_record(isolated: Settings) -> None:
    import faust

    inbox, outbox = isolated.topic("cues"), isolated.topic("manifests")
    app = faust.App(f"ft-{uuid.uuid4().hex[:6]}", broker=f"aiokafka://{isolated.kafka_bootstrap}",
                    store="memory://", web_enabled=False, topic_disable_leader=True,
                    consumer_auto_offset_reset="earliest")
    src = app.topic(inbox, value_serializer="raw", key_serializer="raw")
    dst = app.topic(outbox, value_serializer="raw", key_serializer="raw")

    @app.agent(src)
    async def relay(stream):  # decode with our codec, answer with a ManifestUpdate
        async for value in stream:
            cue = codec.decode(value, expect="Cue")
            update = dict(sample_records()["ManifestUpdate"], stream_id=cue["stream_id"], etag=cue["cue_id"])
            await dst.send(key=cue["stream_id"].encode(), value=codec.encode("ManifestUpdate", update))

    producer = make_producer(isolated)
    cue = dict(sample_records()["Cue"], cue_id=uuid.uuid4().hex)
    producer.produce(inbox, key=b"s1", value=codec.encode("Cue", cue))
    assert producer.flush(10) == 0

    consumer = make_consumer(isolated, f"c-{uuid.uuid4().hex[:6]}")
    consumer.subscribe([outbox])
    await app.start()
    try:
        got = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while loop.time() < deadline and got is None:
            msg = await loop.run_in_executor(None, consumer.poll, 0.5)
            if msg is not None and not msg.error():
                got = codec.decode(msg.value(), expect="ManifestUpdate")
        assert got is not None, "faust app did not answer within 60 s"
        assert got["etag"] == cue["cue_id"]
    finally:
        consumer.close()
        await app.stop()
