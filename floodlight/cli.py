"""The `floodlight` command: one subcommand per role (DESIGN §9).

Roles never import each other; this module is one of the few places allowed to wire them.
Each role package exposes `cli.register(app)`, which adds its subcommands and imports its
heavy dependencies (PyAV, faust, ...) only when its command runs.
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

ROLE_CLIS = ("producers.cli", "processors.cli", "sinks.cli", "api.cli", "floodlight.demo_cli", "floodlight.ops_cli",
             "floodlight.replay_cli")
PLANNED = {
    "ingest": "producers", "encoder": "processors", "packager": "sinks", "qoe": "processors",
    "api": "api", "replay": "floodlight", "demo": "floodlight", "dlq": "floodlight", "analytics": "api",
}


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
def stack_cmd(action: str = typer.Argument("status", help="up | down | status")) -> None:
    """The native local stack (one KRaft Kafka node)."""
    from floodlight import stack

    raise typer.Exit(stack.main([action]))


def register_modules(target: typer.Typer, modnames: tuple[str, ...]) -> None:
    """Call `register(target)` of each module that exists (a role not written yet is skipped)."""
    for modname in modnames:
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as exc:
            if not exc.name or not modname.startswith(exc.name):
                raise
            continue
        mod.register(target)


def _register_roles() -> None:
    register_modules(app, ROLE_CLIS)
    registered = {c.name for c in app.registered_commands} | {g.name for g in app.registered_groups}
    for name, owner in PLANNED.items():
        if name not in registered:
            def _missing(ctx: typer.Context, _name: str = name, _owner: str = owner) -> None:
                typer.echo(f"floodlight {_name}: not implemented yet (belongs in {_owner}/)", err=True)
                raise typer.Exit(2)

            app.command(name, context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
                        help=f"(not implemented yet: {owner}/)")(_missing)


def main(argv: list[str] | None = None) -> None:
    _register_roles()
    app(args=argv if argv is not None else sys.argv[1:], prog_name="floodlight")


if __name__ == "__main__":
    main()
