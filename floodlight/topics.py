"""Every Kafka topic of DESIGN §4, in one table, and the admin code that applies it.

`floodlight topics create` creates what is missing and reports drift in what exists (configs,
partitions, replication); running it twice changes nothing. Replication follows the cluster it is
applied to (DESIGN §4): replication factor min(3, nodes), and `min.insync.replicas` 2 on three or
more nodes, so with acks=all a write survives the loss of any one node and a lone node still works.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from confluent_kafka.admin import AdminClient, ClusterMetadata, ConfigResource, NewTopic

from floodlight.settings import Settings

MIB = 1024 * 1024
DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    short: str
    key: str
    value: str
    partitions: int
    configs: dict[str, str] = field(default_factory=dict)
    note: str = ""
    replication: int = 1


def replication_for(nodes: int) -> int:
    """Replication factor of every topic on a cluster of `nodes` brokers."""
    return max(1, min(3, nodes))


def min_insync_for(nodes: int) -> int:
    """min.insync.replicas: 2 where three copies exist (one node may be lost or restarting), else 1."""
    return 2 if replication_for(nodes) >= 3 else 1


def known_nodes(md: ClusterMetadata) -> int:
    """Brokers of the cluster as its metadata knows them: the live ones, and any a replica set still names
    (a node that is down for a restart is still part of the cluster)."""
    ids = set(md.brokers)
    for t in md.topics.values():
        for part in t.partitions.values():
            ids.update(part.replicas)
    return len(ids)


def cluster_nodes(settings: Settings, admin: AdminClient | None = None, timeout: float = 30.0) -> int:
    """Brokers of the cluster at `settings.kafka_bootstrap` (known_nodes of a fresh metadata answer)."""
    admin = admin or AdminClient({"bootstrap.servers": settings.kafka_bootstrap, "log_level": 0})
    return known_nodes(admin.list_topics(timeout=timeout))


def topic_specs(settings: Settings, nodes: int = 1) -> list[TopicSpec]:
    """The topic table for a cluster of `nodes` brokers."""
    specs = _table(settings)
    isr = {"min.insync.replicas": str(min_insync_for(nodes))}
    return [TopicSpec(s.short, s.key, s.value, s.partitions, {**s.configs, **isr}, s.note, replication_for(nodes))
            for s in specs]


def _table(settings: Settings) -> list[TopicSpec]:
    p = settings.topic_partitions
    return [
        TopicSpec("streams", "stream_id", "StreamRecord", 1,
                  {"cleanup.policy": "compact", "min.compaction.lag.ms": "0", "segment.ms": "3600000"},
                  "compacted stream registry"),
        TopicSpec("gops", "stream_id", "GopChunk", p,
                  {"cleanup.policy": "delete", "retention.ms": str(settings.gops_retention_ms),
                   "max.message.bytes": str(16 * MIB), "message.timestamp.type": "CreateTime"},
                  "partition = (crc32(stream_id) + gop_index) mod P"),
        TopicSpec("segments", "stream_id", "RenditionSegment", p,
                  {"cleanup.policy": "delete", "retention.ms": str(settings.gops_retention_ms),
                   "max.message.bytes": str(16 * MIB)},
                  "one packager owns a stream (keyed partitioning)"),
        TopicSpec("manifests", "stream_id", "ManifestUpdate", 1,
                  {"cleanup.policy": "delete", "retention.ms": str(3600 * 1000)},
                  "small; every api instance reads all of it"),
        TopicSpec("cues", "stream_id", "Cue", 1,
                  {"cleanup.policy": "delete", "retention.ms": str(7 * DAY_MS)}, "SCTE-35 style ad breaks"),
        TopicSpec("qoe", "session_id", "QoeBeacon", p,
                  {"cleanup.policy": "delete", "retention.ms": str(7 * DAY_MS)}, "player beacons, 7 days"),
        TopicSpec("dlq", "original key", "DeadLetter", 1,
                  {"cleanup.policy": "delete", "retention.ms": str(14 * DAY_MS),
                   "max.message.bytes": str(16 * MIB)}, "dead letters with reason"),
    ]


@dataclass
class TopicReport:
    created: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    drift: list[str] = field(default_factory=list)


def apply_topics(settings: Settings, admin: AdminClient | None = None, timeout: float = 30.0) -> TopicReport:
    """Create missing topics and report where existing ones differ from the table."""
    admin = admin or AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    md = admin.list_topics(timeout=timeout)
    nodes = known_nodes(md)
    specs = {settings.topic(s.short): s for s in topic_specs(settings, nodes=nodes)}
    existing = md.topics
    report = TopicReport()
    missing = [
        NewTopic(name, num_partitions=s.partitions, replication_factor=s.replication, config=dict(s.configs))
        for name, s in specs.items() if name not in existing
    ]
    if missing:
        for name, fut in admin.create_topics(missing, request_timeout=timeout).items():
            try:
                fut.result()
                report.created.append(name)
            except Exception as exc:  # a concurrent creator wins the race: that is fine
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise
                report.unchanged.append(name)
    present = [n for n in specs if n in existing]
    if present:
        futures = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, n) for n in present])
        for res, fut in futures.items():
            spec = specs[res.name]
            actual = fut.result()
            diffs = [
                f"{k}={actual[k].value!r} (want {v!r})"
                for k, v in spec.configs.items() if k in actual and actual[k].value != v
            ]
            nparts = len(existing[res.name].partitions)
            if nparts != spec.partitions:
                diffs.append(f"partitions={nparts} (want {spec.partitions})")
            rf = min((len(p.replicas) for p in existing[res.name].partitions.values()), default=0)
            if rf < spec.replication:
                diffs.append(f"replication={rf} (want {spec.replication} on {nodes} nodes)")
            (report.drift.append(f"{res.name}: {', '.join(diffs)}") if diffs else report.unchanged.append(res.name))
    return report


def delete_prefixed_topics(settings: Settings, admin: AdminClient | None = None, timeout: float = 10.0) -> list[str]:
    """Delete every topic under settings.topic_prefix (a test's, a bench's or a demo's own); return their
    names. Best effort per topic: one already gone is fine. An empty prefix is refused: it means every topic."""
    prefix = settings.topic_prefix
    if not prefix:
        raise ValueError("refusing to delete topics without a topic prefix (that is every topic on the cluster)")
    admin = admin or AdminClient({"bootstrap.servers": settings.kafka_bootstrap, "log_level": 0})
    names = [n for n in admin.list_topics(timeout=timeout).topics if n.startswith(prefix)]
    for fut in (admin.delete_topics(names, operation_timeout=timeout).values() if names else []):
        try:
            fut.result()
        except Exception:  # noqa: BLE001 - already gone, or going: best effort
            pass
    return names


def gop_bytes_per_hour(ladder_kbps_source: int = 8000, audio_kbps: int = 128) -> int:
    """Disk one stream needs in floodlight.gops per hour, at its contribution bitrate."""
    return int((ladder_kbps_source + audio_kbps) * 1000 / 8 * 3600)


def describe_rows(settings: Settings, nodes: int | None = None) -> list[dict[str, str]]:
    rows = []
    for s in topic_specs(settings, nodes=settings.kafka_nodes if nodes is None else nodes):
        row = {"topic": settings.topic(s.short), "key": s.key, "value": s.value,
               "partitions": str(s.partitions), "replication": str(s.replication), **s.configs}
        if s.short == "gops":
            per_hour = gop_bytes_per_hour()
            hours = settings.gops_retention_ms / 3_600_000
            row["disk_per_stream_hour"] = f"{per_hour / 1e9:.1f} GB (at 8 Mbit/s contribution)"
            row["disk_per_stream_retained"] = f"{per_hour * hours / 1e9:.1f} GB"
        rows.append(row)
    return rows
