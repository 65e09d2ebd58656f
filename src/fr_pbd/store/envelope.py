"""The encryption: store state <-> store file bytes (AES-256-GCM under a data key wrapped by a KEK).

:func:`seal` encrypts the whole padded payload (every template, consent
record, the fallback hash and the rotation) with the data key; the header is
the associated data. :func:`open_bytes` is its inverse and authenticates
before anything is decoded. Pure functions of bytes, keys and state: no file
I/O and no locks (that is :mod:`fr_pbd.store.store`). Layout:
``docs/store-format.md``, sections 2 and 4.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from fr_pbd import hardening
from fr_pbd.errors import StoreIntegrityError
from fr_pbd.store import _format as fmt
from fr_pbd.store.keys import KeyProvider, WrappedKey
from fr_pbd.store.records import StoreState

__all__ = ["DEK_LEN", "MAX_FILE", "Opened", "new_dek", "make_header", "seal", "open_bytes"]

DEK_LEN = 32
MAX_FILE = fmt.MAX_HEADER_LEN + fmt.NONCE_LEN + fmt.MAX_BUCKET + fmt.TAG_LEN


class Opened(NamedTuple):
    """An authenticated, decrypted store file: header bytes (the AAD), header, data key, state."""

    header_bytes: bytes
    header: fmt.Header
    dek: bytearray  # a hardening.secret_buffer: the store overwrites it when the operation ends
    state: StoreState


def new_dek() -> bytearray:
    """A fresh 256-bit data key (one per store; re-drawn by key rotation), drawn into its own
    mlocked buffer; the caller overwrites it with :func:`fr_pbd.hardening.release` after use."""
    return hardening.secret_buffer(size=DEK_LEN)


def make_header(state: StoreState, w: WrappedKey) -> fmt.Header:
    return fmt.Header(state.store_id, state.model_id, w.provider_id, w.params, w.key_id, w.wrapped)


def seal(header_bytes: bytes, dek: bytes | bytearray, state: StoreState) -> bytes:
    """The whole store file: header ‖ fresh random nonce ‖ AES-256-GCM(payload, AAD = header)."""
    payload = state.encode()
    nonce = os.urandom(fmt.NONCE_LEN)
    return header_bytes + nonce + AESGCM(dek).encrypt(nonce, payload, header_bytes)


def open_bytes(data: bytes, provider: KeyProvider) -> Opened:
    """Parse, unwrap, authenticate and decode a whole store file held in memory.

    Raises StoreIntegrityError (incl. WrongKeyError) or KeyProviderError; nothing else
    for malformed input.
    """
    header, hlen = fmt.parse_header(data)
    fmt.check_body_length(len(data) - hlen)
    if not any(header.wrapped_dek):
        raise StoreIntegrityError("this store was erased (its data key is destroyed); run erase again to finish")
    unwrapped = provider.unwrap(WrappedKey(header.provider_id, header.provider_params, header.key_id,
                                           header.wrapped_dek))
    dek = hardening.secret_buffer(unwrapped)  # the provider's bytes cannot be overwritten: dropped at once
    del unwrapped
    hbytes = bytes(data[:hlen])
    nonce = bytes(data[hlen : hlen + fmt.NONCE_LEN])
    try:
        payload = AESGCM(dek).decrypt(nonce, bytes(data[hlen + fmt.NONCE_LEN :]), hbytes)
        state = StoreState.decode(payload, header)
    except InvalidTag:
        hardening.release(dek)
        raise StoreIntegrityError(
            "the store failed authentication: it was modified, truncated, or is not the file this key protects"
        ) from None
    except BaseException:
        hardening.release(dek)
        raise
    return Opened(hbytes, header, dek, state)
