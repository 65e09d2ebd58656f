"""Whose turn: askers, their slots, and the fair order in which the worker takes their verifications.

Who is an asker: a uid, except for root. Every PAM login asks as root, so "4 connections per
uid" would let 4 idle or looping root connections (a local user running ``sudo`` in a loop
starts root askers) turn face login off for the whole house. Root's connections are
therefore counted per login session: the kernel's audit session id of the asking process
(``/proc/PID/sessionid``, set by pam_loginuid at login and not changeable without
``CAP_AUDIT_CONTROL``). A user's ``sudo`` loop runs in that user's session and shares its
slots and its turn; a login at the console, which is in no session yet, is another asker.
"""

from __future__ import annotations

import collections
import threading
from typing import Generic, TypeVar

__all__ = ["AskerKey", "FairQueue", "asker_key"]

AskerKey = tuple[int, "str | None"]
J = TypeVar("J")


def asker_key(pid: int, uid: int) -> AskerKey:
    """Whose slots and turn a connection uses: its uid; for root, its uid and login session."""
    if uid != 0:
        return uid, None
    try:
        with open(f"/proc/{pid}/sessionid", encoding="ascii") as f:
            return 0, f.read(16).strip() or "?"
    except OSError:
        return 0, "?"  # gone already, or no procfs: one shared key, the old behaviour


class FairQueue(Generic[J]):
    """The verification jobs, taken in turns across askers: one asker's backlog never starves another's."""

    def __init__(self) -> None:
        self._by_key: dict[AskerKey, collections.deque[J]] = {}
        self._turns: collections.deque[AskerKey] = collections.deque()
        self._cv = threading.Condition()
        self._closed = False

    def put(self, job: J) -> None:
        with self._cv:
            key = job.conn.key  # type: ignore[attr-defined]
            if key not in self._by_key:
                self._by_key[key] = collections.deque()
                self._turns.append(key)
            self._by_key[key].append(job)
            self._cv.notify()

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()

    def get(self) -> J | None:
        """The next asker's oldest job; None once closed and empty."""
        with self._cv:
            while not self._turns:
                if self._closed:
                    return None
                self._cv.wait()
            key = self._turns.popleft()
            jobs = self._by_key[key]
            job = jobs.popleft()
            if jobs:
                self._turns.append(key)  # its next job waits for everyone else's turn
            else:
                del self._by_key[key]
            return job
