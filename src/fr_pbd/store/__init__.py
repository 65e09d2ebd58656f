"""Phase (b), storage: the encrypted, on-device template store.

Recipe layer over ``cryptography``: AES-256-GCM over the whole payload, a
random data key wrapped by a key-encryption key from a :class:`KeyProvider`,
templates protected by a per-store secret rotation (ISO/IEC 24745), payload
padded to size buckets, durable atomic writes under an ``flock``. No knobs that
weaken it. Format and threat model: ``docs/store-format.md``.

Never imports :mod:`fr_pbd.capture` (phase a).

Where things happen:

* a template is **protected** (secret rotation) in :func:`fr_pbd.store.protection.protect_rows`,
  called by ``Transaction.add_templates``;
* it is **encrypted** (with the whole payload, AES-256-GCM) in
  :func:`fr_pbd.store.envelope.seal`, and decrypted in :func:`fr_pbd.store.envelope.open_bytes`;
* the data key is wrapped by a KEK in :mod:`fr_pbd.store.keys`;
* the file is written (temp file, fsync, rename) by :func:`fr_pbd.fileio.atomic_write`,
  under the lock taken in :mod:`fr_pbd.store.store`.

Modules: ``store`` (the :class:`Store` handle: locking, file I/O),
``transaction`` (views and transactions), ``records`` (plaintext records and
the payload state), ``protection`` (template protection, matcher),
``envelope`` (encryption), ``fallback`` (the PIN hash), ``keys`` (key
providers), ``tpm`` (the TPM 2.0 provider and rollback counter), ``erasure`` (crypto-shredding), ``_format`` (bytes on disk),
``_fs`` (private modes, locks, shredding).

Typical use (the verifier)::

    from fr_pbd.store import Store, LockoutState, erase

    record = fr_pbd.pipeline.model_of_record()                       # the pipeline in force, no model loaded
    store = Store.create(home, model_id=record.model_id, dim=record.dim)  # key file in home/keys/kek
    store.set_fallback("4711-pin")                                   # required before enrolment
    with store.transaction() as tx:                                  # one atomic write
        tx.record_consent("alice", text_version="1", device_id="pi-kitchen", uid=1000)
        tx.add_templates("alice", templates)                          # list[Template]
    with store.transaction() as tx:                                  # count first (docs/lockout.md)
        lock = tx.lockout_of("alice")
        if not lock.is_locked():
            tx.set_lockout(lock.after_failure(), "alice")
            matcher = tx.matcher()
    ok = matcher.matches(probe, threshold, user="alice")             # bool only; then reset if ok
    store.fallback_attempt("4711-pin")                               # "accepted" / "wrong" / "locked"
    store.remove_user("alice")                                        # templates + consent, and re-key
    erase(home)                                                       # crypto-shred

The policy (who may try, when an attempt counts) is :class:`fr_pbd.verify.Verifier`'s;
the store keeps the counters and applies the fallback PIN's limit itself.
"""

from fr_pbd.store.erasure import erase
from fr_pbd.store.keys import DeviceFileKeyProvider, KeyProvider, PassphraseKeyProvider, WrappedKey
from fr_pbd.store.protection import ProtectedMatcher
from fr_pbd.store.records import ConsentRecord, LockoutState
from fr_pbd.store.store import LOCK_FILE, STORE_FILE, Store
from fr_pbd.store.tpm import TpmKeyProvider
from fr_pbd.store.transaction import StoreView, Transaction

__all__ = [
    "Store",
    "StoreView",
    "Transaction",
    "ConsentRecord",
    "LockoutState",
    "ProtectedMatcher",
    "erase",
    "KeyProvider",
    "WrappedKey",
    "DeviceFileKeyProvider",
    "PassphraseKeyProvider",
    "TpmKeyProvider",
    "STORE_FILE",
    "LOCK_FILE",
]
