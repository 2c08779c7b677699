"""Append the playback token to every URI of a playlist or MPD the api serves (pure text work).

Media playlists carry URIs on their own lines and inside URI="..." attributes (EXT-X-KEY,
EXT-X-MAP, EXT-X-PART, EXT-X-PRELOAD-HINT, EXT-X-RENDITION-REPORT, EXT-X-MEDIA, ...). The master
playlist does the same for child playlists, so the token propagates down to every segment.
"""

from __future__ import annotations

import re
from urllib.parse import quote, urljoin

_URI_ATTR = re.compile(r'(?<![A-Z-])URI="([^"]*)"')  # not SERVER-URI (content steering)
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


# --- multi-CDN content steering (issue 18) ---------------------------------------------------------

_ATTR_RE = re.compile(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)')
_GROUP_ATTRS = ("AUDIO", "VIDEO", "SUBTITLES", "CLOSED-CAPTIONS")
_STABLE_RE = re.compile(r"[^A-Za-z0-9._-]")


def _set_attr(line: str, name: str, value: str) -> str:
    """Replace (or append) attribute `name` of a tag line; `value` given as it must appear (quoted or not)."""
    tag, _, attrs = line.partition(":")
    pairs = [(k, v) for k, v in _ATTR_RE.findall(attrs) if k != name]
    pairs.append((name, value))
    return f"{tag}:" + ",".join(f"{k}={v}" for k, v in pairs)


def _get_attr(line: str, name: str) -> str | None:
    for k, v in _ATTR_RE.findall(line.partition(":")[2]):
        if k == name:
            return v.strip('"')
    return None


def steer_master(text: str, pathways: list[tuple[str, str]], doc_path: str, first: str, server_uri: str) -> str:
    """The multivariant playlist listing every variant once per pathway (HLS Content Steering).

    pathways: (pathway id, base URL) in the order to list them; doc_path: the master's own path
    (`/live/{id}/master.m3u8`), against which relative URIs are resolved onto each base; first: the
    PATHWAY-ID players use until their first steering manifest. Rendition groups get one GROUP-ID per
    pathway (a group may belong to one pathway only); variants get PATHWAY-ID and STABLE-VARIANT-ID.
    Tokens are added afterwards by sign_playlist, which leaves SERVER-URI alone.
    """
    lines = [ln.rstrip("\r") for ln in text.splitlines()]
    head: list[str] = []
    media: list[str] = []
    variants: list[tuple[str, str | None]] = []  # (tag line, uri line or None for I-frame variants)
    i = 0
    while i < len(lines):
        ln = lines[i].strip()
        i += 1
        if not ln:
            continue
        if ln.startswith("#EXT-X-MEDIA:"):
            media.append(ln)
        elif ln.startswith("#EXT-X-STREAM-INF:"):
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith("#")):
                i += 1  # comments between the tag and its URI
            variants.append((ln, lines[i].strip() if i < len(lines) else ""))
            i += 1
        elif ln.startswith("#EXT-X-I-FRAME-STREAM-INF:"):
            variants.append((ln, None))
        elif ln.startswith("#EXT-X-CONTENT-STEERING:"):
            continue  # ours replaces any
        else:
            head.append(ln)
    out = head + [f'#EXT-X-CONTENT-STEERING:SERVER-URI="{server_uri}",PATHWAY-ID="{first}"']
    for pid, base in pathways:
        doc = f"{base.rstrip('/')}{doc_path}"
        for ln in media:
            gid = _get_attr(ln, "GROUP-ID") or ""
            ln = _set_attr(ln, "GROUP-ID", f'"{gid}-{pid}"')
            uri = _get_attr(ln, "URI")
            if uri:
                ln = _set_attr(ln, "URI", f'"{urljoin(doc, uri)}"')
                ln = _set_attr(ln, "STABLE-RENDITION-ID", f'"{_stable(uri)}"')
            out.append(ln)
        for tag, uri in variants:
            for g in _GROUP_ATTRS:
                gid = _get_attr(tag, g)
                if gid is not None and gid != "NONE":
                    tag = _set_attr(tag, g, f'"{gid}-{pid}"')
            if uri is None:  # I-frame variant: URI attribute
                iuri = _get_attr(tag, "URI") or ""
                tag = _set_attr(tag, "URI", f'"{urljoin(doc, iuri)}"')
                tag = _set_attr(tag, "STABLE-VARIANT-ID", f'"{_stable("iframe-" + iuri)}"')
                out.append(_set_attr(tag, "PATHWAY-ID", f'"{pid}"'))
                continue
            tag = _set_attr(tag, "STABLE-VARIANT-ID", f'"{_stable(uri)}"')
            out += [_set_attr(tag, "PATHWAY-ID", f'"{pid}"'), urljoin(doc, uri)]
    return "\n".join(out) + "\n"


def _stable(uri: str) -> str:
    """A stable id for a variant or rendition from its relative URI (`720p/playlist.m3u8` -> `720p`)."""
    path = uri.split("?", 1)[0]
    name = path.rsplit("/", 1)[0] if "/" in path else path
    return _STABLE_RE.sub("-", name)[:64] or "v"


def steer_mpd(text: str, pathways: list[tuple[str, str]], doc_path: str, first: str, server_uri: str) -> str:
    """The MPD with one BaseURL per pathway (serviceLocation = pathway id) and a ContentSteering element
    (DASH-IF content steering; dash.js 4.7+). Segment templates stay relative, so they resolve onto the
    chosen BaseURL and keep their tokens."""
    base_dir = doc_path.rsplit("/", 1)[0] + "/"
    els = "".join(f'<BaseURL serviceLocation="{pid}">{_xml(base.rstrip("/") + base_dir)}</BaseURL>'
                  for pid, base in pathways)
    els += (f'<ContentSteering defaultServiceLocation="{first}" queryBeforeStart="false">'
            f"{_xml(server_uri)}</ContentSteering>")
    m = re.search(r"<MPD\b[^>]*>", text)
    if m is None:
        return text
    return text[:m.end()] + els + text[m.end():]


def _xml(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
