"""`floodlight demo --api-processes N`: N api processes on consecutive ports, the edge balancing over them."""

from __future__ import annotations

from api.edge import origins_of, render_vcl
from floodlight.settings import Settings
from ops.demo import DemoOptions, api_ports, demo_settings, plan_children


def test_two_api_processes_behind_the_edge(tmp_path) -> None:
    s = demo_settings(Settings(stack_dir=tmp_path, api_port=18000, edge_port=18080))
    opts = DemoOptions(encoders=1, api_processes=2)
    assert api_ports(s, opts) == [18000, 18001]
    plan = plan_children(s, opts, python="py")
    assert [c.name for c in plan] == ["qoe", "api", "api-2", "edge", "packager", "encoder-1", "ingest"]
    assert plan[2].argv[-2:] == ["--port", "18001"]
    assert plan[3].argv[-4:] == ["--port", "18080", "--origin", "127.0.0.1:18000,127.0.0.1:18001"]
    # the edge reads that list as one backend per api process
    origins = origins_of(s, "127.0.0.1:18000,127.0.0.1:18001")
    vcl = render_vcl(origins=origins, country="")
    assert '.port = "18000";' in vcl and '.port = "18001";' in vcl
    assert "directors.round_robin()" in vcl and "return (retry);" in vcl


def test_one_api_process_by_default(tmp_path) -> None:
    s = demo_settings(Settings(stack_dir=tmp_path, api_port=18000))
    assert api_ports(s, DemoOptions()) == [18000]
    assert origins_of(s, None) == ["127.0.0.1:18000"]
