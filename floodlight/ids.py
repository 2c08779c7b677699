"""The naming rules for everything that ends up in a Kafka key, an object-store key or a URL path.

Written once because they are security rules as much as style: a stream id or rendition name is
joined into object keys and URLs, so every role and the api must agree on exactly what is allowed
(lowercase, no dots, no slashes, bounded length). Pydantic models use the `*_PATTERN` strings;
code uses the `is_*` predicates or the `check_*` functions that raise `InvalidId`.
"""

from __future__ import annotations

import re

from schemas.errors import FloodlightError

STREAM_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{0,99}$"
"""Stream ids and VOD asset ids: lowercase letters, digits and '-', up to 100 characters."""
RENDITION_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,31}$"
"""Rendition names ('1080p', '720p', 'audio'): lowercase letters, digits, '_' and '-', up to 32."""
TOKEN_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
"""Opaque ids chosen by machines (content key ids, cue ids): base64url alphabet, up to 64."""
INGEST_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{0,31}$"
"""Ingest agent ids ('primary', 'backup', 'venue-2')."""

RESERVED_RENDITIONS = frozenset({"master", "mpd", "keys"})
"""Names the packager keeps for its own objects beside the renditions."""
AUDIO_RENDITION = "audio"
"""The one audio rendition every video rendition shares; not a valid name for a ladder rung."""

_STREAM_ID = re.compile(STREAM_ID_PATTERN)
_RENDITION = re.compile(RENDITION_PATTERN)
_TOKEN_ID = re.compile(TOKEN_ID_PATTERN)
_INGEST_ID = re.compile(INGEST_ID_PATTERN)


class InvalidId(FloodlightError, ValueError):
    """A name that breaks the rules above; the message says which rule."""


def is_stream_id(value: object) -> bool:
    return isinstance(value, str) and _STREAM_ID.fullmatch(value) is not None


def is_rendition(value: object) -> bool:
    return isinstance(value, str) and _RENDITION.fullmatch(value) is not None and value not in RESERVED_RENDITIONS


def is_rung_name(value: object) -> bool:
    """A video ladder rung: a rendition name that is not the shared audio rendition."""
    return is_rendition(value) and value != AUDIO_RENDITION


def is_token_id(value: object) -> bool:
    return isinstance(value, str) and _TOKEN_ID.fullmatch(value) is not None


def is_ingest_id(value: object) -> bool:
    return isinstance(value, str) and _INGEST_ID.fullmatch(value) is not None


def _checked(ok: bool, value: object, message: str) -> str:
    if not ok:
        raise InvalidId(message)
    return value  # type: ignore[return-value]


def check_stream_id(value: object, what: str = "stream id") -> str:
    return _checked(is_stream_id(value), value, f"invalid {what} {value!r}: use [a-z0-9][a-z0-9-]{{0,99}}")


def check_rendition(value: object, what: str = "rendition name") -> str:
    return _checked(is_rendition(value), value,
                    f"invalid {what} {value!r}: use [a-z0-9][a-z0-9_-]{{0,31}}, not {sorted(RESERVED_RENDITIONS)}")


def check_rung_name(value: object) -> str:
    check_rendition(value, "ladder rung name")
    return _checked(value != AUDIO_RENDITION, value,
                    f"ladder rung name {AUDIO_RENDITION!r} is reserved for the audio rendition")


def check_token_id(value: object, what: str = "id") -> str:
    return _checked(is_token_id(value), value, f"invalid {what} {value!r}: use [A-Za-z0-9_-]{{1,64}}")


def check_ingest_id(value: object) -> str:
    return _checked(is_ingest_id(value), value,
                    f"invalid ingest id {value!r}: primary, backup or another [a-z0-9-] name of up to 32")
