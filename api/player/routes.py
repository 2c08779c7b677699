"""Routes of the web player: the page at /watch/{stream_id} and its assets under /player/.

hls.js and dash.js come from node_modules (installed by ./run set-up from the npm registry) and
are served by us: a player that loads them from a third-party CDN breaks on a closed network.
Assets are a fixed allow-list, so no path is ever built from the request.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, HTMLResponse

from floodlight import ids
from floodlight.settings import ROOT

STATIC = Path(__file__).resolve().parent / "static"
NODE_MODULES = ROOT / "node_modules"

# name served under /player/ -> (file, content type)
ASSETS: dict[str, tuple[Path, str]] = {
    "player.js": (STATIC / "player.js", "text/javascript; charset=utf-8"),
    "player.css": (STATIC / "player.css", "text/css; charset=utf-8"),
    "hls.min.js": (NODE_MODULES / "hls.js" / "dist" / "hls.min.js", "text/javascript; charset=utf-8"),
    "dash.all.min.js": (NODE_MODULES / "dashjs" / "dist" / "legacy" / "umd" / "dash.all.min.js",
                        "text/javascript; charset=utf-8"),
}

# Scripts only from us; media and playlists may come from the edge on another port (signed playback_url);
# hls.js runs its transmuxer in a blob: worker.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "media-src 'self' blob: http: https:; connect-src 'self' http: https:; worker-src 'self' blob:; "
       "frame-ancestors 'none'; base-uri 'none'; form-action 'none'")

router = APIRouter(tags=["player"])


@router.get("/watch/{stream_id}", response_class=HTMLResponse, summary="The web player for one stream")
def watch(stream_id: str) -> HTMLResponse:
    """The player page; it finds its stream from the URL path and asks the api for the playback URL."""
    if not ids.is_stream_id(stream_id):
        raise HTTPException(404, "no such stream")
    html = (STATIC / "player.html").read_text(encoding="utf-8")
    return HTMLResponse(html, headers={
        "Cache-Control": "no-cache", "Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    })


@router.get("/player/{name}", summary="Player assets (page script, styles, hls.js, dash.js)")
def asset(name: str) -> FileResponse:
    entry = ASSETS.get(name)
    if entry is None:
        raise HTTPException(404, "no such asset")
    path, ctype = entry
    if not path.is_file():
        raise HTTPException(503, f"{name} is not installed: run `./run setup` (npm packages)")
    return FileResponse(path, media_type=ctype, headers={
        "Cache-Control": "public, max-age=300", "X-Content-Type-Options": "nosniff",
    })
