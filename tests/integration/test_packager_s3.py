"""The packager core writing to an S3-compatible store: moto's server mode (`moto_server`), started here.

No real S3-compatible server is installable on this machine (SERVICES-NOTES.md), so the S3 backend
is exercised over real HTTP against moto 5 in server mode through boto3, exactly as against S3/MinIO.
"""

from __future__ import annotations

import copy
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import m3u8
import pytest

from floodlight.objectstore import IMMUTABLE, S3Store, open_store
from sinks.packager.conformance import check_media_playlist
from sinks.packager.core import StreamPackager
from sinks.packager.state import StreamConfig
from tests.support import sample_records, wait_until


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    port = _free_port()
    exe = Path(sys.executable).parent / "moto_server"
    proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            return False
    try:
        wait_until(up, 30, what="moto_server listening")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def aws_env(monkeypatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


def seg(g: int) -> dict:
    r = copy.deepcopy(sample_records()["RenditionSegment"])
    r.update(gop_index=500 + g, pts=(500 + g) * 90000, duration=90000,
             capture_wallclock_ms=1_795_000_000_000 + g * 1000,
             data=bytes([g]) * 64, parts=[{"duration": 0.5, "offset": 0, "length": 32, "independent": True},
                                           {"duration": 0.5, "offset": 32, "length": 32, "independent": False}])
    return r


def test_packager_on_s3_sets_metadata_and_deletes(s3_endpoint: str, aws_env: None) -> None:
    store = open_store("s3://media/origin", s3_endpoint)
    assert isinstance(store, S3Store)
    p = StreamPackager.open(store, "s3s", config=StreamConfig(dvr_window_s=5, live_window_s=5))
    for g in range(12):
        p.add(dict(seg(g), stream_id="s3s"), now=0)
        p.flush(1_795_000_100_000)
    p.refresh_dvr()
    p.checkpoint()
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    head = s3.head_object(Bucket="media", Key="origin/live/s3s/720p/11.m4s")
    assert head["ContentType"] == "video/iso.segment" and head["CacheControl"] == IMMUTABLE
    head = s3.head_object(Bucket="media", Key="origin/live/s3s/720p/playlist.m3u8")
    assert head["ContentType"] == "application/vnd.apple.mpegurl" and head["CacheControl"] == "public, max-age=1"
    head = s3.head_object(Bucket="media", Key="origin/live/s3s/master.m3u8")
    assert head["ContentType"] == "application/vnd.apple.mpegurl"
    assert s3.head_object(Bucket="media", Key="origin/live/s3s/manifest.mpd")["ContentType"] == "application/dash+xml"
    text = store.get("live/s3s/720p/dvr.m3u8").data.decode()
    assert check_media_playlist(text, lambda uri: store.exists(f"live/s3s/720p/{uri}")) == []
    pl = m3u8.loads(text)
    assert pl.media_sequence == 7  # a 5 s DVR window: older objects deleted from the bucket
    keys = set(store.list("live/s3s/720p/"))
    assert "live/s3s/720p/6.m4s" not in keys and "live/s3s/720p/6.0.m4s" not in keys
    assert "live/s3s/720p/7.m4s" in keys
    # restart from the checkpoint in the bucket: numbering continues
    p2 = StreamPackager.open(store, "s3s", config=StreamConfig(dvr_window_s=5, live_window_s=5))
    p2.add(dict(seg(12), stream_id="s3s"), now=0)
    p2.flush(1_795_000_100_000)
    assert m3u8.loads(store.get("live/s3s/720p/playlist.m3u8").data.decode()).segments[-1].uri == "12.m4s"
