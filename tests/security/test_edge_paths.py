"""Hole 1 of issue 13, tried as an attacker would: the real nginx edge in front of the real api, a premium
stream whose segments are already in the edge's shared cache, and no (or a foreign) token. Every way of
spelling the path that nginx would decode or normalise before matching its locations - percent-escapes,
doubled slashes, dot segments, a fragment, the absolute request form - and every way of spelling the
token the check could read differently from the cache key must end in 400/403/404, never in media."""

from __future__ import annotations

import http.client
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from api.edge import start_edge
from api.server import BackgroundServer, free_port
from floodlight.kafka import make_producer
from floodlight.objectstore import open_store
from floodlight.settings import Settings
from tests.integration.test_api_origin import Origin
from tests.support import healthy, wait_until

PREMIUM = "prem"
REFUSED = {400, 403, 404}
REDIRECT = {307}  # the api's trailing-slash redirect to the canonical path: no media, and the token check follows


@pytest.fixture
def edge(isolated: Settings, tmp_path: Any) -> Iterator[tuple[Origin, str, int]]:
    isolated = isolated.model_copy(update={"stack_dir": tmp_path / "stack", "api_block_timeout_s": 2.0})
    with BackgroundServer(isolated) as srv:
        port = free_port()
        proc = start_edge(isolated, port=port, origin=f"127.0.0.1:{srv.port}", prefix=tmp_path / "edge")
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until(lambda: healthy(url), 10, what="nginx listening")
            o = Origin(isolated, srv, open_store(isolated.resolved_store_url()), make_producer(isolated), {})
            o.register(PREMIUM, is_premium=True)
            o.register("free", public=True)
            o.write(PREMIUM, "240p", 0, 3, 0)
            o.write("free", "240p", 0, 3, 0)
            yield o, url, port
        finally:
            proc.terminate()
            proc.wait(10)


def raw_get(port: int, target: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """GET with the request target sent byte for byte (httpx and browsers would normalise it first)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.putrequest("GET", target, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", f"127.0.0.1:{port}")
        for k, v in (headers or {}).items():
            conn.putheader(k, v)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def raw_request_line(port: int, line: str) -> tuple[int, bytes]:
    """A request line no HTTP client library would send (absolute form, odd bytes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(f"{line}\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode("latin-1"))
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


SEGMENT = f"/live/{PREMIUM}/240p/1.m4s"
VARIANTS = [
    "/live/%70rem/240p/1.m4s",  # the example: %70 = 'p'
    "/live/%70%72%65%6d/240p/1.m4s",
    "/%6cive/prem/240p/1.m4s",
    "/live/prem/%32%34%30p/1.m4s",
    "/live/prem/240p/%31.m4s",
    "/live/prem/240p/1%2em4s",
    "/live/prem%2f240p/1.m4s",
    "//live/prem/240p/1.m4s",
    "/live//prem/240p/1.m4s",
    "/live/prem//240p/1.m4s",
    "/live/prem/240p//1.m4s",
    "///live/prem/240p/1.m4s",
    "/live/./prem/240p/1.m4s",
    "/./live/prem/240p/1.m4s",
    "/live/prem/./240p/1.m4s",
    "/live/prem/240p/./1.m4s",
    "/live/x/../prem/240p/1.m4s",
    "/live/free/../prem/240p/1.m4s",
    "/vod/../live/prem/240p/1.m4s",
    "/live/prem/240p/x/../1.m4s",
    "/live/prem/240p/1.m4s#frag",
    "/live/prem/240p/1.m4s%00",
    "/live/prem/240p/1.m4s%23",
    "/live/prem/240p/1.m4s/",
    "/live/prem/240p/1.m4s;x=1",
    "/LIVE/prem/240p/1.m4s",
    "/live/PREM/240p/1.m4s",
    "/live/prem/240p/1.M4S",
    "/live\\prem\\240p\\1.m4s",
    "/live/%2e/prem/240p/1.m4s",
    "/live/%2e%2e/live/prem/240p/1.m4s",
]


def _warm(o: Origin, port: int) -> None:
    """A legitimate viewer first, so the premium segment sits in the shared cache (the attack's target)."""
    token = o.token(PREMIUM)
    st, body = raw_get(port, f"{SEGMENT}?token={token}")
    assert (st, body) == (200, b"seg 1")
    st, body = raw_get(port, f"{SEGMENT}?token={token}")
    assert (st, body) == (200, b"seg 1")


def test_path_variants_of_a_cached_premium_segment_never_serve_media(edge: tuple[Origin, str, int]) -> None:
    o, _url, port = edge
    _warm(o, port)
    foreign = o.token("free")
    served = []
    for path in VARIANTS:
        for query in ("", f"?token={foreign}", "?token="):
            st, body = raw_get(port, path + query)
            if st not in REFUSED | REDIRECT or b"seg" in body:
                served.append(f"{path}{query} -> {st} {body[:40]!r}")
    assert not served, "\n".join(served)
    # the canonical path still needs its token
    assert raw_get(port, SEGMENT)[0] == 403
    assert raw_get(port, f"{SEGMENT}?token={foreign}")[0] == 403


def test_the_legitimate_viewer_still_plays(edge: tuple[Origin, str, int]) -> None:
    o, _url, port = edge
    _warm(o, port)
    assert raw_get(port, "/live/free/240p/1.m4s") == (200, b"seg 1")  # public: no token needed
    st, body = raw_get(port, f"/live/{PREMIUM}/240p/playlist.m3u8?token={o.token(PREMIUM)}")
    assert st == 200 and b"1.m4s?token=" in body


def test_non_canonical_playlists_keys_and_api_paths_are_refused(edge: tuple[Origin, str, int]) -> None:
    _o, _url, port = edge
    for path in ("/live/%70rem/240p/playlist.m3u8", "//live/prem/master.m3u8", "/live/./prem/manifest.mpd",
                 "/keys/%70rem/k0", "//keys/prem/k0", "/api/v1/live/streams/%70rem", "/watch/%70rem",
                 "//readyz", "/./metrics", "/%72eadyz", "/edge/../readyz", "//edge/authz"):
        st, body = raw_get(port, path)
        assert st in REFUSED, (path, st, body[:80])


def test_token_spelt_differently_from_the_cache_key_opens_nothing(edge: tuple[Origin, str, int]) -> None:
    """nginx keys its cached verdict on `$arg_token` (the raw `token=` argument). A check that decoded the
    query itself would accept `?%74oken=<valid>` and cache 'allowed' for the key with no token at all."""
    o, _url, port = edge
    _warm(o, port)
    token = o.token(PREMIUM)
    for query in (f"?%74oken={token}", f"?TOKEN={token}", f"?x=1&%74oken={token}", f"?token%3D{token}",
                  f"?token={token.replace('.', '%2E')}"):
        raw_get(port, SEGMENT + query)  # whatever it answers, it must not open the token-less key below
        st, body = raw_get(port, SEGMENT)
        assert st == 403 and b"seg" not in body, query
        st, body = raw_get(port, f"/live/{PREMIUM}/240p/2.m4s")
        assert st == 403 and b"seg" not in body, query


def test_absolute_form_request_lines(edge: tuple[Origin, str, int]) -> None:
    o, _url, port = edge
    _warm(o, port)
    for target in (f"http://127.0.0.1:{port}/live/%70rem/240p/1.m4s", f"http://127.0.0.1:{port}//live/prem/240p/1.m4s",
                   f"http://127.0.0.1:{port}/live/prem/240p/1.m4s", "http://evil.example/live/./prem/240p/1.m4s"):
        st, body = raw_request_line(port, f"GET {target} HTTP/1.1")
        assert st in REFUSED and b"seg" not in body, (target, st)


def test_readyz_metrics_and_authz_are_not_reachable_through_the_edge(edge: tuple[Origin, str, int]) -> None:
    o, url, port = edge
    for path in ("/readyz", "/metrics", "/edge/authz", "/readyz?x=1"):
        assert raw_get(port, path)[0] == 404, path
    assert httpx.get(f"{o.srv.base_url}/readyz", timeout=20).status_code == 200  # on the private port it works
