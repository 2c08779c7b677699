import pytest

from floodlight.objectstore import DirectoryStore, InvalidKey, cache_control_for, content_type_for
from floodlight.streamkeys import hash_stream_key, new_stream_key, verify_stream_key


def test_directory_store_put_get_list_delete(tmp_path) -> None:
    store = DirectoryStore(tmp_path)
    etag = store.put("live/s/720p/1.m4s", b"abc")
    obj = store.get("live/s/720p/1.m4s")
    assert obj is not None and obj.data == b"abc" and obj.etag == etag
    assert obj.cache_control.endswith("immutable") and obj.content_type == "video/iso.segment"
    assert list(store.list("live/s/")) == ["live/s/720p/1.m4s"]
    assert store.put_if_changed("live/s/720p/1.m4s", b"abc")[1] is False
    store.delete("live/s/720p/1.m4s")
    assert store.get("live/s/720p/1.m4s") is None


@pytest.mark.parametrize("key", ["../x", "live/../../etc/passwd", "/etc/passwd", "live//x", "live/%2e%2e/x", ""])
def test_keys_cannot_escape(tmp_path, key: str) -> None:
    with pytest.raises(InvalidKey):
        DirectoryStore(tmp_path).get(key)


def test_metadata_by_kind() -> None:
    assert content_type_for("live/s/master.m3u8") == "application/vnd.apple.mpegurl"
    assert content_type_for("live/s/manifest.mpd") == "application/dash+xml"
    assert cache_control_for("live/s/720p/playlist.m3u8") == "public, max-age=1"


def test_stream_keys_hash_and_verify() -> None:
    key = new_stream_key()
    stored = hash_stream_key(key)
    assert key not in stored
    assert verify_stream_key(key, stored)
    assert not verify_stream_key(key + "x", stored)
    assert not verify_stream_key(key, "garbage")
