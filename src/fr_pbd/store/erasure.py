"""Crypto-shredding: destroy the keys first, then the files (``docs/store-format.md``, section 5)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from fr_pbd import fileio, hardening
from fr_pbd.store import _format as fmt
from fr_pbd.store import _fs, migration
from fr_pbd.store.envelope import MAX_FILE, open_bytes
from fr_pbd.store.keys import KeyProvider, check_provider
from fr_pbd.store.store import LOCK_FILE, STORE_FILE, provider_for

__all__ = ["erase"]


def erase(home: str | os.PathLike[str], *, key_provider: KeyProvider | None = None) -> None:
    """Crypto-shred the store in ``home``. Irreversible; the CLI asks for confirmation first.

    The store must open with ``key_provider`` (default: the device key file) —
    fr-pbd never destroys a store it cannot open — except a store whose data
    key an interrupted erase already destroyed. Steps, each fsynced: (1) zero
    the wrapped data key in the store header, (2) overwrite and delete the key
    file(s) (device-file provider), (3) overwrite and delete the store file and
    the lock file. Overwriting is best effort on flash; the guarantee comes from
    destroying the keys. ``home`` itself is left in place.
    """
    home = Path(home)
    provider = check_provider(key_provider if key_provider is not None else provider_for(home))
    _fs.check_home(home)
    path = home / STORE_FILE
    with _fs.file_lock(home / LOCK_FILE, exclusive=True):
        if os.path.lexists(path):
            data = _fs.read_private_file(path, max_size=MAX_FILE)
            header, hlen = fmt.parse_header(data)
            if any(header.wrapped_dek):
                hardening.release(open_bytes(data, provider).dek)  # must open: raises and touches nothing otherwise
                _fs.overwrite(path, bytes(fmt.WRAPPED_DEK_LEN), fmt.wrapped_dek_offset(hlen))
            provider.destroy()
            _fs.shred_file(path)
        else:
            provider.destroy()
        _fs.remove_stale_temps(home)
        migration.discard(home, provider)  # a superseded key file, a key-change journal and its TPM counters
    with contextlib.suppress(FileNotFoundError):
        os.unlink(home / LOCK_FILE)
    fileio.fsync_dir(home)
