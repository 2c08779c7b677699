"""Pure parts of the ingest agent: test pattern clock, source parsing, H.264 SPS, RTMP command reader."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from producers.agent import _redact
from producers.gop import h264
from producers.sources.rtmpgate import PreAuth, RtmpRefused, amf0_values
from producers.sources.spec import parse_source
from producers.sources.testsrc import PatternRenderer, TestSpec, read_clock, strip_bits, tone
from producers.sources.testsrc import parse_source as parse_testsrc


# --- test pattern ------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [(640, 360), (1920, 1080), (320, 180)])
def test_burnt_in_clock_reads_back(size):
    w, h = size
    r = PatternRenderer(w, h)
    buf = r.render(123456, 1_795_000_123_456)
    assert buf.shape == (h * 3 // 2, w)
    assert read_clock(buf[:h]) == (1_795_000_123_456, 123456)


def test_burnt_in_clock_survives_a_downscale():
    r = PatternRenderer(1920, 1080)
    y = r.render(77, 1_795_000_000_999)[:1080]
    small = y.reshape(360, 3, 640, 3).mean(axis=(1, 3)).astype(np.uint8)  # 1080p -> 360p box filter
    assert read_clock(small, source_width=1920) == (1_795_000_000_999, 77)


def test_clock_check_bits_reject_a_damaged_strip():
    r = PatternRenderer(640, 360)
    y = r.render(5, 1_795_000_000_000)[:360].copy()
    y[:, :] = 128  # strip wiped
    assert read_clock(y) is None
    assert len(strip_bits(1, 2)[0]) == 48 and len(strip_bits(1, 2)[1]) == 32


def test_pattern_moves_between_frames():
    r = PatternRenderer(640, 360)
    assert not np.array_equal(r.render(1, 0)[200:], r.render(2, 0)[200:])


def test_tone_is_a_function_of_absolute_sample_numbers():
    a = tone(48000 * 10 + 7, 1024)
    b = tone(48000 * 99 + 7, 1024)
    assert a.shape == (2, 1024) and np.array_equal(a, b)
    spectrum = np.abs(np.fft.rfft(tone(0, 48000)[0]))
    assert int(np.argmax(spectrum)) == 1000  # 1 kHz


def test_testsrc_spec_validation():
    assert parse_testsrc("testsrc", 2.0) == TestSpec(640, 360, 30, 2.0)
    assert parse_testsrc("testsrc:1920x1080@25", 4.0).frames_per_gop == 100
    with pytest.raises(ValueError, match="whole number of frames"):
        TestSpec(640, 360, 30, 0.35)
    with pytest.raises(ValueError, match="must divide 90000"):
        TestSpec(640, 360, 7, 1.0)
    with pytest.raises(ValueError):
        parse_testsrc("testsrc:big", 1.0)


# --- sources --------------------------------------------------------------------------------------
def test_parse_sources(tmp_path: Path):
    f = tmp_path / "a.ts"
    f.write_bytes(b"x")
    s = parse_source(f"file:{f}?loop=1")
    assert s.kind == "file" and s.loop and s.path == f.resolve()
    r = parse_source("rtmp://0.0.0.0:1935/live/{stream_key}")
    assert (r.kind, r.port, r.app, r.key) == ("rtmp", 1935, "live", None)
    assert parse_source("rtmp://0.0.0.0:1935/live/sk_abc").key == "sk_abc"
    srt = parse_source("srt://0.0.0.0:9000?streamid=venue&passphrase=secretsecret")
    assert srt.kind == "srt" and srt.query["streamid"] == "venue"
    assert parse_source("tcp://127.0.0.1:7000").kind == "tcp"
    assert parse_source("testsrc:1280x720@30").kind == "testsrc"


@pytest.mark.parametrize("bad", ["file:/nonexistent/x.ts", "ftp://h:1/x", "rtmp://0.0.0.0:1935/",
                                 "tcp://nohostport", "rtmp://0.0.0.0:1935/bad$app/k"])
def test_parse_sources_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        parse_source(bad)


def test_parse_file_rejects_unknown_options(tmp_path: Path):
    f = tmp_path / "a.ts"
    f.write_bytes(b"x")
    with pytest.raises(ValueError, match="only"):
        parse_source(f"file:{f}?evil=1")


def test_keys_never_reach_logs():
    assert "sk_secret" not in _redact("rtmp://0.0.0.0:1935/live/sk_secret")
    assert "hunter2" not in _redact("srt://0.0.0.0:9000?passphrase=hunter2&streamid=x")


# --- H.264 ------------------------------------------------------------------------------------------
SPS_720P = bytes.fromhex("6764001fac2ca4014016ec0440000003004000000f23c60c9200")  # x264 1280x720 High


def test_sps_dimensions():
    info = h264.parse_sps(SPS_720P)
    assert (info.profile_idc, info.width, info.height) == (100, 1280, 720)


def test_annexb_and_avcc_nal_splitting():
    annexb = b"\x00\x00\x00\x01\x67\xaa\x00\x00\x01\x68\xbb\x00\x00\x00\x01\x65\xcc"
    assert h264.nal_types(annexb) == [7, 8, 5]
    avcc = b"\x00\x00\x00\x02\x06\x01\x00\x00\x00\x02\x65\x88"
    assert h264.nal_types(avcc, 4) == [6, 5]
    assert h264.has_idr(avcc, 4) and not h264.has_idr(b"\x00\x00\x00\x02\x41\x9a", 4)
    assert not h264.has_idr(b"\x00\x00\x00\x09\x65", 4)  # truncated: not an IDR, no exception


def test_avcc_extradata():
    avcc = b"\x01\x64\x00\x1f\xff\xe1" + struct.pack(">H", len(SPS_720P)) + SPS_720P + b"\x01\x00\x02\x68\xee"
    cfg = h264.parse_extradata(avcc)
    assert cfg.length_size == 4 and cfg.sps == (SPS_720P,) and cfg.pps == (b"\x68\xee",)


# --- RTMP pre-auth reader -------------------------------------------------------------------------------
def amf_str(s: str) -> bytes:
    return b"\x02" + struct.pack(">H", len(s)) + s.encode()


def amf_num(n: float) -> bytes:
    return b"\x00" + struct.pack(">d", n)


def amf_obj(d: dict[str, str]) -> bytes:
    body = b"".join(struct.pack(">H", len(k)) + k.encode() + amf_str(v) for k, v in d.items())
    return b"\x03" + body + b"\x00\x00\x09"


def chunks(csid: int, type_id: int, payload: bytes, size: int) -> bytes:
    out = bytes([csid]) + b"\x00\x00\x00" + len(payload).to_bytes(3, "big") + bytes([type_id]) + b"\x00" * 4
    out += payload[:size]
    for i in range(size, len(payload), size):
        out += bytes([0xC0 | csid]) + payload[i: i + size]
    return out


def session(key: str) -> bytes:
    hs = b"\x03" + b"\x00" * 1536 + b"\x00" * 1536
    set_size = chunks(2, 1, struct.pack(">I", 64), 128)
    connect = amf_str("connect") + amf_num(1) + amf_obj({"app": "live", "tcUrl": "rtmp://h/live", "x" * 80: "y"})
    publish = amf_str("publish") + amf_num(5) + b"\x05" + amf_str(key) + amf_str("live")
    return hs + set_size + chunks(3, 20, connect, 64) + chunks(8, 20, publish, 64)


def test_reader_finds_connect_and_publish_across_chunks_and_small_reads():
    data = session("sk_" + "k" * 70)
    seen: list[tuple[str, str]] = []
    pre = PreAuth("live", lambda app, key: seen.append((app, key)) or True)
    replies = b""
    for i in range(0, len(data), 7):  # TCP may deliver any split
        replies += pre.feed(data[i: i + 7])
    assert pre.authorized and pre.connected_app == "live"
    assert seen == [("live", "sk_" + "k" * 70)] and pre.publish_name == "sk_" + "k" * 70
    assert pre.reader.chunk_size == 64
    assert replies[:1] == b"\x03" and len(replies) > 1 + 2 * 1536  # S0 S1 S2, then the connect result
    assert pre.replay == data[1 + 2 * 1536:]  # what the real listener gets: the commands, as sent


def test_reader_refuses_what_is_not_rtmp():
    with pytest.raises(RtmpRefused):
        PreAuth("live", lambda app, key: True).feed(b"GET / HTTP/1.1\r\n" + b"x" * 2000)


def test_amf0_values():
    assert amf0_values(amf_str("a") + amf_num(2) + b"\x05" + b"\x01\x01") == ["a", 2.0, None, True]
