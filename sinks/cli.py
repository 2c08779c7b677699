"""Registers this folder's role commands; each role keeps its own `cli.py` beside its code."""

from __future__ import annotations

import importlib

import typer

ROLE_MODULES = ("sinks.packager.cli", "sinks.clickhouse.cli")


def register(app: typer.Typer) -> None:
    for modname in ROLE_MODULES:
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as exc:
            if not exc.name or not modname.startswith(exc.name):
                raise
            continue
        mod.register(app)
