"""What every api request handler reaches through `request.app.state.ctx`: built once per app by
`api.app.create_app`, filled in by its lifespan. Its own module so handlers can name the type without
importing the app that imports them."""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import Producer

from api.beacons import BeaconSink, SessionRateLimiter
from api.cdn import Cdn
from api.hub import ManifestFollower, PlaylistHub
from api.tokens import PlaybackSigner
from floodlight.analytics import AnalyticsClient
from floodlight.keystore import KeyProvider
from floodlight.objectstore import ObjectStore
from floodlight.registry import RegistryView
from floodlight.settings import Settings


@dataclass
class Context:
    """Everything a request handler needs, built once per app."""

    settings: Settings
    signer: PlaybackSigner
    beacon_limiter: SessionRateLimiter
    store: ObjectStore | None = None
    keys: KeyProvider | None = None
    registry: RegistryView | None = None
    hub: PlaylistHub | None = None
    follower: ManifestFollower | None = None
    beacons: BeaconSink | None = None
    control: Producer | None = None  # registry writes and cues
    analytics: AnalyticsClient | None = None  # made on first use: QoE summaries and live viewers
    cdn: Cdn | None = None  # pathways, steering, edge purges (issue 18)

    @property
    def public_base(self) -> str:
        return (self.settings.public_base_url or f"http://127.0.0.1:{self.settings.edge_port}").rstrip("/")

    def analytics_client(self) -> AnalyticsClient:
        if self.analytics is None:
            self.analytics = AnalyticsClient(self.settings)
        return self.analytics
