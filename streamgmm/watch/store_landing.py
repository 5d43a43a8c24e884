"""A landing prefix on an object store (``s3://bucket/landing/``, or any URL
``pyarrow.fs.FileSystem.from_uri`` opens): which objects are there, and reading one so that what
is hashed is what is learnt.

Objects are listed with pyarrow's filesystem (recursively; names starting with ``.`` or ``_``
left out at any depth, as locally) and settle as local files do, by size and modification time
over two looks (:class:`streamgmm.watch.landing.Settling`). An object is read once, whole, into
memory; its SHA-256 is of those bytes and the model learns from the same bytes, served to
:class:`~streamgmm.io.sources.parquet.ParquetSource` by a one-object pyarrow filesystem.

Entity tags: pyarrow's listing has none, so on ``s3://`` with s3fs importable the object's ETag
is asked for (one HEAD) before and after the read, and the read is void if it changed; without
s3fs, size and modification time (seconds on S3) are what the ledger keys besides the content.

Examples
--------
>>> import tempfile, numpy as np, pyarrow as pa, pyarrow.parquet as pq
>>> from streamgmm.watch.store_landing import StoreLanding
>>> landing = tempfile.mkdtemp()
>>> pq.write_table(pa.table({"a": np.arange(3.0)}), f"{landing}/part-0.parquet")
>>> store = StoreLanding(f"file://{landing}/")
>>> files, problems = store.files()
>>> [f.relative for f in files], problems
(['part-0.parquet'], [])
>>> with store.hold(files[0]) as held:
...     held.parquet_rows(), held.parquet_source().n_records, held.unchanged()
(3, 3, True)
"""

from __future__ import annotations

import hashlib
import urllib.parse
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from streamgmm.io.lake.store_credentials import split_credentials
from streamgmm.io.sources.parquet import ParquetSource, is_hidden
from streamgmm.watch.landing import LandingFile, parquet_rows


def split_url(url: str) -> tuple[str, str]:
    """``(URL without its credentials, query and trailing '/', query)``: the query
    (``?endpoint_override=``) and the credentials (``KEY:SECRET@``) configure the filesystem and
    are not part of any object's name."""
    base, _, query = split_credentials(url)[0].partition("?")
    return base.rstrip("/"), query


def same_store_overlap(a: str, b: str) -> bool:
    """Whether one of two object-store URLs is the other or a prefix under it."""
    a, b = split_url(a)[0] + "/", split_url(b)[0] + "/"
    return a.startswith(b) or b.startswith(a)


class StoreLanding:
    """A landing prefix on an object store (see the module docstring)."""

    def __init__(self, url: str):
        # Credentials on the URL (s3://KEY:SECRET@bucket/...) open every client, and appear in no
        # name, message or ledger entry: those use the URL without them.
        self.url, credentials = split_credentials(url)
        self.base, query = split_url(url)
        try:
            self.fs, self.root = pafs.FileSystem.from_uri(url)
        except (pa.ArrowInvalid, OSError, ValueError) as exc:
            raise ValueError(f"landing {self.url}: cannot open ({str(exc).replace(url, self.url)})") from None
        self.root = self.root.rstrip("/")
        # A prefix need not exist before its first object; its bucket (or local directory) must.
        top = self.root if isinstance(self.fs, pafs.LocalFileSystem) else self.root.split("/", 1)[0]
        if self.fs.get_file_info(top).type != pafs.FileType.Directory:
            raise FileNotFoundError(f"landing {self.url}: {top} does not exist")
        self._etags = _ETags(query, credentials) if self.base.startswith("s3://") else None

    def __str__(self) -> str:
        return self.url

    @property
    def keys_etags(self) -> bool:
        """Whether objects are keyed by ETag too (s3:// with s3fs importable)."""
        return self._etags is not None and self._etags.available

    def files(self, avoid: Sequence[str] = ()) -> tuple[list[LandingFile], list[str]]:
        """Objects under the prefix (hidden names left out), oldest first, then by key; and a
        message if the prefix cannot be listed. Prefixes ``avoid`` (URLs) are not read."""
        selector = pafs.FileSelector(self.root, recursive=True, allow_not_found=True)
        try:
            infos = self.fs.get_file_info(selector)
        except (OSError, pa.ArrowException) as exc:
            return [], [f"{self.url} ({exc})"]
        skip = [split_url(str(a))[0] + "/" for a in avoid]
        found = []
        for info in infos:
            if info.type != pafs.FileType.File:
                continue
            relative = info.path[len(self.root) + 1 :]
            url = f"{self.base}/{relative}"
            if any(is_hidden(part) for part in relative.split("/")) or any(url.startswith(s) for s in skip):
                continue
            found.append(LandingFile(url, relative, int(info.size), int(info.mtime_ns or 0)))
        return sorted(found, key=lambda f: (f.mtime_ns, f.relative)), []

    def key(self, file: LandingFile) -> str:
        return f"{self.root}/{file.relative}"

    def hold(self, file: LandingFile) -> FetchedObject:
        return FetchedObject(self, file)

    def content_sha256(self, file: LandingFile) -> str | None:
        try:
            with self.fs.open_input_file(self.key(file)) as handle:
                return hashlib.sha256(handle.read()).hexdigest()
        except (OSError, pa.ArrowException):
            return None  # gone or unreadable: the next look or the read says so

    def look(self, file: LandingFile) -> tuple[int, int, str | None] | None:
        """The object's size, mtime and ETag now (None if it is gone)."""
        info = self.fs.get_file_info(self.key(file))
        if info.type != pafs.FileType.File:
            return None
        etag = self._etags.etag(self.key(file)) if self._etags is not None else None
        return int(info.size), int(info.mtime_ns or 0), etag


class FetchedObject:
    """One object read whole into memory: hashed, then learnt from, as the same bytes.

    :meth:`unchanged` says whether the key still names the object listed (size, mtime and
    ETag), so an object replaced during the read is read again as the new content."""

    def __init__(self, landing: StoreLanding, file: LandingFile):
        self.landing, self.file = landing, file
        self.before = landing.look(file)
        if self.before is None:
            raise FileNotFoundError(file.path)
        with landing.fs.open_input_file(landing.key(file)) as handle:
            self.data = handle.read_buffer()
        self.etag = self.before[2]

    def __enter__(self) -> FetchedObject:
        return self

    def __exit__(self, *exc: object) -> None:
        self.data = None

    def sha256(self) -> str:
        return hashlib.sha256(memoryview(self.data)).hexdigest()

    def unchanged(self) -> bool:
        listed = (self.file.size, self.file.mtime_ns)
        return (
            self.data.size == self.file.size
            and self.before[:2] == listed
            and self.landing.look(self.file) == self.before
        )

    def _filesystem(self) -> pafs.FileSystem:
        return pafs.PyFileSystem(OneObject(self.file.path, self.data))

    def parquet_rows(self) -> int:
        return parquet_rows(pa.BufferReader(self.data), name=self.file.path)

    def parquet_source(self, **options: Any) -> ParquetSource:
        return ParquetSource(self.file.path, filesystem=self._filesystem(), **options)


class _ETags:
    """Entity tags of S3 objects through s3fs (HEAD requests), when s3fs is importable."""

    def __init__(self, query: str, credentials: dict[str, str]):
        try:
            import s3fs
        except ImportError:
            self.available = False
            return
        options = dict(urllib.parse.parse_qsl(query))
        client: dict[str, Any] = {}
        if "endpoint_override" in options:
            endpoint = options["endpoint_override"]
            scheme = options.get("scheme", "https")
            client["endpoint_url"] = endpoint if "://" in endpoint else f"{scheme}://{endpoint}"
        if "region" in options:
            client["region_name"] = options["region"]
        self.s3 = s3fs.S3FileSystem(client_kwargs=client, skip_instance_cache=True, **credentials)
        self.available = True

    def etag(self, key: str) -> str | None:
        if not self.available:
            return None
        try:
            return str(self.s3.info(key, refresh=True).get("ETag", "")).strip('"') or None
        except FileNotFoundError:
            return None


class OneObject(pafs.FileSystemHandler):
    """A read-only pyarrow filesystem holding one object's bytes at one path (its URL), so that
    :class:`ParquetSource` reads, and names in its messages, the object as fetched."""

    def __init__(self, path: str, data: pa.Buffer):
        self.path, self.data = path, data

    def __eq__(self, other: object) -> bool:
        return self is other

    def __ne__(self, other: object) -> bool:
        return self is not other

    def __hash__(self) -> int:
        return id(self)

    def get_type_name(self) -> str:
        return "streamgmm-one-object"

    def normalize_path(self, path: str) -> str:
        return path

    def _info(self, path: str) -> pafs.FileInfo:
        if path == self.path:
            return pafs.FileInfo(path, pafs.FileType.File, size=self.data.size)
        if self.path.startswith(path.rstrip("/") + "/"):
            return pafs.FileInfo(path, pafs.FileType.Directory)
        return pafs.FileInfo(path, pafs.FileType.NotFound)

    def get_file_info(self, paths: list[str]) -> list[pafs.FileInfo]:
        return [self._info(path) for path in paths]

    def get_file_info_selector(self, selector: pafs.FileSelector) -> list[pafs.FileInfo]:
        return [self._info(self.path)] if self.path.startswith(selector.base_dir.rstrip("/") + "/") else []

    def open_input_file(self, path: str) -> pa.NativeFile:
        if path != self.path:
            raise FileNotFoundError(path)
        return pa.BufferReader(self.data)

    def open_input_stream(self, path: str) -> pa.NativeFile:
        return self.open_input_file(path)

    def _read_only(self, *args: Any) -> None:
        raise OSError(f"{self.path}: read only")

    create_dir = delete_dir = delete_dir_contents = delete_root_dir_contents = delete_file = _read_only
    move = copy_file = open_output_stream = open_append_stream = _read_only
