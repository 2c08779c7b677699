"""Object store interface shared by the packager (writes) and the api (reads), DESIGN §3.4/§8.

Drivers are chosen by URL scheme (faust-style): file:///abs/dir (default) or s3://bucket[/prefix]
through boto3 with an optional endpoint_url (any S3-compatible store). Keys are validated here so
no caller can build a path outside the store from user input.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import re
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlparse

from schemas.errors import FloodlightError

log = logging.getLogger("floodlight.objectstore")
T = TypeVar("T")

KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")

CONTENT_TYPES = {
    ".m3u8": "application/vnd.apple.mpegurl",
    ".mpd": "application/dash+xml",
    ".mp4": "video/mp4",
    ".m4s": "video/iso.segment",
    ".json": "application/json",
}
IMMUTABLE = "public, max-age=31536000, immutable"


class StoreError(FloodlightError):
    """The store could not complete an operation (full disk, network, permissions). `transient` says
    whether trying again later may work (an S3 5xx, throttling or a dropped connection after the
    driver's own bounded retries) or not (access denied, no such bucket)."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class InvalidKey(FloodlightError, ValueError):
    """A key that could escape the store or is not of our shape."""


def validate_key(key: str) -> str:
    if not KEY_RE.match(key) or ".." in key.split("/") or len(key) > 512:
        raise InvalidKey(f"invalid object key {key!r}")
    return key


def content_type_for(key: str) -> str:
    return CONTENT_TYPES.get(os.path.splitext(key)[1], "application/octet-stream")


def cache_control_for(key: str) -> str:
    """Segments, parts and init are immutable; playlists and manifests are short-lived (DESIGN §7)."""
    if key.endswith((".m4s", ".mp4")):
        return IMMUTABLE
    return "public, max-age=1"


def etag_of(data: bytes) -> str:
    return '"' + hashlib.sha256(data).hexdigest()[:32] + '"'


@dataclass(frozen=True)
class StoredObject:
    key: str
    data: bytes
    content_type: str
    cache_control: str
    etag: str


class ObjectStore(ABC):
    """Whole-object put/get; puts are atomic (readers never see a partial object)."""

    @abstractmethod
    def put(self, key: str, data: bytes, *, content_type: str | None = None,
            cache_control: str | None = None) -> str:
        """Write `data` at `key` atomically; return its ETag."""

    @abstractmethod
    def get(self, key: str) -> StoredObject | None:
        """The object, or None when absent."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def delete(self, key: str) -> None:
        """Delete if present."""

    @abstractmethod
    def list(self, prefix: str) -> Iterator[str]:
        """Keys under a prefix ('live/demo/720p/')."""

    def put_if_changed(self, key: str, data: bytes, **kw: str | None) -> tuple[str, bool]:
        """Write only when the bytes differ (idempotent re-processing); return (etag, written)."""
        current = self.get(key)
        if current is not None and current.data == data:
            return current.etag, False
        return self.put(key, data, **kw), True  # type: ignore[arg-type]


class DirectoryStore(ObjectStore):
    """A directory on disk. Atomic by write-to-temp + rename; metadata derives from the key."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._root_s = str(self.root)

    def _path(self, key: str) -> Path:
        # validate_key admits no '.'-led or empty component and no leading '/', so the join stays lexically
        # inside the root; the normpath check is belt and braces, without resolve()'s lstat per component
        # (measurably slow on the packager's hot path: bench/packager.py).
        joined = os.path.normpath(os.path.join(self._root_s, validate_key(key)))
        if not joined.startswith(self._root_s + os.sep):
            raise InvalidKey(f"key {key!r} escapes the store")
        return Path(joined)

    def put(self, key: str, data: bytes, *, content_type: str | None = None,
            cache_control: str | None = None) -> str:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise StoreError(f"put {key}: {exc.strerror or exc}") from exc
        return etag_of(data)

    def get(self, key: str) -> StoredObject | None:
        path = self._path(key)
        try:
            data = path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        except OSError as exc:
            raise StoreError(f"get {key}: {exc.strerror or exc}") from exc
        return StoredObject(key, data, content_type_for(key), cache_control_for(key), etag_of(data))

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink(missing_ok=True)
        except OSError as exc:
            raise StoreError(f"delete {key}: {exc.strerror or exc}") from exc

    def list(self, prefix: str) -> Iterator[str]:
        base = self.root / prefix if prefix else self.root
        start = base if base.is_dir() else base.parent
        if not start.exists():
            return
        for p in sorted(start.rglob("*")):
            if p.is_file() and not p.name.startswith(".tmp-"):
                key = p.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    yield key


# S3 error codes worth another try (besides any 5xx / 429 status): throttling and server-side timeouts.
TRANSIENT_S3_CODES = frozenset({"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout",
                                "RequestTimeoutException", "InternalError", "ServiceUnavailable",
                                "RequestLimitExceeded", "PriorRequestNotComplete"})


def s3_error_is_transient(exc: BaseException) -> bool:
    """Connection trouble, a 5xx, 429 or a throttling code: the same request may work in a moment."""
    from botocore.exceptions import ClientError, HTTPClientError, IncompleteReadError
    from botocore.exceptions import ConnectionError as BotoConnectionError

    if isinstance(exc, BotoConnectionError | HTTPClientError | IncompleteReadError):
        return True
    if isinstance(exc, ClientError):
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        return status >= 500 or status == 429 or exc.response.get("Error", {}).get("Code") in TRANSIENT_S3_CODES
    return False


def _s3_not_found(exc: BaseException) -> bool:
    from botocore.exceptions import ClientError

    if not isinstance(exc, ClientError):
        return False
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    return status == 404 or exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound")


class S3Store(ObjectStore):
    """S3 or any S3-compatible store through boto3; Content-Type and Cache-Control on every object.

    Every call goes through `_call`: a transient failure (connection, 5xx, throttling) is retried up to
    `attempts` times in all with jittered exponential backoff; whatever still fails, and any other
    botocore error, surfaces as StoreError, the one error the roles handle (the packager keeps the
    write and tries again; the api answers 503). botocore's own retries are off, so the bound is ours.
    """

    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None, *,
                 attempts: int = 4, backoff_s: float = 0.1, max_backoff_s: float = 2.0) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.attempts = max(1, attempts)
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.s3 = boto3.client("s3", endpoint_url=endpoint_url,
                               config=Config(retries={"total_max_attempts": 1, "mode": "standard"},
                                             max_pool_connections=32))

    def _k(self, key: str) -> str:
        return self.prefix + validate_key(key)

    def _call(self, op: str, key: str, fn: Callable[[], T]) -> T:
        """fn(), retried while it fails transiently (bounded); StoreError when it gives up."""
        for attempt in range(1, self.attempts + 1):
            try:
                return fn()
            except Exception as exc:  # noqa: BLE001 - botocore raises many types; all end as StoreError
                transient = s3_error_is_transient(exc)
                if not transient or attempt == self.attempts:
                    tries = f" after {attempt} attempts" if attempt > 1 else ""
                    raise StoreError(f"{op} {key}{tries}: {exc}", transient=transient) from exc
                delay = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
                log.warning("object store %s failed, retrying", op,
                            extra={"key": key, "attempt": attempt, "reason": str(exc), "delay_s": round(delay, 3)})
                time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def ensure_bucket(self) -> None:
        try:
            self.s3.head_bucket(Bucket=self.bucket)
        except Exception:  # noqa: BLE001 - create when missing, errors surface on put
            self._call("create_bucket", self.bucket, lambda: self.s3.create_bucket(Bucket=self.bucket))

    def put(self, key: str, data: bytes, *, content_type: str | None = None,
            cache_control: str | None = None) -> str:
        k = self._k(key)
        self._call("put", key, lambda: self.s3.put_object(
            Bucket=self.bucket, Key=k, Body=data, ContentType=content_type or content_type_for(key),
            CacheControl=cache_control or cache_control_for(key)))
        return etag_of(data)

    def get(self, key: str) -> StoredObject | None:
        k = self._k(key)

        def fetch() -> tuple[dict[str, Any], bytes] | None:
            try:
                res = self.s3.get_object(Bucket=self.bucket, Key=k)
            except Exception as exc:  # noqa: BLE001
                if _s3_not_found(exc):
                    return None
                raise
            return res, res["Body"].read()  # a body cut off mid-read is retried with the request

        got = self._call("get", key, fetch)
        if got is None:
            return None
        res, data = got
        return StoredObject(key, data, res.get("ContentType") or content_type_for(key),
                            res.get("CacheControl") or cache_control_for(key), etag_of(data))

    def exists(self, key: str) -> bool:
        k = self._k(key)

        def head() -> bool:
            try:
                self.s3.head_object(Bucket=self.bucket, Key=k)
            except Exception as exc:  # noqa: BLE001
                if _s3_not_found(exc):
                    return False
                raise
            return True

        return self._call("exists", key, head)

    def delete(self, key: str) -> None:
        k = self._k(key)
        self._call("delete", key, lambda: self.s3.delete_object(Bucket=self.bucket, Key=k))

    def list(self, prefix: str) -> Iterator[str]:
        """Page by page; each page request is retried on its own, so a failure on page 3 does not
        restart the listing (and never yields a key twice)."""
        kw: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.prefix + prefix}
        while True:
            page = self._call("list", prefix or "/", lambda kw=dict(kw): self.s3.list_objects_v2(**kw))
            for obj in page.get("Contents", []):
                yield obj["Key"][len(self.prefix):]
            if not page.get("IsTruncated") or not page.get("NextContinuationToken"):
                return
            kw["ContinuationToken"] = page["NextContinuationToken"]


def open_store(url: str, endpoint_url: str | None = None) -> ObjectStore:
    """Pick the driver by URL scheme."""
    parsed = urlparse(url)
    if parsed.scheme in ("", "file"):
        return DirectoryStore(Path(unquote(parsed.path)))
    if parsed.scheme == "s3":
        store = S3Store(parsed.netloc, parsed.path, endpoint_url)
        store.ensure_bucket()
        return store
    raise ValueError(f"unsupported store URL {url!r} (use file:///dir or s3://bucket/prefix)")
