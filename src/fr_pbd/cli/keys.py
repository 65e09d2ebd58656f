"""``fr-pbd keys init | migrate | rotate``: who holds the store's key (docs/tpm.md).

``init`` creates the store of a new home with a chosen key provider (``tpm2``,
``file``, ``passphrase``); ``migrate`` re-wraps an existing store's data key for
another provider without re-enrolment, in one atomic write (a crash leaves the
old store or the new one); ``rotate`` draws a new data key, key-encryption key
(or sealed object) and template protection with the provider the store already has.
"""

from __future__ import annotations

import argparse
import os

from fr_pbd.cli._common import EXIT_OK, add_home, subcommands

__all__ = ["register", "cmd_keys_init", "cmd_keys_migrate", "cmd_keys_rotate", "PROVIDERS"]

PROVIDERS = ("tpm2", "file", "passphrase")


def _home(args: argparse.Namespace):
    from pathlib import Path

    from fr_pbd.config import check_home_parents, default_home

    home = Path(args.home) if args.home else default_home()
    check_home_parents(home)
    return home


def _pcrs(text: str | None) -> tuple[int, ...] | None:
    """``--pcrs 0,7`` -> (0, 7); ``none`` -> (); absent -> None (keep what the store has)."""
    if text is None:
        return None
    if text.strip().lower() == "none":
        return ()
    try:
        pcrs = tuple(sorted({int(x) for x in text.split(",")}))
    except ValueError:
        raise ValueError("--pcrs takes PCR numbers such as 7 or 0,7, or none") from None
    if not all(0 <= i <= 23 for i in pcrs):
        raise ValueError("PCR numbers are 0-23")
    return pcrs


def _passphrase(args: argparse.Namespace, prompt: str, confirm: bool) -> str:
    from fr_pbd.cli.household import _read_secret

    return _read_secret(args, confirm=confirm, prompt=prompt)


def _provider(name: str, home, args: argparse.Namespace, pcrs: tuple[int, ...] | None):
    from fr_pbd.store import DeviceFileKeyProvider, PassphraseKeyProvider

    if pcrs and name != "tpm2":
        raise ValueError("--pcrs binds a TPM seal: it goes with --provider/--to tpm2")
    if name == "tpm2":
        from fr_pbd.store.tpm import TpmKeyProvider, resolve_transport

        return TpmKeyProvider(resolve_transport(home), pcrs=pcrs or ())
    if name == "file":
        return DeviceFileKeyProvider.default(home)
    return PassphraseKeyProvider(_passphrase(args, "new store passphrase (8 or more): ", confirm=True))


def _open(home, args: argparse.Namespace):
    """The store, opened with the provider its header names (asking for the passphrase if it has one)."""
    from fr_pbd.store import PassphraseKeyProvider, Store
    from fr_pbd.store import _format as fmt
    from fr_pbd.store.store import stored_provider_id

    if stored_provider_id(home) == fmt.PROVIDER_PASSPHRASE:
        return Store.open(home, key_provider=PassphraseKeyProvider(
            _passphrase(args, "store passphrase: ", confirm=False)))
    return Store.open(home)


def cmd_keys_init(args: argparse.Namespace) -> int:
    from fr_pbd.errors import StoreError
    from fr_pbd.store import STORE_FILE, Store
    from fr_pbd.verify import Verifier

    home = _home(args)
    if os.path.lexists(home / STORE_FILE):
        raise StoreError(f"a store already exists in {home}; to change its key provider: "
                         f"fr-pbd keys migrate --to {args.provider}")
    provider = _provider(args.provider, home, args, _pcrs(args.pcrs))
    record = Verifier(home).model_of_record()  # the embedder of the home's board (config.toml), not loaded
    store = Store.create(home, model_id=record.model_id, dim=record.dim, key_provider=provider)
    print(f"created an empty store in {home}; key: {store.key_provider.custody()}")
    print("next: fr-pbd fallback set, then fr-pbd enroll")
    return EXIT_OK


def cmd_keys_migrate(args: argparse.Namespace) -> int:
    home = _home(args)
    store = _open(home, args)
    target = _provider(args.to, home, args, _pcrs(args.pcrs))
    store.rotate_key(target)
    print(f"migrated: the data key is re-wrapped (templates, consent and lockouts kept; no re-enrolment); "
          f"key: {target.custody()}")
    return EXIT_OK


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    home = _home(args)
    store = _open(home, args)
    pcrs = _pcrs(args.pcrs)
    provider = store.key_provider
    if pcrs is not None:
        from fr_pbd.store.tpm import TpmKeyProvider

        if not isinstance(provider, TpmKeyProvider):
            raise ValueError("--pcrs applies to a TPM store (fr-pbd keys migrate --to tpm2 first)")
        provider = provider.with_pcrs(pcrs)
    store.renew(provider if provider is not store.key_provider else None)
    print("rotated: new data key, new key-encryption key, new template protection "
          "(older copies of the store no longer open; old leaks no longer link)")
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    ksub = subcommands(sub.add_parser("keys", help="key custody: create, migrate or rotate the store's key"),
                       "keys_command")
    pcr_help = ("tpm2 only: bind the seal to these PCRs (e.g. 7, the Secure Boot state; 'none' to drop the "
                "binding before a firmware update). Off by default: docs/tpm.md")
    ki = add_home(ksub.add_parser("init", help="create the store of a new home with a key provider"))
    ki.add_argument("--provider", required=True, choices=PROVIDERS,
                    help="tpm2: sealed by the TPM 2.0 (rollback-protected); file: a key file beside the store; "
                         "passphrase: derived from a passphrase")
    ki.add_argument("--pcrs", default=None, metavar="LIST", help=pcr_help)
    ki.add_argument("--secret-stdin", action="store_true", help="read the passphrase from standard input")
    ki.set_defaults(func=cmd_keys_init)

    km = add_home(ksub.add_parser("migrate", help="re-wrap the store's key for another provider (no re-enrolment)"))
    km.add_argument("--to", required=True, choices=PROVIDERS)
    km.add_argument("--pcrs", default=None, metavar="LIST", help=pcr_help)
    km.add_argument("--secret-stdin", action="store_true",
                    help="read passphrases from standard input (the current one first, then the new one)")
    km.set_defaults(func=cmd_keys_migrate)

    kr = add_home(ksub.add_parser("rotate", help="new data key and key-encryption key, with the store's provider"))
    kr.add_argument("--renew", action="store_true", help=argparse.SUPPRESS)  # always done now; kept for scripts
    kr.add_argument("--pcrs", default=None, metavar="LIST", help=pcr_help)
    kr.add_argument("--secret-stdin", action="store_true", help="read the store passphrase from standard input")
    kr.set_defaults(func=cmd_keys_rotate)
