"""Where a watcher's state lives: named blobs under one root, written whole.

:class:`BlobStore` is what a state layout (:mod:`.checkpoint`, :mod:`.store_state`) needs of a
store: read, write, replace atomically, write conditionally, delete and list. Two backends:

- :class:`LocalBlobs`, a directory on a local (or mounted) filesystem: a replace is a fsynced
  temporary file renamed over the old one, durable once the directory is fsynced. It also offers
  what only a filesystem has (appending in place, cutting a file, hard links), which the state
  directory's layout uses for its append-only ledger and its history.
- :class:`ObjectStore`, a prefix on an object store (any URL ``pyarrow.fs.FileSystem.from_uri``
  opens): every write replaces a whole object atomically.

Conditional writes: on ``s3://`` with botocore importable (it comes with s3fs and boto3), a
write can be made to succeed only if the object is absent (``If-None-Match: *``) or still the
version read (``If-Match: ETag``), which S3 and S3-compatible servers check atomically. Elsewhere
(``gs://``, ``abfs://``, other S3 setups, a local directory) the same check is made by reading,
comparing and then writing, which leaves a window in which two writers can both succeed;
:attr:`ObjectStore.atomic` says which. The lease (:mod:`.lease`) relies on them.

Examples
--------
>>> import tempfile
>>> from streamgmm.watch.blob_store import LocalBlobs, ObjectStore
>>> folder = tempfile.mkdtemp()
>>> for blobs in (LocalBlobs(f"{folder}/local"), ObjectStore(f"file://{folder}/store")):
...     version = blobs.put_if("a/x", b"1", None)
...     blobs.replace("a/y", b"2")
...     print(blobs.names("a"), blobs.get("a/y")[0])
['a/x', 'a/y'] b'2'
['a/x', 'a/y'] b'2'
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import pyarrow as pa
import pyarrow.fs as pafs

from streamgmm.io.lake.store_credentials import s3_client, split_credentials
from streamgmm.io.output.atomic_write import atomic_path, create_new, fsync_directory


class Conflict(RuntimeError):
    """A conditional write found the object other than expected."""


class BlobStore(Protocol):
    """Named blobs under one root; names are relative, with ``/`` between folders."""

    def name_url(self, name: str) -> str:
        """How messages name the blob ``name``."""

    def get(self, name: str) -> tuple[bytes, str] | None:
        """The blob's bytes and a version tag; None if it does not exist."""

    def put(self, name: str, data: bytes) -> None:
        """Write a whole blob (a reader sees the old bytes or the new, never a part)."""

    def replace(self, name: str, data: bytes, before_commit: Callable[[], None] | None = None) -> None:
        """Replace a blob atomically and durably; ``before_commit`` runs just before the new
        bytes become visible (a crash point, or a last check of the caller's exclusion)."""

    def put_if(self, name: str, data: bytes, expected: str | None) -> str:
        """Write only if absent (``expected`` None) or still at version ``expected``; return
        the new version tag; :class:`Conflict` otherwise."""

    def delete(self, name: str) -> None:
        """Remove a blob (nothing if it is gone)."""

    def names(self, folder: str) -> list[str]:
        """Names of the blobs directly under ``folder``, sorted."""


def put_unless_changed(blobs: BlobStore, name: str, data: bytes, expected: str | None) -> str:
    """:meth:`BlobStore.put_if` by reading, comparing and then writing: not atomic, for stores
    that cannot check a condition themselves (see the module docstring)."""
    now = blobs.get(name)
    if (now is None) != (expected is None) or (now is not None and now[1] != expected):
        raise Conflict(f"{blobs.name_url(name)} changed meanwhile")
    blobs.put(name, data)
    return hashlib.sha256(data).hexdigest()


class LocalBlobs:
    """Blobs as files under a local directory (see the module docstring)."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)

    def file(self, name: str) -> Path:
        return self.path / name

    def name_url(self, name: str) -> str:
        return str(self.file(name))

    def get(self, name: str) -> tuple[bytes, str] | None:
        """The file's bytes, and their SHA-256 as the version tag."""
        try:
            data = self.file(name).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            return None
        return data, hashlib.sha256(data).hexdigest()

    def put(self, name: str, data: bytes) -> None:
        self.file(name).parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.file(name)) as tmp, create_new(tmp) as raw:
            raw.write(data)

    def replace(self, name: str, data: bytes, before_commit: Callable[[], None] | None = None) -> None:
        """A fsynced temporary file renamed over ``name`` (the rename is the commit point),
        then the directory fsynced."""
        target = self.file(name)
        with atomic_path(target, before_rename=before_commit) as tmp, create_new(tmp) as raw:
            raw.write(data)
        fsync_directory(target.parent)

    def put_if(self, name: str, data: bytes, expected: str | None) -> str:
        return put_unless_changed(self, name, data, expected)  # one process holds the lock anyway

    def delete(self, name: str) -> None:
        self.file(name).unlink(missing_ok=True)

    def names(self, folder: str) -> list[str]:
        directory = self.file(folder)
        if not directory.is_dir():
            return []
        return sorted(f"{folder}/{p.name}" for p in directory.iterdir() if p.is_file())

    def exists(self, name: str) -> bool:
        return self.file(name).is_file()

    def size(self, name: str) -> int:
        """The file's length in bytes (0 if it does not exist)."""
        return self.file(name).stat().st_size if self.file(name).exists() else 0

    def read_prefix(self, name: str, size: int) -> bytes | None:
        """The first ``size`` bytes of the file (fewer if it is shorter); None if it is missing."""
        try:
            with open(self.file(name), "rb") as handle:
                return handle.read(size)
        except FileNotFoundError:
            return None

    def write_at(self, name: str, offset: int, data: bytes) -> None:
        """Cut the file to ``offset`` bytes, write ``data`` there and fsync (an append after
        the part that counts)."""
        fd = os.open(self.file(name), os.O_WRONLY | os.O_CREAT, 0o666)
        try:
            os.ftruncate(fd, offset)
            os.pwrite(fd, data, offset)
            os.fsync(fd)
        finally:
            os.close(fd)

    def truncate(self, name: str, size: int) -> None:
        os.truncate(self.file(name), size)

    def link(self, source: str, target: str, atomic: bool = False) -> None:
        """``target`` as the same file as ``source`` (a hard link, else a copy); ``atomic``:
        replacing an existing ``target`` durably."""
        if atomic:
            with atomic_path(self.file(target)) as tmp:
                _link_or_copy(self.file(source), tmp)
            fsync_directory(self.file(target).parent)
            return
        self.file(target).parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(self.file(source), self.file(target))
        except FileExistsError:
            pass
        except OSError:  # a filesystem without hard links
            self.put(target, self.file(source).read_bytes())


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # a filesystem without hard links
        shutil.copyfile(source, target)


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

    def key(self, name: str) -> str:
        return f"{self.root}/{name}"

    def get(self, name: str) -> tuple[bytes, str] | None:
        """The object's bytes and version tag (ETag, or the bytes' SHA-256 without a client);
        None if it does not exist."""
        if self.client is not None:
            bucket, key = self.key(name).split("/", 1)
            try:
                answer = self.client.get_object(Bucket=bucket, Key=key)
            except self.client.exceptions.NoSuchKey:
                return None
            return answer["Body"].read(), answer["ETag"].strip('"')
        try:
            with self.fs.open_input_file(self.key(name)) as handle:
                data = handle.read()
        except FileNotFoundError:
            return None
        return data, hashlib.sha256(data).hexdigest()

    def put(self, name: str, data: bytes) -> None:
        """Write a whole object (a new key: nothing reads it before it is complete)."""
        if isinstance(self.fs, pafs.LocalFileSystem):  # object stores have no folders to make
            self.fs.create_dir(self.key(name).rsplit("/", 1)[0], recursive=True)
        with self.fs.open_output_stream(self.key(name)) as out:
            out.write(data)

    def replace(self, name: str, data: bytes, before_commit: Callable[[], None] | None = None) -> None:
        """An object store replaces a whole object atomically: a put."""
        if before_commit is not None:
            before_commit()
        self.put(name, data)

    def put_if(self, name: str, data: bytes, expected: str | None) -> str:
        """Write ``name`` only if it is absent (``expected`` None) or still at version
        ``expected``; return the new version tag; :class:`Conflict` otherwise."""
        if self.client is not None:
            bucket, key = self.key(name).split("/", 1)
            condition = {"IfNoneMatch": "*"} if expected is None else {"IfMatch": f'"{expected}"'}
            try:
                answer = self.client.put_object(Bucket=bucket, Key=key, Body=data, **condition)
            except self.client.exceptions.ClientError as exc:
                code = exc.response.get("Error", {}).get("Code")
                if code in ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey", "404", "412", "409"):
                    raise Conflict(f"{self.name_url(name)} changed meanwhile ({code})") from None
                raise
            return answer["ETag"].strip('"')
        return put_unless_changed(self, name, data, expected)

    def delete(self, name: str) -> None:
        try:
            self.fs.delete_file(self.key(name))
        except FileNotFoundError:
            pass

    def names(self, folder: str) -> list[str]:
        """Names of the objects directly under ``folder`` (relative to the prefix), sorted."""
        selector = pafs.FileSelector(self.key(folder), recursive=False, allow_not_found=True)
        infos = self.fs.get_file_info(selector)
        return sorted(f"{folder}/{i.base_name}" for i in infos if i.type == pafs.FileType.File)
