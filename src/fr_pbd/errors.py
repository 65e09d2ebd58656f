"""Typed errors. Every error carries a one-line, user-facing message.

The CLI prints ``str(error)`` and exits with ``error.exit_code``; it never
prints a traceback for an ``FrPbdError``. Messages never contain biometric
data (no scores, no template values, no pixels).
"""

from __future__ import annotations


class FrPbdError(Exception):
    """Base of every error fr-pbd raises on purpose."""

    exit_code: int = 2

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:  # one line, always
        return self.message.replace("\n", " ")


# --- models -----------------------------------------------------------------
class ModelError(FrPbdError):
    """A model file is missing, unknown, or not the file the manifest pins."""


class ModelNotFoundError(ModelError):
    pass


class ModelHashMismatchError(ModelError):
    pass


class ManifestError(ModelError):
    pass


class ModelBuildError(ModelError):
    pass


# --- capture (phase a) --------------------------------------------------------
class ImageError(FrPbdError):
    """The input is not an image fr-pbd can use."""


class CameraError(FrPbdError):
    """A camera source could not be opened or stopped delivering frames."""


class CameraUnavailableError(CameraError):
    """The camera could not be opened at all (a setup error, unlike a camera that stops mid-attempt)."""


class QualityError(FrPbdError):
    """No usable face: carries a machine-readable reason code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# --- store / match (phase b) ----------------------------------------------------
class StoreError(FrPbdError):
    """The encrypted store cannot be read or written."""


class StoreIntegrityError(StoreError):
    """Decryption or authentication failed: wrong key, tampered or truncated.

    fr-pbd never overwrites or deletes a store that raised this.
    """


class StorePermissionError(StoreError):
    """A store or key file is readable or writable by group or others."""


class StorageError(StoreError, OSError):
    """The file system refused what fr-pbd had to do: full (ENOSPC), over quota (EDQUOT), an I/O error
    (EIO), read-only (EROFS), or permission denied (EACCES, EPERM).

    The message names the cause, the path and what to do. Also an :class:`OSError`, with ``errno``,
    ``strerror`` and ``filename`` kept, so code that handles file-system errors as such still does.
    Made in one place, :func:`fr_pbd.fileio.storage_error`.
    """

    def __init__(self, message: str, errno: int | None = None, filename: str | None = None) -> None:
        super().__init__(message)
        self.errno = errno
        self.strerror = _strerror(errno)
        self.filename = filename


def _strerror(errno: int | None) -> str | None:
    import os

    return None if errno is None else os.strerror(errno)


class KeyProviderError(StoreError):
    """The key-encryption key cannot be obtained (missing key file, bad passphrase)."""


class WrongKeyError(KeyProviderError, StoreIntegrityError):
    """The key file or passphrase given is not the one that protects this store.

    Both a :class:`KeyProviderError` (ask again for the passphrase) and a
    :class:`StoreIntegrityError` (the store could not be opened, so fr-pbd never
    overwrites or deletes it).
    """


class TpmError(KeyProviderError):
    """The TPM cannot be reached, or refuses the store's key (cleared, another TPM, PCR values changed)."""


class StaleStoreError(StoreIntegrityError):
    """Rollback: the store file is older than its TPM counter says (a stale copy was restored).

    Refused, and never written over: the current copy is somewhere else, or was lost.
    """


class ConsentError(FrPbdError):
    """Enrolment without a recorded opt-in, or without a fallback credential."""


class ConfigError(FrPbdError):
    """A configuration or board profile file is invalid."""


class EgressError(FrPbdError):
    """A network operation was attempted in a process that must not use the network."""


class DaemonError(FrPbdError):
    """The verification daemon cannot start, or a client cannot get a valid answer from it."""


class AuditError(FrPbdError):
    """The audit cannot run (bad arguments, unreadable output directory); not a failed check."""


# --- evaluation -------------------------------------------------------------------
class EvaluationError(FrPbdError):
    """An evaluation cannot be run or its inputs are malformed (pairs file, groups file, scores)."""
