"""The chaos report (fault, how recovery was measured, recovery time, GOPs lost): printed at the end of
the run and written with the run's raw evidence to the artifacts directory, FLOODLIGHT_CHAOS_ARTIFACTS
(default /tmp/floodlight-chaos): report.txt / report.json, evidence.json (GOP sets, playlist timeline,
beacon counts), the roles' logs, the broker log tail and the final playlists."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.harness import FaultReport

REPORT: list[FaultReport] = []
EVIDENCE: dict[str, Any] = {}
ARTIFACTS = Path(os.environ.get("FLOODLIGHT_CHAOS_ARTIFACTS", "/tmp/floodlight-chaos"))
OURS = ("report.txt", "report.json", "evidence.json", "logs", "store", "broker.log")


def clear_artifacts() -> Path:
    """Empty what an earlier run left in the artifacts directory (only our own names)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for name in OURS:
        path = ARTIFACTS / name
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return ARTIFACTS


def report_lines() -> list[str]:
    lines = [f"{'fault':<30} {'recovery':>9} {'GOPs lost':>12}  {'recovery measured as':<58} notes"]
    for row in REPORT:
        rec = "-" if row.recovery_s is None else f"{row.recovery_s:.1f} s"
        if not row.about_gops:
            lost = "n/a"
        else:
            lost = "not measured" if row.gops_lost is None else f"{row.gops_lost}/{row.gops_checked}"
        lines.append(f"{row.fault:<30} {rec:>9} {lost:>12}  {row.measured_by or '-':<58} {row.notes}")
    return lines


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not REPORT:
        return
    lines = report_lines()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "report.txt").write_text("\n".join(lines) + "\n")
    (ARTIFACTS / "report.json").write_text(json.dumps([r.as_dict() for r in REPORT], indent=1, default=str))
    if EVIDENCE:
        (ARTIFACTS / "evidence.json").write_text(json.dumps(EVIDENCE, indent=1, default=str))
    tr = terminalreporter
    tr.section("chaos report")
    for line in lines:
        tr.write_line(line)
    tr.write_line(f"GOPs lost: published GOPs captured from the fault until the next one, missing from the DVR "
                  f"playlist at the end (lost/checked). Raw evidence: {ARTIFACTS}")
