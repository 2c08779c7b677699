"""compose/ cannot run here (no Docker engine), so pin what can drift: roles and settings names."""

from pathlib import Path

import yaml

from floodlight.settings import Settings

COMPOSE = Path(__file__).resolve().parents[2] / "compose" / "docker-compose.yml"
ROLES = {"ingest", "encoder", "packager", "qoe", "api"}


def _doc() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_every_role_has_a_service() -> None:
    services = _doc()["services"]
    commands = {s["command"][0] for s in services.values() if s.get("image") == "floodlight:latest"}
    assert ROLES <= commands
    assert {"kafka", "clickhouse", "minio", "edge"} <= set(services)


def test_every_floodlight_variable_is_a_setting() -> None:
    known = {f"FLOODLIGHT_{name.upper()}" for name in Settings.model_fields}
    used = set()
    for svc in _doc()["services"].values():
        env = svc.get("environment") or {}
        used |= {k for k in env if k.startswith("FLOODLIGHT_")}
    assert used, "compose sets no FLOODLIGHT_ variable"
    assert used <= known, f"unknown settings in compose: {sorted(used - known)}"


def test_readme_documents_every_setting() -> None:
    readme = (COMPOSE.parents[1] / "README.md").read_text()
    missing = [f"FLOODLIGHT_{n.upper()}" for n in Settings.model_fields if f"FLOODLIGHT_{n.upper()}" not in readme]
    assert not missing, f"README settings table lacks {missing}"
