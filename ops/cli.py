"""The `floodlight` command: one subcommand per role (DESIGN §9).

This is the wiring room (ops/), the only place that imports roles. Each role keeps a `cli.py` beside
its code with `register(app)`, which adds its subcommands and imports its heavy dependencies (PyAV,
faust, ...) only when its command runs; roles never import this module.
"""

from __future__ import annotations

import importlib
import json
import sys

import typer

from floodlight.settings import get_settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Floodlight: Kafka-native live video.")
topics_app = typer.Typer(no_args_is_help=True, help="Kafka topics of DESIGN §4.")
app.add_typer(topics_app, name="topics")

COMMAND_MODULES = ("producers.cli", "processors.encoder.cli", "processors.qoe.cli", "sinks.packager.cli",
                   "sinks.clickhouse.cli", "api.cli", "ops.demo_cli", "ops.dlq_cli", "ops.replay_cli")


@topics_app.command("create")
def topics_create() -> None:
    """Create missing topics; report drift in existing ones. Idempotent."""
    from floodlight.topics import apply_topics

    report = apply_topics(get_settings())
    for name in report.created:
        typer.echo(f"created   {name}")
    for name in report.unchanged:
        typer.echo(f"ok        {name}")
    for line in report.drift:
        typer.echo(f"DRIFT     {line}")
    if report.drift:
        raise typer.Exit(3)


@topics_app.command("describe")
def topics_describe(as_json: bool = typer.Option(False, "--json")) -> None:
    """Print the topic table (and, for gops, the disk one stream needs per hour)."""
    from floodlight.topics import describe_rows

    rows = describe_rows(get_settings())
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        typer.echo("  ".join(f"{k}={v}" for k, v in row.items()))


@app.command("stack")
def stack_cmd(action: str = typer.Argument("status", help="up | down | status"),
              nodes: int = typer.Option(0, "--nodes", help="KRaft nodes (default FLOODLIGHT_KAFKA_NODES, 1)")) -> None:
    """The native local stack: one KRaft Kafka node, or a cluster of N (--nodes 3)."""
    from ops import stack

    raise typer.Exit(stack.main([action, *(["--nodes", str(nodes)] if nodes else [])]))


def register_commands(target: typer.Typer) -> None:
    """Add every role's and tool's subcommands (each module's `register(target)`)."""
    for modname in COMMAND_MODULES:
        importlib.import_module(modname).register(target)


def main(argv: list[str] | None = None) -> None:
    register_commands(app)
    app(args=argv if argv is not None else sys.argv[1:], prog_name="floodlight")


if __name__ == "__main__":
    main()
