"""Single-object encoding interoperates with other Avro libraries (issue 13, hole 8): the 8 bytes after
C3 01 are the writer schema's CRC-64-AVRO fingerprint, little-endian, as the Avro spec says; records
written before the fix (the same fingerprint big-endian) are still read."""

from __future__ import annotations

import io
import struct

import fastavro
import pytest
from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form

from schemas import codec
from tests.support import sample_records

# Published by the Avro project with the spec (share/test/data/schema-tests.txt, cross-checked there
# against Java's reference implementation): canonical form -> fingerprint64 as a signed Java long.
SPEC_FINGERPRINTS = {
    '"null"': 7195948357588979594,
    '"boolean"': -6970731678124411036,
    '"int"': 8247732601305521295,
    '"long"': -3434872931120570953,
    '"string"': -8142146995180207161,
    "[]": -1241056759729112623,
    '["int","boolean"]': 5392556393470105090,
    '{"name":"foo","type":"record","fields":[]}': -4824392279771201922,
    '{"name":"x.y.foo","type":"record","fields":[]}': 5916914534497305771,
    '{"name":"foo","type":"record","fields":[{"name":"f1","type":"boolean"}]}': 7843277075252814651,
    '{"name":"foo","type":"fixed","size":15}': 1756455273707447556,
    '{"type":"map","values":"string"}': -8732877298790414990,
}


@pytest.mark.parametrize(("canonical", "java_long"), SPEC_FINGERPRINTS.items())
def test_crc64_avro_matches_the_spec_test_vectors(canonical: str, java_long: int) -> None:
    assert codec.crc64_avro(canonical.encode()) == java_long & 0xFFFF_FFFF_FFFF_FFFF
    # fastavro (another implementation) prints the fingerprint as its little-endian bytes
    assert fingerprint(canonical, "CRC-64-AVRO") == struct.pack("<q", java_long).hex()


def test_int_fingerprint_bytes() -> None:
    # "int" -> 0x7275d51a3f395c8f, on the wire 8f 5c 39 3f 1a d5 75 72
    assert struct.pack("<Q", codec.crc64_avro(b'"int"')) == bytes.fromhex("8f5c393f1ad57572")


@pytest.mark.parametrize("name", codec.RECORD_NAMES)
def test_header_is_marker_then_little_endian_crc64_of_the_canonical_form(name: str) -> None:
    data = codec.encode(name, sample_records()[name])
    canonical = to_parsing_canonical_form(parse_schema(codec.schema(name), _write_hint=False))
    crc = codec.crc64_avro(canonical.encode())
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == struct.pack("<Q", crc)
    assert data[2:10].hex() == fingerprint(canonical, "CRC-64-AVRO")


@pytest.mark.parametrize("name", codec.RECORD_NAMES)
def test_a_plain_avro_reader_decodes_our_records(name: str) -> None:
    """What any single-object reader does: match the fingerprint against the schemas it knows (by the
    spec's algorithm, not ours), then read the body with that schema."""
    record = sample_records()[name]
    data = codec.encode(name, record)
    known = {}
    for other in codec.RECORD_NAMES:
        raw = codec.schema(other)
        canonical = to_parsing_canonical_form(parse_schema(raw, _write_hint=False))
        known[bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))] = raw
    writer = known[data[2:10]]
    assert fastavro.schemaless_reader(io.BytesIO(data[10:]), writer, None) == record


@pytest.mark.parametrize("name", codec.RECORD_NAMES)
def test_records_written_in_the_old_byte_order_are_still_read(name: str) -> None:
    record = sample_records()[name]
    data = codec.encode(name, record)
    legacy = data[:2] + data[2:10][::-1] + data[10:]  # as written before issue 13
    assert codec.writer_of(legacy).name == name
    assert codec.decode(legacy, expect=name) == record


def test_history_lists_each_old_version_once() -> None:
    for name in codec.RECORD_NAMES:
        versions = [sv.version for sv in codec.history(name)]
        assert len(versions) == len(set(versions))
