"""Signed, expiring, stream-bound playback tokens (HMAC-SHA256 with a key id for rotation).

A token is `kid.expiry.signature`, appended to playback URLs as `?token=`. The signature covers
the key id, the subject (`live/{stream_id}` or `vod/{asset_id}`) and the expiry, so a token for
one stream opens nothing else. The first configured key signs; every configured key verifies,
which lets operators rotate keys without cutting off viewers mid-event.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time

from schemas.errors import FloodlightError

_KID_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_TOKEN_RE = re.compile(r"^([A-Za-z0-9_-]{1,32})\.([0-9]{1,12})\.([A-Za-z0-9_-]{22,64})$")
SIG_LEN = 32  # base64url chars of the HMAC kept (192 bits)


class TokenError(FloodlightError):
    """A playback token that does not open this subject: malformed, expired, unknown key, bad signature."""


def parse_keys(spec: str) -> list[tuple[str, bytes]]:
    """'kid:secret,kid2:secret2' -> [(kid, secret)], first one signs."""
    keys: list[tuple[str, bytes]] = []
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        kid, sep, secret = item.partition(":")
        if not sep or not _KID_RE.match(kid) or len(secret) < 8:
            raise ValueError(f"bad playback key entry for kid {kid!r}: use kid:secret (secret >= 8 chars)")
        keys.append((kid, secret.encode()))
    if not keys:
        raise ValueError("FLOODLIGHT_PLAYBACK_KEYS is empty")
    return keys


def _sig(secret: bytes, kid: str, subject: str, exp: int) -> str:
    mac = hmac.new(secret, f"{kid}|{subject}|{exp}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")[:SIG_LEN]


class PlaybackSigner:
    def __init__(self, keys_spec: str, ttl_s: int) -> None:
        self.keys = parse_keys(keys_spec)
        self.by_kid = dict(self.keys)
        self.ttl_s = ttl_s

    def sign(self, subject: str, *, now: float | None = None, ttl_s: int | None = None,
             bucket_s: int = 0) -> str:
        """A token for `subject`; bucket_s > 0 rounds the expiry up so tokens minted together match
        (playlists rendered for many viewers stay identical and cacheable)."""
        now = time.time() if now is None else now
        exp = int(now) + (self.ttl_s if ttl_s is None else ttl_s)
        if bucket_s:
            exp = (exp // bucket_s + 1) * bucket_s
        kid, secret = self.keys[0]
        return f"{kid}.{exp}.{_sig(secret, kid, subject, exp)}"

    def verify(self, token: str | None, subject: str, *, now: float | None = None) -> int:
        """Return the expiry of a token valid for `subject`, or raise TokenError saying why."""
        if not token:
            raise TokenError("missing playback token")
        m = _TOKEN_RE.match(token)
        if not m:
            raise TokenError("malformed playback token")
        kid, exp_s, sig = m.groups()
        secret = self.by_kid.get(kid)
        if secret is None:
            raise TokenError("unknown playback key id")
        exp = int(exp_s)
        if not hmac.compare_digest(_sig(secret, kid, subject, exp), sig):
            raise TokenError("bad playback token signature")
        if exp < (time.time() if now is None else now):
            raise TokenError("expired playback token")
        return exp
