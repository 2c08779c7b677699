from floodlight.partitioner import gop_partition


def test_consecutive_gops_spread_over_every_partition() -> None:
    parts = {gop_partition("final", i, 6) for i in range(6)}
    assert parts == set(range(6))


def test_duplicates_meet_on_one_partition_and_rule_is_deterministic() -> None:
    assert gop_partition("final", 12345, 6) == gop_partition("final", 12345, 6)
    assert gop_partition("final", 12345, 6) == (gop_partition("final", 0, 6) + 12345) % 6
