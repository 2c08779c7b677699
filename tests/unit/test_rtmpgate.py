"""The RTMP gate's pure parts (issue 13.2): its own pre-publish server refuses media, wrong keys, wrong apps
and oversize input at the chunk header, and hands the real listener nothing but a keyed publish's commands."""

from __future__ import annotations

import struct

import pytest

from producers.sources.keys import key_check
from producers.sources.rtmpgate import (
    PRE_AUTH_MAX_BYTES,
    ChunkReader,
    ChunkWriter,
    Message,
    PreAuth,
    RtmpRefused,
    amf0,
    amf0_values,
)

HANDSHAKE = b"\x03" + bytes(1536) + bytes(1536)  # C0 C1 C2
W = ChunkWriter(128)


def cmd(*values, csid: int = 3, msid: int = 0) -> bytes:
    return W.write(csid, 20, amf0(*values), msid)


def connect(app: str = "live") -> bytes:
    return cmd("connect", 1.0, {"app": app, "type": "nonprivate", "flashVer": "FMLE/3.0", "tcUrl": f"rtmp://h/{app}"})


def pre_publish(key: str) -> bytes:
    return (connect() + cmd("releaseStream", 2.0, None, key) + cmd("FCPublish", 3.0, None, key)
            + cmd("createStream", 4.0, None))


def publish(key: str) -> bytes:
    return cmd("publish", 5.0, None, key, "live", csid=8, msid=1)


def replies(data: bytes) -> list[list]:
    """The gate's answers after S0 S1 S2, as command values."""
    r = ChunkReader()
    r.feed(data[1 + 2 * 1536:])
    out = []
    while (m := r.next()) is not None:
        if m.type_id == 20:
            out.append(amf0_values(m.payload))
    return out


def gate(key: str = "sk_good") -> tuple[PreAuth, list[str]]:
    asked: list[str] = []

    def verify(app: str, k: str) -> bool:
        asked.append(k)
        return k == key

    return PreAuth("live", verify), asked


def test_a_keyed_publisher_is_answered_like_ffmpeg_and_authorized_only_on_publish():
    pre, asked = gate()
    out = pre.feed(HANDSHAKE + pre_publish("sk_good"))
    assert not pre.authorized  # the key in releaseStream/FCPublish is checked, but only publish opens the door
    assert [v[0] for v in replies(out)] == ["_result", "onBWDone", "_result", "onFCPublish", "_result"]
    assert replies(out)[0][3]["code"] == "NetConnection.Connect.Success"
    assert replies(out)[-1] == ["_result", 4.0, None, 1.0]  # createStream -> stream id 1
    assert out[:1] == b"\x03" and out[1:9] == bytes(8)  # S0; S1 with C1's time and a zero version (simple handshake)
    assert out[1 + 1536: 1 + 2 * 1536] == bytes(1536)  # S2 echoes C1
    tail = b"\x09" * 10  # whatever follows publish in the same read is the authorized publisher's
    assert pre.feed(publish("sk_good?foo=1") + tail) == b""
    assert pre.authorized and pre.publish_name == "sk_good"
    assert asked == ["sk_good"]  # one scrypt check per connection, not one per command
    assert pre.replay == pre_publish("sk_good") + publish("sk_good?foo=1") + tail  # no handshake: the gate does its own


@pytest.mark.parametrize("type_id", [8, 9, 18, 15, 22])
def test_media_before_publish_is_refused_at_its_chunk_header(type_id: int):
    pre, _ = gate()
    pre.feed(HANDSHAKE + pre_publish("sk_good"))
    header = bytes([6]) + b"\x00\x00\x00" + (50_000).to_bytes(3, "big") + bytes([type_id]) + b"\x01\x00\x00\x00"
    with pytest.raises(RtmpRefused) as err:
        pre.feed(header)  # the header alone: not one payload byte is needed to refuse it
    assert err.value.kind in ("media_before_publish", "unexpected_message")
    assert not pre.authorized


def test_media_without_any_command_is_refused():
    pre, asked = gate()
    video = W.write(6, 9, b"\x17\x00" + bytes(100), 1)
    with pytest.raises(RtmpRefused) as err:
        pre.feed(HANDSHAKE + video)
    assert err.value.kind == "media_before_publish" and asked == []


@pytest.mark.parametrize("where", ["releaseStream", "FCPublish", "publish"])
def test_a_wrong_key_is_refused_wherever_it_first_appears(where: str):
    pre, _ = gate()
    pre.feed(HANDSHAKE + connect())
    with pytest.raises(RtmpRefused) as err:
        pre.feed(cmd(where, 2.0, None, "sk_wrong"))
    assert err.value.kind == "wrong_key" and not pre.authorized


def test_an_empty_or_missing_key_is_refused():
    pre, asked = gate()
    pre.feed(HANDSHAKE + connect())
    with pytest.raises(RtmpRefused):
        pre.feed(cmd("publish", 2.0, None))
    assert asked == []  # never even asked


def test_publish_before_connect_and_other_commands_are_refused():
    pre, _ = gate()
    with pytest.raises(RtmpRefused):
        pre.feed(HANDSHAKE + publish("sk_good"))
    pre, _ = gate()
    with pytest.raises(RtmpRefused) as err:
        pre.feed(HANDSHAKE + connect() + cmd("play", 2.0, None, "sk_good"))
    assert err.value.kind == "unexpected_message"


def test_a_wrong_app_is_refused():
    pre, _ = gate()
    with pytest.raises(RtmpRefused) as err:
        pre.feed(HANDSHAKE + connect("other"))
    assert err.value.kind == "wrong_app"


def test_pre_auth_input_is_bounded():
    pre, _ = gate()
    huge = bytes([3]) + b"\x00\x00\x00" + (1 << 20).to_bytes(3, "big") + b"\x14" + bytes(4)
    with pytest.raises(RtmpRefused) as err:
        pre.feed(HANDSHAKE + huge)  # a 1 MiB "command" is refused at its header
    assert err.value.kind == "too_big"
    pre, _ = gate()
    pre.feed(HANDSHAKE + connect())
    with pytest.raises(RtmpRefused):
        for _ in range(PRE_AUTH_MAX_BYTES // 100):  # dribbling control messages: refused past the byte cap
            pre.feed(W.write(2, 5, struct.pack(">I", 1000)) * 6)
    assert pre.received <= PRE_AUTH_MAX_BYTES + 200


def test_not_rtmp_is_refused():
    with pytest.raises(RtmpRefused) as err:
        PreAuth("live", lambda a, k: True).feed(b"\x16\x03\x01" + bytes(2000))  # a TLS hello
    assert err.value.kind == "not_rtmp"


def test_chunk_writer_and_reader_round_trip():
    r = ChunkReader()
    r.chunk_size = 100  # as if a Set Chunk Size had been read
    msgs = [Message(3, 20, 0, 0, amf0("onStatus", 0.0, None, {"code": "NetStream.Publish.Start"})),
            Message(70, 9, 1, 40, bytes(range(256)) * 3), Message(400, 8, 1, 0x1000000, b"a" * 300)]
    for m in msgs:
        r.feed(ChunkWriter(100).write(m.csid, m.type_id, m.payload, m.msid, m.ts))
    got = [r.next() for _ in msgs]
    def shape(ms: list) -> list[tuple]:
        return [(m.csid, m.type_id, m.msid, m.payload) for m in ms]

    assert shape(got) == shape(msgs)
    assert got[1].ts == 40 and got[2].ts == 0  # the writer keeps timestamps under the extended range
    assert r.next() is None


def test_key_check_uses_registered_hashes_and_remembers_only_good_keys(monkeypatch):
    import floodlight.streamkeys as sk
    from floodlight.streamkeys import hash_stream_key

    calls: list[str] = []
    real = sk.verify_stream_key
    monkeypatch.setattr(sk, "verify_stream_key", lambda k, h: calls.append(k) or real(k, h))
    rec = {"ingest_endpoints": [{"role": "primary", "stream_key_hash": hash_stream_key("sk_right")}]}
    verify = key_check(rec, "primary", literal="sk_literal_ignored")
    assert verify("live", "sk_right") and not verify("live", "sk_literal_ignored") and not verify("live", "")
    assert verify("live", "sk_right")  # remembered: no second scrypt
    assert not verify("live", "sk_wrong") and not verify("live", "sk_wrong")
    assert calls == ["sk_right", "sk_literal_ignored", "sk_wrong", "sk_wrong"]  # a wrong key: checked every time
    assert key_check(None, "primary", "venue-a")("", "venue-a") and not key_check(None, "primary", "venue-a")("", "x")
    assert not key_check(None, "primary", None)("", "")


def test_key_checks_are_rate_limited_but_a_known_good_key_is_not(monkeypatch):
    import floodlight.streamkeys as sk

    monkeypatch.setattr(sk, "verify_stream_key", lambda k, h: k == "sk_right")
    verify = key_check({"ingest_endpoints": [{"role": "primary", "stream_key_hash": "scrypt$x$y"}]}, "primary",
                       None, checks_per_second=2.0)
    assert verify("live", "sk_right")  # one check, then remembered
    results = [verify("live", f"sk_guess{i}") for i in range(10)]
    assert not any(results)
    assert verify("live", "sk_right")  # a flood of guesses never locks out a key that already verified
    checked = []
    monkeypatch.setattr(sk, "verify_stream_key", lambda k, h: checked.append(k) or False)
    verify2 = key_check({"ingest_endpoints": [{"role": "primary", "stream_key_hash": "scrypt$x$y"}]}, "primary",
                        None, checks_per_second=2.0)
    for i in range(10):
        verify2("live", f"sk_guess{i}")
    assert len(checked) == 4  # the burst (2 x rate); the rest refused unchecked
