"""Partition choice for floodlight.gops (DESIGN §4), pure.

(crc32(stream_id) + gop_index) mod P spreads one stream's consecutive GOPs over every
partition (so every encoder in the group works on the stream), while the primary and backup
copies of one GOP land on the same partition and so meet the same deduplicating consumer.
"""

from __future__ import annotations

import zlib


def stream_hash(stream_id: str) -> int:
    return zlib.crc32(stream_id.encode("utf-8"))


def gop_partition(stream_id: str, gop_index: int, partitions: int) -> int:
    if partitions <= 0:
        raise ValueError("partitions must be positive")
    return (stream_hash(stream_id) + gop_index) % partitions


def stream_partition(stream_id: str, partitions: int) -> int:
    """Partition for per-stream ordered topics when keyed routing is not used."""
    return stream_hash(stream_id) % partitions
