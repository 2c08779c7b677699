"""Prints the chaos report (fault, recovery time, GOPs lost) at the end of the run."""

from __future__ import annotations

import pytest

REPORT: list[dict] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not REPORT:
        return
    tr = terminalreporter
    tr.section("chaos report")
    tr.write_line(f"{'fault':<34} {'recovery':>10} {'GOPs lost':>10}  notes")
    for row in REPORT:
        rec = "-" if row["recovery_s"] is None else f"{row['recovery_s']:.1f} s"
        tr.write_line(f"{row['fault']:<34} {rec:>10} {row['gops_lost']:>10}  {row['notes']}")
