"""The QoE schema on the real ClickHouse engine (chDB in-process): migrations, the brief's SQL, dedup.

chDB allows one data directory per process, so this module shares one directory and gives every
test a database of its own.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import clickhouse_connect
import pytest

from floodlight import clickhouse

BRIEF_CREATE = """CREATE TABLE stream_analytics (
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
ORDER BY (stream_id, event_time);"""

LATENCY_PER_QUALITY = """SELECT quality, count() AS beacons, avg(latency_ms) AS avg_latency,
       quantile(0.95)(latency_ms) AS p95_latency
FROM stream_analytics
WHERE stream_id = 'ipl-2024-mi-vs-csk'
GROUP BY quality
ORDER BY quality"""

REBUFFERING_PER_POP_PER_MINUTE = """SELECT toStartOfMinute(event_time) AS minute, cdn_pop,
       sum(buffer_events) AS stalls, count() AS beacons, sum(buffer_events) / count() AS stalls_per_beacon
FROM stream_analytics
GROUP BY minute, cdn_pop
ORDER BY minute, cdn_pop"""

T0 = 1_794_999_960  # a whole minute


@pytest.fixture(scope="module")
def chdb_dsn(tmp_path_factory) -> str:
    return f"chdb://{tmp_path_factory.mktemp('chdb')}"


@pytest.fixture
def db(chdb_dsn):
    name = f"t{uuid.uuid4().hex[:8]}"
    clickhouse_connect.get_client(dsn=chdb_dsn).command(f"CREATE DATABASE {name}")
    return clickhouse_connect.get_client(dsn=chdb_dsn, database=name)


def rows(n: int, offset0: int = 0) -> dict[str, list]:
    cols: dict[str, list] = {c: [] for c in clickhouse.RAW_COLUMNS}
    for i in range(n):
        ms = (T0 + i % 120) * 1000 + i % 1000
        vals = dict(event_time=ms // 1000, event_time_ms=ms, stream_id="ipl-2024-mi-vs-csk", session_id=f"s{i % 50}",
                    user_id="", device_type="web", quality=("720p", "1080p")[i % 2], event_type="heartbeat",
                    buffer_events=i % 3, stall_ms=(i % 3) * 100, watch_ms=10_000, bytes_downloaded=1000 + i,
                    cdn_pop=("bom1", "del1", "maa1")[i % 3], latency_ms=1000 + (i * 37) % 4000,
                    startup_ms=(500 + i) if i % 10 == 0 else None, bitrate_kbps=4000, dropped_frames=0,
                    error_code="E1" if i % 100 == 0 else "", kafka_topic="q", kafka_partition=i % 3,
                    kafka_offset=offset0 + i)
        for k, v in vals.items():
            cols[k].append(v)
    return cols


def test_migrations_apply_once_and_are_idempotent(db):
    assert clickhouse.migrate(db) == [m.version for m in clickhouse.MIGRATIONS]
    assert clickhouse.migrate(db) == []
    assert clickhouse.schema_version(db) == clickhouse.SCHEMA_VERSION
    tables = {r[0] for r in db.query("SELECT name FROM system.tables WHERE database = currentDatabase()").result_rows}
    assert {"stream_analytics", "qoe_minute", "qoe_minute_mv", clickhouse.MIGRATIONS_TABLE} <= tables
    engine = db.query("SELECT engine, partition_key, sorting_key FROM system.tables WHERE database = currentDatabase() "
                      "AND name = 'stream_analytics'").result_rows[0]
    assert engine == ("MergeTree", "toYYYYMMDD(event_time)", "stream_id, event_time")


def test_the_briefs_create_table_and_queries_run_unchanged(db):
    """The brief's DDL is migration 1: a table made by the brief's own statement migrates cleanly."""
    db.command(BRIEF_CREATE.rstrip(";"))
    clickhouse.migrate(db)
    db.command("INSERT INTO stream_analytics (event_time, stream_id, user_id, device_type, quality, buffer_events, "
               f"bytes_downloaded, cdn_pop, latency_ms) VALUES ({T0}, 'ipl-2024-mi-vs-csk', 'u1', 'tv', '720p', 2, "
               "5000, 'bom1', 3000)")
    clickhouse.insert_raw(db, rows(300), "brief-test")
    data = rows(300)
    by_q = {r[0]: r for r in db.query(LATENCY_PER_QUALITY).result_rows}
    for q in ("720p", "1080p"):
        lat = [v for v, qq in zip(data["latency_ms"], data["quality"], strict=True) if qq == q]
        lat += [3000] if q == "720p" else []
        assert by_q[q][1] == len(lat) and by_q[q][2] == pytest.approx(sum(lat) / len(lat))
    per_pop = db.query(REBUFFERING_PER_POP_PER_MINUTE).result_rows
    assert sum(r[3] for r in per_pop) == 301 and sum(r[2] for r in per_pop) == sum(data["buffer_events"]) + 2
    assert {r[1] for r in per_pop} == {"bom1", "del1", "maa1"}
    # the brief-only row reached the aggregate too (the MV reads the same insert)
    assert db.query("SELECT sum(beacons) FROM qoe_minute").result_rows[0][0] == 301


def test_a_replayed_batch_is_not_counted_twice(db):
    clickhouse.migrate(db)
    batch = rows(1000)
    for _ in range(3):
        clickhouse.insert_raw(db, batch, "q|0:0-999")
    assert db.query("SELECT count() FROM stream_analytics").result_rows[0][0] == 1000
    assert db.query("SELECT sum(beacons), sum(stall_count) FROM qoe_minute").result_rows[0] == (
        1000, sum(batch["buffer_events"]))
    clickhouse.insert_raw(db, rows(10, offset0=1000), "q|0:1000-1009")
    assert db.query("SELECT count() FROM stream_analytics").result_rows[0][0] == 1010
    assert clickhouse.stored_watermarks(db, "q") == {0: 1009, 1: 1007, 2: 1008}


def test_aggregates_merge_late_rows_into_their_minute(db):
    clickhouse.migrate(db)
    data = rows(600)
    clickhouse.insert_raw(db, {k: v[:300] for k, v in data.items()}, "a")
    clickhouse.insert_raw(db, {k: v[300:] for k, v in data.items()}, "b")  # "late" rows for the same minutes
    got = db.query("SELECT toUnixTimestamp(minute), uniqCombined64Merge(sessions), sum(beacons), "
                   "quantilesMerge(0.5, 0.95)(latency_q) "
                   "FROM qoe_minute GROUP BY minute ORDER BY minute").result_rows
    assert [r[2] for r in got] == [300, 300]  # i % 120 seconds -> two minutes
    assert all(r[1] == 50 for r in got)
    lat = sorted(data["latency_ms"][i] for i in range(600) if (T0 + i % 120) // 60 == got[0][0] // 60)
    p95 = got[0][3][1]
    assert lat[int(0.93 * len(lat))] <= p95 <= lat[min(len(lat) - 1, int(0.97 * len(lat)))]


def test_analyst_queries_are_read_only_in_the_engine_too(db):
    clickhouse.migrate(db)
    assert clickhouse.run_read_only(db, "SELECT count() AS n FROM stream_analytics") == [{"n": 0}]
    with pytest.raises(clickhouse.NotReadOnly):
        clickhouse.run_read_only(db, "INSERT INTO stream_analytics (stream_id) VALUES ('x')")
    with pytest.raises(Exception, match="(?i)readonly"):
        db.query("SELECT * FROM file('/etc/hostname', 'LineAsString')", settings=clickhouse.READ_SETTINGS)


def test_the_readme_queries_run(db):
    clickhouse.migrate(db)
    clickhouse.insert_raw(db, rows(200), "readme")
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("## QoE analytics", 1)[1].split("```sql", 1)[1].split("```", 1)[0]
    statements = [s.strip() for s in block.split(";") if s.strip()]
    assert len(statements) == 2
    for sql in statements:
        result = db.query(sql.replace("'demo'", "'ipl-2024-mi-vs-csk'").replace(
            "event_time > now() - INTERVAL 1 HOUR", "event_time > 0")).result_rows
        assert result, sql


def test_a_block_the_view_missed_is_repaired_from_raw_rows(db):
    """kill -9 between the raw part and the view part: the restart re-aggregates exactly the missing rows."""
    clickhouse.migrate(db)
    clickhouse.insert_raw(db, rows(300), "first")
    db.command("DROP VIEW qoe_minute_mv")  # simulate: the next block reaches raw but not the view
    clickhouse.insert_raw(db, rows(200, offset0=300), "second")
    assert db.query("SELECT sum(beacons) FROM qoe_minute").result_rows[0][0] == 300
    repaired = clickhouse.repair_aggregates(db, "q")
    assert sum(repaired.values()) == 200 and set(repaired) == {0, 1, 2}
    assert clickhouse.repair_aggregates(db, "q") == {}  # idempotent
    both = rows(300)
    for k, v in rows(200, offset0=300).items():
        both[k] += v
    got = db.query("SELECT sum(beacons), sum(stall_count), uniqCombined64Merge(sessions) FROM qoe_minute").result_rows
    assert got[0] == (500, sum(both["buffer_events"]), 50)
