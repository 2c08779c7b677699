"""Pure parts of the QoE app: plausibility rules, batches and dedup tokens, viewers, read-only SQL."""

from __future__ import annotations

import pytest

from floodlight import clickhouse
from processors.qoe.batch import Batch, advance, already_stored
from processors.qoe.decode import decode_beacon
from processors.qoe.validate import Limits, check
from processors.qoe.viewers import count, group_sightings, merge, prune, stream_of, table_key
from schemas import codec
from tests.support import sample_records

NOW = 1_795_000_000_000


def beacon(**over):
    b = dict(sample_records()["QoeBeacon"], event_time=NOW)
    b.update(over)
    return b


def known(sid: str) -> bool:
    return sid == "s1"


@pytest.mark.parametrize("over, reason", [
    ({}, None),
    ({"stall_ms": -1}, "negative_stall_ms"),
    ({"watch_ms": -5}, "negative_watch_ms"),
    ({"buffer_events": -1}, "negative_buffer_events"),
    ({"startup_ms": -100}, "negative_startup_ms"),
    ({"event_time": NOW + 3 * 86_400_000}, "event_time_in_future"),
    ({"event_time": NOW - 3 * 86_400_000}, "event_time_too_old"),
    ({"event_time": NOW - 3_600_000}, None),
    ({"stall_ms": 5 * 3_600_000}, "interval_too_long"),
    ({"latency_ms": 3_600_000}, "latency_too_high"),
    ({"stream_id": "nope"}, "unknown_stream"),
    ({"session_id": ""}, "empty_session_id"),
    ({"stream_id": ""}, "empty_stream_id"),
])
def test_plausibility_rules(over, reason):
    assert check(beacon(**over), NOW, known) == reason


def test_limits_are_relative_to_accept_time_not_wallclock():
    """A replay days later judges a beacon exactly like the first run did."""
    old = beacon(event_time=NOW - 10 * 86_400_000)
    assert check(old, NOW - 10 * 86_400_000 + 1000, known) is None
    assert check(old, NOW, known, Limits(max_past_ms=86_400_000)) == "event_time_too_old"


def test_batch_columns_and_token():
    b = Batch("floodlight.qoe")
    b.add(beacon(error_code=None, startup_ms=None), 2, 10)
    b.see(2, 10)
    b.see(0, 7)
    b.see(2, 12)
    assert len(b) == 1
    assert b.columns["event_time"] == [NOW // 1000] and b.columns["event_time_ms"] == [NOW]
    assert b.columns["error_code"] == [""] and b.columns["startup_ms"] == [None]
    assert (b.columns["kafka_partition"], b.columns["kafka_offset"]) == ([2], [10])
    assert set(b.columns) == set(clickhouse.RAW_COLUMNS)
    assert b.token() == "floodlight.qoe|0:7-7,2:10-12"
    again = Batch("floodlight.qoe")
    for p, o in ((2, 12), (0, 7), (2, 10)):
        again.see(p, o)
    assert again.token() == b.token()
    other = Batch("floodlight.qoe")
    other.see(2, 10)
    assert other.token() != b.token()


def test_long_token_is_hashed_but_stable():
    b = Batch("x" * 150)
    for p in range(40):
        b.see(p, p * 1000)
    assert len(b.token()) < 250 and b.token() == b.token() and "sha256:" in b.token()


def test_watermarks_skip_what_is_stored():
    wm = {0: 99}
    assert already_stored(wm, 0, 99) and not already_stored(wm, 0, 100) and not already_stored(wm, 1, 0)
    advance(wm, [(0, (100, 150)), (1, (0, 3))])
    assert wm == {0: 150, 1: 3}
    advance(wm, [(0, (10, 20))])
    assert wm[0] == 150


def test_viewers_per_stream_over_partitions():
    sightings = [("a", "s1", NOW - 1000, 0), ("a", "s1", NOW - 500, 0), ("b", "s1", NOW + 99_000, 1),
                 ("c", "s2", NOW - 120_000, 2)]
    grouped = group_sightings(sightings, NOW)
    assert grouped == {table_key("s1", 0): {"a": NOW - 500}, table_key("s1", 1): {"b": NOW},
                       table_key("s2", 2): {"c": NOW - 120_000}}
    assert stream_of(table_key("a|b", 3)) == "a|b"
    horizon = NOW - 60_000
    assert count(grouped.items(), horizon) == {"s1": 2}
    state = dict(grouped[table_key("s2", 2)])
    merge(state, {"c": NOW - 10, "d": NOW - 70_000})
    assert state == {"c": NOW - 10, "d": NOW - 70_000}
    assert prune(state, horizon) == 1 and state == {"c": NOW - 10}


@pytest.mark.parametrize("sql", [
    "SELECT 1",
    "  select count() from stream_analytics;",
    "WITH x AS (SELECT 1 AS a) SELECT a FROM x",
    "SELECT ';' AS semi -- trailing comment; DROP TABLE x",
    "/* hi */ SELECT quality, avg(latency_ms) FROM stream_analytics GROUP BY quality",
])
def test_read_only_accepts_selects(sql):
    assert clickhouse.check_read_only(sql)


@pytest.mark.parametrize("sql, why", [
    ("INSERT INTO stream_analytics VALUES (1)", "only SELECT"),
    ("SELECT 1; DROP TABLE stream_analytics", "one statement"),
    ("DROP TABLE stream_analytics", "only SELECT"),
    ("SELECT 1 SETTINGS readonly=0", "SETTINGS"),
    ("SELECT * FROM stream_analytics INTO OUTFILE '/tmp/x'", "INTO OUTFILE"),
    ("SELECT 1 FORMAT Native", "FORMAT"),
    ("", "empty"),
    ("-- nothing", "empty"),
])
def test_read_only_refuses_the_rest(sql, why):
    with pytest.raises(clickhouse.NotReadOnly, match=why):
        clickhouse.check_read_only(sql)


def test_dsn_switch():
    assert clickhouse.is_embedded("chdb:///tmp/x") and not clickhouse.is_embedded("http://h:8123/db")
    assert clickhouse.validate_dsn("https://u:p@h:8443/db")
    for bad in ("chdb://relative", "postgres://x", ""):
        with pytest.raises(ValueError):
            clickhouse.validate_dsn(bad)


def test_migrations_are_numbered_and_idempotent_statements():
    versions = [m.version for m in clickhouse.MIGRATIONS]
    assert versions == list(range(1, len(versions) + 1)) and clickhouse.SCHEMA_VERSION == versions[-1]
    for m in clickhouse.MIGRATIONS:
        for stmt in m.statements:
            head = " ".join(stmt.split()[:8]).upper()
            assert "IF NOT EXISTS" in head or "MODIFY SETTING" in head, stmt[:80]


def test_fast_decode_matches_codec():
    data = codec.encode("QoeBeacon", beacon())
    assert decode_beacon(data) == codec.decode(data, expect="QoeBeacon")
    with pytest.raises(codec.TruncatedRecord):
        decode_beacon(data[:-3])
    with pytest.raises(codec.TruncatedRecord):
        decode_beacon(data + b"\x00")
    with pytest.raises(codec.WrongRecordType):
        decode_beacon(codec.encode("Cue", sample_records()["Cue"]))
    with pytest.raises(codec.BadMarker):
        decode_beacon(b"\x00" * 20)


def test_api_time_range_parsing():
    from fastapi import HTTPException

    from api.analytics import DEFAULT_RANGE_MS, parse_instant, resolve_range

    assert parse_instant("1795000000000", "from") == 1_795_000_000_000
    assert parse_instant("2026-11-18T11:06:40Z", "from") == 1_795_000_000_000
    assert resolve_range(None, None, NOW) == (NOW - DEFAULT_RANGE_MS, NOW)
    for args in (("yesterday", None), ("2026-11-18T11:06:40", None), (str(NOW), str(NOW - 1)),
                 ("0", str(NOW))):
        with pytest.raises(HTTPException) as exc:
            resolve_range(*args, NOW)
        assert exc.value.status_code == 400
