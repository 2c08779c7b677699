"""`floodlight demo --edges 2`: two Varnish edges as content-steering pathways a and b (issue 18)."""

from __future__ import annotations

from pathlib import Path

from floodlight.settings import Settings
from ops.demo import DemoOptions, base_url, demo_settings, plan_children, tolerated


def test_demo_with_two_edges_runs_two_pathways() -> None:
    base = Settings(stack_dir=Path("/tmp/fl-x"), edge_port=9080, api_port=9000)
    opts = DemoOptions(edges=2)
    s = demo_settings(base, True, 2)
    assert s.pathways == "a=http://127.0.0.1:9080,b=http://127.0.0.1:9081"
    assert demo_settings(base).pathways == ""
    edges = {c.name: c for c in plan_children(s, opts) if c.name.startswith("edge")}
    assert [c.argv[c.argv.index("--port") + 1] for c in edges.values()] == ["9080", "9081"]
    assert edges["edge-2"].env["FLOODLIGHT_STACK_DIR"] == str(s.stack_dir / "edge-2")
    assert edges["edge"].env["FLOODLIGHT_PATHWAYS"] == s.pathways
    assert base_url(s, opts) == "http://127.0.0.1:9000"  # the page and its beacons do not hang on one pathway
    # one edge down is a pathway down, not the end of the demo; both down, or anything else, is
    assert tolerated([("edge", -15)], opts) == []
    assert tolerated([("edge", -15), ("edge-2", 1)], opts) == [("edge", -15), ("edge-2", 1)]
    assert tolerated([("edge", -15), ("packager", 1)], opts) == [("packager", 1)]
    assert tolerated([("edge", -15)], DemoOptions()) == [("edge", -15)]
