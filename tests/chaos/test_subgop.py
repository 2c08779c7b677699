"""Sub-GOP streaming under a fault (issue 15): kill -9 of the encoder that owns a GOP while its parts are being
published. The next owner re-does the GOP from its first chunk (its offsets were not committed), so the GOP
still appears complete, every part already listed keeps its bytes (the re-done parts are the same bytes and
the packager never writes a part twice), and media sequence numbers stay continuous (no gap over listed parts).

The pipeline is the chaos harness's (tests/chaos/harness.py, used as it is): private broker, two testsrc
ingests (primary + backup), two encoders, packager, api, qoe; LOW latency, 1 s GOPs in parts.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path

import pytest

from floodlight.partitioner import gop_partition
from tests.chaos.harness import STREAM, WATCH, ChaosPipeline, Watcher
from tests.support import wait_until


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    p = ChaosPipeline(tmp_path_factory.mktemp("chaos-subgop"))
    watcher = Watcher(p.store_root)
    try:
        p.start()
        p.wait_api(90)
        watcher.start()
        wait_until(lambda: watcher.last_msn >= 4, 120, interval=0.5,
                   what=f"the chaos stream to list 5 segments\n{p.log_tail('packager')}\n{p.log_tail('encoder-1')}")
        yield p, watcher
    finally:
        watcher.stop()
        p.stop()


def owners(log_dir: Path) -> dict[int, str]:
    """partition -> encoder member that holds it now, from the members' own logs (assigned/revoked)."""
    held: dict[str, set[int]] = {}
    events: list[tuple[str, str, str, list[int]]] = []
    for name in ("encoder-1", "encoder-2"):
        path = log_dir / f"{name}.log"
        for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("msg") in ("partitions assigned", "partitions revoked", "partitions lost"):
                events.append((rec.get("ts", ""), name, rec["msg"], rec.get("partitions", [])))
    for _ts, name, msg, parts in sorted(events):
        mine = held.setdefault(name, set())
        if msg == "partitions assigned":
            for other in held.values():
                other.difference_update(parts)
            mine.update(parts)
        else:
            mine.difference_update(parts)
    return {part: name for name, parts in held.items() for part in parts}


def parts_listed(text: str, msn: int) -> list[str]:
    return re.findall(rf'#EXT-X-PART:[^\n]*URI="({msn}\.\d+\.m4s)"', text)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_kill_the_encoder_owning_a_gop_mid_gop(pipe) -> None:
    p, watcher = pipe
    rendition_dir = p.store_root / "live" / STREAM / WATCH
    wait_until(lambda: (p.store_root / "packager" / "live" / STREAM / "state.json").exists(), 30,
               what="the packager's first checkpoint")
    state = json.loads((p.store_root / "packager" / "live" / STREAM / "state.json").read_text())
    base = state["base_gop"]
    # the GOP being captured a little ahead (testsrc: gop_index = the wall-clock second), and who owns it
    gop = int(time.time()) + 2
    by_part = owners(p.tmp / "logs")
    victim = by_part.get(gop_partition(STREAM, gop, p.settings.topic_partitions))
    assert victim in ("encoder-1", "encoder-2"), f"no owner for GOP {gop}: {by_part}"
    msn = gop - base
    # mid-GOP: wait until its first parts are listed, then kill the member transcoding it
    wait_until(lambda: len(parts_listed((rendition_dir / "playlist.m3u8").read_text(), msn)) >= 2, 15, 0.02,
               what=f"parts of segment {msn} listed")
    p.kill9(victim)
    killed_at = time.monotonic()
    text = (rendition_dir / "playlist.m3u8").read_text()
    assert f"\n{msn}.m4s" not in text, "the GOP was already complete when its encoder was killed"
    before = {name: digest(rendition_dir / name) for name in parts_listed(text, msn)}
    assert len(before) >= 2

    # the GOP still appears complete: the other member re-does it once Kafka gives it the partition
    wait_until(lambda: f"\n{msn}.m4s" in (rendition_dir / "playlist.m3u8").read_text(), 60, 0.2,
               what=f"segment {msn} complete after the kill\n{p.log_tail('packager')}")
    recovered_s = time.monotonic() - killed_at
    p.launch(victim)
    all_parts = []  # the segment's parts in the store (the live playlist lists only the newest parts)
    while (rendition_dir / f"{msn}.{len(all_parts)}.m4s").exists():
        all_parts.append(f"{msn}.{len(all_parts)}.m4s")
    assert len(all_parts) > len(before), all_parts
    for name, d in before.items():  # parts already listed: unchanged
        assert digest(rendition_dir / name) == d, f"{name} changed after the encoder was killed"
    whole = (rendition_dir / f"{msn}.m4s").read_bytes()
    assert whole == b"".join((rendition_dir / n).read_bytes() for n in all_parts)  # the segment is its parts

    # MSNs continuous: no gap around the fault, the playlist never went back, nothing rewritten
    settle = watcher.last_msn + 3
    wait_until(lambda: watcher.last_msn >= settle, 60, 0.5, what="the stream to keep advancing")
    dvr = (rendition_dir / "dvr.m3u8").read_text()
    seq = int(re.search(r"#EXT-X-MEDIA-SEQUENCE:(\d+)", dvr).group(1))
    uris = [ln for ln in dvr.splitlines() if ln and not ln.startswith("#")]
    assert uris == [f"{m}.m4s" for m in range(seq, seq + len(uris))]
    window = dvr.split(f"\n{msn - 3}.m4s")[-1].split(f"\n{msn + 3}.m4s")[0]
    assert "#EXT-X-GAP" not in window, window
    assert watcher.violations == [], watcher.violations[:10]
    packager_log = (p.tmp / "logs" / "packager.log").read_text(errors="replace")
    assert "came again with different bytes" not in packager_log
    print(f"\nkilled {victim} mid-GOP {gop} (msn {msn}, {len(before)} parts listed); segment complete "
          f"{recovered_s:.1f} s later with {len(all_parts)} parts, listed parts unchanged")
