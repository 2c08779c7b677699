"""Just enough H.264 bitstream reading to police a feed without decoding it (pure).

Why: the agent must tell an IDR from a recovery-point I-frame (open GOP), see SPS changes
(resolution switch -> new epoch) and read width/height/profile from extradata or in-band
SPS — for Annex B (MPEG-TS) and AVCC (FLV/RTMP, MP4) packets alike.
"""

from __future__ import annotations

from dataclasses import dataclass

NAL_IDR, NAL_SEI, NAL_SPS, NAL_PPS, NAL_AUD = 5, 6, 7, 8, 9


def is_annexb(data: bytes) -> bool:
    return data[:4] == b"\x00\x00\x00\x01" or data[:3] == b"\x00\x00\x01"


def split_annexb(data: bytes) -> list[bytes]:
    """NAL units of an Annex B byte stream (start codes removed)."""
    out: list[bytes] = []
    i, n = 0, len(data)
    starts: list[int] = []
    while True:
        j = data.find(b"\x00\x00\x01", i)
        if j < 0:
            break
        starts.append(j + 3)
        i = j + 3
    for k, s in enumerate(starts):
        e = starts[k + 1] - 3 if k + 1 < len(starts) else n
        nal = data[s:e]
        if k + 1 < len(starts) and nal.endswith(b"\x00"):
            nal = nal.rstrip(b"\x00")  # the zero byte of a 4-byte start code
        if nal:
            out.append(nal)
    return out


def split_avcc(data: bytes, length_size: int = 4) -> list[bytes]:
    out, i = [], 0
    while i + length_size <= len(data):
        size = int.from_bytes(data[i: i + length_size], "big")
        i += length_size
        if size <= 0 or i + size > len(data):
            raise ValueError("truncated AVCC NAL unit")
        out.append(data[i: i + size])
        i += size
    return out


def nal_units(data: bytes, length_size: int | None = None) -> list[bytes]:
    """NAL units of one access unit; `length_size` given = AVCC, else Annex B."""
    if length_size:
        return split_avcc(data, length_size)
    return split_annexb(data)


def nal_types(data: bytes, length_size: int | None = None) -> list[int]:
    return [nal[0] & 0x1F for nal in nal_units(data, length_size) if nal]


@dataclass(frozen=True)
class AvcConfig:
    """What a fresh decoder needs, from extradata (avcC or Annex B SPS/PPS)."""

    sps: tuple[bytes, ...]
    pps: tuple[bytes, ...]
    length_size: int | None  # NAL length prefix size of AVCC packets; None for Annex B


def parse_extradata(extradata: bytes) -> AvcConfig:
    if not extradata:
        return AvcConfig((), (), None)
    if extradata[0] == 1 and len(extradata) >= 7:  # avcC record
        length_size = (extradata[4] & 0x03) + 1
        n_sps = extradata[5] & 0x1F
        i, sps, pps = 6, [], []
        for _ in range(n_sps):
            ln = int.from_bytes(extradata[i: i + 2], "big")
            sps.append(extradata[i + 2: i + 2 + ln])
            i += 2 + ln
        n_pps = extradata[i] if i < len(extradata) else 0
        i += 1
        for _ in range(n_pps):
            ln = int.from_bytes(extradata[i: i + 2], "big")
            pps.append(extradata[i + 2: i + 2 + ln])
            i += 2 + ln
        return AvcConfig(tuple(sps), tuple(pps), length_size)
    nals = split_annexb(extradata)
    return AvcConfig(tuple(n for n in nals if n[0] & 0x1F == NAL_SPS),
                     tuple(n for n in nals if n[0] & 0x1F == NAL_PPS), None)


class _Bits:
    def __init__(self, data: bytes) -> None:
        # remove emulation prevention bytes (00 00 03 -> 00 00)
        self.data = data.replace(b"\x00\x00\x03", b"\x00\x00")
        self.pos = 0

    def u(self, n: int) -> int:
        v = 0
        for _ in range(n):
            byte = self.data[self.pos >> 3] if (self.pos >> 3) < len(self.data) else 0
            v = (v << 1) | ((byte >> (7 - (self.pos & 7))) & 1)
            self.pos += 1
        return v

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise ValueError("bad exp-Golomb code in SPS")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


@dataclass(frozen=True)
class SpsInfo:
    profile_idc: int
    level_idc: int
    width: int
    height: int


def parse_sps(nal: bytes) -> SpsInfo:
    """Width/height/profile from an SPS NAL unit (header byte included)."""
    b = _Bits(nal[1:])
    profile, _constraints, level = b.u(8), b.u(8), b.u(8)
    b.ue()  # seq_parameter_set_id
    chroma = 1
    if profile in (100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135):
        chroma = b.ue()
        if chroma == 3:
            b.u(1)
        b.ue()
        b.ue()
        b.u(1)
        if b.u(1):  # seq_scaling_matrix_present_flag
            for i in range(8 if chroma != 3 else 12):
                if b.u(1):
                    last, nxt = 8, 8
                    for _ in range(16 if i < 6 else 64):
                        if nxt:
                            nxt = (last + b.se() + 256) % 256
                        last = nxt or last
    b.ue()  # log2_max_frame_num_minus4
    poc_type = b.ue()
    if poc_type == 0:
        b.ue()
    elif poc_type == 1:
        b.u(1)
        b.se()
        b.se()
        for _ in range(b.ue()):
            b.se()
    b.ue()  # max_num_ref_frames
    b.u(1)
    w_mbs, h_map = b.ue() + 1, b.ue() + 1
    frame_mbs_only = b.u(1)
    if not frame_mbs_only:
        b.u(1)
    b.u(1)
    crop = (0, 0, 0, 0)
    if b.u(1):
        crop = (b.ue(), b.ue(), b.ue(), b.ue())
    sub_w = 2 if chroma in (1, 2) else 1
    sub_h = (2 if chroma == 1 else 1) * (2 - frame_mbs_only)
    width = w_mbs * 16 - sub_w * (crop[0] + crop[1])
    height = (2 - frame_mbs_only) * h_map * 16 - sub_h * (crop[2] + crop[3])
    return SpsInfo(profile, level, width, height)


def sps_in(data: bytes, length_size: int | None) -> bytes | None:
    """The in-band SPS of an access unit, if it carries one."""
    try:
        for nal in nal_units(data, length_size):
            if nal and nal[0] & 0x1F == NAL_SPS:
                return nal
    except ValueError:
        return None
    return None


def has_idr(data: bytes, length_size: int | None) -> bool:
    try:
        return NAL_IDR in nal_types(data, length_size)
    except ValueError:
        return False
