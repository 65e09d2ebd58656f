"""The fallback PIN/passphrase: an scrypt hash kept inside the encrypted payload.

Inside the payload, an offline guess needs the data key first
(``docs/store-format.md``, section 4). Checks take the same time whether or
not a fallback is set. The online rate limit (5 wrong, then 30 s doubling) is
:meth:`fr_pbd.store.Store.check_fallback`; :func:`check_fallback` here is the
bare comparison.

Minimum: 6 characters (a PIN of at least 6 digits, as Android and NIST SP
800-63B ask of a rate-limited device PIN), not one character repeated and not
a straight run of digits (``123456``, ``987654``). A 6-digit PIN is 10^6
guesses at ~0.3 s of scrypt each, about 3.5 core-days offline *after* the data
key is taken; a 4-digit one fell in under an hour.
"""

from __future__ import annotations

import hmac
import os
import unicodedata

from fr_pbd.store import _format as fmt
from fr_pbd.store.keys import normalise_secret, scrypt_derive

__all__ = ["MIN_FALLBACK_LEN", "check_strength", "hash_fallback", "check_fallback"]

MIN_FALLBACK_LEN = 6
_DIGITS = "0123456789"


def check_strength(secret: str) -> None:
    """ValueError (one line, without the secret) unless ``secret`` meets the minimum above."""
    if not isinstance(secret, str):
        raise TypeError("a passphrase or PIN must be a str")
    s = unicodedata.normalize("NFC", secret)
    if len(s) < MIN_FALLBACK_LEN:
        raise ValueError(f"a fallback PIN or passphrase needs at least {MIN_FALLBACK_LEN} characters "
                         f"(a PIN: {MIN_FALLBACK_LEN} digits or more)")
    if len(set(s)) == 1:
        raise ValueError("a fallback PIN or passphrase must not be one character repeated")
    if s.isdigit() and s.isascii() and (s in _DIGITS or s in _DIGITS[::-1]):
        raise ValueError("a fallback PIN must not be a straight run of digits, up or down")


def hash_fallback(secret: str) -> dict:
    """The payload's ``fallback`` record for ``secret``: scrypt N=2**17, r=8, p=1, fresh salt."""
    raw = normalise_secret(secret)
    check_strength(secret)
    params = fmt.ScryptParams(fmt.SCRYPT_MIN_LOG2_N, fmt.SCRYPT_MIN_R, fmt.SCRYPT_MIN_P, os.urandom(16))
    return {
        "kdf": "scrypt",
        "log2_n": params.log2_n,
        "r": params.r,
        "p": params.p,
        "salt": params.salt.hex(),
        "hash": scrypt_derive(raw, params).hex(),
        "min_len": MIN_FALLBACK_LEN,
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
