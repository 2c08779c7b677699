"""`floodlight replay`: re-run encode + package for a retained range of a stream."""

from __future__ import annotations

from pathlib import Path

import typer

from floodlight.settings import get_settings


def register(app: typer.Typer) -> None:
    @app.command("replay")
    def replay(
        stream: str = typer.Option(..., "--stream", help="Source stream id."),
        from_: str = typer.Option(..., "--from", help="Start: ISO 8601, Unix s/ms, or relative like -10m."),
        to: str = typer.Option(..., "--to", help="End (exclusive), same forms; 'now' for now."),
        ladder: Path = typer.Option(None, "--ladder", help="Ladder file (JSON/YAML list of rungs)."),
        as_id: str = typer.Option(None, "--as", help="Id of the new stream / VOD asset."),
        vod: bool = typer.Option(False, "--vod", help="Make a VOD asset under vod/{id}/ (ENDLIST, static MPD)."),
    ) -> None:
        """Transcode and package a past range again (own consumer group; resumable after Ctrl-C)."""
        from floodlight.log import setup_logging
        from ops.replay import ReplayError, load_ladder, parse_when, result_json, run_replay

        settings = get_settings()
        setup_logging("replay", settings.log_level, "text")
        try:
            t1 = parse_when(from_)
            t2 = parse_when("-0s") if to == "now" else parse_when(to)
            rungs = load_ladder(ladder) if ladder else None
            result = run_replay(settings, stream, t1, t2, ladder=rungs, as_id=as_id, vod=vod)
        except ReplayError as exc:
            typer.echo(f"replay: {exc}", err=True)
            raise typer.Exit(2) from exc
        except KeyboardInterrupt:
            typer.echo("replay interrupted: run the same command again to resume", err=True)
            raise typer.Exit(130) from None
        typer.echo(result_json(result))
