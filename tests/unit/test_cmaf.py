"""ISO-BMFF splitting and parsing, and ADTS -> AudioSpecificConfig, on hand-built bytes."""

from __future__ import annotations

import struct

import pytest

from processors.encoder import aac, cmaf


def box(kind: bytes, body: bytes = b"") -> bytes:
    return struct.pack(">I4s", 8 + len(body), kind) + body


def full(kind: bytes, version: int, flags: int, body: bytes) -> bytes:
    return box(kind, bytes([version]) + flags.to_bytes(3, "big") + body)


def fragment(bmdt: int, durations: list[int], first_sync: bool = True) -> bytes:
    tfhd = full(b"tfhd", 0, 0x020000, struct.pack(">I", 1))
    tfdt = full(b"tfdt", 1, 0, struct.pack(">Q", bmdt))
    samples = b""
    for i, d in enumerate(durations):
        flags = 0 if (i == 0 and first_sync) else 0x00010000
        samples += struct.pack(">III", d, 100, flags)
    trun = full(b"trun", 0, 0x000001 | 0x100 | 0x200 | 0x400, struct.pack(">Ii", len(durations), 0) + samples)
    moof = box(b"moof", full(b"mfhd", 0, 0, struct.pack(">I", 1)) + box(b"traf", tfhd + tfdt + trun))
    return moof + box(b"mdat", b"\x00" * 100 * len(durations))


def init_segment() -> bytes:
    avcc = box(b"avcC", bytes([1, 0x64, 0x00, 0x28, 0xFF]))
    avc1 = box(b"avc1", b"\x00" * 78 + avcc)
    stsd = full(b"stsd", 0, 0, struct.pack(">I", 1) + avc1)
    mdhd = full(b"mdhd", 0, 0, struct.pack(">IIII", 0, 0, 90000, 0) + b"\x00" * 4)
    trak = box(b"trak", box(b"mdia", mdhd + box(b"minf", box(b"stbl", stsd))))
    trex = full(b"trex", 0, 0, struct.pack(">IIIII", 1, 1, 3000, 0, 0))
    return box(b"ftyp", b"iso6") + box(b"moov", trak + box(b"mvex", trex))


def test_split_init_and_fragments():
    init = init_segment()
    f1, f2 = fragment(900000, [3000] * 10), fragment(930000, [3000] * 10, first_sync=False)
    out = cmaf.split_fmp4(init + f1 + f2)
    assert out.init == init
    assert out.fragments == [f1, f2]


def test_codecs_timescale_and_fragment_info():
    init = init_segment()
    assert cmaf.avc_codecs(init) == "avc1.640028"
    assert cmaf.track_timescale(init) == 90000
    assert cmaf.trex_default_duration(init) == 3000
    info = cmaf.fragment_info(fragment(12_345_678_901, [3000] * 10))
    assert info.base_media_decode_time == 12_345_678_901
    assert info.duration == 30000 and info.samples == 10 and info.first_sample_sync
    assert not cmaf.fragment_info(fragment(0, [3000], first_sync=False)).first_sample_sync


def test_malformed_boxes_raise():
    with pytest.raises(cmaf.BoxError):
        list(cmaf.iter_boxes(b"\x00\x00\x00\x20moov"))  # claims 32 bytes, has 8
    with pytest.raises(cmaf.BoxError):
        cmaf.split_fmp4(box(b"mdat", b"x"))
    with pytest.raises(cmaf.BoxError):
        cmaf.avc_codecs(box(b"ftyp"))


def test_adts_to_audio_specific_config():
    # AAC-LC, 48 kHz (index 3), stereo, no CRC, frame length 351
    header = bytes.fromhex("fff14c802bfffc")
    h = aac.parse_adts(header + b"\x00" * (351 - 7))
    assert (h.object_type, h.sample_rate, h.channel_config, h.header_length) == (2, 48000, 2, 7)
    assert h.audio_specific_config() == bytes.fromhex("1190")
    assert aac.asc_object_type(bytes.fromhex("1190")) == 2
    assert aac.asc_sample_rate(bytes.fromhex("1190")) == 48000
    payload = aac.strip_adts(header + b"\xaa" * (351 - 7) + b"trailing")
    assert payload == b"\xaa" * (351 - 7)


def test_bad_adts():
    assert not aac.is_adts(b"\x21\x19\x53\x75\x00\x00\x00")
    with pytest.raises(aac.AdtsError):
        aac.parse_adts(b"\x21\x19\x53\x75\x00\x00\x00")
    with pytest.raises(aac.AdtsError):
        aac.parse_adts(bytes.fromhex("fff1fc802bfffc"))  # reserved sampling index 15
