"""Atomic writes: a file appears under its final name complete, or not at all.

The content goes to a hidden temporary name in the target directory (``.NAME.RANDOM.tmp``: a
leading dot, so Spark, pyarrow and streamgmm's own readers skip it), is flushed to disk and then
renamed, which is atomic within a filesystem. On any error the temporary file is removed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
import os
from pathlib import Path
import secrets
from typing import BinaryIO


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s content to; on success it is synced and
    renamed to ``path``."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    tmp = directory / f".{path.name}.{secrets.token_hex(8)}.tmp"
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def create_new(path: Path) -> BinaryIO:
    """Open a new file for writing. Not tempfile.mkstemp: its files are private (0600), so the
    result would end up unreadable by anyone else; mode 0666 lets the umask decide, as it does
    for any file open() creates."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    return os.fdopen(fd, "wb")


def write_bytes_atomically(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as tmp, create_new(tmp) as raw:
        raw.write(data)
