"""The lease that keeps a second watcher off a state prefix on an object store: the
:class:`~streamgmm.watch.state.Exclusion` of a :class:`~streamgmm.watch.store_state.StoreState`,
as the lock is a state directory's. It is made of conditional writes
(:meth:`~streamgmm.watch.blob_store.ObjectStore.put_if`), atomic where the store checks them.

The lease (``LEASE``) holds the watcher's id, host, pid and an expiry ``seconds`` ahead; it is
created only if absent, renewed by a background thread every third of ``seconds`` (only if it is
still the version this watcher wrote), taken over only once expired (again only if unchanged
since read), and deleted on exit. A watcher killed with its lease live leaves the prefix busy
until the expiry: the next watcher is refused until then. Expiries compare the clocks of the
machines involved. A lease lasts at most :data:`MAX_LEASE_SECONDS`; a lease object that cannot be
read, or whose expiry lies further ahead than any watcher writes, is an error naming the object
(deleting it, once no watcher runs on the prefix, frees the prefix), never taken over silently.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from streamgmm.watch.blob_store import Conflict, ObjectStore
from streamgmm.watch.state import StateDirectoryBusy

LEASE = "LEASE"
# The longest lease (a day): a killed watcher's lease blocks the prefix until it expires.
MAX_LEASE_SECONDS = 86400.0
# Clock skew tolerated between machines before an expiry is taken as absurd.
CLOCK_SKEW_SECONDS = 3600.0


class LeaseLost(StateDirectoryBusy):
    """This watcher's lease was taken over or has expired: it must not commit."""


class Lease:
    """One watcher's lease on a state prefix (see the module docstring)."""

    def __init__(self, store: ObjectStore, seconds: float = 60.0):
        check_lease_seconds(seconds)
        self.store, self.seconds = store, float(seconds)
        self.owner = secrets.token_hex(8)
        self.version: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost: str | None = None

    def _body(self) -> bytes:
        holder = {"owner": self.owner, "host": socket.gethostname(), "pid": os.getpid()}
        return json.dumps({**holder, "expires": time.time() + self.seconds}).encode()

    def acquire(self) -> None:
        """Take the lease, or :class:`StateDirectoryBusy` naming the live holder."""
        try:
            self.version = self.store.put_if(LEASE, self._body(), None)
        except Conflict:
            held = self.store.get(LEASE)
            expected = held[1] if held is not None else None
            if held is not None:
                holder, expires = self._holder(held[0])
                if expires > time.time():
                    until = time.strftime("%H:%M:%S", time.gmtime(expires))
                    raise StateDirectoryBusy(
                        f"{self.store.base} is in use by another watcher (pid {holder.get('pid', '?')} on "
                        f"{holder.get('host', '?')}, lease until {until} UTC)"
                    ) from None
            try:
                self.version = self.store.put_if(LEASE, self._body(), expected)  # expired: taken over
            except Conflict:
                raise StateDirectoryBusy(f"{self.store.base} was just taken by another watcher") from None
        self._thread = threading.Thread(target=self._renew_loop, name="streamgmm-lease", daemon=True)
        self._thread.start()

    def _holder(self, data: bytes) -> tuple[dict[str, Any], float]:
        """The lease object's fields and expiry; :class:`StateDirectoryBusy` naming the object if
        it cannot be read or expires further ahead than any watcher's lease."""
        holder = _parse(data)
        value = holder.get("expires")
        expires = math.nan
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            expires = float(value) if abs(value) < 1e308 else math.copysign(math.inf, value)
        if math.isnan(expires) or expires < 0:
            problem = "is not a watcher's lease (unreadable, or no expiry time)"
        elif expires > time.time() + MAX_LEASE_SECONDS + CLOCK_SKEW_SECONDS:
            problem = f"expires at {expires:.6g} s, further ahead than any watcher's lease lasts"
        else:
            return holder, expires
        raise StateDirectoryBusy(
            f"{self.store.name_url(LEASE)}: {problem}, so no watcher can take it over; once no watcher runs "
            f"on {self.store.base}, delete that object to free the prefix"
        )

    def renew(self) -> None:
        """Extend the lease; :class:`LeaseLost` if it is no longer this watcher's."""
        with self._lock:
            if self.lost is not None:
                raise LeaseLost(self.lost)
            try:
                self.version = self.store.put_if(LEASE, self._body(), self.version)
            except Conflict:
                self.lost = f"{self.store.base}: this watcher's lease was taken over by another watcher; stopping"
                raise LeaseLost(self.lost) from None

    @contextmanager
    def held(self) -> Iterator[None]:
        """Hold the lease for the block (:meth:`acquire`, then :meth:`release`)."""
        self.acquire()
        try:
            yield
        finally:
            self.release()

    def confirm(self) -> None:
        """Renew the lease just before a commit point: a watcher that lost it stops there."""
        self.renew()

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.seconds / 3):
            try:
                self.renew()
            except LeaseLost:
                return
            except Exception:  # a passing network error: the next renewal, or the commit, says so
                continue

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            if self.lost is None and self.version is not None:
                now = self.store.get(LEASE)
                if now is not None and now[1] == self.version:
                    self.store.delete(LEASE)


def check_lease_seconds(seconds: float) -> None:
    """A ``ValueError`` naming ``lease_seconds`` unless it is a number of seconds in (0,
    :data:`MAX_LEASE_SECONDS`]."""
    if not 0 < seconds <= MAX_LEASE_SECONDS:
        raise ValueError(f"lease_seconds must be > 0 and at most {MAX_LEASE_SECONDS:.0f} (a day), got {seconds}")


def _parse(data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return {}
    return value if isinstance(value, dict) else {}
