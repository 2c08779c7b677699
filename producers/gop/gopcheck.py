"""Decode one GopChunk from the record alone: proof that a GOP is closed and self-contained.

Used by the tests and the bench, and handy when a GOP is suspected bad (`decode_gop(record)`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class GopReport:
    frames: int
    first_is_key: bool
    width: int
    height: int
    frame_pts: list[int]
    audio_samples: int


def decode_gop(gop: dict[str, Any], audio: bool = True) -> GopReport:
    """Feed the GOP's packets to fresh decoders (extradata from the record) and count what comes out."""
    import av

    v = gop["video"]
    dec = av.CodecContext.create(v["codec"], "r")
    if v["extradata"]:
        dec.extradata = v["extradata"]
    frames = []
    for p in gop["video_packets"]:
        pkt = av.Packet(p["data"])
        pkt.pts, pkt.dts = p["pts"], p["dts"]
        frames += dec.decode(pkt)
    frames += dec.decode(None)
    samples = 0
    a = gop.get("audio")
    if audio and a and gop["audio_packets"]:
        adec = av.CodecContext.create(a["codec"], "r")
        if a["extradata"]:
            adec.extradata = a["extradata"]
        for p in gop["audio_packets"]:
            for fr in adec.decode(av.Packet(p["data"])):
                samples += fr.samples
        for fr in adec.decode(None):
            samples += fr.samples
    return GopReport(
        frames=len(frames),
        first_is_key=bool(frames and frames[0].key_frame),
        width=frames[0].width if frames else 0,
        height=frames[0].height if frames else 0,
        frame_pts=[f.pts for f in frames],
        audio_samples=samples,
    )
