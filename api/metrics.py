"""Prometheus instruments of the api role (module-level: one registration per process)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter("floodlight_api_requests_total", "HTTP requests by route kind and status", ["kind", "status"])
ORIGIN_MEDIA = Counter("floodlight_api_origin_media_requests_total",
                       "Media object requests (init/segments/parts) that reached the origin", ["kind"])
STORE_READS = Counter("floodlight_api_store_reads_total", "Object store reads by the origin", ["kind"])
PLAYLIST_RENDERS = Counter("floodlight_api_playlist_renders_total", "Playlist renderings (token signing)")
BLOCKED = Gauge("floodlight_api_blocked_requests", "LL-HLS requests currently held")
BLOCK_TIMEOUTS = Counter("floodlight_api_block_timeouts_total", "Blocked requests answered 503")
WAKE_LATENCY = Histogram("floodlight_api_wake_seconds",
                         "ManifestUpdate written (packager clock) -> api notified",
                         buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
MANIFEST_UPDATES = Counter("floodlight_api_manifest_updates_total", "ManifestUpdates consumed")
BEACONS = Counter("floodlight_api_beacons_total", "QoE beacons by outcome", ["outcome"])
TOKEN_REJECTS = Counter("floodlight_api_token_rejects_total", "Playback requests refused", ["reason"])
REGISTRY_WRITES = Counter("floodlight_api_registry_writes_total", "StreamRecords produced", ["op"])
