"""The edge config: compose's copy is the generated one, varnishd compiles the local one, rules are there."""

from __future__ import annotations

import subprocess
from pathlib import Path

from api.edge import check, compose_conf, prepare, render_vcl
from api.shapes import status_of, stream_view
from floodlight.registry import new_stream_record
from floodlight.settings import ROOT, Settings
from tests.conftest import require_tool


def test_compose_conf_is_generated() -> None:
    fix = "run: python -m api.edge > compose/varnish/edge.vcl"
    assert (ROOT / "compose/varnish/edge.vcl").read_text() == compose_conf(), fix


def _sub(vcl: str, name: str) -> str:
    return vcl.split(f"sub {name} {{")[1].split("\n}\n")[0]


def test_rules_cache_media_by_path_and_playlists_by_full_uri() -> None:
    vcl = render_vcl(origins=["api:8000", "api2:8001"], country="IN")
    recv = _sub(vcl, "vcl_recv")
    # media: the token verdict first (cached per stream, token, country), then one object per raw path
    assert '"authz|"' in recv and 'set req.url = "/edge/authz";' in recv
    assert 'set req.http.X-Fl-Key = "media|" + regsub(req.url, "\\?.*$", "");' in recv
    # the client cannot pre-authorise itself: edge-only headers are dropped on the way in
    assert "unset req.http.X-Fl-Authorized;" in recv.split("if (req.url !~")[0]
    assert 'set req.http.X-Country-Code = "IN";' in recv
    assert "return (synth(400" in recv and "metrics|readyz" in recv
    # playlists: full URI as the key and never served past the origin's max-age (no stale blocking answers)
    assert "hash_data(req.url);" in _sub(vcl, "vcl_hash")
    fetched = _sub(vcl, "vcl_backend_response")
    assert "set beresp.grace = 0s;" in fetched.split("m3u8|mpd")[1]
    # only the api's 200 lets a media request through
    deliver = _sub(vcl, "vcl_deliver")
    assert "resp.status == 200" in deliver and 'return (synth(403, "Forbidden"));' in deliver
    # two api processes behind one edge
    assert "fl_origin.add_backend(fl_api0);" in vcl and "fl_origin.add_backend(fl_api1);" in vcl


def test_varnishd_compiles_the_local_config(tmp_path: Path) -> None:
    require_tool("varnishd")
    prefix, cmd = prepare(Settings(), port=18080, origin="127.0.0.1:18000,127.0.0.1:18001",
                          prefix=tmp_path / "edge")
    check(cmd)
    assert subprocess.run([cmd[0], "-V"], capture_output=True).returncode == 0


def test_status_follows_the_feed() -> None:
    rec = new_stream_record("s", "t")
    assert status_of(rec, None, 10_000, 5_000) == "scheduled"
    assert status_of(rec, 9_000, 10_000, 5_000) == "live"
    assert status_of(rec, 1_000, 10_000, 5_000) == "ended"
    assert status_of({**rec, "status": "ENDED"}, 9_999, 10_000, 5_000) == "ended"
    assert status_of({**rec, "status": "LIVE", "updated_ms": 9_000}, None, 10_000, 5_000) == "live"


def test_view_has_the_brief_shape() -> None:
    rec = new_stream_record("s", "t", drm_required=True, dvr_window_seconds=0, actual_start_ms=1_713_209_400_000)
    v = stream_view(rec, status="live", started_ms=None, playback_url="u", dash_url="d", key_base="http://e")
    assert v["started_at"] == "2024-04-15T19:30:00Z"
    assert v["features"] == {"dvr_enabled": False, "dvr_window_seconds": 0, "low_latency": False}
    assert v["drm"] == {"type": "aes-128", "license_url": "http://e/keys/s"}
    assert v["qualities"][0] == {"resolution": "1080p", "width": 1920, "height": 1080, "bitrate": 8000}
