"""Multi-CDN content steering (issue 18): the pure decision rule with a fake clock, pathway parsing, the
steering manifest, and the steered master playlist and MPD."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from api.rewrite import sign_mpd, sign_playlist, steer_master, steer_mpd
from api.steering import ProbeTracker, Qoe, Rule, Steerer, parse_pathways, qoe_cost, steering_manifest

HOLD = 30.0
GOOD = Qoe(sessions=3, beacons=30, stall_ms=200, watch_ms=60_000, errors=0, latency_p50_ms=3000, startup_p50_ms=900)
STALLING = Qoe(sessions=3, beacons=30, stall_ms=30_000, watch_ms=30_000, errors=3, latency_p50_ms=3000)


class World:
    """Two pathways, probes and QoE under the test's control; `t` is the fake clock."""

    def __init__(self, *ways: str) -> None:
        self.ways = list(ways or ("a", "b"))
        self.t = 1000.0
        self.probes = {p: ProbeTracker() for p in self.ways}
        self.qoe: dict[str, Qoe] = {}
        self.drained: set[str] = set()
        self.pinned: str | None = None
        self.steerer = Steerer(self.ways, Rule(hold_s=HOLD, margin=0.02))
        for p in self.ways:
            self.probes[p].record(self.t - 3600, True)  # healthy for an hour

    def probe(self, pathway: str, ok: bool) -> None:
        self.probes[pathway].record(self.t, ok, "" if ok else "ConnectError")

    def step(self, dt: float = 0.0) -> list[str]:
        self.t += dt
        since = {p: tr.healthy_since for p, tr in self.probes.items()}
        return self.steerer.update(self.t, since, self.qoe, self.drained, self.pinned).priority

    def run_until_first(self, pathway: str, limit_s: float, every_s: float = 1.0) -> float | None:
        """Seconds (of fake time) until `pathway` is first, evaluating every `every_s`; None if never."""
        start = self.t
        while self.t - start <= limit_s:
            if self.step()[0] == pathway:
                return self.t - start
            self.t += every_s
        return None


def test_pathways_parse_in_preference_order_and_bad_ones_are_refused() -> None:
    ways = parse_pathways(" a=http://127.0.0.1:8080/ , cdn-2=https://cdn.example/live-edge")
    assert [(p.id, p.base_url) for p in ways] == [("a", "http://127.0.0.1:8080"), ("cdn-2", "https://cdn.example/live-edge")]
    assert parse_pathways("") == []
    a = parse_pathways("a=https://cdn-a.example|http://edge-a:8080/")[0]
    assert (a.base_url, a.admin_url) == ("https://cdn-a.example", "http://edge-a:8080")
    assert ways[0].admin_url == "http://127.0.0.1:8080"
    for bad in ("a", "a=ftp://x", "a b=http://x", "a=http://x,a=http://y", "a=http://x?q=1", "=http://x",
                "a=http://x|edge:8080"):
        with pytest.raises(ValueError):
            parse_pathways(bad)


def test_declared_order_without_evidence_and_a_failing_probe_drops_at_once() -> None:
    w = World()
    assert w.step() == ["a", "b"]
    w.probe("a", False)
    assert w.step() == ["b", "a"]  # the same evaluation: no hold for going down
    assert w.steerer.changes == 1


def test_a_recovered_pathway_comes_back_only_after_the_hold_window() -> None:
    w = World()
    w.probe("a", False)
    assert w.step()[0] == "b"
    w.step(5)
    w.probe("a", True)  # back up at t0
    took = w.run_until_first("a", 120)
    assert took is not None and HOLD <= took <= HOLD + 1, took
    # a blip inside the window starts the hold again
    w.probe("a", False)
    assert w.step(1)[0] == "b"
    w.step(1)
    w.probe("a", True)
    w.step(HOLD - 5)
    w.probe("a", False)
    w.step(1)
    w.probe("a", True)
    took = w.run_until_first("a", 120)
    assert took is not None and HOLD <= took <= HOLD + 1, took


def test_qoe_decides_with_a_margin_and_a_hold() -> None:
    w = World()
    w.qoe = {"a": GOOD, "b": GOOD}
    assert w.step() == ["a", "b"]
    # b slightly better (under the margin): a keeps first, it is also the declared preference
    w.qoe = {"a": Qoe(**{**GOOD.__dict__, "stall_ms": 900}), "b": GOOD}
    assert w.run_until_first("b", 3 * HOLD) is None
    # b clearly better: it takes over after one hold window, not before
    w.qoe = {"a": Qoe(**{**GOOD.__dict__, "stall_ms": 6000}), "b": GOOD}
    took = w.run_until_first("b", 3 * HOLD)
    assert took is not None and HOLD <= took <= HOLD + 1
    # equal again: a (declared first) returns after a hold window
    w.qoe = {"a": GOOD, "b": GOOD}
    took = w.run_until_first("a", 3 * HOLD)
    assert took is not None and HOLD <= took <= HOLD + 1


def test_pathways_are_compared_on_the_metrics_both_have() -> None:
    # b took over sessions mid-play (no startups there); a started them: a's startup time must not count against it
    w = World()
    w.probe("a", False)
    assert w.step()[0] == "b"
    w.probe("a", True)
    w.qoe = {"a": Qoe(**{**GOOD.__dict__, "startup_p50_ms": 3500}),
             "b": Qoe(**{**GOOD.__dict__, "startup_p50_ms": None})}
    took = w.run_until_first("a", 3 * HOLD)
    assert took is not None and HOLD <= took <= HOLD + 1


def test_a_first_pathway_whose_viewers_stall_drops_at_once_and_stays_down_while_they_do() -> None:
    w = World()
    w.qoe = {"a": STALLING, "b": GOOD}
    assert w.step() == ["b", "a"]
    assert "QoE failing" in w.steerer.update(w.t, {p: t.healthy_since for p, t in w.probes.items()}, w.qoe).reasons["a"]
    assert w.run_until_first("a", 3 * HOLD) is None  # its bad minute keeps it out (probes pass all along)
    w.qoe = {"a": GOOD, "b": GOOD}
    assert w.run_until_first("a", 3 * HOLD) is not None


def test_too_little_viewing_is_no_evidence() -> None:
    rule = Rule()
    assert qoe_cost(Qoe(sessions=1, beacons=1, stall_ms=5000, watch_ms=1000), rule) is None
    assert qoe_cost(GOOD, rule) == pytest.approx(200 / 60_200 + 0.03 + 0.009, abs=1e-6)
    w = World()
    w.qoe = {"a": Qoe(sessions=1, beacons=1, stall_ms=5000, watch_ms=1000)}  # 6 s of viewing: not judged
    assert w.step() == ["a", "b"]


def test_operator_drain_and_pin() -> None:
    w = World("a", "b", "c")
    w.drained = {"a"}
    assert w.step() == ["b", "c", "a"]  # at once; the drained one stays listed, last
    w.drained = set()
    assert w.step(1)[0] == "b"  # undrained: back only after the hold
    assert w.run_until_first("a", 2 * HOLD) is not None
    w.pinned = "c"
    assert w.step()[0] == "c"  # a pin is immediate
    w.probe("c", False)
    assert w.step()[0] != "c"  # ...but never onto a pathway whose probes fail
    w.probe("c", True)
    assert w.step(1)[0] == "c"


def test_everything_down_keeps_a_usable_order() -> None:
    w = World()
    w.probe("a", False)
    w.probe("b", False)
    assert sorted(w.step()) == ["a", "b"]


def test_steering_manifest_has_the_spec_keys() -> None:
    m = steering_manifest(["b", "a"], 10, "http://127.0.0.1:8000/api/v1/steering/demo")
    assert m == {"VERSION": 1, "TTL": 10, "RELOAD-URI": "http://127.0.0.1:8000/api/v1/steering/demo",
                 "PATHWAY-PRIORITY": ["b", "a"]}


MASTER = """#EXTM3U
#EXT-X-VERSION:9
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="aud",NAME="audio",LANGUAGE="und",DEFAULT=YES,AUTOSELECT=YES,URI="audio/playlist.m3u8"
#EXT-X-STREAM-INF:BANDWIDTH=1100000,AVERAGE-BANDWIDTH=1000000,CODECS="avc1.64001e,mp4a.40.2",RESOLUTION=640x360,AUDIO="aud"
360p/playlist.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=500000,AVERAGE-BANDWIDTH=450000,CODECS="avc1.64000d,mp4a.40.2",RESOLUTION=256x144,AUDIO="aud"
144p/playlist.m3u8
"""
WAYS = [("a", "http://127.0.0.1:8080"), ("b", "http://127.0.0.1:8081")]
SERVER = "http://127.0.0.1:8000/api/v1/steering/s1"


def _attrs(line: str) -> dict[str, str]:
    return {k: v.strip('"') for k, v in re.findall(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)', line.partition(":")[2])}


def test_master_lists_every_variant_once_per_pathway_with_tokens() -> None:
    out = sign_playlist(steer_master(MASTER, WAYS, "/live/s1/master.m3u8", "b", SERVER), "k1.99.sig")
    lines = out.splitlines()
    steering = [ln for ln in lines if ln.startswith("#EXT-X-CONTENT-STEERING:")]
    assert steering == [f'#EXT-X-CONTENT-STEERING:SERVER-URI="{SERVER}",PATHWAY-ID="b"']  # no token on it
    variants = [(_attrs(ln), lines[i + 1]) for i, ln in enumerate(lines) if ln.startswith("#EXT-X-STREAM-INF:")]
    assert len(variants) == 4
    for pid, base in WAYS:
        mine = [(a, uri) for a, uri in variants if a["PATHWAY-ID"] == pid]
        assert [a["STABLE-VARIANT-ID"] for a, _ in mine] == ["360p", "144p"]
        assert [uri for _, uri in mine] == [f"{base}/live/s1/{r}/playlist.m3u8?token=k1.99.sig"
                                            for r in ("360p", "144p")]
        assert {a["AUDIO"] for a, _ in mine} == {f"aud-{pid}"}
        assert all(a["CODECS"] and a["BANDWIDTH"] for a, _ in mine)
    media = [_attrs(ln) for ln in lines if ln.startswith("#EXT-X-MEDIA:")]
    assert [(m["GROUP-ID"], m["URI"]) for m in media] == [
        (f"aud-{pid}", f"{base}/live/s1/audio/playlist.m3u8?token=k1.99.sig") for pid, base in WAYS]
    assert lines[:3] == ["#EXTM3U", "#EXT-X-VERSION:9", "#EXT-X-INDEPENDENT-SEGMENTS"]


def test_mpd_gets_a_base_url_per_pathway_and_content_steering() -> None:
    mpd = ('<?xml version="1.0" encoding="UTF-8"?>\n<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="dynamic">'
           '<Period id="p0"><AdaptationSet><Representation id="360p"><SegmentTemplate media="360p/$Number$.m4s" '
           'initialization="360p/init.mp4"/></Representation></AdaptationSet></Period></MPD>\n')
    out = sign_mpd(steer_mpd(mpd, WAYS, "/live/s1/manifest.mpd", "a", SERVER), "k1.99.sig")
    ns = {"d": "urn:mpeg:dash:schema:mpd:2011"}
    root = ET.fromstring(out.split("\n", 1)[1])
    assert [(b.get("serviceLocation"), b.text) for b in root.findall("d:BaseURL", ns)] == [
        ("a", "http://127.0.0.1:8080/live/s1/"), ("b", "http://127.0.0.1:8081/live/s1/")]
    cs = root.find("d:ContentSteering", ns)
    assert cs is not None and cs.text == SERVER and cs.get("defaultServiceLocation") == "a"
    tmpl = root.find(".//d:SegmentTemplate", ns)
    assert tmpl is not None and tmpl.get("media") == "360p/$Number$.m4s?token=k1.99.sig"

