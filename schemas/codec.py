"""Frames records for Kafka: Avro single-object encoding (spec 1.x).

Wire format: 0xC3 0x01 marker, the writer schema's 8-byte CRC-64-AVRO fingerprint
(little-endian, as the spec says), then the Avro binary body. DESIGN §5 asks for "a magic
byte + 8-byte fingerprint"; we use the Avro specification's own two-byte marker so any Avro library
(Java's BinaryMessageDecoder, fastavro users) can read our topics without our code.

Every version a schema has had lives in this folder (current) or in history/ (older);
the codec knows all their fingerprints and resolves an old writer schema to the current
reader schema, which is how schemas evolve backward-compatibly.

Until issue 13 the fingerprint was written in the opposite (big-endian) byte order, which no other
Avro library reads. Records are now written little-endian; records already on the topics in the old
order are still read (both orders of every registered fingerprint are known to the reader).
"""

from __future__ import annotations

import io
import json
import struct
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import parse_schema, to_parsing_canonical_form

from schemas.errors import FloodlightError

MARKER = b"\xc3\x01"
HEADER_LEN = len(MARKER) + 8
SCHEMA_DIR = Path(__file__).parent

RECORD_NAMES = (
    "GopChunk",
    "RenditionSegment",
    "ManifestUpdate",
    "StreamRecord",
    "QoeBeacon",
    "Cue",
    "DeadLetter",
)


class CodecError(FloodlightError, ValueError):
    """Base class: the bytes are not a record we can read."""


class BadMarker(CodecError):
    """The value does not start with the single-object marker."""


class UnknownFingerprint(CodecError):
    """The writer schema's fingerprint is not one we have registered."""


class TruncatedRecord(CodecError):
    """The body ends before the record does (or has trailing garbage)."""


class WrongRecordType(CodecError):
    """The record is valid but of another type than the caller expected."""


@dataclass(frozen=True)
class SchemaVersion:
    name: str
    version: str  # "current" or e.g. "v1"
    parsed: dict[str, Any]
    fingerprint: bytes


CRC64_AVRO_EMPTY = 0xC15D213AA4D7A795  # the spec's EMPTY: the polynomial's fingerprint of no bytes


def _crc64_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (CRC64_AVRO_EMPTY & -(fp & 1))
        table.append(fp)
    return tuple(table)


_CRC64_TABLE = _crc64_table()


def crc64_avro(data: bytes) -> int:
    """The Avro spec's 64-bit Rabin fingerprint (CRC-64-AVRO) of `data`, as an unsigned integer
    (the spec's reference `fingerprint64`, Java's `SchemaNormalization.fingerprint64`)."""
    fp = CRC64_AVRO_EMPTY
    for b in data:
        fp = (fp >> 8) ^ _CRC64_TABLE[(fp ^ b) & 0xFF]
    return fp


def _fingerprint(parsed: dict[str, Any]) -> bytes:
    """The 8 fingerprint bytes of single-object encoding: CRC-64-AVRO of the parsing canonical form,
    little-endian (Avro spec, "Single-object encoding")."""
    return struct.pack("<Q", crc64_avro(to_parsing_canonical_form(parsed).encode("utf-8")))


def _load(path: Path) -> tuple[dict[str, Any], bytes]:
    """The parsed schema (with fastavro's parsed marker, so readers/writers skip re-parsing) and its
    fingerprint, computed from the canonical form of the schema as written."""
    raw = json.loads(path.read_text())
    return parse_schema(raw), _fingerprint(parse_schema(raw, _write_hint=False))


@cache
def _registry() -> tuple[dict[str, SchemaVersion], dict[bytes, SchemaVersion]]:
    current: dict[str, SchemaVersion] = {}
    by_fp: dict[bytes, SchemaVersion] = {}
    for name in RECORD_NAMES:
        parsed, fp = _load(SCHEMA_DIR / f"{name}.avsc")
        sv = SchemaVersion(name, "current", parsed, fp)
        current[name] = sv
        by_fp[sv.fingerprint] = sv
    for path in sorted((SCHEMA_DIR / "history").glob("*.avsc")):
        name, version = path.stem.split(".", 1)
        parsed, fp = _load(path)
        sv = SchemaVersion(name, version, parsed, fp)
        by_fp.setdefault(sv.fingerprint, sv)
    return current, by_fp


@cache
def _legacy() -> dict[bytes, SchemaVersion]:
    """Records written before issue 13 carry the fingerprint big-endian: the same bytes reversed."""
    by_fp = _registry()[1]
    return {fp[::-1]: sv for fp, sv in by_fp.items() if fp[::-1] not in by_fp}


def schema(name: str) -> dict[str, Any]:
    """The current parsed schema of a record type."""
    return _registry()[0][name].parsed


def history(name: str) -> list[SchemaVersion]:
    """Older registered versions of a record type (for evolution tests)."""
    return [sv for sv in _registry()[1].values() if sv.name == name and sv.version != "current"]


def encode(name: str, record: dict[str, Any], *, version: SchemaVersion | None = None) -> bytes:
    """Frame a record with the current schema of `name` (or an explicit older version)."""
    sv = version or _registry()[0][name]
    buf = io.BytesIO()
    buf.write(MARKER)
    buf.write(sv.fingerprint)
    fastavro.schemaless_writer(buf, sv.parsed, record)
    return buf.getvalue()


def writer_of(data: bytes) -> SchemaVersion:
    """The registered schema version that wrote these bytes."""
    if len(data) < HEADER_LEN:
        raise TruncatedRecord(f"record of {len(data)} bytes is shorter than the {HEADER_LEN}-byte header")
    if data[:2] != MARKER:
        raise BadMarker(f"expected marker c301, got {data[:2].hex()}")
    fp = data[2:HEADER_LEN]
    sv = _registry()[1].get(fp) or _legacy().get(fp)
    if sv is None:
        raise UnknownFingerprint(f"unknown schema fingerprint {fp.hex()}")
    return sv


def decode(data: bytes, expect: str | None = None) -> dict[str, Any]:
    """Read a framed record into the current schema of its type."""
    writer = writer_of(data)
    if expect is not None and writer.name != expect:
        raise WrongRecordType(f"expected {expect}, got {writer.name}")
    reader = _registry()[0][writer.name]
    body = io.BytesIO(data)
    body.seek(HEADER_LEN)
    try:
        record = fastavro.schemaless_reader(
            body, writer.parsed, reader.parsed if writer is not reader else None
        )
    except (EOFError, IndexError, StopIteration) as exc:
        raise TruncatedRecord(f"{writer.name} body is truncated: {exc!r}") from exc
    except (ValueError, UnicodeDecodeError, OverflowError) as exc:
        raise TruncatedRecord(f"{writer.name} body is malformed: {exc}") from exc
    if body.tell() != len(data):
        raise TruncatedRecord(f"{writer.name} has {len(data) - body.tell()} trailing bytes")
    return record
