"""`floodlight clickhouse migrate|status`: apply / inspect the versioned QoE schema on the target.

Useful against a ClickHouse server before the first qoe app starts (the qoe app also migrates at
start). In embedded mode it must not run while the qoe app holds the chDB directory.
"""

from __future__ import annotations

import typer

clickhouse_app = typer.Typer(no_args_is_help=True, help="ClickHouse schema (QoE analytics).")


def register(app: typer.Typer) -> None:
    app.add_typer(clickhouse_app, name="clickhouse")


@clickhouse_app.command("migrate")
def migrate_cmd() -> None:
    """Apply every pending migration (CREATE ... IF NOT EXISTS; numbered, idempotent)."""
    from floodlight import clickhouse
    from floodlight.settings import get_settings

    client = clickhouse.connect(get_settings())
    applied = clickhouse.migrate(client)
    typer.echo(f"applied {applied}" if applied else "up to date")
    typer.echo(f"schema version {clickhouse.schema_version(client)} (latest {clickhouse.SCHEMA_VERSION})")


@clickhouse_app.command("status")
def status_cmd() -> None:
    """Print the schema version and the migrations this build knows."""
    from floodlight import clickhouse
    from floodlight.settings import get_settings

    client = clickhouse.connect(get_settings())
    current = clickhouse.schema_version(client)
    for m in clickhouse.MIGRATIONS:
        typer.echo(f"{'applied' if m.version <= current else 'pending'}  {m.version:03d}  {m.name}")
