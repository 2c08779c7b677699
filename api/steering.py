"""Multi-CDN content steering: which pathway (CDN / edge) players should use, and in what order (pure).

No I/O and no clock of its own: the api's steering service (api/cdn.py) feeds it probe results and the
last minute of QoE per `cdn_pop`, and asks for the priority at a time it passes in, so the tests drive
it with a fake clock.

The decision rule, per stream (numbers are the `Rule` defaults, settings override some):

1. **Down drops at once.** A pathway whose health probe failed last time (error, non-2xx answer or no
   answer within the probe timeout) goes to the end of the list at the next evaluation.
2. **QoE failing drops at once.** A pathway whose last minute shows a stall ratio (stall / (stall +
   watch time)) >= 25 % or an error rate (error beacons / beacons) >= 25 %, on at least 30 s of viewing,
   is treated like a down one, after the healthy ones.
3. **Operator overrides.** A pinned pathway is first whenever its probes pass; drained pathways are
   listed last (still listed, so a player that has nothing else can use them).
4. **Hysteresis for moving up.** The first pathway keeps its place while it is usable. Another usable
   pathway C replaces it only after C has been, continuously for `hold_s` (30 s), both healthy and
   better: QoE cost lower by at least `margin` (0.02), or declared earlier in FLOODLIGHT_PATHWAYS (the
   operator's preferred CDN) with a cost no more than `margin` higher. So a recovering CDN brings new
   sessions back only after a whole hold window of passing probes and acceptable QoE.
5. The others follow the first by (usable, cost, declared order).

QoE cost = stall ratio + error rate + 0.01 per second of median latency + 0.01 per second of median
startup time, the latter two only when every pathway judged has samples of them; a pathway with less than 30 s
of viewing in the window has no cost (it counts as equal
to whatever it is compared with, so only the declared order decides).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

PATHWAY_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")  # the specs' legal Pathway ID characters
STEERING_VERSION = 1


@dataclass(frozen=True)
class Pathway:
    id: str
    base_url: str  # what players get: scheme://host[:port][/prefix], no trailing slash
    edge_url: str = ""  # where the api reaches the edge (probes, BANs); default base_url

    @property
    def admin_url(self) -> str:
        return self.edge_url or self.base_url


def parse_pathways(spec: str) -> list[Pathway]:
    """'a=http://127.0.0.1:8080,b=http://127.0.0.1:8081' -> pathways in preference order (ValueError if bad).
    `id=PUBLIC|EDGE`: players get PUBLIC, the api probes and purges EDGE (e.g. a=https://cdn-a.example|http://edge:8080)."""
    out: list[Pathway] = []
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        pid, sep, urls = item.partition("=")
        pid = pid.strip()
        if not sep or not PATHWAY_ID_RE.fullmatch(pid):
            raise ValueError(f"bad pathway {item!r}: use id=http(s)://host[:port] with id of [A-Za-z0-9._-]")
        url, _, edge = (u.strip().rstrip("/") for u in urls.partition("|"))
        for u in (url, edge) if edge else (url,):
            parts = urlsplit(u)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
                raise ValueError(f"bad pathway URL {u!r} for {pid!r}: use http(s)://host[:port][/prefix]")
        if any(p.id == pid for p in out):
            raise ValueError(f"pathway {pid!r} declared twice")
        out.append(Pathway(pid, url, edge))
    return out


@dataclass(frozen=True)
class Qoe:
    """The last minute of one pathway (cdn_pop) for one stream, from ClickHouse."""

    sessions: int = 0
    beacons: int = 0
    stall_ms: int = 0
    watch_ms: int = 0
    errors: int = 0
    latency_p50_ms: float | None = None
    startup_p50_ms: float | None = None

    @property
    def viewing_ms(self) -> int:
        return self.stall_ms + self.watch_ms

    @property
    def stall_ratio(self) -> float:
        return self.stall_ms / self.viewing_ms if self.viewing_ms else 0.0

    @property
    def error_rate(self) -> float:
        return self.errors / self.beacons if self.beacons else 0.0


@dataclass(frozen=True)
class Rule:
    hold_s: float = 30.0
    margin: float = 0.02
    min_viewing_s: float = 30.0
    fail_stall_ratio: float = 0.25
    fail_error_rate: float = 0.25
    latency_cost_per_s: float = 0.01
    startup_cost_per_s: float = 0.01


def qoe_terms(q: Qoe | None, rule: Rule) -> dict[str, float] | None:
    """The parts of a pathway's QoE cost (latency and startup only when the window has samples of them);
    None when the window holds too little viewing to judge."""
    if q is None or q.viewing_ms < rule.min_viewing_s * 1000:
        return None
    terms = {"stalls": q.stall_ratio, "errors": q.error_rate}
    if q.latency_p50_ms:
        terms["latency"] = rule.latency_cost_per_s * q.latency_p50_ms / 1000
    if q.startup_p50_ms:
        terms["startup"] = rule.startup_cost_per_s * q.startup_p50_ms / 1000
    return terms


def qoe_cost(q: Qoe | None, rule: Rule, only: set[str] | frozenset[str] | None = None) -> float | None:
    """Lower is better; None when there is too little viewing to judge. `only`: the terms to count (pathways are
    compared on the terms all of them have: a pathway nobody started a session on has no startup time, and must
    not look better for it)."""
    terms = qoe_terms(q, rule)
    if terms is None:
        return None
    return round(sum(v for k, v in terms.items() if only is None or k in only), 6)


def qoe_failing(q: Qoe | None, rule: Rule) -> bool:
    if q is None or q.viewing_ms < rule.min_viewing_s * 1000:
        return False
    return q.stall_ratio >= rule.fail_stall_ratio or q.error_rate >= rule.fail_error_rate


@dataclass
class ProbeTracker:
    """Health of one pathway from its probes: down at the first failure, healthy_since = the first passing
    probe after the last failure (the hold window counts from there)."""

    healthy_since: float | None = None
    last_error: str = "not probed yet"
    failures: int = 0
    probes: int = 0

    def record(self, now: float, ok: bool, error: str = "") -> None:
        self.probes += 1
        if ok:
            if self.healthy_since is None:
                self.healthy_since = now
            self.last_error = ""
        else:
            self.healthy_since = None
            self.failures += 1
            self.last_error = error or "failed"

    @property
    def healthy(self) -> bool:
        return self.healthy_since is not None


@dataclass
class Decision:
    priority: list[str]
    reasons: dict[str, str]
    costs: dict[str, float | None]


@dataclass
class Steerer:
    """The hysteresis state of one stream: the published priority and how long challengers have been better."""

    pathways: list[str]
    rule: Rule = field(default_factory=Rule)
    order: list[str] = field(default_factory=list)
    better_since: dict[str, float] = field(default_factory=dict)
    changes: int = 0

    def __post_init__(self) -> None:
        if not self.order:
            self.order = list(self.pathways)

    @property
    def leader(self) -> str:
        return self.order[0]

    def update(self, now: float, healthy_since: dict[str, float | None], qoe: dict[str, Qoe],
               drained: frozenset[str] | set[str] = frozenset(), pinned: str | None = None) -> Decision:
        """Re-evaluate at `now`; returns the priority players get (see the module docstring for the rule)."""
        rule = self.rule
        rank = {p: i for i, p in enumerate(self.pathways)}
        judged = [t for t in (qoe_terms(qoe.get(p), rule) for p in self.pathways) if t is not None]
        shared = frozenset.intersection(*(frozenset(t) for t in judged)) if judged else frozenset()
        cost = {p: qoe_cost(qoe.get(p), rule, shared) for p in self.pathways}
        healthy = {p: healthy_since.get(p) is not None for p in self.pathways}
        failing = {p: qoe_failing(qoe.get(p), rule) for p in self.pathways}
        usable = {p: healthy[p] and not failing[p] and p not in drained for p in self.pathways}
        reasons: dict[str, str] = {}

        def tier(p: str) -> int:
            if p == pinned and healthy[p]:
                return 0
            if usable[p]:
                return 1
            if healthy[p] and p not in drained:
                return 2  # probes pass, QoE failing
            if healthy[p]:
                return 3  # drained
            return 4  # down

        def key(p: str) -> tuple[int, float, int]:
            c = cost[p]
            return tier(p), (c if c is not None else 0.0), rank[p]

        leader = self.leader
        if pinned in rank and healthy[pinned]:
            new_leader = pinned
            reasons[pinned] = "pinned by an operator"
        elif not usable[leader]:
            # a failing first drops at once: the best usable one (else the least bad) takes over now
            new_leader = min(self.pathways, key=key)
            reasons[leader] = _why_not(leader, healthy, failing, drained)
        else:
            new_leader = leader
            challengers = []
            for c in self.pathways:
                if c == leader or not usable[c] or not self._beats(c, leader, cost, rank):
                    self.better_since.pop(c, None)
                    continue
                since = self.better_since.setdefault(c, now)
                # the hold counts only while C has been healthy too (its probes' healthy_since)
                since = max(since, healthy_since.get(c) or now)
                if now - since >= rule.hold_s:
                    challengers.append(c)
                else:
                    reasons[c] = f"better than {leader}, held {now - since:.1f} of {rule.hold_s:.0f} s"
            if challengers:
                new_leader = min(challengers, key=key)
                reasons[new_leader] = f"better than {leader} for {rule.hold_s:.0f} s"
        rest = sorted((p for p in self.pathways if p != new_leader), key=key)
        order = [new_leader, *rest]
        if order[0] != self.order[0]:
            self.changes += 1
            self.better_since.clear()
        self.order = order
        for p in self.pathways:
            reasons.setdefault(p, "first" if p == order[0] and usable[p] else
                               ("usable" if usable[p] else _why_not(p, healthy, failing, drained)))
        return Decision(list(order), reasons, cost)

    def _beats(self, c: str, leader: str, cost: dict[str, float | None], rank: dict[str, int]) -> bool:
        cc, cl = cost[c], cost[leader]
        if cc is None or cl is None:  # no evidence on one side: only the declared preference decides
            return rank[c] < rank[leader]
        if cc + self.rule.margin <= cl:
            return True
        return rank[c] < rank[leader] and cc <= cl + self.rule.margin


def _why_not(p: str, healthy: dict[str, bool], failing: dict[str, bool], drained: frozenset[str] | set[str]) -> str:
    if not healthy[p]:
        return "down (health probe failing)"
    if p in drained:
        return "drained by an operator"
    if failing[p]:
        return "QoE failing (stalls or errors over the limit)"
    return "usable"


def steering_manifest(priority: list[str], ttl_s: int, reload_uri: str | None = None) -> dict[str, object]:
    """The steering manifest: HLS Content Steering and DASH-IF content steering share these keys (dash.js reads
    PATHWAY-PRIORITY against the MPD's BaseURL@serviceLocation)."""
    out: dict[str, object] = {"VERSION": STEERING_VERSION, "TTL": int(ttl_s)}
    if reload_uri:
        out["RELOAD-URI"] = reload_uri
    out["PATHWAY-PRIORITY"] = list(priority)
    return out
