"""Objects under a state prefix on an object store, written whole, some conditionally, and the
lease that keeps a second watcher off that prefix.

Conditional writes: on ``s3://`` with botocore importable (it comes with s3fs and boto3), a
write can be made to succeed only if the object is absent (``If-None-Match: *``) or still the
version read (``If-Match: ETag``), which S3 and S3-compatible servers check atomically. Elsewhere
(``gs://``, ``abfs://``, other S3 setups) the same check is made by reading, comparing and then
writing, which leaves a window in which two writers can both succeed; :attr:`ObjectStore.atomic`
says which.

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

import hashlib
import json
import math
import os
import secrets
import socket
import threading
import time
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from streamgmm.io.store_credentials import s3_client, split_credentials
from streamgmm.watch.checkpoint import StateDirectoryBusy

LEASE = "LEASE"
# The longest lease (a day): a killed watcher's lease blocks the prefix until it expires.
MAX_LEASE_SECONDS = 86400.0
# Clock skew tolerated between machines before an expiry is taken as absurd.
CLOCK_SKEW_SECONDS = 3600.0


class Conflict(RuntimeError):
    """A conditional write found the object other than expected."""


class LeaseLost(StateDirectoryBusy):
    """This watcher's lease was taken over or has expired: it must not commit."""


class ObjectStore:
    """The objects under one prefix (a URL ``pyarrow.fs.FileSystem.from_uri`` opens), by name
    relative to it."""

    def __init__(self, url: str):
        self.url = url
        # Credentials on the URL (s3://KEY:SECRET@bucket/...) open every client, and appear in no name.
        shown = split_credentials(url)[0]
        base = shown.partition("?")[0]
        self.base = base.rstrip("/")
        try:
            self.fs, root = pafs.FileSystem.from_uri(url)
        except (pa.ArrowInvalid, OSError, ValueError) as exc:
            raise ValueError(f"state {shown}: cannot open ({str(exc).replace(url, shown)})") from None
        self.root = root.rstrip("/")
        self.client = s3_client(url) if self.base.startswith("s3://") else None

    @property
    def atomic(self) -> bool:
        """Whether conditional writes are checked by the store itself."""
        return self.client is not None

    def name_url(self, name: str) -> str:
        return f"{self.base}/{name}"

    def _key(self, name: str) -> str:
        return f"{self.root}/{name}"

    def get(self, name: str) -> tuple[bytes, str] | None:
        """The object's bytes and version tag (ETag, or the bytes' SHA-256 without a client);
        None if it does not exist."""
        if self.client is not None:
            bucket, key = self._key(name).split("/", 1)
            try:
                answer = self.client.get_object(Bucket=bucket, Key=key)
            except self.client.exceptions.NoSuchKey:
                return None
            return answer["Body"].read(), answer["ETag"].strip('"')
        try:
            with self.fs.open_input_file(self._key(name)) as handle:
                data = handle.read()
        except FileNotFoundError:
            return None
        return data, hashlib.sha256(data).hexdigest()

    def put(self, name: str, data: bytes) -> None:
        """Write a whole object (a new key: nothing reads it before it is complete)."""
        if isinstance(self.fs, pafs.LocalFileSystem):  # object stores have no folders to make
            self.fs.create_dir(self._key(name).rsplit("/", 1)[0], recursive=True)
        with self.fs.open_output_stream(self._key(name)) as out:
            out.write(data)

    def put_if(self, name: str, data: bytes, expected: str | None) -> str:
        """Write ``name`` only if it is absent (``expected`` None) or still at version
        ``expected``; return the new version tag; :class:`Conflict` otherwise."""
        if self.client is not None:
            bucket, key = self._key(name).split("/", 1)
            condition = {"IfNoneMatch": "*"} if expected is None else {"IfMatch": f'"{expected}"'}
            try:
                answer = self.client.put_object(Bucket=bucket, Key=key, Body=data, **condition)
            except self.client.exceptions.ClientError as exc:
                code = exc.response.get("Error", {}).get("Code")
                if code in ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey", "404", "412", "409"):
                    raise Conflict(f"{self.name_url(name)} changed meanwhile ({code})") from None
                raise
            return answer["ETag"].strip('"')
        now = self.get(name)  # read, compare, write: not atomic (see the module docstring)
        if (now is None) != (expected is None) or (now is not None and now[1] != expected):
            raise Conflict(f"{self.name_url(name)} changed meanwhile")
        self.put(name, data)
        return hashlib.sha256(data).hexdigest()

    def delete(self, name: str) -> None:
        try:
            self.fs.delete_file(self._key(name))
        except FileNotFoundError:
            pass

    def names(self, folder: str) -> list[str]:
        """Names of the objects directly under ``folder`` (relative to the prefix), sorted."""
        selector = pafs.FileSelector(self._key(folder), recursive=False, allow_not_found=True)
        infos = self.fs.get_file_info(selector)
        return sorted(f"{folder}/{i.base_name}" for i in infos if i.type == pafs.FileType.File)


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
