"""HLS AES-128: whole-resource AES-128-CBC with PKCS#7 padding (RFC 8216bis §5.2), one IV per key.

Keys rotate every N segments: segment msn uses key `k{msn // N}`, so the choice is a pure function
of the msn and survives restarts. Key bytes come from the key provider (floodlight/keystore.py) and
never sit next to the media; playlists only carry the key's URI on the api.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


def key_id_for(msn: int, rotation_segments: int) -> str:
    return f"k{msn // max(1, rotation_segments)}"


def encrypt(data: bytes, key: bytes, iv: bytes) -> bytes:
    padder = padding.PKCS7(128).padder()
    padded = padder.update(data) + padder.finalize()
    enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return enc.update(padded) + enc.finalize()


def decrypt(data: bytes, key: bytes, iv: bytes) -> bytes:
    dec = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    padded = dec.update(data) + dec.finalize()
    unpad = padding.PKCS7(128).unpadder()
    return unpad.update(padded) + unpad.finalize()
