"""Operator commands that are not a role: `floodlight dlq list|show|retry`."""

from __future__ import annotations

import json

import typer

from floodlight.settings import get_settings

dlq_app = typer.Typer(no_args_is_help=True, help="Inspect and retry dead letters (floodlight.dlq).")


@dlq_app.command("list")
def dlq_list(stream: str = typer.Option(None, "--stream"), as_json: bool = typer.Option(False, "--json")) -> None:
    """Dead letters grouped by stage, reason class and stream; then one line each."""
    from rich.console import Console
    from rich.table import Table

    from ops.dlq import group_counts, read_dead_letters, select

    entries = select(list(read_dead_letters(get_settings())), stream_id=stream)
    if as_json:
        typer.echo(json.dumps([e.summary() for e in entries], indent=2))
        return
    console = Console()
    groups = Table(title=f"{len(entries)} dead letter(s)")
    for col in ("stage", "class", "stream", "count"):
        groups.add_column(col)
    for stage, cls, sid, n in group_counts(entries):
        groups.add_row(stage, cls, sid, str(n))
    console.print(groups)
    lines = Table()
    for col in ("dlq offset", "stage", "stream", "gop", "from", "reason"):
        lines.add_column(col)
    for e in entries[-50:]:
        s = e.summary()
        lines.add_row(str(s["dlq_offset"]), s["stage"], str(s["stream_id"]), str(s["gop_index"]), s["from"],
                      s["reason"][:80])
    console.print(lines)


@dlq_app.command("show")
def dlq_show(offset: int = typer.Argument(..., help="Offset in the dlq topic (see `dlq list`).")) -> None:
    """One dead letter in full (the original value as its size and first bytes)."""
    from ops.dlq import read_dead_letters, select

    found = select(list(read_dead_letters(get_settings())), offsets={offset})
    if not found:
        typer.echo(f"no dead letter at offset {offset}", err=True)
        raise typer.Exit(1)
    summary = found[0].summary()
    summary["value_head"] = (found[0].record["value"] or b"")[:32].hex()
    typer.echo(json.dumps(summary, indent=2))


@dlq_app.command("retry")
def dlq_retry(
    offsets: list[int] = typer.Argument(None, help="dlq offsets to retry (default: all matching the filters)"),
    stream: str = typer.Option(None, "--stream"),
    error_class: str = typer.Option(None, "--class"),
    stage: str = typer.Option(None, "--stage"),
    yes: bool = typer.Option(False, "--yes", help="Do it (without it, only say what would be retried)."),
) -> None:
    """Re-publish chosen dead letters to their original topic, once the cause is fixed."""
    from ops.dlq import read_dead_letters, retry, select

    if not offsets and not (stream or error_class or stage):
        typer.echo("name offsets or a filter (--stream/--class/--stage); refusing to retry everything", err=True)
        raise typer.Exit(2)
    chosen = select(list(read_dead_letters(get_settings())), offsets=set(offsets) if offsets else None,
                    stream_id=stream, error_class=error_class, stage=stage)
    if not yes:
        typer.echo(f"would retry {len(chosen)} dead letter(s); add --yes to do it")
        return
    typer.echo(f"retried {retry(get_settings(), chosen)} dead letter(s)")


def register(app: typer.Typer) -> None:
    app.add_typer(dlq_app, name="dlq")
