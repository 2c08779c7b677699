"""The demo's and the latency bench's pure parts: plans, ladders, settings hand-off, status counting, maths."""

from __future__ import annotations

from bench.latency import pct, playlist_pdt, stage_breakdown
from floodlight.settings import Settings
from ops.demo import (
    DemoOptions,
    StatusCollector,
    demo_settings,
    parse_ladder,
    plan_children,
    render_status,
    settings_env,
)


def test_plan_starts_consumers_first_and_ingest_last_with_the_contract_commands(tmp_path) -> None:
    s = demo_settings(Settings(stack_dir=tmp_path, api_port=18000, edge_port=18080))
    plan = plan_children(s, DemoOptions(encoders=2, gop_seconds=1.0), python="py")
    assert [c.name for c in plan] == ["qoe", "api", "edge", "packager", "encoder-1", "encoder-2", "ingest"]
    assert plan[-1].argv == ["py", "-m", "ops.cli", "ingest", "--stream", "demo",
                             "--source", "testsrc:1920x1080@30", "--gop-seconds", "1.0"]
    assert plan[1].argv[-4:] == ["--host", "127.0.0.1", "--port", "18000"]
    assert plan[2].argv[-4:] == ["--port", "18080", "--origin", "127.0.0.1:18000"]  # the one api process
    no_edge = plan_children(s, DemoOptions(edge=False, encoders=1), python="py")
    assert [c.name for c in no_edge] == ["qoe", "api", "packager", "encoder-1", "ingest"]


def test_demo_settings_isolate_topics_data_and_groups(tmp_path) -> None:
    base = Settings(stack_dir=tmp_path, topic_prefix="floodlight.", api_port=8000)
    s = demo_settings(base)
    assert s.topic("gops") == "floodlight.demo.gops"
    assert s.stack_dir == tmp_path / "demo"
    assert s.resolved_store_url() == (tmp_path / "demo" / "store").as_uri()
    assert s.encoder_group == "floodlight.demo.encoder" and s.packager_group == "floodlight.demo.packager"
    assert s.public_base_url == ""  # players go through the edge (the api's default)
    assert demo_settings(base, edge=False).public_base_url == "http://127.0.0.1:8000"
    env = settings_env(s)
    assert env["FLOODLIGHT_TOPIC_PREFIX"] == "floodlight.demo." and env["FLOODLIGHT_API_PORT"] == "8000"
    assert Settings(**{k.removeprefix("FLOODLIGHT_").lower(): v for k, v in env.items()}) == s


def test_parse_ladder() -> None:
    assert parse_ladder("default") is None
    assert [r["name"] for r in parse_ladder("small")] == ["360p", "240p", "144p"]
    assert parse_ladder("hd:1280x720:3000") == [{"name": "hd", "width": 1280, "height": 720, "bitrate_kbps": 3000}]
    try:
        parse_ladder("hd:1280:3000")
    except ValueError as exc:
        assert "name:WxH:kbps" in str(exc)
    else:
        raise AssertionError("a bad rung must be refused")


def test_status_counts_segments_from_coalesced_manifest_updates_and_renders() -> None:
    c = StatusCollector(Settings(), "demo")
    for msn, part in [(0, 0), (0, 2), (1, -1), (4, 1), (3, -1)]:  # 3 complete implied by a part of 4
        c.on_manifest({"stream_id": "demo", "rendition": "720p", "msn": msn, "part": part})
    c.on_manifest({"stream_id": "other", "rendition": "720p", "msn": 99, "part": -1})
    c.on_beacon({"stream_id": "demo", "session_id": "a", "latency_ms": 2500})
    c.on_beacon({"stream_id": "demo", "session_id": "b", "latency_ms": 0})
    snap = c.snapshot()
    assert snap["renditions"]["720p"] == {"segments": 4, "msn": 4, "part": 1}
    assert snap["latency_ms"] == 2500 and snap["viewers"] == 2
    snap["children"] = [{"name": "api", "pid": 1, "state": "running"}]
    from rich.console import Console

    console = Console(record=True, width=140)
    console.print(render_status(snap, {"player": "P", "hls": "H", "dash": "D"}))
    text = console.export_text()
    assert "720p" in text and "2.50 s" in text and "api" in text


def test_latency_maths() -> None:
    assert pct([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 50) == 5 and pct([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 95) == 10
    pl = ("#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:7\n#EXT-X-PROGRAM-DATE-TIME:2026-01-01T00:00:01.000Z\n#EXTINF:1.0,\n7.m4s\n"
          "#EXT-X-PROGRAM-DATE-TIME:2026-01-01T00:00:02.000Z\n#EXT-X-PART:DURATION=0.5,URI=\"8.0.m4s\"\n"
          "#EXTINF:1.0,\n8.m4s\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"9.0.m4s\"\n")
    t0 = 1767225601000
    assert playlist_pdt(pl) == {7: t0, 8: t0 + 1000}
    segs = [{"capture_wallclock_ms": t0, "ingest_published_ms": t0 + 1000, "encode_started_ms": t0 + 1050,
             "encoded_wallclock_ms": t0 + 1400, "gop_index": 70}]
    st = stage_breakdown(segs, written={7: t0 + 1500}, msn_of_capture={t0: 7}, loads={7: t0 + 1600}, g2g_p50=2600)
    assert st == {"accumulation": 1000, "kafka": 50, "transcode": 350, "packaging": 100, "delivery": 100,
                  "player buffer": 1000, "gops": 1}
