"""The house rules (DESIGN §1, docs/architecture.md) as import contracts, run by `lint-imports`.

The first test checks the real tree. The others copy the contracts onto a tiny house in a temp
folder and add one forbidden import each, so a contract that stopped biting would fail here too.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
PACKAGES = ("bench", "ops", "producers", "processors", "sinks", "api", "floodlight", "schemas")


def _lint(cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--no-logo"], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=120)


def test_the_house_keeps_its_contracts() -> None:
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.fixture
def tiny_house(tmp_path: Path) -> Path:
    """Every room of the house with one module each and only allowed imports."""
    (tmp_path / ".importlinter").write_text((ROOT / ".importlinter").read_text())
    for pkg in PACKAGES:
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
        (tmp_path / pkg / "core.py").write_text("")
    (tmp_path / "floodlight" / "core.py").write_text("import schemas.core\n")
    (tmp_path / "producers" / "core.py").write_text("import floodlight.core\n")
    (tmp_path / "ops" / "core.py").write_text("import producers.core\nimport sinks.core\n")
    assert _lint(tmp_path).returncode == 0, "the allowed imports alone must keep every contract"
    return tmp_path


@pytest.mark.parametrize(("importer", "line", "broken"), [
    ("floodlight/core.py", "import producers.core", "Layers"),  # the kernel imports a role
    ("schemas/core.py", "import floodlight.core", "Layers"),  # schemas imports something of ours
    ("sinks/core.py", "import ops.core", "Layers"),  # a role imports the wiring
    ("processors/core.py", "def f():\n    import producers.core", "Roles are independent"),  # lazily, too
    ("api/core.py", "import sinks.core", "Roles are independent"),
])
def test_a_forbidden_import_breaks_a_contract(tiny_house: Path, importer: str, line: str, broken: str) -> None:
    path = tiny_house / importer
    path.write_text(path.read_text() + line + "\n")
    result = _lint(tiny_house)
    assert result.returncode != 0
    assert f"{broken}" in result.stdout and "BROKEN" in result.stdout


def test_a_circle_inside_a_room_breaks_a_contract(tiny_house: Path) -> None:
    (tiny_house / "producers" / "a.py").write_text("from producers import b\n")
    (tiny_house / "producers" / "b.py").write_text("from producers import a\n")
    result = _lint(tiny_house)
    assert result.returncode != 0 and "No import circles" in result.stdout


def test_every_error_of_ours_has_the_one_root() -> None:
    """Catching FloodlightError catches anything the project raises on purpose."""
    import importlib
    import inspect
    import pkgutil

    from schemas.errors import FloodlightError

    stray = []
    for pkg in ("schemas", "floodlight", "producers", "processors", "sinks", "api", "ops"):
        root = importlib.import_module(pkg)
        for info in pkgutil.walk_packages(root.__path__, prefix=f"{pkg}."):
            module = importlib.import_module(info.name)
            for name, obj in inspect.getmembers(module, inspect.isclass):
                if obj.__module__ == info.name and issubclass(obj, Exception) and not issubclass(obj, FloodlightError):
                    stray.append(f"{info.name}.{name}")
    assert stray == []
