"""Minimal SCTE-35 splice_info_section with a splice_insert, for cues that carry no bytes of their own.

SCTE35-OUT / SCTE35-IN in EXT-X-DATERANGE and the MPD EventStream carry such a section; when the
Cue record brings its own bytes those are used unchanged.
"""

from __future__ import annotations


def _crc32_mpeg2(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else (crc << 1)
            crc &= 0xFFFFFFFF
    return crc


def splice_insert(splice_event_id: int, out_of_network: bool, duration_ms: int | None = None) -> bytes:
    """splice_info_section(splice_insert, immediate, program splice) per SCTE 35 §9.7.3."""
    cmd = bytearray(splice_event_id.to_bytes(4, "big"))
    cmd.append(0x7F)  # splice_event_cancel_indicator=0, reserved
    has_duration = out_of_network and duration_ms is not None
    # out_of_network, program_splice=1, duration_flag, splice_immediate=1, reserved
    cmd.append((0x80 if out_of_network else 0) | 0x40 | (0x20 if has_duration else 0) | 0x10 | 0x0F)
    if has_duration:
        ticks = int(duration_ms) * 90  # type: ignore[arg-type]
        cmd += (0xFE | ((ticks >> 32) & 1)).to_bytes(1, "big") + (ticks & 0xFFFFFFFF).to_bytes(4, "big")
    cmd += (splice_event_id & 0xFFFF).to_bytes(2, "big")  # unique_program_id
    cmd += b"\x00\x00"  # avail_num, avails_expected
    body = bytearray()
    body.append(0)  # protocol_version
    body += b"\x00"  # encrypted_packet=0, encryption_algorithm=0, pts_adjustment bit 32
    body += b"\x00\x00\x00\x00"  # pts_adjustment
    body.append(0)  # cw_index
    tier_len = (0xFFF << 12) | len(cmd)  # tier=0xFFF, splice_command_length
    body += tier_len.to_bytes(3, "big")
    body.append(0x05)  # splice_insert
    body += cmd
    body += b"\x00\x00"  # descriptor_loop_length
    section_length = len(body) + 4  # + CRC
    head = bytes([0xFC, 0x30 | ((section_length >> 8) & 0x0F), section_length & 0xFF])
    section = head + bytes(body)
    return section + _crc32_mpeg2(section).to_bytes(4, "big")
