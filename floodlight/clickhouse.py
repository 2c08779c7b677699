"""The ClickHouse layer shared by the QoE app (writer) and the analytics client (reader).

One versioned list of migrations, applied idempotently against either target of
FLOODLIGHT_CLICKHOUSE_DSN: `chdb://PATH` (the real ClickHouse engine in-process, one process per
directory) or `http(s)://user:pass@host:8123/db` (a ClickHouse server). It lives in floodlight/
because two roles need it: processors.qoe inserts, and floodlight.analytics (used by the api and
the CLI) connects directly when the target is a server.

Delivery is idempotent: every insert is one block carrying an `insert_deduplication_token`
derived from the Kafka offsets it covers, and the raw rows keep their (topic, partition, offset)
so a restarted writer skips what is already stored (see processors/qoe/batch.py).
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from typing import Any

from floodlight.settings import Settings
from schemas.errors import FloodlightError

log = logging.getLogger("floodlight.clickhouse")

RAW_TABLE = "stream_analytics"
AGG_TABLE = "qoe_minute"
MIGRATIONS_TABLE = "floodlight_migrations"


# The one-minute aggregation, shared by the materialized view and the crash repair below. The
# aggregate keeps (kafka_topic, kafka_partition, max_offset) so a restart can tell whether the view
# received the last raw block before a crash (raw and view parts commit one after the other).
AGG_KEY = "stream_id, minute, quality, cdn_pop, device_type, kafka_topic, kafka_partition"
AGG_COLUMNS = """
    stream_id,
    toStartOfMinute(event_time) AS minute,
    quality, cdn_pop, device_type,
    toUInt64(count()) AS beacons,
    uniqCombined64State(session_id) AS sessions,
    toUInt64(sum(buffer_events)) AS stall_count,
    toUInt64(sum(stall_ms)) AS stall_ms,
    toUInt64(sum(watch_ms)) AS watch_ms,
    avgStateIf(latency_ms, latency_ms > 0) AS latency_avg,
    quantilesStateIf(0.5, 0.95)(latency_ms, latency_ms > 0) AS latency_q,
    quantilesStateIf(0.5, 0.95)(assumeNotNull(startup_ms), isNotNull(startup_ms)) AS startup_q,
    avgStateIf(bitrate_kbps, bitrate_kbps > 0) AS bitrate_avg,
    toUInt64(sum(bytes_downloaded)) AS bytes,
    toUInt64(sum(dropped_frames)) AS dropped_frames,
    toUInt64(countIf(error_code != '')) AS errors,
    kafka_topic, kafka_partition,
    max(kafka_offset) AS max_offset"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


# Append only; never edit a released migration. Every statement is idempotent on its own, so a
# crash half-way through a migration (or two writers migrating at once) is harmless.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "the brief's stream_analytics table", (
        """CREATE TABLE IF NOT EXISTS stream_analytics (
    event_time      DateTime,
    stream_id       String,
    user_id         String,
    device_type     String,
    quality         String,
    buffer_events   UInt32,
    bytes_downloaded UInt64,
    cdn_pop         String,
    latency_ms      UInt32
) ENGINE = MergeTree()
PARTITION BY toYYYYMMDD(event_time)
ORDER BY (stream_id, event_time)""",
    )),
    Migration(2, "the rest of the beacon, and where it came from on Kafka", tuple(
        f"ALTER TABLE stream_analytics ADD COLUMN IF NOT EXISTS {col}" for col in (
            "session_id String",
            "event_time_ms DateTime64(3)",
            "event_type LowCardinality(String) DEFAULT 'heartbeat'",
            "stall_ms UInt64",
            "watch_ms UInt64",
            "startup_ms Nullable(UInt32)",
            "bitrate_kbps UInt32",
            "dropped_frames UInt32",
            "error_code String",
            "kafka_topic LowCardinality(String)",
            "kafka_partition UInt16",
            "kafka_offset UInt64",
            "inserted_at DateTime64(3) DEFAULT now64(3)",
        )
    )),
    Migration(3, "insert deduplication on the (non-replicated) raw table", (
        "ALTER TABLE stream_analytics MODIFY SETTING non_replicated_deduplication_window = 10000",
    )),
    Migration(4, "one-minute QoE aggregates, merged by the engine so late beacons land correctly", (
        """CREATE TABLE IF NOT EXISTS qoe_minute (
    stream_id      String,
    minute         DateTime,
    quality        String,
    cdn_pop        String,
    device_type    String,
    beacons        SimpleAggregateFunction(sum, UInt64),
    sessions       AggregateFunction(uniqCombined64, String),
    stall_count    SimpleAggregateFunction(sum, UInt64),
    stall_ms       SimpleAggregateFunction(sum, UInt64),
    watch_ms       SimpleAggregateFunction(sum, UInt64),
    latency_avg    AggregateFunction(avg, UInt32),
    latency_q      AggregateFunction(quantiles(0.5, 0.95), UInt32),
    startup_q      AggregateFunction(quantiles(0.5, 0.95), UInt32),
    bitrate_avg    AggregateFunction(avg, UInt32),
    bytes          SimpleAggregateFunction(sum, UInt64),
    dropped_frames SimpleAggregateFunction(sum, UInt64),
    errors         SimpleAggregateFunction(sum, UInt64),
    kafka_topic    LowCardinality(String),
    kafka_partition UInt16,
    max_offset     SimpleAggregateFunction(max, UInt64)
) ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMMDD(minute)
ORDER BY (stream_id, minute, quality, cdn_pop, device_type, kafka_topic, kafka_partition)
SETTINGS non_replicated_deduplication_window = 10000""",
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS qoe_minute_mv TO qoe_minute AS\nSELECT{AGG_COLUMNS}\n"
        f"FROM stream_analytics\nGROUP BY {AGG_KEY}",
    )),
)

SCHEMA_VERSION = MIGRATIONS[-1].version

# Columns the writer fills, in insert order (the rest take their defaults).
RAW_COLUMNS: tuple[str, ...] = (
    "event_time", "event_time_ms", "stream_id", "session_id", "user_id", "device_type", "quality",
    "event_type", "buffer_events", "stall_ms", "watch_ms", "bytes_downloaded", "cdn_pop", "latency_ms",
    "startup_ms", "bitrate_kbps", "dropped_frames", "error_code", "kafka_topic", "kafka_partition",
    "kafka_offset",
)

INSERT_SETTINGS = {"deduplicate_blocks_in_dependent_materialized_views": 1}
READ_SETTINGS = {"readonly": 1, "max_execution_time": 30, "max_result_rows": 100_000,
                 "result_overflow_mode": "break"}


def is_embedded(dsn: str) -> bool:
    return dsn.startswith("chdb://")


def validate_dsn(dsn: str) -> str:
    if is_embedded(dsn):
        if not dsn.startswith("chdb:///"):
            raise ValueError(f"chdb DSN needs an absolute path (chdb:///abs/dir), got {dsn!r}")
        return dsn
    if dsn.startswith(("http://", "https://")):
        return dsn
    raise ValueError("FLOODLIGHT_CLICKHOUSE_DSN must be chdb:///abs/path or http(s)://user:pass@host:port/db")


_chdb_lock = threading.Lock()
_chdb_clients: dict[str, Any] = {}


def connect(settings: Settings, dsn: str | None = None, *, own: bool = False) -> Any:
    """A clickhouse-connect client for the configured target.

    In embedded mode the chDB engine is per process (it refuses a second path in the same process
    and a second process on the same path); one client per path is shared unless `own` asks for a
    separate one (measured: a reader and a writer on separate clients run concurrently).
    """
    import clickhouse_connect

    dsn = validate_dsn(dsn or settings.resolved_clickhouse_dsn())
    if is_embedded(dsn):
        with _chdb_lock:
            client = None if own else _chdb_clients.get(dsn)
            if client is None:
                from pathlib import Path

                Path(dsn[len("chdb://"):]).mkdir(parents=True, exist_ok=True)
                client = clickhouse_connect.get_client(dsn=dsn)
                if not own:
                    _chdb_clients[dsn] = client
            return client
    return clickhouse_connect.get_client(dsn=dsn, connect_timeout=10, send_receive_timeout=60,
                                         autogenerate_session_id=False)


def migrate(client: Any) -> list[int]:
    """Apply every migration not yet recorded; return the versions applied now. Idempotent."""
    client.command(f"""CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (
    version UInt32, name String, applied_at DateTime DEFAULT now()
) ENGINE = ReplacingMergeTree ORDER BY version""")
    done = {row[0] for row in client.query(f"SELECT version FROM {MIGRATIONS_TABLE}").result_rows}
    applied = []
    for m in MIGRATIONS:
        if m.version in done:
            continue
        for stmt in m.statements:
            client.command(stmt)
        client.insert(MIGRATIONS_TABLE, [[m.version, m.name]], column_names=["version", "name"])
        applied.append(m.version)
        log.info("clickhouse migration applied", extra={"version": m.version, "migration": m.name})
    return applied


def schema_version(client: Any) -> int:
    try:
        rows = client.query(f"SELECT max(version) FROM {MIGRATIONS_TABLE}").result_rows
    except Exception:  # noqa: BLE001 - no table yet
        return 0
    return int(rows[0][0] or 0)


def insert_raw(client: Any, columns: dict[str, list[Any]], token: str) -> None:
    """Insert one batch of beacons as a single block; replaying the same token inserts nothing."""
    client.insert(RAW_TABLE, [columns[c] for c in RAW_COLUMNS], column_names=list(RAW_COLUMNS),
                  column_oriented=True, settings=dict(INSERT_SETTINGS, insert_deduplication_token=token))


def stored_watermarks(client: Any, topic: str) -> dict[int, int]:
    """Highest Kafka offset already stored per partition of `topic` (the restart point)."""
    rows = client.query(
        f"SELECT kafka_partition, max(kafka_offset) FROM {RAW_TABLE} WHERE kafka_topic = {{t:String}} "
        "GROUP BY kafka_partition", parameters={"t": topic}).result_rows
    return {int(p): int(o) for p, o in rows}


def repair_aggregates(client: Any, topic: str) -> dict[int, int]:
    """Re-aggregate raw rows the view missed (a crash between the raw and the view part); rows per partition.

    Only the newest raw block of a process can be missing from the view, so per partition the gap
    is (highest offset in qoe_minute, highest offset in stream_analytics]. Call before inserting.
    """
    raw = stored_watermarks(client, topic)
    agg = {int(p): int(o) for p, o in client.query(
        f"SELECT kafka_partition, max(max_offset) FROM {AGG_TABLE} WHERE kafka_topic = {{t:String}} "
        "GROUP BY kafka_partition", parameters={"t": topic}).result_rows}
    repaired: dict[int, int] = {}
    for partition, last in sorted(raw.items()):
        after = agg.get(partition, -1)
        if last <= after:
            continue
        params = {"t": topic, "p": partition, "a": after, "b": last}
        where = ("kafka_topic = {t:String} AND kafka_partition = {p:UInt16} "
                 "AND toInt64(kafka_offset) > {a:Int64} AND kafka_offset <= {b:UInt64}")
        n = client.query(f"SELECT count() FROM {RAW_TABLE} WHERE {where}", parameters=params).result_rows[0][0]
        client.command(f"INSERT INTO {AGG_TABLE} SELECT{AGG_COLUMNS} FROM {RAW_TABLE} WHERE {where} "
                       f"GROUP BY {AGG_KEY}", parameters=params)
        repaired[partition] = int(n)
        log.warning("aggregates repaired after a crash", extra={"partition": partition, "rows": int(n),
                                                                "after_offset": after, "to_offset": last})
    return repaired


# --- read-only queries for analysts -------------------------------------------------------------

_COMMENT_RE = re.compile(r"--[^\n]*|/\*.*?\*/", re.S)
_STRING_RE = re.compile(r"'(?:[^'\\]|\\.)*'")
_READ_RE = re.compile(r"^\s*(SELECT|WITH)\b", re.I)
_FORBIDDEN_RE = re.compile(r"\b(INTO\s+OUTFILE|SETTINGS|FORMAT)\b", re.I)


class NotReadOnly(FloodlightError, ValueError):
    """The statement is not a single SELECT."""


def check_read_only(sql: str) -> str:
    """Accept exactly one SELECT/WITH statement; the engine also runs it with readonly=1.

    SETTINGS and FORMAT clauses are refused so a query cannot lift readonly or the result limits.
    """
    if len(sql) > 20_000:
        raise NotReadOnly("query longer than 20000 characters")
    bare = _STRING_RE.sub("''", _COMMENT_RE.sub(" ", sql)).strip()
    if bare.endswith(";"):
        bare = bare[:-1].rstrip()
    if not bare:
        raise NotReadOnly("empty query")
    if ";" in bare:
        raise NotReadOnly("one statement only")
    if not _READ_RE.match(bare):
        raise NotReadOnly("only SELECT (or WITH ... SELECT) queries are allowed")
    m = _FORBIDDEN_RE.search(bare)
    if m:
        raise NotReadOnly(f"{m.group(1).upper()} is not allowed in analytics queries")
    return sql.strip().rstrip(";")


def run_read_only(client: Any, sql: str, parameters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Run one checked SELECT with readonly=1 and result limits; rows as dicts."""
    sql = check_read_only(sql)
    result = client.query(sql, parameters=parameters or None, settings=READ_SETTINGS)
    names = result.column_names
    return [dict(zip(names, row, strict=True)) for row in result.result_rows]
