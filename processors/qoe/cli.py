"""`floodlight qoe` (the Faust QoE app) and `floodlight analytics query "SQL"` (read-only, for analysts)."""

from __future__ import annotations

import json

import typer

analytics_app = typer.Typer(no_args_is_help=True, help="Read-only QoE analytics (ClickHouse).")


def register(app: typer.Typer) -> None:
    app.command("qoe")(qoe)
    app.add_typer(analytics_app, name="analytics")


def qoe() -> None:
    """Run the QoE app: beacons -> ClickHouse (raw + per-minute aggregates), live viewers, analytics port."""
    from processors.qoe.run import main

    main()


@analytics_app.command("query")
def analytics_query(
    sql: str = typer.Argument(..., help="One SELECT statement."),
    fmt: str = typer.Option("table", "--format", help="table | json | jsonl"),
) -> None:
    """Run one read-only query against the QoE tables (through the qoe app in embedded mode)."""
    from floodlight.analytics import AnalyticsClient, AnalyticsError
    from floodlight.settings import get_settings

    try:
        rows = AnalyticsClient(get_settings()).query(sql)
    except AnalyticsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if fmt == "json":
        typer.echo(json.dumps(rows, indent=2, default=str))
    elif fmt == "jsonl":
        for row in rows:
            typer.echo(json.dumps(row, default=str))
    else:
        if not rows:
            typer.echo("(no rows)")
            return
        cols = list(rows[0])
        cells = [[str(r[c]) for c in cols] for r in rows]
        widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
        typer.echo("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
        for row in cells:
            typer.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))
