import pytest

from schemas import codec
from tests.support import sample_records


@pytest.mark.parametrize("name", codec.RECORD_NAMES)
def test_round_trip_every_schema(name: str) -> None:
    record = sample_records()[name]
    data = codec.encode(name, record)
    assert data[:2] == codec.MARKER
    assert codec.decode(data, expect=name) == record


def test_unknown_fingerprint_is_rejected() -> None:
    data = bytearray(codec.encode("Cue", sample_records()["Cue"]))
    data[2:10] = b"\xde\xad\xbe\xef\x00\x00\x00\x00"
    with pytest.raises(codec.UnknownFingerprint):
        codec.decode(bytes(data))


def test_truncated_body_is_rejected() -> None:
    data = codec.encode("GopChunk", sample_records()["GopChunk"])
    with pytest.raises(codec.TruncatedRecord):
        codec.decode(data[:-4])
    with pytest.raises(codec.TruncatedRecord):
        codec.decode(data[:5])


def test_trailing_garbage_and_bad_marker_are_rejected() -> None:
    data = codec.encode("Cue", sample_records()["Cue"])
    with pytest.raises(codec.TruncatedRecord):
        codec.decode(data + b"xx")
    with pytest.raises(codec.BadMarker):
        codec.decode(b"\x00" + data[1:])


def test_wrong_type_is_rejected() -> None:
    data = codec.encode("Cue", sample_records()["Cue"])
    with pytest.raises(codec.WrongRecordType):
        codec.decode(data, expect="GopChunk")


def test_fingerprint_is_crc64_avro_little_endian() -> None:
    # The Avro spec's test vector: CRC-64-AVRO of the canonical form of "int" is 0x7275d51a3f395c8f,
    # stored little-endian in single-object encoding.
    from fastavro.schema import fingerprint

    assert fingerprint('"int"', "CRC-64-AVRO") == "8f5c393f1ad57572"


@pytest.mark.parametrize("name", ["GopChunk", "QoeBeacon", "StreamRecord", "ManifestUpdate", "RenditionSegment"])
def test_previous_version_is_read_by_current(name: str) -> None:
    olds = codec.history(name)
    assert olds, f"{name} has no registered older version"
    current_fields = {f["name"] for f in codec.schema(name)["fields"]}
    for old in olds:
        old_fields = {f["name"] for f in old.parsed["fields"]}
        record = {k: v for k, v in sample_records()[name].items() if k in old_fields}
        data = codec.encode(name, record, version=old)
        assert codec.writer_of(data).version == old.version
        out = codec.decode(data, expect=name)
        assert set(out) == current_fields
        for k in old_fields:
            assert out[k] == record[k]
        for k in current_fields - old_fields:  # new fields take their defaults
            default = next(f for f in codec.schema(name)["fields"] if f["name"] == k)["default"]
            assert out[k] == default
