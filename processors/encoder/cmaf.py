"""Pure ISO-BMFF helpers: split a fragmented MP4 byte stream into init and fragments (parts),
and read what the records need (codecs string, tfdt, sample durations) from the boxes.

The muxer writes to a non-seekable sink, so its output is a plain sequence of top-level boxes:
ftyp, moov, then one moof+mdat pair per fragment (LL-HLS part).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from schemas.errors import FloodlightError

CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"moof", b"traf", b"mvex", b"edts", b"dinf"}
SAMPLE_ENTRY_SKIP = {b"avc1": 78, b"avc3": 78, b"hvc1": 78, b"hev1": 78, b"mp4a": 28}


class BoxError(FloodlightError, ValueError):
    """Bytes that are not a well-formed sequence of ISO-BMFF boxes."""


@dataclass(frozen=True)
class Box:
    type: bytes
    offset: int  # of the box header in the buffer
    size: int  # whole box, header included
    header: int  # 8, or 16 for a 64-bit size

    @property
    def body(self) -> int:
        return self.offset + self.header

    @property
    def end(self) -> int:
        return self.offset + self.size


def iter_boxes(data: bytes, start: int = 0, end: int | None = None) -> Iterator[Box]:
    end = len(data) if end is None else end
    pos = start
    while pos < end:
        if end - pos < 8:
            raise BoxError(f"truncated box header at {pos}")
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            if end - pos < 16:
                raise BoxError(f"truncated large box header at {pos}")
            size = struct.unpack_from(">Q", data, pos + 8)[0]
            header = 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            raise BoxError(f"box {kind!r} at {pos} has bad size {size}")
        yield Box(kind, pos, size, header)
        pos += size


def find_box(data: bytes, path: list[bytes], start: int = 0, end: int | None = None) -> Box | None:
    """First box along a type path, descending into containers and sample entries."""
    for box in iter_boxes(data, start, end):
        if box.type != path[0]:
            continue
        if len(path) == 1:
            return box
        child_start = box.body
        if box.type == b"stsd":
            child_start += 8  # version/flags + entry count
        elif box.type in SAMPLE_ENTRY_SKIP:
            child_start += SAMPLE_ENTRY_SKIP[box.type]
        found = find_box(data, path[1:], child_start, box.end)
        if found is not None:
            return found
    return None


@dataclass
class Fragmented:
    init: bytes
    fragments: list[bytes]  # each: any leading styp/prft/sidx + moof + mdat


def split_fmp4(data: bytes) -> Fragmented:
    """Separate the init segment (everything before the first moof) from the fragments."""
    init_end: int | None = None
    fragments: list[bytes] = []
    frag_start: int | None = None
    pending: int | None = None  # start of boxes that belong to the next fragment (styp, prft, ...)
    for box in iter_boxes(data):
        if box.type == b"moof":
            if init_end is None:
                init_end = pending if pending is not None else box.offset
            frag_start = pending if pending is not None else box.offset
            pending = None
        elif box.type == b"mdat":
            if frag_start is None:
                raise BoxError("mdat before any moof")
            fragments.append(data[frag_start:box.end])
            frag_start = None
        elif box.type in (b"styp", b"prft", b"sidx", b"emsg") and init_end is not None:
            pending = box.offset if pending is None else pending
        elif box.type in (b"mfra",):
            continue
    if init_end is None:
        init_end = len(data)
    if frag_start is not None:
        raise BoxError("moof without mdat at the end of the stream")
    return Fragmented(init=data[:init_end], fragments=fragments)


def avc_codecs(init: bytes) -> str:
    """RFC 6381 string from the avcC record: avc1.PPCCLL (profile, compatibility, level)."""
    box = find_box(init, [b"moov", b"trak", b"mdia", b"minf", b"stbl", b"stsd", b"avc1", b"avcC"])
    if box is None:
        raise BoxError("no avc1/avcC sample entry in the init segment")
    profile, compat, level = init[box.body + 1:box.body + 4]
    return f"avc1.{profile:02x}{compat:02x}{level:02x}"


def track_timescale(init: bytes) -> int:
    box = find_box(init, [b"moov", b"trak", b"mdia", b"mdhd"])
    if box is None:
        raise BoxError("no mdhd in the init segment")
    version = init[box.body]
    return struct.unpack_from(">I", init, box.body + (20 if version == 1 else 12))[0]


def trex_default_duration(init: bytes) -> int:
    box = find_box(init, [b"moov", b"mvex", b"trex"])
    return struct.unpack_from(">I", init, box.body + 12)[0] if box is not None else 0


@dataclass(frozen=True)
class FragmentInfo:
    base_media_decode_time: int
    duration: int  # sum of the sample durations, timescale units
    samples: int
    first_sample_sync: bool


def fragment_info(fragment: bytes, default_duration: int = 0) -> FragmentInfo:
    """tfdt and total sample duration of a moof+mdat fragment (single-track)."""
    moof = find_box(fragment, [b"moof"])
    if moof is None:
        raise BoxError("fragment has no moof")
    tfhd = find_box(fragment, [b"traf", b"tfhd"], moof.body, moof.end)
    tfdt = find_box(fragment, [b"traf", b"tfdt"], moof.body, moof.end)
    trun = find_box(fragment, [b"traf", b"trun"], moof.body, moof.end)
    if tfhd is None or tfdt is None or trun is None:
        raise BoxError("fragment lacks tfhd/tfdt/trun")
    tf_flags = int.from_bytes(fragment[tfhd.body + 1:tfhd.body + 4], "big")
    pos = tfhd.body + 8
    if tf_flags & 0x01:
        pos += 8
    if tf_flags & 0x02:
        pos += 4
    if tf_flags & 0x08:
        default_duration = struct.unpack_from(">I", fragment, pos)[0]
        pos += 4
    default_flags = 0
    if tf_flags & 0x10:
        pos += 4
    if tf_flags & 0x20:
        default_flags = struct.unpack_from(">I", fragment, pos)[0]
    version = fragment[tfdt.body]
    bmdt = (struct.unpack_from(">Q", fragment, tfdt.body + 4)[0] if version == 1
            else struct.unpack_from(">I", fragment, tfdt.body + 4)[0])
    tr_flags = int.from_bytes(fragment[trun.body + 1:trun.body + 4], "big")
    count = struct.unpack_from(">I", fragment, trun.body + 4)[0]
    pos = trun.body + 8
    if tr_flags & 0x01:
        pos += 4
    first_flags = None
    if tr_flags & 0x04:
        first_flags = struct.unpack_from(">I", fragment, pos)[0]
        pos += 4
    total = 0
    for i in range(count):
        duration = default_duration
        if tr_flags & 0x100:
            duration = struct.unpack_from(">I", fragment, pos)[0]
            pos += 4
        if tr_flags & 0x200:
            pos += 4
        flags = default_flags
        if tr_flags & 0x400:
            flags = struct.unpack_from(">I", fragment, pos)[0]
            pos += 4
        if i == 0 and first_flags is not None:
            flags = first_flags
        if i == 0:
            first_sync = not (flags >> 16) & 0x01  # sample_is_non_sync_sample
        if tr_flags & 0x800:
            pos += 4
        total += duration
    return FragmentInfo(bmdt, total, count, first_sync if count else False)
