"""Shared fixtures: the real local broker (started by ./run test) and isolated topic prefixes; and
`require_tool`, the one place a test says it needs something from outside Python."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from floodlight.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
APT_STEP = "./run setup installs it via apt (APT_PACKAGES in ./run)"

# tool -> (is it here?, the install step that should have provided it)
TOOLS: dict[str, tuple[Callable[[], bool], str]] = {
    "chromium": (lambda: Path(os.environ.get("FLOODLIGHT_CHROMIUM") or "/usr/bin/chromium").is_file(), APT_STEP),
    "nginx": (lambda: bool(shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")), APT_STEP),
    "varnishd": (lambda: bool(shutil.which("varnishd") or shutil.which("varnishd", path="/usr/sbin")), APT_STEP),
    "ffmpeg": (lambda: shutil.which("ffmpeg") is not None, APT_STEP),
    "node": (lambda: shutil.which("node") is not None,
             "Node 20+ is a prerequisite of ./run setup (README), like Java; the CI image must provide it"),
    "playwright-core": (lambda: (ROOT / "node_modules" / "playwright-core").is_dir(),
                        "./run setup installs it with npm ci (package.json)"),
    "tmpfs mount": (lambda: os.geteuid() == 0,
                    "the chaos suite mounts a small tmpfs: .ci/run must run ./run test as root (CAP_SYS_ADMIN)"),
}


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def require_tool(tool: str, present: bool | None = None) -> None:
    """Call where a test needs `tool` (a key of TOOLS); `present` overrides the probe. When it is missing
    the test skips on a workstation, but under CI=true (.ci/run) it FAILS naming the install step that
    should have provided it: CI never passes by skipping what it was meant to test."""
    probe, step = TOOLS[tool]
    if present is None:
        present = probe()
    if present:
        return
    message = f"{tool} missing: {step}"
    if in_ci():
        pytest.fail(f"{message} (CI=true: a missing tool fails the run)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def browser_tools() -> None:
    """The browser tests' tools (tests/e2e/harness.mjs drives chromium through playwright-core on node)."""
    for tool in ("node", "chromium", "playwright-core"):
        require_tool(tool)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests by folder so `-m unit` etc. work without decorating every test."""
    for item in items:
        for marker in ("unit", "integration", "security", "e2e", "chaos"):
            if f"/tests/{marker}/" in str(item.fspath):
                item.add_marker(getattr(pytest.mark, marker))


@pytest.fixture(scope="session")
def base_settings() -> Settings:
    return Settings()


@pytest.fixture(scope="session")
def broker(base_settings: Settings) -> Iterator[Settings]:
    """The real Kafka broker; ./run test starts it, a bare pytest run starts it too, and then stops it
    at the end of the session (a broker that was already up is left running)."""
    from floodlight.kafka import wait_for_broker
    from ops import stack

    started = False
    try:
        wait_for_broker(base_settings, 3)
    except TimeoutError:
        stack.up(base_settings)
        started = True
    yield base_settings
    if started:
        stack.down(base_settings)


@pytest.fixture
def isolated(broker: Settings, tmp_path) -> Iterator[Settings]:
    """Settings with a topic prefix of its own (topics created), a private store and chDB dir."""
    from floodlight.topics import apply_topics, delete_prefixed_topics

    prefix = f"t{uuid.uuid4().hex[:8]}."
    s = broker.model_copy(update={
        "topic_prefix": prefix,
        "topic_partitions": 3,
        "store_url": (tmp_path / "store").as_uri(),
        "clickhouse_dsn": f"chdb://{tmp_path / 'chdb'}",
    })
    apply_topics(s)
    yield s
    if not os.environ.get("FLOODLIGHT_KEEP_TOPICS"):
        delete_prefixed_topics(s)

