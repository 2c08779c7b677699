"""`require_tool` in a fake environment: a missing tool skips on a workstation and fails under CI=true,
naming the install step that should have provided it. Nothing is uninstalled: PATH and CI are faked."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest

from tests.conftest import APT_STEP, ROOT, TOOLS, require_tool


@pytest.fixture
def empty_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("FLOODLIGHT_CHROMIUM", str(tmp_path / "no-chromium"))
    return bin_dir


@pytest.mark.parametrize("tool", ["chromium", "ffmpeg", "node"])
def test_missing_tool_fails_under_ci_naming_the_install_step(empty_path: Path, monkeypatch, tool: str) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception) as info:
        require_tool(tool)
    assert str(info.value).startswith(f"{tool} missing: {TOOLS[tool][1]}")


def test_the_message_says_where_chromium_comes_from(empty_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=re.escape(
            "chromium missing: ./run setup installs it via apt (APT_PACKAGES in ./run)")):
        require_tool("chromium")


def test_missing_tool_skips_outside_ci(empty_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="ffmpeg missing"):
        require_tool("ffmpeg")
    monkeypatch.setenv("CI", "")  # ./run test passes CI=${CI:-}: empty is a workstation
    with pytest.raises(pytest.skip.Exception):
        require_tool("ffmpeg")


def test_a_present_tool_passes_and_present_overrides_the_probe(empty_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CI", "true")
    fake = empty_path / "ffmpeg"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    require_tool("ffmpeg")
    require_tool("node", present=True)
    with pytest.raises(pytest.fail.Exception, match="tmpfs mount missing"):
        require_tool("tmpfs mount", present=False)


def test_apt_tools_are_in_the_run_scripts_apt_list() -> None:
    """The message points at APT_PACKAGES: every tool it says apt provides must be listed there."""
    m = re.search(r"^APT_PACKAGES=\(([^)]*)\)", (ROOT / "run").read_text(), re.M)
    assert m, "APT_PACKAGES not found in ./run"
    listed = set(m.group(1).split())
    package_of = {"varnishd": "varnish"}  # the tool's binary name where it differs from its Debian package
    assert {package_of.get(t, t) for t, (_probe, step) in TOOLS.items() if step == APT_STEP} <= listed
