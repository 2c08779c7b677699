"""CORS for the routes web players on other origins call, and for nothing else (DESIGN §7).

Playlists, media, keys, the DASH time source, the player and the beacon endpoint answer with
Access-Control-Allow-Origin (the `FLOODLIGHT_CORS_ORIGINS` allow-list, default `*`), so a player
page served from anywhere can play and report. Registry, admin, analytics and operator routes send
none: a page on another origin cannot read them with a visitor's browser, and a preflight asking to
send `Authorization` to them is not granted (issue 13).
"""

from __future__ import annotations

from typing import Any

from starlette.middleware.cors import CORSMiddleware

CORS_PREFIXES = ("/live/", "/vod/", "/keys/", "/watch/", "/player/", "/api/v1/steering/")
CORS_PATHS = frozenset({"/api/v1/time", "/api/v1/qoe/beacons"})


def cors_applies(path: str) -> bool:
    return path in CORS_PATHS or path.startswith(CORS_PREFIXES)


class PlaybackCORS:
    """Pure ASGI: Starlette's CORSMiddleware on the playback, player and beacon paths only."""

    def __init__(self, app: Any, origins: str = "*") -> None:
        self.app = app
        allowed = [o.strip() for o in origins.split(",") if o.strip()] or ["*"]
        self.cors = CORSMiddleware(app, allow_origins=allowed, allow_methods=["GET", "POST", "HEAD", "OPTIONS"],
                                   allow_headers=["*"], expose_headers=["ETag", "Retry-After", "Content-Length"])

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and cors_applies(scope["path"]):
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)
