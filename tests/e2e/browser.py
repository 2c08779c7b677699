"""Python side of the browser harness (harness.mjs): run a list of steps in headless chromium, get JSON back."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

HARNESS = Path(__file__).resolve().parent / "harness.mjs"
ROOT = HARNESS.parents[2]
# Whether node, chromium and playwright-core are here: the `browser_tools` fixture (tests/conftest.py).


def run_browser(steps: list[dict[str, Any]], timeout_s: float = 240) -> dict[str, Any]:
    """Run the steps; return the harness's result (ok, steps, console, pageErrors, state)."""
    plan = json.dumps({"steps": steps, "timeout_s": timeout_s})
    res = subprocess.run(["node", str(HARNESS)], input=plan, capture_output=True, text=True,
                         timeout=timeout_s + 60, cwd=ROOT)
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"harness printed no result (rc={res.returncode}): {res.stderr[-2000:]}")
    return json.loads(lines[-1])


def step(result: dict[str, Any], name: str) -> dict[str, Any]:
    for s in result["steps"]:
        if s["name"] == name:
            return s
    raise AssertionError(f"step {name!r} did not run: {json.dumps(result)[:3000]}")


def summary(result: dict[str, Any]) -> str:
    """A short account of a run for assertion messages (pytest truncates long reprs)."""
    st = result.get("state") or {}
    keep = ("state", "errors", "warnings", "switches", "currentLevel", "latencyMs", "beacons", "currentTime", "src")
    return json.dumps({"error": result.get("error"), "steps": result.get("steps"),
                       "pageErrors": result.get("pageErrors"), "failedRequests": result.get("failedRequests", [])[:5],
                       "state": {k: st.get(k) for k in keep}}, indent=1)
