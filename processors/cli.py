"""Registers this folder's role commands; each role keeps its own `cli.py` beside its code."""

from __future__ import annotations

import typer

ROLE_MODULES = ("processors.encoder.cli", "processors.qoe.cli")


def register(app: typer.Typer) -> None:
    from floodlight.cli import register_modules

    register_modules(app, ROLE_MODULES)
