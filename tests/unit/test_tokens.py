"""Playback tokens: stream-bound, expiring, tamper-evident, rotatable."""

from __future__ import annotations

import pytest

from api.tokens import PlaybackSigner, TokenError, parse_keys

NOW = 1_800_000_000.0


def test_token_opens_its_stream_only_until_it_expires() -> None:
    signer = PlaybackSigner("k1:first-secret-123", ttl_s=60)
    token = signer.sign("live/final", now=NOW)
    assert signer.verify(token, "live/final", now=NOW + 59) == int(NOW) + 60
    with pytest.raises(TokenError, match="signature"):
        signer.verify(token, "live/other", now=NOW)
    with pytest.raises(TokenError, match="signature"):
        signer.verify(token, "vod/final", now=NOW)
    with pytest.raises(TokenError, match="expired"):
        signer.verify(token, "live/final", now=NOW + 61)


@pytest.mark.parametrize("mangle", [
    lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),               # signature byte
    lambda t: t.replace(t.split(".")[1], str(int(t.split(".")[1]) + 3600)),  # extended expiry
    lambda t: "k2." + t.split(".", 1)[1],                          # other key id
    lambda t: t.split(".")[0],                                      # truncated
    lambda t: "",                                                    # empty
    lambda t: t + ".extra",
])
def test_tampered_tokens_are_refused(mangle) -> None:  # noqa: ANN001
    signer = PlaybackSigner("k1:first-secret-123", ttl_s=60)
    with pytest.raises(TokenError):
        signer.verify(mangle(signer.sign("live/final", now=NOW)), "live/final", now=NOW)


def test_missing_token_is_refused() -> None:
    with pytest.raises(TokenError, match="missing"):
        PlaybackSigner("k1:first-secret-123", 60).verify(None, "live/x")


def test_rotation_new_key_signs_old_key_still_verifies() -> None:
    old = PlaybackSigner("k1:first-secret-123", ttl_s=60)
    rotated = PlaybackSigner("k2:second-secret-456,k1:first-secret-123", ttl_s=60)
    legacy = old.sign("live/final", now=NOW)
    assert rotated.verify(legacy, "live/final", now=NOW)
    fresh = rotated.sign("live/final", now=NOW)
    assert fresh.startswith("k2.")
    with pytest.raises(TokenError, match="unknown"):
        old.verify(fresh, "live/final", now=NOW)
    retired = PlaybackSigner("k2:second-secret-456", ttl_s=60)
    with pytest.raises(TokenError, match="unknown"):
        retired.verify(legacy, "live/final", now=NOW)


def test_bucketed_tokens_are_shared_within_the_bucket() -> None:
    signer = PlaybackSigner("k1:first-secret-123", ttl_s=60)
    a = signer.sign("live/x", now=NOW + 1, ttl_s=60, bucket_s=60)
    b = signer.sign("live/x", now=NOW + 30, ttl_s=60, bucket_s=60)
    assert a == b
    assert signer.verify(a, "live/x", now=NOW + 30)


@pytest.mark.parametrize("spec", ["", "nokey", "k1:short", "bad kid:secret-long-enough", " , "])
def test_bad_key_specs_are_rejected(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_keys(spec)
