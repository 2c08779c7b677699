"""`floodlight api`, `floodlight edge`, `floodlight streams create|list|end`, `floodlight jwt`."""

from __future__ import annotations

import json
from typing import Annotated

import typer

streams_app = typer.Typer(no_args_is_help=True, help="The stream registry (writes floodlight.streams directly).")


def register(app: typer.Typer) -> None:
    app.command("api")(api_cmd)
    app.command("edge")(edge_cmd)
    app.command("jwt")(jwt_cmd)
    app.add_typer(streams_app, name="streams")


def api_cmd(host: Annotated[str | None, typer.Option(help="bind address")] = None,
            port: Annotated[int | None, typer.Option(help="bind port")] = None) -> None:
    """Run the FastAPI origin/registry/beacon api (uvicorn); exits on SIGTERM/SIGINT.
    Refuses (exit 2) a non-loopback bind while FLOODLIGHT_JWT_SECRET or FLOODLIGHT_PLAYBACK_KEYS is the default."""
    from api.server import serve
    from floodlight.log import setup_logging
    from floodlight.settings import InsecureSettings, get_settings

    s = get_settings()
    setup_logging("api", s.log_level, s.log_format)
    try:
        serve(s, host or s.api_host, port or s.api_port)
    except InsecureSettings as exc:
        typer.echo(f"floodlight api: {exc}", err=True)
        raise typer.Exit(2) from exc


def edge_cmd(port: Annotated[int | None, typer.Option(help="edge port (default FLOODLIGHT_EDGE_PORT)")] = None,
             origin: Annotated[str | None, typer.Option(help="origin host:port[,...] (default the api)")] = None,
             host: Annotated[str, typer.Option(help="address the edge listens on")] = "127.0.0.1") -> None:
    """Run the Varnish edge in front of the api process(es) (VCL generated under FLOODLIGHT_STACK_DIR/edge).
    Refuses (exit 2) a non-loopback address while FLOODLIGHT_JWT_SECRET or FLOODLIGHT_PLAYBACK_KEYS is the default."""
    from api.edge import run_edge
    from floodlight.log import setup_logging
    from floodlight.settings import InsecureSettings, get_settings

    s = get_settings()
    setup_logging("edge", s.log_level, s.log_format)
    try:
        code = run_edge(s, port=port, origin=origin, host=host)
    except InsecureSettings as exc:
        typer.echo(f"floodlight edge: {exc}", err=True)
        raise typer.Exit(2) from exc
    raise typer.Exit(code)


@streams_app.command("create")
def streams_create(
    stream_id: Annotated[str, typer.Option("--id", help="stream id [a-z0-9-]")],
    title: Annotated[str, typer.Option(help="display title")],
    latency: Annotated[str, typer.Option(help="low | standard")] = "standard",
    public: Annotated[bool, typer.Option("--public", help="free-to-air: no token needed")] = False,
    premium: Annotated[bool, typer.Option("--premium", help="needs an entitlement")] = False,
    drm: Annotated[bool, typer.Option("--drm", help="AES-128 encryption with rotating keys")] = False,
    dvr_window: Annotated[int, typer.Option("--dvr-window", help="DVR window seconds (0 = off)")] = 7200,
    category: Annotated[str | None, typer.Option(help="sports, news, ...")] = None,
    replace: Annotated[bool, typer.Option("--replace", help="overwrite an existing record")] = False,
) -> None:
    """Register a stream; prints the record and the stream keys (shown once, stored hashed)."""
    from api.streams import StreamCreate, build_record
    from floodlight.kafka import make_producer
    from floodlight.registry import RegistryView, publish_stream
    from floodlight.settings import get_settings

    s = get_settings()
    body = StreamCreate(stream_id=stream_id, title=title, latency_mode=latency.lower(), public=public,  # type: ignore[arg-type]
                        is_premium=premium, drm_required=drm, dvr_window_seconds=dvr_window, category=category)
    view = RegistryView(s).start()
    try:
        if not view.wait_caught_up(30):
            typer.echo("registry did not load (is Kafka up?)", err=True)
            raise typer.Exit(1)
        if view.get(stream_id) is not None and not replace:
            typer.echo(f"stream {stream_id!r} exists (use --replace)", err=True)
            raise typer.Exit(3)
        record, keys = build_record(s, body)
        publish_stream(make_producer(s, **{"log_level": 3}), s, record)
        view.wait_for(lambda r: r is not None and r["updated_ms"] >= record["updated_ms"], stream_id, 10)
    finally:
        view.stop()
    shown = {k: v for k, v in record.items() if k != "ingest_endpoints"}
    typer.echo(json.dumps({"stream": shown, "ingest": keys}, indent=2, default=str))


@streams_app.command("list")
def streams_list() -> None:
    """Print every registered stream (id, status, flags)."""
    from floodlight.registry import RegistryView
    from floodlight.settings import get_settings

    view = RegistryView(get_settings()).start()
    try:
        view.wait_caught_up(30)
        for r in sorted(view.all(), key=lambda r: r["stream_id"]):
            flags = ",".join(f for f, on in (("public", r["public"]), ("premium", r["is_premium"]),
                                             ("drm", r["drm_required"])) if on)
            typer.echo(f"{r['stream_id']:30} {r['status']:9} {r['latency_mode']:8} {flags}  {r['title']}")
    finally:
        view.stop()


def jwt_cmd(sub: Annotated[str, typer.Option(help="subject")] = "operator",
            admin: Annotated[bool, typer.Option("--admin", help="grant the admin role")] = False,
            entitle: Annotated[list[str] | None, typer.Option(help="entitlement (premium or a stream id)")] = None,
            ttl: Annotated[int, typer.Option(help="lifetime in seconds")] = 3600) -> None:
    """Mint a bearer JWT signed with FLOODLIGHT_JWT_SECRET (operators, tests, demos)."""
    from api.auth import mint_jwt
    from floodlight.settings import get_settings

    typer.echo(mint_jwt(get_settings().jwt_secret, sub, roles=["admin"] if admin else [],
                        entitlements=list(entitle or []), ttl_s=ttl))
