"""The watcher's view of its landing directory: which files are there, which have settled, and
reading a file so that what is hashed is what is learnt.

Listing follows symbolic links but visits each real directory and file once (see
:func:`streamgmm.io.lake.paths.walk_files`) and never enters the watcher's own state or output
directories, by whatever link; what cannot be read is reported, not skipped silently.

Settling: a file is ready once unchanged in size and mtime since the last look and its mtime
is ``settle`` seconds old. A file dated in the future cannot age by the clock; it is ready once
it has kept its size and mtime for ``settle`` seconds of this process's own (monotonic) clock
over at least two looks, and its content is then what it was at the first look.

A landing prefix on an object store (``s3://bucket/landing/``) is :mod:`.store_landing`'s; both
kinds are a :class:`Landing` (``files``, ``hold``, ``content_sha256``) whose held files are a
:class:`Held`, which is all the watcher uses.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from streamgmm.io.lake.paths import walk_files
from streamgmm.io.records.columns import DataError
from streamgmm.io.sources.parquet import ParquetSource, is_hidden

HASH_BLOCK = 1 << 20


@dataclass(frozen=True)
class LandingFile:
    path: str
    relative: str
    size: int
    mtime_ns: int


class Held(Protocol):
    """A landing file held while it is used: what is hashed is what is learnt."""

    file: LandingFile
    etag: str | None  # the object's entity tag, where the store has one

    def __enter__(self) -> Held: ...

    def __exit__(self, *exc: object) -> None: ...

    def sha256(self) -> str:
        """The SHA-256 of the content held."""

    def unchanged(self) -> bool:
        """Whether the landing still names this same content, as listed."""

    def parquet_rows(self) -> int:
        """The record count, from the Parquet footer; a :class:`DataError` if it is not Parquet."""

    def parquet_source(self, **options: Any) -> ParquetSource:
        """The content held, as a source to learn from."""


class Landing(Protocol):
    """Where files arrive: a local directory or an object-store prefix."""

    def files(self, avoid: Sequence[str]) -> tuple[list[LandingFile], list[str]]:
        """The candidate files, oldest first, and a message per entry that could not be read."""

    def hold(self, file: LandingFile) -> Held:
        """Open (or fetch) ``file`` to be hashed and learnt from."""

    def content_sha256(self, file: LandingFile) -> str | None:
        """The SHA-256 of the file's content now (None if it is gone or unreadable)."""


def landing_files(
    landing: str | os.PathLike[str], avoid: Sequence[str | os.PathLike[str]] = ()
) -> tuple[list[LandingFile], list[str]]:
    """Candidate files under ``landing`` (names starting with ``.`` or ``_`` left out, at any
    depth), in the order they are consumed: modification time, then relative path; and a message
    per entry that could not be read. Directories ``avoid`` are not entered."""
    landing = os.fspath(landing)
    listing = walk_files(landing, skip=is_hidden, avoid=avoid)
    found = [
        LandingFile(path, os.path.relpath(path, landing), info.st_size, info.st_mtime_ns)
        for path, info in listing.files
    ]
    return sorted(found, key=lambda f: (f.mtime_ns, f.relative)), listing.problems


class LocalLanding:
    """A landing directory on a local (or mounted) filesystem."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = os.path.abspath(os.fspath(path))
        if not os.path.isdir(self.path):
            raise FileNotFoundError(f"landing directory {path} does not exist")

    def __str__(self) -> str:
        return self.path

    def files(self, avoid: Sequence[str | os.PathLike[str]] = ()) -> tuple[list[LandingFile], list[str]]:
        return landing_files(self.path, avoid)

    def hold(self, file: LandingFile) -> HeldFile:
        return HeldFile(file)

    @staticmethod
    def content_sha256(file: LandingFile) -> str | None:
        try:
            with open(file.path, "rb") as handle:
                return sha256_of(handle)
        except OSError:
            return None  # gone or unreadable: the next look or the read says so


def sha256_of(handle: BinaryIO) -> str:
    digest = hashlib.sha256()
    for block in iter(lambda: handle.read(HASH_BLOCK), b""):
        digest.update(block)
    return digest.hexdigest()


class HeldFile:
    """A landing file opened once and held open while it is used: its hash is computed from
    this open file, and :meth:`unchanged` says whether the path still names this same file,
    unmodified, so a producer's ``os.replace`` or rewrite meanwhile voids what was read."""

    def __init__(self, file: LandingFile):
        self.file = file
        self.handle = open(file.path, "rb")
        self.identity = _identity(os.fstat(self.handle.fileno()))

    def __enter__(self) -> HeldFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.close()

    def sha256(self) -> str:
        self.handle.seek(0)
        return sha256_of(self.handle)

    etag = None  # a local file has no entity tag

    def parquet_rows(self) -> int:
        """The file's record count, from its footer; a :class:`DataError` if it is not Parquet."""
        return parquet_rows(self.file.path)

    def parquet_source(self, **options: Any) -> ParquetSource:
        return ParquetSource(self.file.path, **options)

    def unchanged(self) -> bool:
        """The listing's size and mtime, the open file's, and the path's file all the same."""
        try:
            now = _identity(os.stat(self.file.path))
        except OSError:
            return False
        listed = (self.file.size, self.file.mtime_ns)
        return self.identity[2:] == listed and now == self.identity == _identity(os.fstat(self.handle.fileno()))


def parquet_rows(where: Any, name: str | None = None) -> int:
    """Records in a Parquet file (a path, or a file object named ``name``), from its footer."""
    try:
        return pq.ParquetFile(where).metadata.num_rows
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{name or where}: not a Parquet file, or truncated ({exc})") from None


def _identity(info: os.stat_result) -> tuple[int, int, int, int]:
    return info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns


@dataclass
class _Observation:
    size: int
    mtime_ns: int
    since: float  # monotonic seconds at the first look with this size and mtime
    sha256: str | None  # content at that look, for a file dated in the future


class Settling:
    """Which listed files are ready to be read (see the module docstring)."""

    def __init__(
        self,
        settle: float,
        log: Callable[[str], None],
        content: Callable[[LandingFile], str | None] = LocalLanding.content_sha256,
    ):
        self.settle = settle
        self.log = log
        self._content = content
        self._observed: dict[str, _Observation] = {}

    def ready(self, file: LandingFile, now_ns: int) -> bool:
        """Whether ``file`` has settled; records this look at it."""
        seen = self._observed.get(file.relative)
        same = seen is not None and (seen.size, seen.mtime_ns) == (file.size, file.mtime_ns)
        future = file.mtime_ns > now_ns
        if not same:
            self._observed[file.relative] = _Observation(
                file.size, file.mtime_ns, time.monotonic(), self._content(file) if future else None
            )
            if future:
                self.log(
                    f"{file.relative}: modified in the future by this machine's clock; taken once its "
                    f"size and content stay the same for {self.settle:g} s"
                )
        if future:
            return same and time.monotonic() - seen.since >= self.settle
        return (seen is None or same) and now_ns - file.mtime_ns >= self.settle * 1e9

    def expected_sha256(self, file: LandingFile) -> str | None:
        """The content a future-dated file had when first seen (None for other files)."""
        seen = self._observed.get(file.relative)
        return seen.sha256 if seen is not None else None

    def forget(self, file: LandingFile) -> None:
        """Look at ``file`` afresh (its content changed from the first look)."""
        self._observed.pop(file.relative, None)
