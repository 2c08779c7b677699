"""RFC 8216bis blocking-reload rules and playlist state parsing (pure)."""

from __future__ import annotations

import pytest

from api.llhls import (
    BadBlockingRequest,
    BlockRequest,
    PlaylistState,
    advance_part_limit,
    hold_seconds,
    parse_block_request,
    parse_state,
    satisfied,
    state_from_update,
    too_far_ahead,
)

LIVE = PlaylistState(msn=20, part=1, target_duration=1.0, part_target=0.334)  # 19 complete, 20.0-20.1 listed


@pytest.mark.parametrize(("msn", "part", "ok"), [
    (19, None, True), (20, None, False), (20, 0, True), (20, 1, True), (20, 2, False), (21, 0, False),
    (5, 3, True),
])
def test_satisfied(msn: int, part: int | None, ok: bool) -> None:
    assert satisfied(LIVE, BlockRequest(msn, part)) is ok


def test_complete_segment_satisfies_any_part_of_it_and_endlist_everything() -> None:
    done = PlaylistState(msn=20, part=-1)
    assert satisfied(done, BlockRequest(20, 7))
    assert not satisfied(done, BlockRequest(21, 0))
    assert satisfied(PlaylistState(msn=20, part=-1, ended=True), BlockRequest(25, 0))
    assert not satisfied(None, BlockRequest(0, 0))
    assert satisfied(None, BlockRequest())


def test_too_far_ahead_per_rfc() -> None:
    assert advance_part_limit(0.334) == 9  # ceil(3 / 0.334)
    assert advance_part_limit(2.0) == 3
    assert advance_part_limit(None) == 3
    assert not too_far_ahead(LIVE, BlockRequest(21))  # last complete 19, +2
    assert too_far_ahead(LIVE, BlockRequest(22))
    assert not too_far_ahead(LIVE, BlockRequest(20, 10))  # 1 + 9
    assert too_far_ahead(LIVE, BlockRequest(20, 11))
    assert too_far_ahead(LIVE, BlockRequest(21, 10))
    assert not too_far_ahead(PlaylistState(msn=20, part=1, ended=True), BlockRequest(99))


def test_hold_is_three_target_durations_unless_configured() -> None:
    assert hold_seconds(LIVE) == 3.0
    assert hold_seconds(PlaylistState(0, -1, target_duration=4.0)) == 12.0
    assert hold_seconds(None) == 12.0
    assert hold_seconds(LIVE, override_s=0.5) == 0.5


@pytest.mark.parametrize(("msn", "part", "skip"), [
    (None, "1", None), ("-1", None, None), ("1.5", None, None), ("x", None, None), ("1", "a", None),
    ("1", None, "NO"), ("9" * 30, None, None),
])
def test_malformed_parameters(msn: str | None, part: str | None, skip: str | None) -> None:
    with pytest.raises(BadBlockingRequest):
        parse_block_request(msn, part, skip)


def test_parameters_parse() -> None:
    assert parse_block_request("12", "3", "v2") == BlockRequest(12, 3, "v2")
    assert parse_block_request(None, None, "YES") == BlockRequest(None, None, "YES")
    assert not parse_block_request(None, None, None).blocking


PLAYLIST = """#EXTM3U
#EXT-X-TARGETDURATION:2
#EXT-X-PART-INF:PART-TARGET=0.5
#EXT-X-MEDIA-SEQUENCE:40
#EXT-X-PART:DURATION=0.5,URI="40.0.m4s"
#EXTINF:2.0,
40.m4s
#EXTINF:2.0,
41.m4s
#EXT-X-PART:DURATION=0.5,URI="42.0.m4s"
#EXT-X-PART:DURATION=0.5,URI="42.1.m4s"
#EXT-X-PRELOAD-HINT:TYPE=PART,URI="42.2.m4s"
"""


def test_parse_state_from_playlists() -> None:
    assert parse_state(PLAYLIST) == PlaylistState(42, 1, False, 2.0, 0.5)
    no_parts = PLAYLIST.split("#EXT-X-PART:DURATION=0.5,URI=\"42.0")[0]
    assert parse_state(no_parts) == PlaylistState(41, -1, False, 2.0, 0.5)
    skip = "#EXT-X-MEDIA-SEQUENCE:30\n#EXT-X-SKIP:SKIPPED-SEGMENTS=10\n"
    delta = PLAYLIST.replace("#EXT-X-MEDIA-SEQUENCE:40\n", skip)
    assert parse_state(delta).msn == 42
    ended = no_parts + "#EXT-X-ENDLIST\n"
    assert parse_state(ended).ended
    assert parse_state("not a playlist") is None


def test_state_from_update_takes_the_targets_the_record_carries() -> None:
    rec = {"msn": 42, "part": 1, "ended": False, "target_duration": 1, "part_target": 0.334}
    assert state_from_update(rec) == PlaylistState(42, 1, False, 1.0, 0.334)
    standard = {**rec, "part": -1, "target_duration": 2, "part_target": 0.0}  # no parts listed
    assert state_from_update(standard, LIVE) == PlaylistState(42, -1, False, 2.0, None)


def test_state_from_a_v1_update_keeps_the_targets_known_before() -> None:
    v1 = {"msn": 21, "part": 0, "ended": True, "target_duration": 0, "part_target": 0.0}  # decoded v1 record
    assert state_from_update(v1, LIVE) == PlaylistState(21, 0, True, 1.0, 0.334)
    assert state_from_update(v1) == PlaylistState(21, 0, True, 4.0, None)
