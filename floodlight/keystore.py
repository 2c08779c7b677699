"""Content keys for HLS AES-128, behind a provider interface shaped like CPIX.

The packager asks for the key of (stream, key_id) when it rotates; the api serves it to
authorised players. Keys never sit next to the media: the local provider keeps them in a
directory of their own (FLOODLIGHT_STACK_DIR/keys, mode 0600). A Widevine/FairPlay/CPIX
provider would implement the same two calls against a key server.
"""

from __future__ import annotations

import os
import re
import secrets
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,99}$")
_KID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class ContentKey:
    stream_id: str
    key_id: str
    key: bytes  # 16 bytes, AES-128
    iv: bytes  # 16 bytes


class KeyProvider(ABC):
    @abstractmethod
    def get_or_create(self, stream_id: str, key_id: str) -> ContentKey:
        """The key for (stream, key_id), created once and stable afterwards (idempotent packaging)."""

    @abstractmethod
    def get(self, stream_id: str, key_id: str) -> ContentKey | None:
        """The key if it exists, for the api key endpoint."""


class LocalKeyProvider(KeyProvider):
    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)

    def _path(self, stream_id: str, key_id: str) -> Path:
        if not _ID_RE.match(stream_id) or not _KID_RE.match(key_id):
            raise ValueError("invalid stream or key id")
        return self.root / stream_id / f"{key_id}.key"

    def get(self, stream_id: str, key_id: str) -> ContentKey | None:
        try:
            raw = self._path(stream_id, key_id).read_bytes()
        except (FileNotFoundError, ValueError):
            return None
        return ContentKey(stream_id, key_id, raw[:16], raw[16:32])

    def get_or_create(self, stream_id: str, key_id: str) -> ContentKey:
        existing = self.get(stream_id, key_id)
        if existing:
            return existing
        path = self._path(stream_id, key_id)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        raw = secrets.token_bytes(32)
        try:  # O_EXCL: two packagers racing agree on the first key written
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(raw)
        except FileExistsError:
            pass
        key = self.get(stream_id, key_id)
        assert key is not None
        return key


def open_key_provider(stack_dir: Path) -> KeyProvider:
    return LocalKeyProvider(stack_dir / "keys")
