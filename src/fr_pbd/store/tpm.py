"""TPM 2.0 key custody: the data key sealed by the TPM, the store's generation bound to a TPM counter.

Design (``docs/tpm.md``):

* **The data key (DEK) is sealed directly** as a TPM keyed-hash object under the
  owner hierarchy's storage root key (SRK: ECC NIST P-256, AES-128-CFB, the TCG
  template), re-derived from the owner seed and flushed per operation. The SRK
  is the key-encryption key and never leaves the TPM; the sealed object's
  private part (in the store header) is encrypted by it, so the header is
  useless on any other TPM, or on this one after ``tpm2_clear``.
* The sealed object's authorisation value (32 random bytes) fills the header's
  wrapped-key field, so ``erase`` (which zeroes that field) leaves an object that
  can no longer be unsealed even on this TPM; it is a bearer secret, not a KEK.
* Every TPM command that carries the DEK runs in a session salted with the SRK
  and AES-128-CFB parameter encryption: neither the DEK nor the authorisation
  value crosses the bus (LPC/SPI) in clear.
* Optional PCR policy (off by default): unsealing also needs the selected PCRs
  (e.g. ``sha256:7``, the Secure Boot state) to hold the values they had at
  sealing time. A firmware or boot change then refuses the key; re-seal before
  such an update (``fr-pbd keys rotate --pcrs none``, then ``--pcrs 7`` after).
* **Rollback protection**: a TPM NV counter (``TPM_NT_COUNTER``, owner range,
  authorisation value in the header) with ``counter == nv_base + generation``
  after every committed write; a store whose generation is behind the counter
  is refused (:class:`~fr_pbd.errors.StaleStoreError`).

Transports (``tpm`` in config.toml or ``$FR_PBD_TPM``): ``device:/dev/tpmrm0`` (the
kernel's resource manager, the default) or ``swtpm:path=/abs/socket`` (a software
TPM on a Unix socket, for tests). Nothing that speaks TCP is accepted: fr-pbd's
kernel egress filter refuses every socket family but AF_UNIX (:mod:`fr_pbd.egress`).

Library: ``tpm2-pytss`` (ESAPI of Debian's ``libtss2``) in process; see docs/tpm.md for why.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import hmac
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from fr_pbd.errors import ConfigError, KeyProviderError, StaleStoreError, StoreIntegrityError, TpmError, WrongKeyError
from fr_pbd.store import _format as fmt
from fr_pbd.store.keys import KEY_LEN, KeyProvider, WrappedKey, protected_by, superseded_key_files

__all__ = ["TpmKeyProvider", "TpmInfo", "tpm_info", "parse_transport", "resolve_transport", "release_counter",
           "DEFAULT_TRANSPORT", "ENV_TPM"]

ENV_TPM = "FR_PBD_TPM"
DEFAULT_TRANSPORT = "device:/dev/tpmrm0"
_KEY_ID_LABEL = b"fr-pbd/v1/tpm-key-id"
_PCR_BANKS = {"sha1": 0x0004, "sha256": 0x000B, "sha384": 0x000C, "sha512": 0x000D}
_BANK_NAMES = {v: k for k, v in _PCR_BANKS.items()}
_WRAPPED_PAD = fmt.WRAPPED_DEK_LEN - fmt.TPM_AUTH_LEN

_GONE = ("the TPM no longer holds this store's key: it was cleared, or this is another TPM (a copied home). "
         "The templates cannot be decrypted; erase the store and enrol again")


# --------------------------------------------------------------------------------------
# transport
# --------------------------------------------------------------------------------------
def parse_transport(spec: str) -> str:
    """The TCTI string for ``spec`` if fr-pbd accepts it; ConfigError otherwise.

    ``device:/dev/...`` (a TPM character device) or ``swtpm:path=/abs/path`` (a Unix
    socket). No host, no port: a TPM is reached without the network.
    """
    if not isinstance(spec, str) or "\x00" in spec or "\n" in spec:
        raise ConfigError("tpm must be a string such as \"device:/dev/tpmrm0\"")
    kind, _, conf = spec.partition(":")
    if kind == "device" and conf.startswith("/dev/") and "," not in conf:
        return spec
    if kind == "swtpm" and conf.startswith("path=/") and "," not in conf and len(os.fsencode(conf[5:])) <= 100:
        return spec
    raise ConfigError(f"tpm = {spec!r} is not a transport fr-pbd uses: give \"device:/dev/tpmrm0\" (a TPM "
                      "device) or \"swtpm:path=/absolute/socket\" (a software TPM's Unix socket); TCP "
                      "transports are refused (no network)")


def resolve_transport(home: str | os.PathLike[str] | None = None) -> str:
    """``$FR_PBD_TPM``, else ``tpm`` in the home's config.toml, else ``device:/dev/tpmrm0``."""
    env = os.environ.get(ENV_TPM)
    if env:
        return parse_transport(env)
    from fr_pbd import config

    return parse_transport(config.load(home).tpm or DEFAULT_TRANSPORT)


def _tss() -> Any:
    """The tpm2_pytss module (TpmError if missing); libtss2's own log lines are silenced first."""
    os.environ.setdefault("TSS2_LOG", "all+NONE")  # errors reach the user as one line, from here
    try:
        import tpm2_pytss
    except ImportError as exc:
        raise TpmError("TPM support needs tpm2-pytss (pip install 'fr-pbd[tpm]', built against Debian's "
                       f"libtss2-dev): {exc}") from None
    return tpm2_pytss


def _rc(exc: BaseException) -> int:
    """The TSS2 return code of a TSS2_Exception with its layer bits removed (0 if none)."""
    rc = getattr(exc, "rc", 0) or 0
    return int(rc) & 0xFFFF


def _fmt0(rc: int) -> int:
    """A TPM 2.0 format-one code (parameter/handle/session number stripped)."""
    return (rc & 0xBF) | 0x80 if rc & 0x80 else rc


_RC_INTEGRITY, _RC_POLICY_FAIL, _RC_PCR_CHANGED, _RC_AUTH_FAIL, _RC_BAD_AUTH = 0x9F, 0x9D, 0x128, 0x8E, 0xA2
_RC_HANDLE, _RC_NV_UNINITIALIZED, _RC_NV_DEFINED = 0x8B, 0x14A, 0x14C


@contextlib.contextmanager
def _esapi(transport: str) -> Iterator[Any]:
    """One connection to the TPM; flushes what it loaded on the way out.

    A software TPM has no resource manager and serves several connections at once, and
    holds only three objects: fr-pbd processes take turns on it (an ``flock`` on
    ``<socket>.lock``) and each flushes, under that lock, what a killed process left
    loaded. ``/dev/tpm0`` (no resource manager) opens for one process at a time anyway;
    ``/dev/tpmrm0``, the kernel's resource manager, needs neither.
    """
    tss = _tss()
    with _turn(transport):
        try:
            ectx = tss.ESAPI(transport)
        except Exception as exc:  # noqa: BLE001 - TSS2_Exception, OSError from the TCTI
            raise TpmError(f"no TPM reachable at {transport} ({_short(exc)}); "
                           "check the device node or tpm in config.toml") from None
        try:
            _set_timeout(ectx)
            if not transport.startswith("device:/dev/tpmrm"):
                _flush_stale(ectx, tss)
            yield ectx
        finally:
            ectx.close()


#: A TPM answers in well under a second; one that does not answer in this long is an error, not a hang.
TPM_TIMEOUT_MS = 10_000


def _set_timeout(ectx: Any) -> None:
    """Bound every response wait (libtss2 waits forever by default)."""
    with contextlib.suppress(Exception):  # an older binding without Esys_SetTimeout: keep the default
        from tpm2_pytss._libtpm2_pytss import lib

        lib.Esys_SetTimeout(ectx._ctx, TPM_TIMEOUT_MS)


@contextlib.contextmanager
def _turn(transport: str) -> Iterator[None]:
    """Exclusive use of a software TPM among fr-pbd processes (no-op for a device node)."""
    if not transport.startswith("swtpm:path="):
        yield
        return
    import fcntl

    try:
        fd = os.open(transport[len("swtpm:path="):] + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise TpmError(f"cannot take turns on the software TPM ({exc.strerror or exc})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__


def _flush_stale(ectx: Any, tss: Any) -> None:
    for first in (tss.TPM2_HC.TRANSIENT_FIRST, tss.TPM2_HC.LOADED_SESSION_FIRST):
        _more, cap = ectx.get_capability(tss.TPM2_CAP.HANDLES, first, 64)
        for handle in cap.data.handles:
            with contextlib.suppress(Exception):
                ectx.flush_context(ectx.tr_from_tpmpublic(handle))


def _srk_template(tss: Any) -> Any:
    a = tss.TPMA_OBJECT
    attrs = (a.FIXEDTPM | a.FIXEDPARENT | a.SENSITIVEDATAORIGIN | a.USERWITHAUTH | a.NODA | a.RESTRICTED
             | a.DECRYPT)
    return tss.TPM2B_PUBLIC.parse("ecc256:aes128cfb", objectAttributes=attrs)


@contextlib.contextmanager
def _srk(ectx: Any) -> Iterator[tuple[Any, bytes]]:
    """The storage root key (re-derived from the owner seed) and its name; flushed afterwards."""
    tss = _tss()
    try:
        handle, *_ = ectx.create_primary(None, _srk_template(tss), tss.ESYS_TR.OWNER)
    except Exception as exc:  # noqa: BLE001
        raise TpmError(f"the TPM refused to derive its storage root key ({_short(exc)}); is the owner "
                       "hierarchy protected by a password (fr-pbd needs it empty)?") from None
    try:
        yield handle, bytes(ectx.tr_get_name(handle))
    finally:
        ectx.flush_context(handle)


@contextlib.contextmanager
def _session(ectx: Any, srk: Any, policy: bool = False) -> Iterator[Any]:
    """A session salted with the SRK, AES-128-CFB parameter encryption both ways; flushed afterwards."""
    tss = _tss()
    kind = tss.TPM2_SE.POLICY if policy else tss.TPM2_SE.HMAC
    sess = ectx.start_auth_session(srk, tss.ESYS_TR.NONE, kind, "aes128cfb", tss.TPM2_ALG.SHA256)
    try:
        s = tss.TPMA_SESSION
        ectx.trsess_set_attributes(sess, s.DECRYPT | s.ENCRYPT | s.CONTINUESESSION)
        yield sess
    finally:
        with contextlib.suppress(Exception):
            ectx.flush_context(sess)


def _pcr_selection(tss: Any, bank: int, mask: int) -> Any:
    pcrs = ",".join(str(i) for i in range(24) if mask >> i & 1)
    return tss.TPML_PCR_SELECTION.parse(f"{_BANK_NAMES[bank]}:{pcrs}")


def _policy_digest(ectx: Any, bank: int, mask: int) -> bytes:
    """PolicyPCR(current values of the selection) AND PolicyPassword, computed in a trial session."""
    tss = _tss()
    sess = ectx.start_auth_session(tss.ESYS_TR.NONE, tss.ESYS_TR.NONE, tss.TPM2_SE.TRIAL, None,
                                   tss.TPM2_ALG.SHA256)
    try:
        ectx.policy_pcr(sess, None, _pcr_selection(tss, bank, mask))
        ectx.policy_password(sess)
        return bytes(ectx.policy_get_digest(sess))
    finally:
        ectx.flush_context(sess)


def _new_auth() -> bytes:
    """32 random bytes, last one non-zero (a TPM drops trailing zero bytes of an authorisation value)."""
    auth = bytearray(os.urandom(fmt.TPM_AUTH_LEN))
    auth[-1] |= 1
    return bytes(auth)


def _key_id(public: bytes) -> bytes:
    return hashlib.sha256(_KEY_ID_LABEL + public).digest()[: fmt.KEY_ID_LEN]


# --------------------------------------------------------------------------------------
# the provider
# --------------------------------------------------------------------------------------
class TpmKeyProvider(KeyProvider):
    """The data key sealed by a TPM 2.0 (SRK under the owner hierarchy); rollback-protected by an NV counter.

    ``TpmKeyProvider(transport, pcrs=(), pcr_bank="sha256")``: ``transport`` as in
    :func:`parse_transport` (default: :func:`resolve_transport`); ``pcrs`` binds
    new seals to those PCRs' current values (off by default; docs/tpm.md says how a
    firmware update re-seals). Opening a store reads its PCR selection from the
    header, so ``pcrs`` only matters for :meth:`wrap` (creation, rotation, migration).
    """

    provider_id = fmt.PROVIDER_TPM2
    rollback_protection = True

    def __init__(self, transport: str | None = None, *, pcrs: Sequence[int] = (), pcr_bank: str = "sha256") -> None:
        self._transport = parse_transport(transport) if transport is not None else resolve_transport()
        if pcr_bank not in _PCR_BANKS:
            raise ValueError(f"pcr_bank must be one of {', '.join(_PCR_BANKS)}")
        mask = 0
        for i in pcrs:
            if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i <= 23:
                raise ValueError("PCR numbers are integers 0-23")
            mask |= 1 << i
        self._bank = _PCR_BANKS[pcr_bank] if mask else 0
        self._mask = mask
        self._binding: fmt.TpmParams | None = None  # the counter of the store last opened
        self._counter: tuple[int, int] | None = None  # (nv index, value) read by the last unwrap
        self._reserve: Callable[[int, bytes], None] | None = None  # the migration journal, while one is open
        self._behind = False  # the last open found the counter behind the store (a crash before committed)

    @classmethod
    def for_home(cls, home: str | os.PathLike[str]) -> "TpmKeyProvider":
        """The provider on the transport configured for ``home`` ($FR_PBD_TPM, config.toml, default)."""
        provider = cls(resolve_transport(home))
        provider.attach_home(home)
        return provider

    @property
    def transport(self) -> str:
        return self._transport

    @property
    def pcrs(self) -> tuple[int, ...]:
        """The PCRs new seals are bound to (after an open: the ones the store's key is bound to)."""
        return tuple(i for i in range(24) if self._mask >> i & 1)

    def with_pcrs(self, pcrs: Sequence[int], pcr_bank: str = "sha256") -> "TpmKeyProvider":
        """The same TPM and the same store counter, sealing to other PCRs (``()``: none) from now on."""
        other = TpmKeyProvider(self._transport, pcrs=pcrs, pcr_bank=pcr_bank)
        other._binding = self._binding
        other._home = self._home
        return other

    def __repr__(self) -> str:
        pcrs = f", pcrs={_BANK_NAMES[self._bank]}:{self._mask:#x}" if self._mask else ""
        return f"TpmKeyProvider(transport={self._transport!r}{pcrs})"

    def custody(self) -> str:
        pcr = (f"; bound to PCRs {','.join(str(i) for i in range(24) if self._mask >> i & 1)}" if self._mask
               else "")
        left = superseded_key_files(self._home) if self._home is not None else []
        if left:
            # Never "sealed by the TPM" while a key file of the earlier custody exists: it opens older copies.
            return (f"NOT in the TPM's sole custody: the data key is held by the TPM 2.0 at {self._transport}, but "
                    f"the key file {', '.join(map(str, left))} of the store's earlier key custody is still there "
                    "and opens every older copy of this store (an interrupted key migration); the next fr-pbd "
                    "command that can write the home removes it (docs/tpm.md, 'Migration journal')")
        return (f"sealed by the TPM 2.0 at {self._transport} under its storage root key (the key-encryption key "
                f"never leaves the TPM): a copy of the disk alone does not open the store{pcr}; rollback "
                "detected by a TPM NV counter")

    # -- sealing ------------------------------------------------------------------------
    def _seal(self, dek: bytes, binding: fmt.TpmParams | None) -> WrappedKey:
        if len(dek) != KEY_LEN:
            raise ValueError("a data key is 32 bytes")
        tss = _tss()
        auth = _new_auth()
        with _esapi(self._transport) as ectx, _srk(ectx) as (srk, srk_name):
            a = tss.TPMA_OBJECT
            policy = _policy_digest(ectx, self._bank, self._mask) if self._mask else b""
            attrs = a.FIXEDTPM | a.FIXEDPARENT | a.NODA | (0 if policy else a.USERWITHAUTH)
            public = tss.TPM2B_PUBLIC(tss.TPMT_PUBLIC(type=tss.TPM2_ALG.KEYEDHASH, nameAlg=tss.TPM2_ALG.SHA256,
                                                      objectAttributes=attrs, authPolicy=policy))
            public.publicArea.parameters.keyedHashDetail.scheme.scheme = tss.TPM2_ALG.NULL
            sensitive = tss.TPM2B_SENSITIVE_CREATE(tss.TPMS_SENSITIVE_CREATE(
                userAuth=tss.TPM2B_AUTH(auth), data=tss.TPM2B_SENSITIVE_DATA(bytes(dek))))  # cffi wants bytes
            with _session(ectx, srk) as sess:
                try:
                    private, out_public, *_ = ectx.create(srk, sensitive, public, session1=sess)
                except Exception as exc:  # noqa: BLE001
                    raise TpmError(f"the TPM refused to seal the data key ({_short(exc)})") from None
        pub_b, priv_b = out_public.marshal(), private.marshal()
        b = binding
        params = fmt.TpmParams(self._bank, self._mask, b.nv_index if b else 0,
                               b.nv_auth if b else bytes(fmt.TPM_AUTH_LEN), b.nv_base if b else 0,
                               srk_name, pub_b, priv_b)
        return WrappedKey(self.provider_id, params.encode(), _key_id(pub_b), auth + bytes(_WRAPPED_PAD))

    def wrap(self, dek: bytes) -> WrappedKey:
        return self._seal(dek, self._binding)

    def unwrap(self, wrapped: WrappedKey) -> bytes:
        if wrapped.provider_id != self.provider_id:
            raise WrongKeyError(f"this store is protected by {protected_by(wrapped.provider_id)}, not a TPM")
        p = _params(wrapped)
        if not hmac.compare_digest(_key_id(p.public), wrapped.key_id) or any(wrapped.wrapped[fmt.TPM_AUTH_LEN:]):
            raise StoreIntegrityError("the store file is damaged or not an fr-pbd store (TPM key fields)")
        tss = _tss()
        auth = bytes(wrapped.wrapped[: fmt.TPM_AUTH_LEN])
        with _esapi(self._transport) as ectx:
            with _srk(ectx) as (srk, srk_name):
                if not hmac.compare_digest(srk_name, p.srk_name):
                    raise TpmError(_GONE)
                try:
                    public = tss.TPM2B_PUBLIC.unmarshal(p.public)[0]
                    private = tss.TPM2B_PRIVATE.unmarshal(p.private)[0]
                    obj = ectx.load(srk, private, public)
                except Exception as exc:  # noqa: BLE001
                    if _fmt0(_rc(exc)) == _RC_INTEGRITY:
                        raise TpmError(_GONE) from None
                    raise StoreIntegrityError("the TPM refused the sealed key in the store header: the store "
                                              "file is damaged") from None
                try:
                    dek = self._unseal(ectx, srk, obj, auth, p)
                finally:
                    ectx.flush_context(obj)
            self._counter = (p.nv_index, _read_counter(ectx, p)) if p.nv_index else None
        self._binding = p
        self._bank, self._mask = p.pcr_bank, p.pcr_mask  # a rotation keeps the store's PCR binding
        if len(dek) != KEY_LEN:
            raise StoreIntegrityError("the store file is damaged or not an fr-pbd store (TPM sealed key)")
        return dek

    def _unseal(self, ectx: Any, srk: Any, obj: Any, auth: bytes, p: fmt.TpmParams) -> bytes:
        tss = _tss()
        ectx.tr_set_auth(obj, auth)
        with _session(ectx, srk) as enc, _session(ectx, srk, policy=bool(p.pcr_mask)) as sess:
            try:
                if not p.pcr_mask:
                    return bytes(ectx.unseal(obj, session1=enc))
                # the policy session authorises; the salted HMAC session (no role but encryption) hides the key
                ectx.trsess_set_attributes(sess, tss.TPMA_SESSION.CONTINUESESSION)
                ectx.policy_pcr(sess, None, _pcr_selection(tss, p.pcr_bank, p.pcr_mask))
                ectx.policy_password(sess)
                return bytes(ectx.unseal(obj, session1=sess, session2=enc))
            except Exception as exc:  # noqa: BLE001
                rc = _fmt0(_rc(exc))
                if rc in (_RC_POLICY_FAIL, _RC_PCR_CHANGED) or (p.pcr_mask and rc == 0x99D):
                    raise TpmError(
                        f"the TPM refuses the key: PCR {','.join(map(str, p.pcrs))} ({_BANK_NAMES.get(p.pcr_bank)}) "
                        "no longer hold the values the key was sealed to (firmware, boot loader or Secure Boot "
                        "changed); see docs/tpm.md, 'PCR policy'") from None
                if rc in (_RC_AUTH_FAIL, _RC_BAD_AUTH):
                    raise StoreIntegrityError("the TPM refused the store's key authorisation: the store file "
                                              "is damaged") from None
                raise TpmError(f"the TPM refused to unseal the data key ({_short(exc)})") from None

    # -- rollback ---------------------------------------------------------------------------
    def bind(self, wrapped: WrappedKey, generation: int) -> WrappedKey:
        p = _params(wrapped)
        if p.nv_index:
            return wrapped
        tss = _tss()
        nv_auth = _new_auth()
        with _esapi(self._transport) as ectx:
            nv = _define_counter(ectx, tss, nv_auth, self._reserve)
            ectx.tr_set_auth(nv, nv_auth)
            ectx.nv_increment(nv)
            value = _int(ectx.nv_read(nv, 8))
            index = int(ectx.tr_get_tpm_handle(nv))
        p = dataclasses.replace(p, nv_index=index, nv_auth=nv_auth, nv_base=value - generation)
        self._binding = p
        self._counter = (index, value)
        return dataclasses.replace(wrapped, params=p.encode())

    def check_fresh(self, wrapped: WrappedKey, generation: int) -> None:
        p = _params(wrapped)
        if not p.nv_index:
            raise StoreIntegrityError("this TPM store has no rollback counter: the store file is damaged")
        value = self._counter_value(p)
        self._behind = value - p.nv_base < generation
        if value - p.nv_base > generation:
            raise StaleStoreError(
                f"a stale copy of the store was restored: the TPM counter says write {value - p.nv_base}, this "
                f"file is write {generation}; refused (an older copy would bring back old lockouts and "
                "withdrawn users). Put the current store back, or erase and enrol again")

    def committed(self, wrapped: WrappedKey, generation: int) -> None:
        p = _params(wrapped)
        if not p.nv_index:
            return
        target = p.nv_base + generation
        with _esapi(self._transport) as ectx:
            value = _read_counter(ectx, p)
            nv = _nv_handle(ectx, p)
            while value < target:
                ectx.nv_increment(nv)
                value += 1
        self._counter = (p.nv_index, value)
        self._behind = False

    def _counter_value(self, p: fmt.TpmParams) -> int:
        cached, self._counter = self._counter, None
        if cached is not None and cached[0] == p.nv_index:
            return cached[1]
        with _esapi(self._transport) as ectx:
            return _read_counter(ectx, p)

    def reserve_with(self, record: Callable[[int, bytes], None] | None) -> None:
        self._reserve = record

    def pending(self) -> bool:
        return self._behind

    # -- rotation and destruction ------------------------------------------------------------
    def begin_rotation(self) -> KeyProvider:
        return _StagedTpmKey(self)

    def destroy(self) -> None:
        """Free the store's NV counter (the sealed key dies with the header that erase zeroed)."""
        p = self._binding
        if p is None or not p.nv_index:
            return
        with contextlib.suppress(TpmError), _esapi(self._transport) as ectx:
            with contextlib.suppress(Exception):
                ectx.nv_undefine_space(ectx.tr_from_tpmpublic(p.nv_index))
        self._binding = None

    def same_key_material(self, other: KeyProvider) -> bool:
        if isinstance(other, _StagedTpmKey):
            other = other._owner
        return isinstance(other, TpmKeyProvider) and other._transport == self._transport


class _StagedTpmKey(KeyProvider):
    """A rotation: seals the new data key afresh, keeping the store's counter."""

    provider_id = fmt.PROVIDER_TPM2
    rollback_protection = True

    def __init__(self, owner: TpmKeyProvider) -> None:
        self._owner = owner

    def __repr__(self) -> str:
        return f"_StagedTpmKey({self._owner!r})"

    def wrap(self, dek: bytes) -> WrappedKey:
        return self._owner.wrap(dek)

    def unwrap(self, wrapped: WrappedKey) -> bytes:
        return self._owner.unwrap(wrapped)

    def bind(self, wrapped: WrappedKey, generation: int) -> WrappedKey:
        return self._owner.bind(wrapped, generation)

    def committed(self, wrapped: WrappedKey, generation: int) -> None:
        self._owner.committed(wrapped, generation)

    def same_key_material(self, other: KeyProvider) -> bool:
        return self._owner.same_key_material(other)


def _params(wrapped: WrappedKey) -> fmt.TpmParams:
    return fmt.TpmParams.decode(wrapped.params)


def _int(buf: Any) -> int:
    return int.from_bytes(bytes(buf), "big")


def _nv_handle(ectx: Any, p: fmt.TpmParams) -> Any:
    try:
        nv = ectx.tr_from_tpmpublic(p.nv_index)
    except Exception as exc:  # noqa: BLE001
        if _fmt0(_rc(exc)) == _RC_HANDLE or "handle" in str(exc).lower():
            raise TpmError(f"the store's rollback counter (NV index {p.nv_index:#010x}) is gone from the TPM: "
                           + _GONE) from None
        raise TpmError(f"cannot read the store's rollback counter ({_short(exc)})") from None
    ectx.tr_set_auth(nv, p.nv_auth)
    return nv


def _read_counter(ectx: Any, p: fmt.TpmParams) -> int:
    nv = _nv_handle(ectx, p)
    try:
        return _int(ectx.nv_read(nv, 8))
    except Exception as exc:  # noqa: BLE001
        raise TpmError(f"cannot read the store's rollback counter ({_short(exc)})") from None


def _define_counter(ectx: Any, tss: Any, nv_auth: bytes, reserve: Callable[[int, bytes], None] | None = None) -> Any:
    """A fresh NV counter at a random free index of the owner range.

    ``reserve(index, nv_auth)`` is called before each attempt to define ``index``: the migration
    journal makes it durable there, so that a crash after the define can undefine the counter.
    """
    span = fmt.TPM_NV_LAST - fmt.TPM_NV_FIRST + 1
    attrs = (tss.TPMA_NV.AUTHREAD | tss.TPMA_NV.AUTHWRITE | tss.TPMA_NV.NO_DA
             | (tss.TPM2_NT.COUNTER << tss.TPMA_NV.TPM2_NT_SHIFT))
    for _ in range(16):
        index = fmt.TPM_NV_FIRST + int.from_bytes(os.urandom(4), "big") % span
        if reserve is not None:
            reserve(index, nv_auth)
        public = tss.TPM2B_NV_PUBLIC(tss.TPMS_NV_PUBLIC(nvIndex=index, nameAlg=tss.TPM2_ALG.SHA256,
                                                        attributes=attrs, dataSize=8))
        try:
            handle = ectx.nv_define_space(nv_auth, public)
        except Exception as exc:  # noqa: BLE001
            if _fmt0(_rc(exc)) == _RC_NV_DEFINED:
                continue
            raise TpmError(f"the TPM refused to create the rollback counter ({_short(exc)}); NV space full, "
                           "or an owner password is set") from None
        return handle
    raise TpmError("no free NV index for the rollback counter")


def release_counter(transport: str, index: int, nv_auth: bytes) -> str:
    """Undefine the NV counter at ``index`` if it is the one ``nv_auth`` opens; what was found, in one word.

    ``"released"``: it was ours and is gone now; ``"absent"``: no such index (never defined, or already
    undefined); ``"foreign"``: the index belongs to someone else (its authorisation is not ``nv_auth``)
    and is left alone. A counter that was defined but never incremented reads as "uninitialised" with
    the right authorisation and as an authorisation failure with a wrong one, so ownership is proven
    without changing anything (``TPMA_NV_NO_DA``: a wrong guess costs no dictionary-attack lockout).
    TpmError if the TPM cannot be reached or refuses the undefine.
    """
    if not fmt.TPM_NV_FIRST <= index <= fmt.TPM_NV_LAST:
        return "foreign"  # outside the range fr-pbd defines counters in: never touched
    with _esapi(transport) as ectx:
        try:
            nv = ectx.tr_from_tpmpublic(index)
        except Exception as exc:  # noqa: BLE001
            if _fmt0(_rc(exc)) == _RC_HANDLE or "handle" in str(exc).lower():
                return "absent"
            raise TpmError(f"cannot look up NV index {index:#010x} ({_short(exc)})") from None
        ectx.tr_set_auth(nv, nv_auth)
        try:
            ectx.nv_read(nv, 8)
        except Exception as exc:  # noqa: BLE001
            rc = _fmt0(_rc(exc))
            if rc in (_RC_AUTH_FAIL, _RC_BAD_AUTH):
                return "foreign"
            if rc != _RC_NV_UNINITIALIZED:
                raise TpmError(f"cannot read NV index {index:#010x} ({_short(exc)})") from None
        try:
            ectx.nv_undefine_space(nv)
        except Exception as exc:  # noqa: BLE001
            raise TpmError(f"the TPM refused to delete NV index {index:#010x} ({_short(exc)})") from None
    return "released"


# --------------------------------------------------------------------------------------
# what is there (fr-pbd doctor, the audit)
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TpmInfo:
    transport: str
    present: bool
    why: str = ""  # when not present
    family: str = ""
    manufacturer: str = ""
    firmware: str = ""
    pcr_banks: tuple[str, ...] = ()

    def line(self) -> str:
        if not self.present:
            return f"TPM: none usable at {self.transport} ({self.why})"
        return (f"TPM: {self.family} at {self.transport}, manufacturer {self.manufacturer}, firmware "
                f"{self.firmware}, PCR banks {', '.join(self.pcr_banks) or 'none'}")


def tpm_info(transport: str | None = None, home: str | os.PathLike[str] | None = None) -> TpmInfo:
    """Probe the TPM on ``transport`` (default: the configured one); never raises for a missing TPM."""
    try:
        transport = parse_transport(transport) if transport else resolve_transport(home)
    except ConfigError as exc:
        return TpmInfo(str(transport), False, str(exc))
    if transport.startswith("device:") and not os.path.exists(transport[7:]):
        return TpmInfo(transport, False, f"no device node {transport[7:]}")
    try:
        tss = _tss()
        with _esapi(transport) as ectx:
            pt = tss.TPM2_PT
            _m, cap = ectx.get_capability(tss.TPM2_CAP.TPM_PROPERTIES, pt.FAMILY_INDICATOR, 64)
            props = {int(p.property): int(p.value) for p in cap.data.tpmProperties}
            _m, pcap = ectx.get_capability(tss.TPM2_CAP.PCRS, 0, 1)
            banks = tuple(_BANK_NAMES.get(int(s.hash), f"alg {int(s.hash):#x}") for s in pcap.data.assignedPCR
                          if any(bytes(s.pcrSelect)[: s.sizeofSelect]))
    except (TpmError, KeyProviderError) as exc:
        return TpmInfo(transport, False, str(exc))
    except Exception as exc:  # noqa: BLE001
        return TpmInfo(transport, False, _short(exc))

    def text(v: int) -> str:
        return v.to_bytes(4, "big").rstrip(b"\0").decode("ascii", "replace")

    fw1, fw2 = props.get(int(pt.FIXED) + 11, 0), props.get(int(pt.FIXED) + 12, 0)  # TPM_PT_FIRMWARE_VERSION_1/2
    return TpmInfo(transport, True, family=text(props.get(int(pt.FAMILY_INDICATOR), 0)),
                   manufacturer=text(props.get(int(pt.MANUFACTURER), 0)),
                   firmware=f"{fw1 >> 16}.{fw1 & 0xFFFF}.{fw2 >> 16}.{fw2 & 0xFFFF}", pcr_banks=banks)
