"""Outputs in an object store (``s3://``, ``gs://``, ``abfs://``: any URL pyarrow's
``FileSystem.from_uri`` opens), with the promises local outputs keep.

An object store has no rename, but an object written by one upload appears whole or not at all.
:func:`atomic_store_output` writes to a hidden temporary key beside the target (``.NAME.TOKEN.tmp``,
the name local atomic writes use, so an interrupted run's leftovers are recognised) and moves it
to its final key (a server-side copy) only once complete: a reader listing the prefix never sees
a partial file under a final name. On any error the temporary object is deleted.

Examples
--------
>>> import tempfile
>>> from streamgmm.io.output.object_store import OutputStore
>>> store = OutputStore("file://" + tempfile.mkdtemp())
>>> with store.atomic_output("day=1/part-0.bin") as stream:
...     _ = stream.write(b"abc")
>>> store.write_bytes("_SUCCESS", b"{}")
>>> store.list_files(), store.read_bytes("day=1/part-0.bin")
(['_SUCCESS', 'day=1/part-0.bin'], b'abc')
>>> store.remove(["day=1/part-0.bin"]); store.list_files()
['_SUCCESS']
"""

from __future__ import annotations

import posixpath
import secrets
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import pyarrow.fs as pafs

from streamgmm.io.lake.store_credentials import s3_client, split_credentials
from streamgmm.io.output.atomic_write import MAX_NAME_BYTES, bounded_name


class OutputStore:
    """A directory of outputs under a URL: listing, reading, atomic writing and removal by
    path relative to it. Picklable (it holds the URL; the filesystem is opened on use), so it can
    travel to Dask workers, which then write with their own credentials."""

    def __init__(self, url: str):
        self.url = normal_url(url).rstrip("/")
        self._fs: pafs.FileSystem | None = None
        self._root = ""
        self._client: Any = False  # the botocore client, made once on first use (None: none)

    def __getstate__(self) -> dict[str, Any]:
        return {"url": self.url}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["url"])

    @property
    def filesystem(self) -> pafs.FileSystem:
        if self._fs is None:
            self._fs, self._root = pafs.FileSystem.from_uri(self.url)
            self._root = self._root.rstrip("/")
        return self._fs

    def path(self, relative: str) -> str:
        """The filesystem path of ``relative`` (a key under the bucket, for S3)."""
        self.filesystem  # noqa: B018 - opens the filesystem and sets the root
        return posixpath.join(self._root, relative)

    def name(self, relative: str) -> str:
        """``relative`` as a URL, for messages."""
        return f"{self.url}/{relative}"

    def kind(self) -> str:
        """``'missing'``, ``'directory'`` or ``'file'``: what the URL itself names. Object stores
        have no directories: a prefix with objects under it is one, an empty prefix is missing."""
        info = self.filesystem.get_file_info(self._root)
        if info.type == pafs.FileType.File:
            return "file"
        if info.type == pafs.FileType.Directory:
            return "directory"
        return "missing"

    def list_files(self) -> list[str]:
        """Every object under the URL, as sorted relative paths."""
        if self.kind() == "missing":
            return []
        infos = self.filesystem.get_file_info(pafs.FileSelector(self._root, recursive=True, allow_not_found=True))
        prefix = self._root + "/" if self._root else ""
        return sorted(i.path[len(prefix) :] for i in infos if i.type == pafs.FileType.File)

    def read_bytes(self, relative: str) -> bytes:
        with self.filesystem.open_input_stream(self.path(relative)) as stream:
            return stream.read()

    def open_input_file(self, relative: str) -> Any:
        return self.filesystem.open_input_file(self.path(relative))

    @contextmanager
    def atomic_output(self, relative: str) -> Iterator[Any]:
        """A writable stream for ``relative``; the object appears under its final key only once
        the block ends without error (then moved there from a hidden temporary key)."""
        final = self.path(relative)
        directory, name = posixpath.split(final)
        token = secrets.token_hex(8)
        tmp = posixpath.join(directory, f".{bounded_name(name, MAX_NAME_BYTES - len(token) - 6)}.{token}.tmp")
        fs = self.filesystem
        if isinstance(fs, pafs.LocalFileSystem):  # object stores need no directories
            fs.create_dir(directory, recursive=True)
        stream = fs.open_output_stream(tmp)
        try:
            yield stream
            stream.close()
            fs.move(tmp, final)
        except BaseException:
            if not stream.closed:
                stream.close()
            _delete_quietly(fs, tmp)
            raise

    def write_bytes(self, relative: str, data: bytes) -> None:
        with self.atomic_output(relative) as stream:
            stream.write(data)

    def remove(self, relatives: Iterable[str]) -> None:
        """Delete these objects (those already gone are fine)."""
        for relative in relatives:
            _delete_quietly(self.filesystem, self.path(relative))

    def markers(self) -> set[str]:
        """The directory markers under the URL (empty objects named ``dir/``, which pyarrow leaves
        behind when it deletes a folder's last object), as relative names; found on ``s3://`` with
        botocore importable, else (or if the listing fails) none."""
        client = self._s3()
        if client is None:
            return set()
        bucket, prefix = self._bucket_prefix()
        try:
            pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            return {
                o["Key"][len(prefix) :] for page in pages for o in page.get("Contents", ()) if o["Key"].endswith("/")
            }
        except Exception:  # a tidying step: the run's own errors say what is wrong with the store
            return set()

    def remove_markers(self, keep: set[str]) -> None:
        """Delete the directory markers under the URL that are not in ``keep`` (those a run's
        deletes left), directly (a delete through pyarrow would mark the parent instead); best
        effort. A folder holding objects is one without its marker too."""
        extra = self.markers() - keep
        if not extra:
            return
        client = self._s3()
        bucket, prefix = self._bucket_prefix()
        try:
            for marker in sorted(extra):
                client.delete_object(Bucket=bucket, Key=prefix + marker)
        except Exception:  # a tidying step: never in the way of the run's own result or error
            pass

    def _s3(self) -> Any:
        if self._client is False:  # making one takes a few tenths of a second
            self._client = s3_client(self.url) if self.url.startswith("s3://") else None
        return self._client

    def _bucket_prefix(self) -> tuple[str, str]:
        bucket, _, key = self.path("").partition("/")
        return bucket, key.strip("/") + "/" if key.strip("/") else ""


def normal_url(url: str) -> str:
    """``url`` with the ``.`` and ``..`` segments of its path resolved, as an HTTP client resolves
    them before the store sees the key (``s3://b/./lake/x`` writes ``lake/x``); a ``ValueError``
    if ``..`` climbs above the bucket.

    Examples
    --------
    >>> normal_url("s3://b/./lake/../lake/sub/?region=x")
    's3://b/lake/sub/?region=x'
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    rest, mark, query = rest.partition("?")
    authority, slash, path = rest.partition("/")
    parts: list[str] = []
    for part in path.split("/"):
        if part == "..":
            if not parts:
                raise ValueError(f"output {split_credentials(url)[0]}: '..' climbs above the bucket")
            parts.pop()
        elif part != ".":
            parts.append(part)
    return f"{scheme}://{authority}{slash}{'/'.join(parts)}{mark}{query}"


def _delete_quietly(fs: pafs.FileSystem, path: str) -> None:
    try:
        fs.delete_file(path)
    except FileNotFoundError:
        pass
