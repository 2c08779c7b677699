"""AAC pass-through helpers: ADTS headers to raw AAC + AudioSpecificConfig (MEDIA-NOTES).

MPEG-TS sources carry AAC as ADTS frames with no extradata, which an mp4 muxer refuses; the
2-byte AudioSpecificConfig is derived from the first ADTS header and the header is stripped
from every packet, so audio is never re-encoded.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.errors import FloodlightError

SAMPLE_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)


class AdtsError(FloodlightError, ValueError):
    """A packet that claims to be ADTS but is not a valid ADTS frame."""


@dataclass(frozen=True)
class AdtsHeader:
    object_type: int  # audio object type (profile + 1): 2 = AAC-LC
    sampling_index: int
    channel_config: int
    header_length: int  # 7, or 9 with CRC
    frame_length: int

    @property
    def sample_rate(self) -> int:
        return SAMPLE_RATES[self.sampling_index]

    def audio_specific_config(self) -> bytes:
        """The 2-byte AudioSpecificConfig (ISO 14496-3 1.6.2.1) for this stream."""
        value = (self.object_type << 11) | (self.sampling_index << 7) | (self.channel_config << 3)
        return value.to_bytes(2, "big")


def is_adts(data: bytes) -> bool:
    return len(data) >= 7 and data[0] == 0xFF and (data[1] & 0xF6) == 0xF0


def parse_adts(data: bytes) -> AdtsHeader:
    if not is_adts(data):
        raise AdtsError("no ADTS syncword")
    protection_absent = data[1] & 0x01
    profile = (data[2] >> 6) & 0x03
    sampling_index = (data[2] >> 2) & 0x0F
    channel_config = ((data[2] & 0x01) << 2) | ((data[3] >> 6) & 0x03)
    frame_length = ((data[3] & 0x03) << 11) | (data[4] << 3) | ((data[5] >> 5) & 0x07)
    header_length = 7 if protection_absent else 9
    if sampling_index >= len(SAMPLE_RATES):
        raise AdtsError(f"reserved sampling index {sampling_index}")
    if frame_length < header_length:
        raise AdtsError(f"ADTS frame length {frame_length} shorter than its header")
    return AdtsHeader(profile + 1, sampling_index, channel_config, header_length, frame_length)


def strip_adts(data: bytes) -> bytes:
    """Raw AAC payload of one ADTS frame (one access unit per packet, as demuxers emit)."""
    h = parse_adts(data)
    return data[h.header_length:h.frame_length]


def asc_object_type(asc: bytes) -> int:
    """Audio object type of an AudioSpecificConfig (for the mp4a.40.N codecs string)."""
    if len(asc) < 2:
        raise ValueError("AudioSpecificConfig too short")
    aot = asc[0] >> 3
    if aot == 31:  # escape: 6 more bits
        aot = 32 + (((asc[0] & 0x07) << 3) | (asc[1] >> 5))
    return aot


def asc_sample_rate(asc: bytes) -> int | None:
    if len(asc) < 2:
        return None
    index = ((asc[0] & 0x07) << 1) | (asc[1] >> 7)
    return SAMPLE_RATES[index] if index < len(SAMPLE_RATES) else None
