"""The Varnish edge in front of the api origin(s) (DESIGN §8): VCL generation and a local runner.

Why Varnish and not nginx (issue 14): LL-HLS puts thousands of identical requests on an object that
does not exist yet - the next part, the playlist that will list it. An edge must send one of them to
the origin and answer all the others the moment that one answer arrives. nginx's `proxy_cache_lock`
does send one, but re-checks the lock of every waiter on a 500 ms timer, so a coalesced herd is
released up to half a second late (a plain hls.js page played 6.5 s behind through it vs 3.1 s
straight to the api), and `proxy_cache_use_stale updating` answered blocking requests with copies
that did not hold the part asked for. Varnish parks coalesced requests on the object's waiting list
and reschedules them when the fetch delivers its headers: event-driven, no poll. Apache Traffic
Server's read-while-writer polls too (`open_read_retry_time`).

What the edge does, in order of importance:
- one cache object per request path for immutable media (init, segments, parts) whatever the token,
  so every viewer of a segment shares one origin fetch; a request for the hinted next part waits on
  the waiting list of the one fetch the origin holds until the part exists;
- playlists and MPDs keyed by the full URI (`_HLS_msn/_HLS_part/_HLS_skip` and token included) for
  the origin's max-age, never served past it (no grace): a blocking request is answered only by the
  origin's answer to that very request, which the origin gives only once the part is listed; a live media
  playlist asked without `_HLS_msn` (what a player joins from) for 0.1 s only, so a joiner starts from the
  live edge, not from a copy up to the max-age old; far-ahead
  requests get the origin's 400; holds that time out get its 503 (both kept a moment so the coalesced
  waiters get them too, not a refetch each);
- checks the playback token of every media request, cache hits included: a first pass asks the api's
  /edge/authz (X-Original-URI, X-Playback-Token) and caches the verdict per (stream, token, country)
  for the max-age the api gives (<= 60 s, 403 for 5 s); only a 200 lets the request restart as the
  media request it was. The token is the raw first `token=` argument: the verdict's cache key and the
  header the api checks are that one string;
- stamps the trusted country header, overwriting whatever the client sent;
- refuses (400) any request whose path is not already canonical - percent-escapes, doubled slashes,
  dot segments, a fragment, the absolute form - so the token check, the media cache key and the
  origin all see one string (issue 13);
- keeps operator endpoints (/metrics, /readyz, /edge/) off the public side (404);
- balances over one or more api processes (round robin; a connection refused retries on the next),
  every one of which follows floodlight.manifests, so any of them can answer any request.

`render_vcl(...)` is the whole configuration (also compose/varnish/edge.vcl); `start_edge` runs
varnishd in the foreground as a child process with its own working directory, port and storage.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from floodlight.settings import Settings, refuse_default_secrets

log = logging.getLogger("api.edge")
FIRST_BYTE_TIMEOUT_S = 75  # longer than any blocking hold (3 x 4 s target duration; benches hold 60 s)
ERROR_TTL = "0.5s"  # 400/503 answers to blocking requests: long enough for the coalesced waiters only
# A media playlist asked without _HLS_msn is what a player loads when it joins, and it places its start from that
# copy's edge as if it were current (hls.js 1.7: its age counts from the response, not from the Age header, and it
# never catches up): a copy kept for the origin's max-age (1 s) starts a joiner up to 1 s further back, 0.5 s on
# average while other viewers keep it warm (measured with a poller keeping it warm, 6 joins each at 640x360:
# +0.18 s mean with 1 s, +0.04 s with 0.1 s - both within the 0.15-0.2 s join-to-join spread). Kept this long
# instead: at most 10 origin requests/s per rendition per edge.
JOIN_PLAYLIST_TTL = "0.1s"

# varnishd run-time parameters: a herd of thousands parked on one object is woken in one go
# (rush_exponent: waiters rescheduled per completed request; with the default 3 a herd of 2,000 is
# released in ~7 generations), with worker threads ready for it and a deep accept queue
PARAMS = {
    "rush_exponent": "512",
    "thread_pools": "2",
    "thread_pool_min": "200",
    "thread_pool_max": "5000",
    "listen_depth": "4096",
    "timeout_idle": "30",
    "http_gzip_support": "off",  # the origin sends nothing compressible enough to matter; bodies pass as they are
    "max_restarts": "2",
}

_MEDIA = r"^/(live|vod)/[a-z0-9][a-z0-9-]*/[a-z0-9][a-z0-9_-]*/[A-Za-z0-9][A-Za-z0-9_.-]*\.(m4s|mp4)(\?|$)"
_DOCUMENT = r"^[^?]*\.(m3u8|mpd)(\?|$)"
_JOIN_PLAYLIST = r"^/live/[^/?]+/[^/?]+/[^/?]+\.m3u8(\?|$)"  # a rendition's live playlist, not the master
# a path nginx/browsers would decode or normalise, or one not in origin form: percent-escapes, doubled
# slashes, dot segments, a fragment (players never send them for our paths)
_NONCANONICAL = r"^[^?]*(%|//|/\.\.?(/|\?|$)|#)"
# the first `token=` argument, raw (undecoded): what the verdict is keyed on and what the api checks
_TOKEN = r"^[^?]*\?(?:[^&]*&)*?token=([^&#]*).*$"
_STREAM = r"^/(live|vod)/([a-z0-9][a-z0-9-]*)/.*$"  # (scope, stream) of a path: what a BAN names


def _is_ip(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _split(origin: str) -> tuple[str, str]:
    host, _, port = origin.rpartition(":")
    return host.strip("[]") or "127.0.0.1", port


def render_vcl(*, origins: list[str], country: str, geo_header: str = "X-Country-Code") -> str:
    """The edge's VCL for varnishd 7.x: backends `origins` ("host:port", one per api process)."""
    if not origins:
        raise ValueError("the edge needs at least one origin")
    purgers = "\n".join(f'  "{h}";' if _is_ip(h) else f'  ("{h}");'  # a name that does not resolve is skipped
                         for h in dict.fromkeys(["127.0.0.1", "::1", *(_split(o)[0] for o in origins)]))
    backends = "\n".join(f"""backend fl_api{i} {{
  .host = "{host}";
  .port = "{port}";
  .connect_timeout = 2s;
  .first_byte_timeout = {FIRST_BYTE_TIMEOUT_S}s;
  .between_bytes_timeout = 60s;
}}""" for i, (host, port) in enumerate(map(_split, origins)))
    adds = "\n".join(f"  fl_origin.add_backend(fl_api{i});" for i in range(len(origins)))
    return f"""vcl 4.1;
# Floodlight edge (generated by api/edge.py; do not edit by hand)
import directors;
import std;

{backends}

# who may send BAN requests (issue 18: the api purges a stream on takedown/end); they also need the
# secret FLOODLIGHT_EDGE_PURGE_SECRET from varnishd's environment in X-Fl-Purge-Secret
acl fl_purgers {{
{purgers}
}}

sub vcl_init {{
  new fl_origin = directors.round_robin();
{adds}
}}

sub vcl_recv {{
  if (req.method == "BAN") {{
    # purge: every object of one stream (media, playlists, token verdicts), or every token verdict
    if (client.ip !~ fl_purgers || std.getenv("FLOODLIGHT_EDGE_PURGE_SECRET") == ""
        || req.http.X-Fl-Purge-Secret != std.getenv("FLOODLIGHT_EDGE_PURGE_SECRET")) {{
      return (synth(403, "Forbidden"));
    }}
    if (req.url ~ "^/(live|vod)/[a-z0-9][a-z0-9-]*/?$") {{
      ban("obj.http.X-Fl-Stream == " + regsub(req.url, "^/(live|vod)/([a-z0-9][a-z0-9-]*)/?$", "\\1/\\2"));
      return (synth(200, "Banned"));
    }}
    if (req.url == "/edge/authz") {{
      ban("obj.http.X-Fl-Verdict == 1");
      return (synth(200, "Banned"));
    }}
    return (synth(400, "Bad Request"));
  }}
  if (req.restarts == 0) {{
    # headers only the edge may set
    unset req.http.X-Fl-Authorized;
    unset req.http.X-Fl-Media;
    unset req.http.X-Fl-Key;
    unset req.http.X-Original-URI;
    unset req.http.X-Playback-Token;
    # refuse any path that is not already canonical, so the check, the key and the origin read one string
    if (req.url !~ "^/" || req.url ~ "{_NONCANONICAL}") {{
      return (synth(400, "Bad Request"));
    }}
    # operator endpoints stay on the origin's private address
    if (req.url ~ "^/(metrics|readyz)(\\?|$)" || req.url ~ "^/edge/") {{
      return (synth(404, "Not Found"));
    }}
  }}
  # trusted country header: the edge decides it, never the client
  set req.http.{geo_header} = "{country}";
  set req.backend_hint = fl_origin.backend();
  if (req.method != "GET" && req.method != "HEAD") {{
    return (pass);
  }}
  if (req.url ~ "{_MEDIA}") {{
    unset req.http.Cookie;
    if (req.http.X-Fl-Authorized != "1") {{
      # first pass: the token verdict for (stream, token, country), cached; vcl_deliver restarts on a 200
      set req.http.X-Fl-Media = req.url;
      set req.http.X-Original-URI = req.url;
      set req.http.X-Playback-Token = "";
      if (req.url ~ "[?&]token=") {{
        set req.http.X-Playback-Token = regsub(req.url, "{_TOKEN}", "\\1");
      }}
      set req.http.X-Fl-Key = "authz|" + regsub(req.url, "^/(live|vod)/([a-z0-9][a-z0-9-]*)/.*$", "\\1/\\2")
        + "|" + req.http.X-Playback-Token + "|{country}";
      set req.url = "/edge/authz";
      return (hash);
    }}
    # immutable media: one object per path whatever the token (the token was checked above)
    set req.http.X-Fl-Key = "media|" + regsub(req.url, "\\?.*$", "");
    return (hash);
  }}
  if (req.url ~ "{_DOCUMENT}") {{
    unset req.http.Cookie;
    unset req.http.X-Fl-Key;
    return (hash);  # keyed by the full URI: _HLS_* and token included
  }}
  return (pass);  # keys, api, player: never cached here
}}

sub vcl_hash {{
  if (req.http.X-Fl-Key) {{
    hash_data(req.http.X-Fl-Key);
  }} else {{
    hash_data(req.url);
  }}
  return (lookup);
}}

sub vcl_backend_fetch {{
  unset bereq.http.X-Fl-Key;
  unset bereq.http.X-Fl-Media;
  unset bereq.http.X-Fl-Authorized;
  if (bereq.url != "/edge/authz") {{
    unset bereq.http.X-Original-URI;
    unset bereq.http.X-Playback-Token;
  }}
  return (fetch);
}}

sub vcl_backend_response {{
  set beresp.http.X-Fl-Origin = beresp.backend.name;
  # the stream an object belongs to, for bans (obj.http only, so the ban lurker can apply them)
  if (bereq.url == "/edge/authz") {{
    set beresp.http.X-Fl-Stream = regsub(bereq.http.X-Original-URI, "{_STREAM}", "\\1/\\2");
    set beresp.http.X-Fl-Verdict = "1";
  }} else {{
    set beresp.http.X-Fl-Stream = regsub(bereq.url, "{_STREAM}", "\\1/\\2");
  }}
  if (bereq.url == "/edge/authz") {{
    # verdicts live as long as the api says (<= 60 s, bounded by the token's expiry); anything else: 1 s
    set beresp.grace = 0s;
    set beresp.keep = 0s;
    if (beresp.ttl <= 0s || beresp.ttl > 60s) {{
      set beresp.ttl = 1s;
    }}
    return (deliver);
  }}
  if (bereq.url ~ "{_DOCUMENT}") {{
    # never past the origin's max-age: a blocking request is answered only by its own answer
    set beresp.grace = 0s;
    set beresp.keep = 0s;
    if (beresp.status == 200 && bereq.url ~ "{_JOIN_PLAYLIST}" && bereq.url !~ "[?&]_HLS_msn="
        && beresp.ttl > {JOIN_PLAYLIST_TTL}) {{
      # the playlist a joining player starts from: fresh, not up to the max-age old
      set beresp.ttl = {JOIN_PLAYLIST_TTL};
    }}
  }}
  if (beresp.status >= 400 && (beresp.ttl <= 0s || beresp.http.Cache-Control ~ "no-store")) {{
    # a 400 (too far ahead) or 503 (hold timed out) goes to every waiter coalesced on it, then expires
    set beresp.ttl = {ERROR_TTL};
    set beresp.grace = 0s;
    set beresp.keep = 0s;
    return (deliver);
  }}
  if (beresp.ttl <= 0s) {{
    set beresp.ttl = 1s;
  }}
  return (deliver);
}}

sub vcl_backend_error {{
  # an api process that refuses the connection: try the next one (GET/HEAD only: nothing was sent)
  if ((bereq.method == "GET" || bereq.method == "HEAD") && bereq.retries < {2 * len(origins)}) {{
    return (retry);
  }}
  set beresp.ttl = {ERROR_TTL};
  set beresp.grace = 0s;
  set beresp.http.Cache-Control = "no-store";
  set beresp.http.Retry-After = "1";
  return (deliver);
}}

sub vcl_deliver {{
  if (req.url == "/edge/authz" && req.http.X-Fl-Media) {{
    if (resp.status == 200) {{
      set req.url = req.http.X-Fl-Media;
      set req.http.X-Fl-Authorized = "1";
      return (restart);
    }}
    return (synth(403, "Forbidden"));  # fail closed: anything but the api's 200
  }}
  if (obj.hits > 0) {{
    set resp.http.X-Edge-Cache = "HIT";
  }} else {{
    set resp.http.X-Edge-Cache = "MISS";
  }}
  unset resp.http.X-Fl-Origin;
  unset resp.http.X-Fl-Stream;
  unset resp.http.X-Fl-Verdict;
  unset resp.http.Via;
  unset resp.http.X-Varnish;
  return (deliver);
}}

sub vcl_synth {{
  set resp.http.Cache-Control = "no-store";
  set resp.http.Content-Type = "text/plain; charset=utf-8";
  set resp.body = resp.reason + {{"
"}};
  return (deliver);
}}
"""


def compose_conf() -> str:
    """compose/varnish/edge.vcl: the same rules against the compose `api` service."""
    return render_vcl(origins=["api:8000"], country="")


def varnishd_binary() -> str:
    found = shutil.which("varnishd") or ("/usr/sbin/varnishd" if os.path.exists("/usr/sbin/varnishd") else None)
    if not found:
        raise FileNotFoundError("varnishd not found (Debian package varnish)")
    return found


def nginx_binary() -> str:
    """Debian's nginx (bench.origin's static-file anchor)."""
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if not found:
        raise FileNotFoundError("nginx not found (Debian package nginx)")
    return found


def _jail(prefix: Path) -> str:
    """As root varnishd drops to its own users when they can reach the working directory (every parent
    traversable), else (e.g. a test's private 0700 tmp dir) runs without a jail. Not root: no jail."""
    if os.geteuid() != 0:
        return "none"
    for parent in [prefix, *prefix.parents]:
        if parent.exists() and not parent.stat().st_mode & 0o001:
            return "none"
    return "unix"


def _listen(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def origins_of(settings: Settings, origin: str | None) -> list[str]:
    """`--origin a:1,b:2` (one per api process), default the api."""
    spec = origin or f"{settings.api_host}:{settings.api_port}"
    return [o.strip() for o in spec.split(",") if o.strip()]


def prepare(settings: Settings, *, port: int | None = None, origin: str | None = None,
            prefix: Path | None = None, host: str = "127.0.0.1") -> tuple[Path, list[str]]:
    """Write the edge VCL under FLOODLIGHT_STACK_DIR/edge; return (prefix, varnishd command).
    Raises InsecureSettings for a non-loopback `host` while a secret has its published default."""
    refuse_default_secrets(settings, host, "edge")
    prefix = (prefix or settings.stack_dir / "edge").resolve()
    prefix.mkdir(parents=True, exist_ok=True)
    vcl = prefix / "edge.vcl"
    vcl.write_text(render_vcl(origins=origins_of(settings, origin), country=settings.edge_country,
                              geo_header=settings.api_geo_header))
    return prefix, varnishd_command(prefix, vcl, _listen(host, port or settings.edge_port),
                                    settings.edge_cache_max_size)


def varnishd_command(prefix: Path, vcl: Path, listen: str, storage: str = "256m") -> list[str]:
    """varnishd in the foreground with its working directory (shared memory log) under `prefix`."""
    workdir = prefix / "varnish"
    shutil.rmtree(workdir, ignore_errors=True)  # a previous run's shared memory log
    cmd = [varnishd_binary(), "-F", "-n", str(workdir), "-a", listen, "-f", str(vcl), "-s", f"malloc,{storage}",
           "-j", _jail(prefix)]
    for k, v in PARAMS.items():
        cmd += ["-p", f"{k}={v}"]
    return cmd


def check(cmd: list[str]) -> None:
    """Compile the VCL (varnishd -C), raising with the compiler's message if it is refused."""
    vcl = cmd[cmd.index("-f") + 1]
    res = subprocess.run([cmd[0], "-C", "-f", vcl, "-n", cmd[cmd.index("-n") + 1], "-j", cmd[cmd.index("-j") + 1]],
                         capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"varnishd rejected {vcl}: {res.stderr.strip()[-2000:]}")


def start_edge(settings: Settings, *, port: int | None = None, origin: str | None = None,
               prefix: Path | None = None, host: str = "127.0.0.1") -> subprocess.Popen[bytes]:
    """Start varnishd in the foreground as a child process: our own VCL, working directory, port and
    storage under `prefix`; no system service is used or touched. `origin`: "host:port[,host:port...]"."""
    prefix, cmd = prepare(settings, port=port, origin=origin, prefix=prefix, host=host)
    return start_varnishd(prefix, cmd, env={"FLOODLIGHT_EDGE_PURGE_SECRET": settings.edge_purge_secret})


def start_varnishd(prefix: Path, cmd: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Run `cmd` (varnishd_command) as a child that dies with us; its output goes to prefix/varnishd.log.
    `env`: extra environment (the VCL reads FLOODLIGHT_EDGE_PURGE_SECRET from it)."""
    log_file = open(prefix / "varnishd.log", "ab")  # noqa: SIM115 - handed to the child
    try:
        return subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent,
                                env={**os.environ, **env} if env else None)
    finally:
        log_file.close()


def edge_stats(prefix: Path, *fields: str) -> dict[str, int]:
    """Counters of a running edge (varnishstat): e.g. MAIN.backend_req = requests sent to the origin."""
    names = fields or ("MAIN.backend_req", "MAIN.client_req", "MAIN.cache_hit", "MAIN.cache_miss",
                       "MAIN.busy_sleep", "MAIN.busy_wakeup")
    cmd = [shutil.which("varnishstat") or "/usr/bin/varnishstat", "-n", str(prefix.resolve() / "varnish"), "-1"]
    for f in names:
        cmd += ["-f", f]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout
    stats = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1].isdigit():
            stats[parts[0]] = int(parts[1])
    return stats


def _die_with_parent() -> None:
    """varnishd's manager gets SIGTERM if the process that started it dies (Linux prctl PDEATHSIG)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def run_edge(settings: Settings, *, port: int | None = None, origin: str | None = None,
             host: str = "127.0.0.1") -> int:
    """`floodlight edge`: run until SIGTERM/SIGINT, then stop varnishd."""
    proc = start_edge(settings, port=port, origin=origin, host=host)
    log.info("edge started", extra={"port": port or settings.edge_port, "pid": proc.pid,
                                    "origin": ",".join(origins_of(settings, origin))})

    def stop(signum: int, _frame: object) -> None:
        proc.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        code = proc.wait()
        return 0 if code in (0, -signal.SIGTERM) else code
    finally:
        if proc.poll() is None:
            proc.terminate()
            time.sleep(0)


if __name__ == "__main__":  # regenerate compose/varnish/edge.vcl
    sys.stdout.write(compose_conf())
