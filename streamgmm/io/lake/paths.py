"""Paths of lakes, outputs and state, judged by where they really are.

Every "is this an input?" or "do these overlap?" check compares real paths
(:func:`os.path.realpath`, every symbolic link followed), so a link cannot smuggle an output
into its own input. Listing a local directory visits each real directory and each real file
once: a link back up the tree (``ln -s . lake/self``) or two links into each other are cycles,
walked once, never again. Entries that cannot be read are reported, not skipped silently.

Examples
--------
>>> import os, tempfile
>>> from streamgmm.io.lake.paths import walk_files
>>> lake = tempfile.mkdtemp()
>>> open(os.path.join(lake, "a.parquet"), "wb").close()
>>> os.symlink(".", os.path.join(lake, "self"))
>>> [os.path.relpath(path, lake) for path, info in walk_files(lake).files]
['a.parquet']
"""

from __future__ import annotations

import errno
import fnmatch
import glob
import os
import re
import stat
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pyarrow.dataset imports pandas: loaded only where a dataset is used
    pass


URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def real(path: str | os.PathLike[str]) -> str:
    """The absolute path with every symbolic link resolved (of the existing part of the path)."""
    return os.path.realpath(os.path.abspath(os.fspath(path)))


def inside(path: str | os.PathLike[str], directory: str | os.PathLike[str]) -> bool:
    """Whether real ``path`` is ``directory`` or lies under it (both resolved)."""
    path, directory = real(path), real(directory)
    return os.path.commonpath([path, directory]) == directory


def overlap(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether one of two paths lies inside the other, by their real paths."""
    return inside(a, b) or inside(b, a)


def is_url(path: object) -> bool:
    return isinstance(path, str) and URL.match(path) is not None


def refuse_url(path: object, what: str) -> None:
    """Outputs go to local (or mounted) paths only, until object-store outputs exist; a URL
    would otherwise be written to a local folder named after its scheme (``s3:``)."""
    if is_url(path):
        raise ValueError(f"{what} {path}: writing to a URL is not supported yet; give a local or mounted directory")


def describe_non_file(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` is not a regular file ("is a directory", "is a dangling symbolic link", ...),
    or None when it is one."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if os.path.islink(path):
            return f"is a dangling symbolic link (to {os.readlink(path)})"
        return "no such file"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "is a symbolic link loop"
        return f"cannot be read ({exc.strerror})"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a directory, not a file"
    if stat.S_ISFIFO(mode):
        return "is a named pipe (FIFO), not a file"
    return "is not a regular file"


# ---------------------------------------------------------------------- listing


@dataclass
class Listing:
    """Regular files found under a directory (path as reached, its stat), each real file once,
    in path order; and one message per entry that could not be read."""

    files: list[tuple[str, os.stat_result]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def walk_files(
    root: str,
    skip: Callable[[str], bool] = lambda name: False,
    max_depth: int | None = None,
    avoid: Iterable[str | os.PathLike[str]] = (),
) -> Listing:
    """The regular files under directory ``root``, following symbolic links but visiting each
    real directory and file once (cycles end there). ``skip`` leaves out names (and whole
    directories); ``max_depth`` limits how many directories deep files are taken from;
    directories ``avoid`` (e.g. a watcher's own state) are never entered, by whatever link."""
    walk = _Walk(skip, max_depth, avoid)
    top = os.stat(root)
    walk.seen_dirs.add((top.st_dev, top.st_ino))
    pending = [(root, 0)]
    while pending:
        pending.extend(reversed(walk.directory(*pending.pop())))
    walk.listing.files.sort()
    return walk.listing


class _Walk:
    """The state of one :func:`walk_files`: what was found, and what was seen by identity."""

    def __init__(self, skip: Callable[[str], bool], max_depth: int | None, avoid: Iterable[str | os.PathLike[str]]):
        self.skip, self.max_depth = skip, max_depth
        self.listing = Listing()
        self.seen_dirs = {(info.st_dev, info.st_ino) for info in map(_stat_or_none, avoid) if info is not None}
        self.seen_files: set[str] = set()  # real paths: a link to a file is that file; hard links are files

    def directory(self, directory: str, depth: int) -> list[tuple[str, int]]:
        """Take the files of one directory; return its subdirectories not seen before."""
        try:
            with os.scandir(directory) as entries:
                links = {entry.name: entry.is_symlink() for entry in entries if not self.skip(entry.name)}
        except OSError as exc:
            self.listing.problems.append(f"{directory}: unreadable directory ({exc.strerror})")
            return []
        real_directory = os.path.realpath(directory)
        below = []
        for name in sorted(links):
            path = os.path.join(directory, name)
            try:
                info = os.stat(path)
            except OSError:
                problem = describe_non_file(path)
                if problem != "no such file":  # removed while listing: nothing to report
                    self.listing.problems.append(f"{path}: {problem}")
                continue
            if stat.S_ISDIR(info.st_mode):
                key = (info.st_dev, info.st_ino)
                if key not in self.seen_dirs and (self.max_depth is None or depth < self.max_depth):
                    self.seen_dirs.add(key)
                    below.append((path, depth + 1))
            elif stat.S_ISREG(info.st_mode):
                self.file(path, info, os.path.realpath(path) if links[name] else os.path.join(real_directory, name))
        return below

    def file(self, path: str, info: os.stat_result, real_path: str) -> None:
        if real_path not in self.seen_files:
            self.seen_files.add(real_path)
            self.listing.files.append((path, info))


def glob_files(pattern: str, skip: Callable[[str], bool] = lambda name: False) -> tuple[str, Listing]:
    """The files matching a local glob (``**`` for any depth), listed with :func:`walk_files`
    from the pattern's fixed base directory, so links cannot make it loop; and that base."""
    parts = pattern.split(os.sep)
    fixed = 0
    while fixed < len(parts) and not glob.has_magic(parts[fixed]):
        fixed += 1
    base = os.sep.join(parts[:fixed]) or os.sep
    wild = [part for part in parts[fixed:] if part]
    if not os.path.isdir(base):
        return base, Listing()
    depth = None if "**" in wild else max(len(wild) - 1, 0)
    listing = walk_files(base, skip, max_depth=depth)
    listing.files = [
        (path, info) for path, info in listing.files if _match(wild, os.path.relpath(path, base).split(os.sep))
    ]
    return base, listing


def _stat_or_none(path: str | os.PathLike[str]) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None


def _match(patterns: Sequence[str], parts: Sequence[str]) -> bool:
    if not patterns:
        return not parts
    if patterns[0] == "**":
        return _match(patterns[1:], parts) or (bool(parts) and _match(patterns, parts[1:]))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], patterns[0]) and _match(patterns[1:], parts[1:])


# ---------------------------------------------------------------------- outputs vs inputs


def check_not_input(target: str | os.PathLike[str], inputs: Iterable[str], what: str) -> None:
    """Refuse to write ``target`` over an input file or inside an input directory."""
    for path in inputs:
        if inside(target, path):
            raise ValueError(
                f"{what} {target} is {'an input' if real(target) == real(path) else 'inside input'} "
                f"{path}; writing it would destroy or change the input"
            )


def is_path_like(data: Any) -> bool:
    """A path, URL or glob, a non-empty list of them, or a pyarrow dataset of files."""
    if isinstance(data, (str, os.PathLike)) or _is_dataset(data):
        return True
    return (
        isinstance(data, (list, tuple)) and len(data) > 0 and all(isinstance(item, (str, os.PathLike)) for item in data)
    )


def _is_dataset(data: Any) -> bool:
    """A ``pyarrow.dataset.Dataset``; without importing that module when no dataset was made."""
    dataset = sys.modules.get("pyarrow.dataset")
    return dataset is not None and isinstance(data, dataset.Dataset)
