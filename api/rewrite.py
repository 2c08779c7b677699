"""Append the playback token to every URI of a playlist or MPD the api serves (pure text work).

Media playlists carry URIs on their own lines and inside URI="..." attributes (EXT-X-KEY,
EXT-X-MAP, EXT-X-PART, EXT-X-PRELOAD-HINT, EXT-X-RENDITION-REPORT, EXT-X-MEDIA, ...). The master
playlist does the same for child playlists, so the token propagates down to every segment.
"""

from __future__ import annotations

import re
from urllib.parse import quote

_URI_ATTR = re.compile(r'URI="([^"]*)"')
_MPD_ATTR = re.compile(r'\b(media|initialization|sourceURL)="([^"]*)"')


def with_param(uri: str, name: str, value: str) -> str:
    """uri plus `name=value` in its query, before any fragment."""
    base, hash_, frag = uri.partition("#")
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}{name}={quote(value, safe='')}{hash_}{frag}"


def sign_playlist(text: str, token: str, *, keys_only: bool = False) -> str:
    """Add token= to every URI; keys_only touches only EXT-X-KEY/EXT-X-SESSION-KEY URIs."""
    out: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            out.append(line)
        elif stripped.startswith("#"):
            if 'URI="' in line and (not keys_only or stripped.startswith(("#EXT-X-KEY", "#EXT-X-SESSION-KEY"))):
                line = _URI_ATTR.sub(lambda m: f'URI="{_sign_uri(m.group(1), token)}"', line)
            out.append(line)
        else:
            out.append(line if keys_only else _sign_uri(stripped, token))
    return "\n".join(out) + ("\n" if text.endswith("\n") else "")


def _sign_uri(uri: str, token: str) -> str:
    if not uri or uri.startswith(("data:", "skd:")) or "token=" in uri:
        return uri
    return with_param(uri, "token", token)


def sign_mpd(text: str, token: str) -> str:
    """Add token= to SegmentTemplate media/initialization (and SegmentURL) attributes of a DASH MPD."""
    def sub(m: re.Match[str]) -> str:
        uri = m.group(2)
        if "token=" in uri:
            return m.group(0)
        return f'{m.group(1)}="{uri}{"&amp;" if "?" in uri else "?"}token={quote(token, safe="")}"'

    return _MPD_ATTR.sub(sub, text)
