"""Atomic writes: a file appears under its final name complete, or not at all.

The content goes to a hidden temporary name in the target directory (``.NAME.RANDOM.tmp``: a
leading dot, so Spark, pyarrow and streamgmm's own readers skip it), is flushed to disk and then
renamed, which is atomic within a filesystem. On any error the temporary file is removed.
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

# The longest file name most filesystems take (bytes); longer names are shortened by a hash.
MAX_NAME_BYTES = 255
HASHED_SUFFIX = 1 + 16  # "~" and 16 hex digits of SHA-256


def bounded_name(name: str, limit: int = MAX_NAME_BYTES) -> str:
    """``name`` if it fits in ``limit`` bytes, else a readable prefix of it, ``~`` and 16 hex
    digits of its SHA-256 (distinct names stay distinct), ``limit`` bytes at most."""
    encoded = os.fsencode(name)
    if len(encoded) <= limit:
        return name
    digest = hashlib.sha256(encoded).hexdigest()[:16]
    prefix = encoded[: limit - HASHED_SUFFIX].decode(errors="ignore")  # not cut inside a character
    return f"{prefix}~{digest}"


@contextmanager
def atomic_path(path: str | os.PathLike[str], before_rename: Callable[[], None] | None = None) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s content to; on success it is synced and
    renamed to ``path``. ``before_rename`` runs between the sync and the rename (a test's
    crash point). Errors name ``path``, never the temporary file."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a directory, not a file", str(path))
    directory = path.parent if str(path.parent) else Path(".")
    token = secrets.token_hex(8)
    # ".NAME.TOKEN.tmp" within the name length limit, however long NAME is.
    tmp = directory / f".{bounded_name(path.name, MAX_NAME_BYTES - len(token) - 6)}.{token}.tmp"
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if before_rename is not None:
            before_rename()
        try:
            os.replace(tmp, path)
        except OSError as exc:
            raise type(exc)(exc.errno, exc.strerror, str(path)) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def fsync_directory(path: str | os.PathLike[str]) -> None:
    """Make a rename in ``path`` durable (it survives power loss, not only a killed process)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_new(path: Path) -> BinaryIO:
    """Open a new file for writing. Not tempfile.mkstemp: its files are private (0600), so the
    result would end up unreadable by anyone else; mode 0666 lets the umask decide, as it does
    for any file open() creates."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    return os.fdopen(fd, "wb")


def write_bytes_atomically(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as tmp, create_new(tmp) as raw:
        raw.write(data)
