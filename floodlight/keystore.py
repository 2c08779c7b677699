"""Content keys for HLS AES-128, behind a provider interface shaped like CPIX.

The packager asks for the key of (stream, key_id) when it rotates; the api serves it to
authorised players. Keys never sit next to the media: the local provider keeps them in a
directory of their own (FLOODLIGHT_STACK_DIR/keys, mode 0600). A Widevine/FairPlay/CPIX
provider would implement the same two calls against a key server.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from floodlight.ids import is_stream_id, is_token_id

KEY_FILE_BYTES = 32  # AES-128 key, then its IV


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
        if not is_stream_id(stream_id) or not is_token_id(key_id):
            raise ValueError("invalid stream or key id")
        return self.root / stream_id / f"{key_id}.key"

    def get(self, stream_id: str, key_id: str) -> ContentKey | None:
        try:
            raw = self._path(stream_id, key_id).read_bytes()
        except (FileNotFoundError, ValueError):
            return None
        if len(raw) != KEY_FILE_BYTES:  # never a short key: files appear whole (see get_or_create)
            return None
        return ContentKey(stream_id, key_id, raw[:16], raw[16:32])

    def get_or_create(self, stream_id: str, key_id: str) -> ContentKey:
        existing = self.get(stream_id, key_id)
        if existing:
            return existing
        path = self._path(stream_id, key_id)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        raw = secrets.token_bytes(KEY_FILE_BYTES)
        # Atomic (issue 13): the key is written and synced under a temporary name, then published
        # with one link(2), so a reader sees no file or the whole key, never an empty or short one.
        # link fails if the name exists, so two packagers racing still agree on the first key (a
        # rename would let the second overwrite a key the first already encrypted with).
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{key_id}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(raw)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
        finally:
            os.unlink(tmp)
        key = self.get(stream_id, key_id)
        assert key is not None
        return key


def open_key_provider(stack_dir: Path) -> KeyProvider:
    return LocalKeyProvider(stack_dir / "keys")
