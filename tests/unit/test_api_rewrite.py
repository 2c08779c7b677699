"""Token propagation into playlists and MPDs (pure text)."""

from __future__ import annotations

import m3u8

from api.rewrite import sign_mpd, sign_playlist, with_param

MEDIA = """#EXTM3U
#EXT-X-VERSION:9
#EXT-X-TARGETDURATION:1
#EXT-X-MEDIA-SEQUENCE:7
#EXT-X-MAP:URI="init.mp4"
#EXT-X-KEY:METHOD=AES-128,URI="/keys/s1/k3",IV=0x0000000000000000000000000000000A
#EXT-X-PART:DURATION=0.334,URI="7.0.m4s",INDEPENDENT=YES
#EXTINF:1.000,
7.m4s
#EXT-X-PART:DURATION=0.334,URI="8.0.m4s"
#EXT-X-PRELOAD-HINT:TYPE=PART,URI="8.1.m4s"
#EXT-X-RENDITION-REPORT:URI="../480p/playlist.m3u8",LAST-MSN=8,LAST-PART=0
"""


def test_every_uri_of_a_media_playlist_gets_the_token() -> None:
    out = sign_playlist(MEDIA, "k1.99.sig")
    pl = m3u8.loads(out)
    uris = [pl.segment_map[0].uri, pl.keys[-1].uri, pl.segments[0].uri, pl.preload_hint.uri,
            pl.rendition_reports[0].uri] + [p.uri for s in pl.segments for p in s.parts]
    assert len(uris) == 7
    assert all(u.endswith("?token=k1.99.sig") for u in uris), uris
    assert pl.keys[-1].uri == "/keys/s1/k3?token=k1.99.sig"
    assert "IV=0x0000000000000000000000000000000A" in out  # attributes untouched
    assert out.count("token=") == 7
    assert sign_playlist(out, "k1.99.sig") == out  # idempotent


def test_keys_only_signing_leaves_media_uris_alone() -> None:
    out = sign_playlist(MEDIA, "anon")
    only = sign_playlist(MEDIA, "anon", keys_only=True)
    assert only.count("token=") == 1 and 'URI="/keys/s1/k3?token=anon"' in only
    assert out.count("token=") == 7


def test_master_playlist_children_and_media_groups() -> None:
    master = ('#EXTM3U\n#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="a",NAME="audio",URI="audio/playlist.m3u8"\n'
              '#EXT-X-STREAM-INF:BANDWIDTH=1,CODECS="avc1.64001f,mp4a.40.2",AUDIO="a"\n720p/playlist.m3u8\n')
    out = sign_playlist(master, "t")
    assert 'URI="audio/playlist.m3u8?token=t"' in out and "\n720p/playlist.m3u8?token=t\n" in out
    assert 'CODECS="avc1.64001f,mp4a.40.2"' in out


def test_mpd_templates_and_query_joining() -> None:
    mpd = '<SegmentTemplate media="720p/$Number$.m4s" initialization="720p/init.mp4?x=1" startNumber="3"/>'
    out = sign_mpd(mpd, "t.1.s")
    assert 'media="720p/$Number$.m4s?token=t.1.s"' in out
    assert 'initialization="720p/init.mp4?x=1&amp;token=t.1.s"' in out
    assert 'startNumber="3"' in out
    assert with_param("a.m4s#f", "token", "x y") == "a.m4s?token=x%20y#f"
