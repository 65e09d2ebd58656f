"""The fallback PIN/passphrase: an scrypt hash kept inside the encrypted payload.

Inside the payload, an offline guess needs the data key first
(``docs/store-format.md``, section 4). Checks take the same time whether or
not a fallback is set.
"""

from __future__ import annotations

import hmac
import os

from fr_pbd.store import _format as fmt
from fr_pbd.store.keys import normalise_secret, scrypt_derive

__all__ = ["MIN_FALLBACK_LEN", "hash_fallback", "check_fallback"]

MIN_FALLBACK_LEN = 4


def hash_fallback(secret: str) -> dict:
    """The payload's ``fallback`` record for ``secret``: scrypt N=2**17, r=8, p=1, fresh salt."""
    raw = normalise_secret(secret)
    if len(secret) < MIN_FALLBACK_LEN:
        raise ValueError(f"a fallback PIN or passphrase needs at least {MIN_FALLBACK_LEN} characters")
    params = fmt.ScryptParams(fmt.SCRYPT_MIN_LOG2_N, fmt.SCRYPT_MIN_R, fmt.SCRYPT_MIN_P, os.urandom(16))
    return {
        "kdf": "scrypt",
        "log2_n": params.log2_n,
        "r": params.r,
        "p": params.p,
        "salt": params.salt.hex(),
        "hash": scrypt_derive(raw, params).hex(),
    }


def check_fallback(record: dict | None, secret: str) -> bool:
    """Constant-time check of ``secret`` against a ``fallback`` record (~0.3 s). False if ``record`` is None."""
    raw = normalise_secret(secret)
    if record is None:
        # same work as a real check, then no
        scrypt_derive(raw, fmt.ScryptParams(fmt.SCRYPT_MIN_LOG2_N, fmt.SCRYPT_MIN_R, fmt.SCRYPT_MIN_P, bytes(16)))
        return False
    params = fmt.ScryptParams(record["log2_n"], record["r"], record["p"], bytes.fromhex(record["salt"]))
    return hmac.compare_digest(scrypt_derive(raw, params), bytes.fromhex(record["hash"]))
