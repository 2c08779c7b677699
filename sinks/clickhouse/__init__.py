"""ClickHouse schema tooling (`floodlight clickhouse migrate|status`).

The writer itself runs inside the QoE app (processors/qoe): in embedded mode chDB locks its
directory to one process, so the process that aggregates beacons must be the one that inserts.
The schema and insert layer, which both need, live in floodlight/clickhouse.py.
"""
