"""Holes 6 and 7 of issue 13 against the real api and the real commands: default secrets on a public
address are refused; CORS only where web players need it; anonymous listings show only what the caller
may watch; readiness probes do not write to the store each time; content keys are never read half
written; `./run` touches no service or process it did not start."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.auth import mint_jwt
from api.server import BackgroundServer, free_port, serve
from floodlight.kafka import make_producer
from floodlight.keystore import KEY_FILE_BYTES, LocalKeyProvider
from floodlight.registry import new_stream_record, publish_stream
from floodlight.settings import ROOT, InsecureSettings, Settings, default_secrets, refuse_default_secrets

EVIL = "http://evil.example"
OWN = {"FLOODLIGHT_JWT_SECRET": "a-real-secret-of-our-own-0123456789",
       "FLOODLIGHT_PLAYBACK_KEYS": "k9:another-real-secret-42"}


# --- default secrets on a non-loopback address ------------------------------------------------------

def _cli(args: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("FLOODLIGHT_JWT", "FLOODLIGHT_PLAYBACK"))}
    return subprocess.run([sys.executable, "-m", "ops.cli", *args], cwd=ROOT, env={**clean, **env},
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("role", ["api", "edge"])
@pytest.mark.parametrize(("env", "named"), [
    ({}, ["FLOODLIGHT_JWT_SECRET", "FLOODLIGHT_PLAYBACK_KEYS"]),
    ({"FLOODLIGHT_JWT_SECRET": OWN["FLOODLIGHT_JWT_SECRET"]}, ["FLOODLIGHT_PLAYBACK_KEYS"]),
    ({"FLOODLIGHT_PLAYBACK_KEYS": "k2:mine-12345678,k1:dev-playback-key-change-me"}, ["FLOODLIGHT_JWT_SECRET",
                                                                                       "FLOODLIGHT_PLAYBACK_KEYS"]),
])
def test_a_role_on_a_public_address_with_a_default_secret_refuses_to_start(role: str, env: dict[str, str],
                                                                           named: list[str], tmp_path: Path) -> None:
    port = str(free_port())
    res = _cli([role, "--host", "0.0.0.0", "--port", port], {**env, "FLOODLIGHT_STACK_DIR": str(tmp_path)})
    assert res.returncode == 2, (res.stdout, res.stderr)
    for name in named:
        assert name in res.stderr
    assert "refusing to start" in res.stderr and "0.0.0.0" in res.stderr


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "api.example.com", "[::]"])
def test_default_secrets_are_refused_on_every_non_loopback_host(host: str) -> None:
    s = Settings()
    with pytest.raises(InsecureSettings, match="FLOODLIGHT_JWT_SECRET"):
        refuse_default_secrets(s, host, "api")
    with pytest.raises(InsecureSettings):
        serve(s, host, free_port())  # refused before anything binds
    with pytest.raises(InsecureSettings):
        BackgroundServer(s, host=host, port=free_port())


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost", "[::1]"])
def test_loopback_keeps_the_developer_defaults(host: str) -> None:
    refuse_default_secrets(Settings(), host, "api")


def test_own_secrets_may_serve_anywhere() -> None:
    s = Settings(jwt_secret=OWN["FLOODLIGHT_JWT_SECRET"], playback_keys=OWN["FLOODLIGHT_PLAYBACK_KEYS"])
    assert default_secrets(s) == []
    refuse_default_secrets(s, "0.0.0.0", "api")


# --- the real api: CORS, listing, readiness --------------------------------------------------------------

@pytest.fixture
def api(isolated: Settings, tmp_path: Any) -> Iterator[tuple[Settings, BackgroundServer]]:
    s = isolated.model_copy(update={"stack_dir": tmp_path / "stack"})
    p = make_producer(s)
    for rec in (new_stream_record("free", "Free to air", public=True, status="LIVE"),
                new_stream_record("prem", "Premium final", is_premium=True, status="LIVE"),
                new_stream_record("members", "Signed-in viewers", status="LIVE")):
        publish_stream(p, s, rec)
    with BackgroundServer(s) as srv:
        yield s, srv


def _preflight(c: httpx.Client, path: str, method: str = "GET") -> httpx.Response:
    return c.options(path, headers={"Origin": EVIL, "Access-Control-Request-Method": method,
                                    "Access-Control-Request-Headers": "authorization,content-type"})


def test_cors_only_on_playback_player_and_beacon_routes(api: tuple[Settings, BackgroundServer]) -> None:
    s, srv = api
    admin = {"Authorization": f"Bearer {mint_jwt(s.jwt_secret, 'op', roles=['admin'])}"}
    with httpx.Client(base_url=srv.base_url, timeout=20) as c:
        for path, method in (("/api/v1/live/streams", "GET"), ("/api/v1/live/streams", "POST"),
                             ("/api/v1/live/streams/prem", "GET"), ("/api/v1/live/streams/prem/end", "POST"),
                             ("/api/v1/live/streams/prem/cues", "POST"), ("/api/v1/analytics/streams/prem/qoe", "GET"),
                             ("/readyz", "GET"), ("/metrics", "GET"), ("/edge/authz", "GET"), ("/openapi.json", "GET")):
            r = _preflight(c, path, method)
            assert "access-control-allow-origin" not in r.headers, (path, r.status_code, dict(r.headers))
            assert "access-control-allow-headers" not in r.headers, path
        # a simple cross-origin read of an admin route: the browser gets no grant to show it to the page
        r = c.get("/api/v1/live/streams", headers={"Origin": EVIL, **admin})
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
        # what players on other origins need still works
        for path, method in (("/live/free/master.m3u8", "GET"), ("/live/free/720p/1.m4s", "GET"),
                             ("/vod/x/720p/init.mp4", "GET"), ("/keys/prem/k0", "GET"), ("/api/v1/time", "GET"),
                             ("/api/v1/qoe/beacons", "POST"), ("/watch/free", "GET"), ("/player/player.js", "GET")):
            r = _preflight(c, path, method)
            assert r.headers.get("access-control-allow-origin") == "*", (path, r.status_code)
        r = c.get("/api/v1/time", headers={"Origin": EVIL})
        assert r.headers.get("access-control-allow-origin") == "*"


def test_anonymous_listing_shows_only_what_the_caller_may_watch(api: tuple[Settings, BackgroundServer]) -> None:
    s, srv = api

    def listed(**claims: Any) -> list[str]:
        headers = {"Authorization": f"Bearer {mint_jwt(s.jwt_secret, 'u', **claims)}"} if claims else {}
        r = httpx.get(f"{srv.base_url}/api/v1/live/streams", headers=headers, timeout=20)
        assert r.status_code == 200
        return [v["stream_id"] for v in r.json()["streams"]]

    assert listed() == ["free"]
    assert listed(roles=["viewer"]) == ["free", "members"]
    assert listed(entitlements=["premium"]) == ["free", "members", "prem"]
    assert listed(entitlements=["prem"]) == ["free", "members", "prem"]
    assert listed(roles=["admin"]) == ["free", "members", "prem"]
    assert listed(roles=[], entitlements=[]) == ["free", "members"]
    r = httpx.get(f"{srv.base_url}/api/v1/live/streams", params={"status": "live"}, timeout=20)
    assert [v["stream_id"] for v in r.json()["streams"]] in (["free"], [])  # the filter cannot widen it


def test_readiness_probes_do_not_write_to_the_store_each_time(api: tuple[Settings, BackgroundServer]) -> None:
    _s, srv = api
    store = srv.ctx.store
    writes: list[str] = []
    real_put = store.put

    def counting_put(key: str, data: bytes, **kw: Any) -> Any:
        writes.append(key)
        return real_put(key, data, **kw)

    store.put = counting_put  # type: ignore[method-assign]
    try:
        with httpx.Client(base_url=srv.base_url, timeout=20) as c:
            for _ in range(50):
                r = c.get("/readyz")
                assert r.status_code == 200 and r.json()["checks"]["store"] == "ok"
    finally:
        store.put = real_put  # type: ignore[method-assign]
    assert len(writes) <= 1, writes


# --- content keys ----------------------------------------------------------------------------------------

def test_a_key_read_during_its_creation_is_absent_or_whole(tmp_path: Path) -> None:
    writer, reader = LocalKeyProvider(tmp_path / "keys"), LocalKeyProvider(tmp_path / "keys")
    stop = threading.Event()
    bad: list[str] = []
    created: dict[str, bytes] = {}

    def read_loop() -> None:
        while not stop.is_set():
            for i in range(0, 400, 7):
                k = reader.get("s", f"k{i}")
                if k is not None and (len(k.key) != 16 or len(k.iv) != 16):
                    bad.append(f"k{i}: {len(k.key)}+{len(k.iv)} bytes")

    t = threading.Thread(target=read_loop)
    t.start()
    try:
        for i in range(400):
            created[f"k{i}"] = writer.get_or_create("s", f"k{i}").key
    finally:
        stop.set()
        t.join()
    assert not bad, bad[:5]
    for kid, key in created.items():  # stable afterwards, and no temporary files left beside the keys
        assert reader.get("s", kid).key == key
    assert sorted(p.name for p in (tmp_path / "keys" / "s").iterdir()) == sorted(f"{k}.key" for k in created)
    assert all((tmp_path / "keys" / "s" / f"{k}.key").stat().st_size == KEY_FILE_BYTES for k in created)


def test_racing_creators_agree_on_the_first_key(tmp_path: Path) -> None:
    providers = [LocalKeyProvider(tmp_path / "keys") for _ in range(8)]

    def create(p: LocalKeyProvider, kid: str, barrier: threading.Barrier, got: list[bytes]) -> None:
        barrier.wait()
        got.append(p.get_or_create("s", kid).key + p.get_or_create("s", kid).iv)

    for n in range(30):
        got: list[bytes] = []
        barrier = threading.Barrier(len(providers))
        threads = [threading.Thread(target=create, args=(p, f"r{n}", barrier, got)) for p in providers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(set(got)) == 1 and len(got) == len(providers)


# --- ./run ----------------------------------------------------------------------------------------------

def test_run_touches_no_service_or_process_it_did_not_start() -> None:
    script = (ROOT / "run").read_text()
    code = "\n".join(line.split("#", 1)[0] for line in script.splitlines())  # comments may name them
    # signalling a child by the pid the script itself started is fine; anything by name or unit is not
    for word in ("systemctl", "service ", "pkill", "killall", "nginx -s", "fuser -k"):
        assert word not in code, f"./run must not run {word.strip()!r}"
