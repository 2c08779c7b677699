"""Prometheus metrics of the encoder role (created once per process)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

GOP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0)

GOPS = Counter("floodlight_encoder_gops_total", "GOPs taken from floodlight.gops, by outcome "
               "(encoded, duplicate, dead_lettered). rate() of encoded is GOPs/s.", ["outcome"])
DUPLICATES = Counter("floodlight_encoder_duplicates_dropped_total",
                     "GOPs dropped because their (stream_id, gop_index) was already encoded.")
DLQ = Counter("floodlight_encoder_dlq_total", "GOPs sent to floodlight.dlq, by error class.", ["error_class"])
SEGMENTS = Counter("floodlight_encoder_segments_total", "RenditionSegments acknowledged by Kafka.", ["rendition"])
SEGMENT_BYTES = Counter("floodlight_encoder_segment_bytes_total", "Media bytes published.", ["rendition"])
GOP_SECONDS = Histogram("floodlight_encoder_gop_transcode_seconds",
                        "Wall time to transcode one GOP into every rendition.", buckets=GOP_BUCKETS)
RUNG_SECONDS = Histogram("floodlight_encoder_rung_transcode_seconds",
                         "Busy time of one rung's scale+encode+mux thread for one GOP.", ["rendition"],
                         buckets=GOP_BUCKETS)
DECODE_SECONDS = Histogram("floodlight_encoder_decode_seconds", "Time to decode one GOP (fan-out included).",
                           buckets=GOP_BUCKETS)
GOP_LATENCY = Histogram("floodlight_encoder_capture_to_published_seconds",
                        "Capture wall-clock of a GOP to its last rendition acknowledged.", buckets=GOP_BUCKETS)
LAG = Gauge("floodlight_encoder_lag", "Messages behind the end of floodlight.gops, per assigned partition.",
            ["partition"])
IN_FLIGHT = Gauge("floodlight_encoder_gops_in_flight", "GOPs being transcoded or awaiting acks.")
PUBLISH_RETRIES = Counter("floodlight_encoder_publish_retries_total", "Segment produce attempts retried.")
TRANSACTIONS = Counter("floodlight_encoder_transactions_total",
                       "Encoder output transactions (segments + input offsets together), by outcome "
                       "(committed, aborted: refused by the group or failed, redone from the committed "
                       "offsets; fenced: the producer was replaced).", ["outcome"])
TRANSACTION_SECONDS = Histogram("floodlight_encoder_transaction_commit_seconds",
                                "Time to commit one output transaction (flush, offsets, end): the delay it adds "
                                "before the packager can read the segments.",
                                buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5))
