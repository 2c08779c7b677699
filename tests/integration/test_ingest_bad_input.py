"""Bad input never kills the agent: garbage on the port, truncated files, resolution switches, feeds
that are not closed regular GOPs (refused by name with --normalize never, re-encoded with always;
auto, the default, is tests/integration/test_ingest_normalize.py)."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from floodlight.settings import Settings
from producers.agent import EXIT_OK, EXIT_REFUSED, AgentConfig, IngestAgent
from producers.gop.gopcheck import decode_gop
from producers.sources.demux import free_port
from tests.integration.test_ingest_sources import push, running
from tests.integration.test_ingest_testsrc import consume
from tests.support import wait_until

LAVFI = ["-f", "lavfi", "-i", "testsrc2=size={size}:rate=30", "-f", "lavfi", "-i", "sine=f=1000:sample_rate=48000"]


def make(path: Path, size: str, seconds: float, *extra: str) -> Path:
    args = [a.format(size=size) for a in LAVFI]
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args, "-t", str(seconds),
                    "-c:v", "libx264", "-preset", "ultrafast", *extra, "-c:a", "aac", "-ac", "2", str(path)],
                   check=True, timeout=60)
    return path


REGULAR = ("-g", "30", "-keyint_min", "30", "-sc_threshold", "0")


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("badinput")
    ts = make(d / "feed.ts", "320x240", 4, *REGULAR, "-f", "mpegts")
    a = make(d / "a.ts", "320x240", 3, *REGULAR, "-f", "mpegts")
    b = make(d / "b.ts", "480x270", 3, *REGULAR, "-output_ts_offset", "3", "-f", "mpegts")
    switch = d / "switch.ts"
    switch.write_bytes(a.read_bytes() + b.read_bytes())
    trunc = d / "trunc.ts"
    trunc.write_bytes(ts.read_bytes()[: int(ts.stat().st_size * 0.6)])
    irregular = make(d / "irregular.mp4", "320x240", 4, "-force_key_frames", "0,1,1.5,3", "-sc_threshold", "0",
                     "-x264-params", "keyint=300:min-keyint=300")
    open_gop = make(d / "open.ts", "320x240", 4, "-preset", "veryfast", "-bf", "3", "-x264-params",
                    "open-gop=1:keyint=30:min-keyint=30:scenecut=0", "-f", "mpegts")
    hevc = d / "hevc.mp4"
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *[a.format(size="320x240") for a in LAVFI],
                    "-t", "2", "-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error",
                    "-c:a", "aac", "-ac", "2", str(hevc)], check=True, timeout=60)
    return {"ts": ts, "switch": switch, "trunc": trunc, "irregular": irregular, "open": open_gop, "hevc": hevc}


def run_to_end(settings: Settings, cfg: AgentConfig) -> tuple[int, IngestAgent]:
    agent = IngestAgent(settings, cfg)
    return agent.run(), agent


def test_garbage_on_the_tcp_port_then_a_real_feed(isolated: Settings, media: dict[str, Path]):
    port = free_port()
    cfg = AgentConfig("bad-tcp", f"tcp://127.0.0.1:{port}", use_registry=False, status_interval=0)
    with running(isolated, cfg) as agent:
        def send_garbage() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                    s.sendall(bytes(range(256)) * 4000)  # ~1 MB that is not MPEG-TS
                return True
            except OSError:
                return False  # listener not up yet

        wait_until(send_garbage, 20, what="garbage delivered to the listener")
        wait_until(lambda: agent.refusals, 20, what="garbage noticed")
        res = None
        for _ in range(5):  # the listener re-opens after the garbage
            res = push(["-re", "-i", str(media["ts"]), "-c", "copy", "-f", "mpegts", f"tcp://127.0.0.1:{port}"])
            if res.returncode == 0:
                break
        assert res is not None and res.returncode == 0, res.stderr
        wait_until(lambda: agent.stats.published >= 4, 20, what="GOPs of the real feed after the garbage")
    assert any("open failed" in r or "read error" in r for r in agent.refusals)
    got = consume(isolated, agent.stats.published, timeout=20)
    assert all(decode_gop(g).first_is_key for _, g in got)


def test_truncated_file_publishes_what_it_has_and_ends_cleanly(isolated: Settings, media: dict[str, Path]):
    code, agent = run_to_end(isolated, AgentConfig("bad-trunc", f"file:{media['trunc']}", use_registry=False,
                                                   status_interval=0))
    assert code == EXIT_OK
    n = agent.stats.published
    assert 2 <= n < 4  # the complete GOPs before the cut (plus the partial last one)
    got = sorted((g for _, g in consume(isolated, n, timeout=20)), key=lambda g: g["gop_index"])
    for g in got[:-1]:
        rep = decode_gop(g)
        assert rep.frames == 30 and rep.first_is_key
    assert decode_gop(got[-1]).first_is_key


def test_resolution_switch_opens_a_new_epoch(isolated: Settings, media: dict[str, Path], caplog):
    caplog.set_level("WARNING")
    code, agent = run_to_end(isolated, AgentConfig("bad-switch", f"file:{media['switch']}", use_registry=False,
                                                   status_interval=0))
    assert code == EXIT_OK
    got = sorted((g for _, g in consume(isolated, agent.stats.published, timeout=20)), key=lambda g: g["gop_index"])
    sizes = [(g["video"]["width"], g["video"]["height"]) for g in got]
    epochs = [g["epoch"] for g in got]
    assert sizes[0] == (320, 240) and sizes[-1] == (480, 270)
    k = sizes.index((480, 270))
    assert epochs[:k] == [0] * k and set(epochs[k:]) == {1}
    assert [g["gop_index"] for g in got] == list(range(got[0]["gop_index"], got[0]["gop_index"] + len(got)))
    for g in got:  # each GOP decodes with the extradata it carries, at its own size
        rep = decode_gop(g)
        assert rep.first_is_key and (rep.width, rep.height) == (g["video"]["width"], g["video"]["height"])
    assert any("320x240 -> 480x270" in r.getMessage() for r in caplog.records)


def test_irregular_gops_are_refused_by_name_without_normalize(isolated: Settings, media: dict[str, Path], capsys):
    code, agent = run_to_end(isolated, AgentConfig("bad-irr", f"file:{media['irregular']}", normalize="never",
                                                   use_registry=False, status_interval=0))
    assert code == EXIT_REFUSED
    assert "irregular GOP" in capsys.readouterr().err and "--normalize" in agent.refusals[-1]


def test_normalize_turns_irregular_gops_into_fixed_ones(isolated: Settings, media: dict[str, Path]):
    code, agent = run_to_end(isolated, AgentConfig("norm", f"file:{media['irregular']}", normalize=True,
                                                   gop_seconds=1.0, use_registry=False, status_interval=0))
    assert code == EXIT_OK
    got = sorted((g for _, g in consume(isolated, agent.stats.published, timeout=20)), key=lambda g: g["gop_index"])
    assert len(got) == 4
    for g in got:
        rep = decode_gop(g)
        assert rep.frames == 30 and rep.first_is_key  # cut at every 1 s, never at the forced 1.5 s keyframe
        assert g["pts_start"] % 90000 == 0 or g is got[0]
        assert g["audio"]["sample_rate"] == 48000 and g["audio_packets"]


def test_open_gops_are_refused_by_name_and_normalize_fixes_them(isolated: Settings, media: dict[str, Path]):
    code, agent = run_to_end(isolated, AgentConfig("bad-open", f"file:{media['open']}", normalize="never",
                                                   use_registry=False, status_interval=0))
    assert code == EXIT_REFUSED
    assert "not an IDR" in agent.refusals[-1] or "open GOP" in agent.refusals[-1]
    code, agent = run_to_end(isolated, AgentConfig("norm-open", f"file:{media['open']}", normalize=True,
                                                   gop_seconds=1.0, use_registry=False, status_interval=0))
    assert code == EXIT_OK and agent.stats.published >= 4


def test_other_codecs_are_refused_by_name_and_normalize_re_encodes_them(isolated: Settings,
                                                                        media: dict[str, Path]):
    code, agent = run_to_end(isolated, AgentConfig("bad-hevc", f"file:{media['hevc']}", normalize="never",
                                                   use_registry=False, status_interval=0))
    assert code == EXIT_REFUSED and "hevc, not H.264" in agent.refusals[-1]
    code, agent = run_to_end(isolated, AgentConfig("norm-hevc", f"file:{media['hevc']}", normalize=True,
                                                   gop_seconds=1.0, use_registry=False, status_interval=0))
    assert code == EXIT_OK
    got = sorted((g for _, g in consume(isolated, agent.stats.published, timeout=20)), key=lambda g: g["gop_index"])
    assert [g["video"]["codec"] for g in got] == ["h264", "h264"]
    assert [decode_gop(g).frames for g in got] == [30, 30]  # every source frame, drained decoder included
