"""bench.latency's live-edge age: it decides when a measured player may join the event."""

from datetime import UTC, datetime

from bench.latency import edge_age_s, variants

LL = """#EXTM3U
#EXT-X-TARGETDURATION:1
#EXT-X-PART-INF:PART-TARGET=0.33333
#EXT-X-PROGRAM-DATE-TIME:2026-12-01T20:00:00.000Z
#EXTINF:1.0,
s0.m4s
#EXT-X-PART:DURATION=0.33333,URI="a",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.33333,URI="b"
#EXT-X-PART:DURATION=0.33333,URI="c"
#EXTINF:1.0,
s1.m4s
#EXT-X-PART:DURATION=0.33333,URI="d",INDEPENDENT=YES
#EXT-X-PRELOAD-HINT:TYPE=PART,URI="e"
"""


def at(second: float) -> int:
    return int(datetime(2026, 12, 1, 20, 0, 0, tzinfo=UTC).timestamp() * 1000 + second * 1000)


def test_age_counts_the_parts_of_the_segment_in_progress() -> None:
    # two whole segments (2 s) + one part of the third: the newest media ends at 2.333 s
    assert abs(edge_age_s(LL, at(3.0)) - 0.667) < 0.01


def test_age_of_whole_segments_and_a_new_pdt() -> None:
    text = ("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-PROGRAM-DATE-TIME:2026-12-01T20:00:00.000Z\n#EXTINF:2.0,\na\n"
            "#EXT-X-PROGRAM-DATE-TIME:2026-12-01T20:00:10.000Z\n#EXTINF:2.0,\nb\n")
    assert abs(edge_age_s(text, at(13.5)) - 1.5) < 0.01  # the later PDT wins over the running sum


def test_no_pdt_no_age() -> None:
    assert edge_age_s("#EXTM3U\n#EXTINF:1.0,\na\n", at(1)) is None


def test_variants_of_a_master_playlist() -> None:
    master = ('#EXTM3U\n#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="aac",URI="audio/playlist.m3u8"\n'
              "#EXT-X-STREAM-INF:AVERAGE-BANDWIDTH=7000000,BANDWIDTH=8132479,RESOLUTION=1920x1080\n1080p/playlist.m3u8\n"
              "#EXT-X-STREAM-INF:BANDWIDTH=632479,RESOLUTION=426x240\n240p/playlist.m3u8?token=t\n")
    assert variants(master) == [(8132479, 1080, "1080p/playlist.m3u8"), (632479, 240, "240p/playlist.m3u8?token=t")]
