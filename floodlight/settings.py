"""All configuration, from FLOODLIGHT_* environment variables (documented in README's table).

Each role reads the fields it needs; one class keeps names from drifting between roles,
compose/ and the README (a test checks all three agree).
"""

from __future__ import annotations

import ipaddress
from functools import cache
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.errors import FloodlightError

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_JWT_SECRET = "dev-only-change-me"
DEFAULT_PLAYBACK_SECRET = "dev-playback-key-change-me"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLOODLIGHT_", extra="ignore")

    # --- Kafka -------------------------------------------------------------------------
    kafka_bootstrap: str = Field("", description="Kafka bootstrap servers (default: the local stack's 127.0.0.1:PORT).")
    kafka_port: int = Field(9092, description="Port of the local stack's broker (./run stack).")
    kafka_nodes: int = Field(
        1, ge=1, le=9,
        description="KRaft nodes of the local stack (1, or 3 for a replicated cluster); node i listens on PORT+2(i-1).",
    )
    topic_prefix: str = Field("floodlight.", description="Prefix of every topic name (tests isolate with it).")
    topic_partitions: int = Field(6, description="Partitions of the partitioned topics (gops, segments, qoe).")
    gops_retention_ms: int = Field(
        (2 * 3600 + 600) * 1000, description="Retention of the gops topic: DVR/replay horizon (2 h + 10 min)."
    )

    # --- Storage -------------------------------------------------------------------------
    stack_dir: Path = Field(ROOT / ".stack", description="Where the local stack keeps logs and data.")
    store_url: str = Field(
        "",
        description="Object store: file:///abs/dir (default: .stack/store) or s3://bucket[/prefix].",
    )
    s3_endpoint_url: str | None = Field(None, description="S3-compatible endpoint for s3:// stores.")
    clickhouse_dsn: str = Field(
        "", description="chdb:///abs/path (embedded, default .stack/chdb) or http(s)://user:pass@host:8123/db."
    )

    # --- API / edge ------------------------------------------------------------------------
    api_host: str = Field("127.0.0.1", description="Address the api binds.")
    api_port: int = Field(8000, description="Port the api binds.")
    edge_port: int = Field(8080, description="Port of the Varnish edge in front of the api.")
    public_base_url: str = Field("", description="Base URL players use (default: the edge).")
    jwt_secret: str = Field(DEFAULT_JWT_SECRET, description="HS256 secret of api bearer JWTs.")
    playback_keys: str = Field(
        f"k1:{DEFAULT_PLAYBACK_SECRET}",
        description="Playback URL signing keys 'kid:secret,kid2:secret2'; the first signs, all verify.",
    )
    playback_token_ttl_s: int = Field(3600, description="Lifetime of signed playback URLs.")
    playback_token_bucket_s: int = Field(
        60, ge=0, description="Playback tokens minted within the same N seconds share one expiry (so one URI "
        "and one cached playlist at the edge for all those viewers; docs/capacity.md); 0 = one per second."
    )
    cors_origins: str = Field("*", description="Comma-separated CORS allow-list for playback endpoints.")

    # --- api role: playback origin, registry, beacons, edge (issue 6) ---------------------------
    api_block_timeout_s: float = Field(
        0.0, description="Longest hold of an LL-HLS blocking request before 503 (0 = three target durations)."
    )
    api_silence_timeout_s: float = Field(
        30.0, description="A live stream whose manifests stop changing this long is reported as ended."
    )
    api_beacon_ack_timeout_s: float = Field(
        5.0, gt=0, description="How long a beacon POST waits for Kafka to acknowledge its batch before answering "
        "503 (an accepted beacon is durable)."
    )
    api_beacon_rate_per_session: float = Field(
        20.0, description="QoE beacons per second one session may send (token bucket, burst of 100)."
    )
    api_geo_header: str = Field(
        "X-Country-Code", description="Trusted header (set by the edge) with the viewer's ISO country code."
    )
    ingest_rtmp_urls: str = Field(
        "rtmp://127.0.0.1:1935/live,rtmp://127.0.0.1:1936/live",
        description="Primary,backup RTMP ingest URLs handed out when a stream is created.",
    )
    ingest_srt_urls: str = Field(
        "srt://127.0.0.1:9000,srt://127.0.0.1:9001",
        description="Primary,backup SRT ingest URLs handed out when a stream is created.",
    )
    edge_country: str = Field(
        "", description="Country code the local edge stamps on requests (no GeoIP database locally)."
    )
    edge_cache_max_size: str = Field("2g", description="Size bound of the edge's cache (Varnish malloc storage, LRU).")
    edge_purge_secret: str = Field(
        "dev-purge-change-me", description="Secret the api sends (X-Fl-Purge-Secret) with BAN requests to the Varnish "
        "edges; they also accept them only from loopback and their origins' addresses."
    )

    # --- multi-CDN: pathways, content steering (issue 18) ---------------------------------------
    pathways: str = Field(
        "", description="CDNs/edges players may use, 'id=base_url,...' in preference order (e.g. "
        "a=http://127.0.0.1:8080,b=http://127.0.0.1:8081; after a vertical bar, the address where the api probes "
        "and purges that edge, default base_url); empty = the one edge, no content steering."
    )
    steering_url: str = Field(
        "", description="Base URL players reach the steering server (the api) at; default http://API_HOST:API_PORT."
    )
    steering_ttl_s: int = Field(
        10, ge=1, le=3600, description="TTL of steering manifests: how often players ask again."
    )
    steering_hold_s: float = Field(
        30.0, ge=0, description="Hysteresis: a pathway must be healthy and better this long before it moves up to "
        "first (a failing one drops at once)."
    )
    steering_margin: float = Field(
        0.02, ge=0, description="QoE cost difference (stall ratio + error rate + 0.01/s of latency and startup) that "
        "counts as better."
    )
    steering_probe_interval_s: float = Field(
        1.0, gt=0, description="How often the api probes each pathway (GET EDGE/healthz, timeout the same)."
    )

    # --- Roles -------------------------------------------------------------------------------
    ingest_buffer_seconds: float = Field(30.0, description="Media the ingest buffers while Kafka is slow/down.")
    ingest_max_connections: int = Field(
        8, ge=1, description="Connections an RTMP ingest listener holds at once (half of them per address before "
        "the key is checked); more are refused on accept."
    )
    ingest_auth_timeout_s: float = Field(
        10.0, gt=0, description="Seconds an RTMP connection has to publish with a valid key before it is cut."
    )
    ingest_max_gop_seconds: float = Field(
        10.0, gt=0, description="Longest GOP the ingest accepts; a longer one (or one over the Kafka message "
        "limit) is dropped with a dead letter, and the stream goes on at the next keyframe."
    )
    ingest_srt_passphrase: str = Field(
        "", description="SRT encryption passphrase (10-79 characters) callers must present, when the --source "
        "URL sets none; empty = unencrypted, the streamid key is still checked."
    )
    ingest_part_seconds: float = Field(
        0.333, ge=0, description="LOW-latency streams: each GOP is published while it is captured, in chunks of "
        "about this long (whole frames; each becomes one LL-HLS part); 0 = whole GOPs, as STANDARD always sends."
    )
    metrics_port: int = Field(0, description="Prometheus port of a role (0 = role default).")
    log_level: str = Field("INFO", description="Log level of every role.")
    log_format: str = Field("json", description="json (structured) or text.")

    # --- packager role: segments -> object store + HLS/LL-HLS/DASH (issue 5) -----------------
    packager_group: str = Field("floodlight-packager", description="Consumer group of the packager members.")
    packager_gap_deadline_s: float = Field(
        3.0, description="How long a missing GOP may hold back later ones before it is published as a gap."
    )
    packager_live_window_s: float = Field(
        60.0, description="Span of the live media playlist (the DVR playlist covers the whole DVR window)."
    )
    packager_commit_interval_s: float = Field(
        1.0, description="Packager checkpoint + offset commit interval (restart re-reads at most this much)."
    )
    packager_write_log: str = Field(
        "", description="File to append one JSON line per packager store write and fence claim (audit; chaos tests)."
    )

    # --- encoder role: GOPs -> ABR ladder of CMAF segments (issue 4) -------------------------
    encoder_group: str = Field("floodlight-encoder", description="Consumer group of the encoder members.")
    encoder_renditions: str = Field(
        "all", description="Rungs this encoder member makes: all, or names like 1080p,720p (audio included by 'all')."
    )
    encoder_concurrent_gops: int = Field(
        2, description="GOPs one encoder process transcodes at once; the next starts only once the previous is decoded."
    )
    encoder_x264_threads: int = Field(
        1, description="libx264 threads per rung encoder; more than 1 with VBV makes output non-repeatable."
    )
    encoder_transactions: bool = Field(
        False, description="Publish segments and commit GOP offsets in one Kafka transaction: a fenced member's "
        "late output never reaches read_committed readers. Off by default: librdkafka can hang in "
        "send_offsets_to_transaction while a broker restarts (README)."
    )
    encoder_instance: str = Field(
        "", description="Stable name of this encoder member (its transactional.id suffix; a restart aborts its "
        "predecessor's open transaction at once). Default: host name and process id."
    )
    encoder_dedup_window: int = Field(
        20000, description="Recent (stream_id, gop_index) identities an encoder remembers to drop duplicates."
    )

    # --- qoe role: Faust QoE app + ClickHouse analytics (issue 7) -----------------------------
    qoe_host: str = Field("127.0.0.1", description="Address of the qoe app's analytics port (queries, viewers).")
    qoe_port: int = Field(8077, description="Port of the qoe app's read-only analytics HTTP endpoint.")
    qoe_url: str = Field("", description="Base URL other roles use to reach the qoe app (default: qoe_host:qoe_port).")
    qoe_batch_rows: int = Field(5000, description="Beacons per ClickHouse insert (flush when reached).")
    qoe_batch_seconds: float = Field(1.0, description="Flush a partial beacon batch after this long.")
    qoe_commit_interval_s: float = Field(1.0, description="How often the qoe app commits offsets of inserted beacons.")
    qoe_max_past_s: float = Field(86400.0, description="Drop beacons with event_time older than this vs accept time.")
    qoe_max_future_s: float = Field(300.0, description="Drop beacons with event_time this far ahead of accept time.")
    qoe_viewer_window_s: float = Field(60.0, description="A session counts as a live viewer this long after a beacon.")

    @model_validator(mode="after")
    def _local_bootstrap(self) -> Settings:
        if not self.kafka_bootstrap:  # every node of the local stack, so a client starts while any one is up
            self.kafka_bootstrap = ",".join(f"127.0.0.1:{self.kafka_port + 2 * i}" for i in range(self.kafka_nodes))
        return self

    def resolved_store_url(self) -> str:
        return self.store_url or (self.stack_dir / "store").as_uri()

    def resolved_clickhouse_dsn(self) -> str:
        return self.clickhouse_dsn or f"chdb://{self.stack_dir / 'chdb'}"

    def topic(self, short: str) -> str:
        """Full topic name for a short name such as 'gops'."""
        return f"{self.topic_prefix}{short}"


@cache
def get_settings() -> Settings:
    return Settings()


class InsecureSettings(FloodlightError):
    """A role would serve beyond this host while a secret still has its published default value."""


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    host = host.strip().strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name (or 0.0.0.0 / ::, which parse): reachable from elsewhere


def default_secrets(settings: Settings) -> list[str]:
    """The FLOODLIGHT_* variables whose secret is still the value published in this repository."""
    found = []
    if settings.jwt_secret == DEFAULT_JWT_SECRET:
        found.append("FLOODLIGHT_JWT_SECRET")
    if any(item.partition(":")[2].strip() == DEFAULT_PLAYBACK_SECRET for item in settings.playback_keys.split(",")):
        found.append("FLOODLIGHT_PLAYBACK_KEYS")
    return found


def refuse_default_secrets(settings: Settings, host: str, role: str) -> None:
    """Raise InsecureSettings when `role` would bind a non-loopback `host` with a default secret: anyone
    who has read this repository could then mint admin JWTs or playback tokens for premium streams."""
    if is_loopback(host):
        return
    found = default_secrets(settings)
    if found:
        names = " and ".join(found)
        raise InsecureSettings(
            f"refusing to start the {role} on {host}: {names} still has the default value published in the "
            f"Floodlight repository, so anyone could mint tokens. Set {names} to secrets of your own "
            f"(e.g. FLOODLIGHT_JWT_SECRET=$(openssl rand -hex 32), FLOODLIGHT_PLAYBACK_KEYS=k1:$(openssl rand "
            f"-hex 32)), or bind 127.0.0.1.")


def markdown_table() -> str:
    """The README's settings table, generated so it cannot drift from the code."""
    rows = ["| variable | default | what |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.default
        if isinstance(default, Path):
            default = default.relative_to(ROOT) if default.is_relative_to(ROOT) else default
        rows.append(f"| `FLOODLIGHT_{name.upper()}` | `{default}` | {field.description} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
