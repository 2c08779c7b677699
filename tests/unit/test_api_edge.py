"""The edge config: compose's copy is the generated one, nginx accepts the local one, rules are there."""

from __future__ import annotations

import subprocess
from pathlib import Path

from api.edge import compose_conf, nginx_binary, prepare, render_http
from api.shapes import status_of, stream_view
from floodlight.registry import new_stream_record
from floodlight.settings import ROOT, Settings
from tests.conftest import require_tool


def test_compose_conf_is_generated() -> None:
    fix = "run: python -m api.edge > compose/nginx/edge.conf"
    assert (ROOT / "compose/nginx/edge.conf").read_text() == compose_conf(), fix


def test_rules_cache_media_by_path_and_playlists_by_full_uri() -> None:
    conf = render_http(listen="8080", origin="api:8000", cache_dir="/c", cache_max_size="1g", country="IN")
    media = conf.split(r"\.(m4s|mp4)$")[1].split("}")[0]
    # keyed on the raw request path the token check reads too, never on nginx's decoded $uri (issue 13)
    assert "proxy_cache_key $fl_path;" in media and "proxy_cache_lock on;" in media and "auth_request" in media
    assert "if ($fl_noncanonical)" in conf and "location = /readyz" in conf
    playlists = conf.split(r"\.(m3u8|mpd)$")[1].split("}")[0]
    assert "proxy_cache_key $request_uri;" in playlists and "proxy_cache_lock on;" in playlists
    assert "proxy_cache_valid" not in playlists  # the origin's Cache-Control decides
    assert 'proxy_set_header X-Country-Code "IN";' in conf


def test_nginx_accepts_the_local_config(tmp_path: Path) -> None:
    require_tool("nginx")
    nginx = nginx_binary()
    prefix, conf = prepare(Settings(), port=18080, origin="127.0.0.1:18000", prefix=tmp_path / "edge")
    res = subprocess.run([nginx, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log"), "-t"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


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
