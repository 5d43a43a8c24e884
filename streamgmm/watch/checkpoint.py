"""The watcher's state directory: the layout of a :class:`~streamgmm.watch.state.WatchState` in a
local directory (one atomic checkpoint committing the model AND the ledger of the files seen, the
model history and the quarantine records), kept by a lock.

Layout::

    STATE_DIR/current.model          the checkpoint: a model file (StreamingGaussianMixture.load reads
                                     it) whose model.json also holds "watch": sequence number, time,
                                     configuration, and the length and SHA-256 of the committed ledger
    STATE_DIR/ledger.jsonl           the ledger, one JSON line per file seen (append-only), with
                                     each consumed file's drift signal (:mod:`.drift`)
    STATE_DIR/models/00000012.model  the last N checkpoints (hard links to earlier current.model files)
    STATE_DIR/quarantine/*.json      one record per quarantined file: which file, why
    STATE_DIR/lock                   fcntl.flock'ed by the running watcher; holds its pid
    STATE_DIR/ledger-before-model.json  the checkpoint while no file has made a model yet (only
                                     quarantined or empty files so far)

A commit appends the new ledger entry and fsyncs it, then writes the checkpoint to a temporary
file, fsyncs and renames it: the rename is the commit point. The ledger's committed part is
what the checkpoint names (its length and hash), so a crash at any instant leaves either the
previous checkpoint with its ledger or the next one with its ledger: a file is never counted
twice nor lost. Entries appended by a commit killed before its rename are cut on restart, as are
temporary files; history links are redone. The cost of a commit does not grow with the ledger
(``scripts/bench_watch_checkpoint.py``).

``StateDirectory(..., on_step=...)`` is called with ``(point, sequence)`` at each step of a
commit (:class:`~streamgmm.watch.state.WatchState`): ``before_temp`` (model updated and output
written, nothing of the checkpoint on disk), ``before_rename`` (temporary file written and
fsynced) and ``after_rename``; the watcher adds ``mid_file`` (a file's first mini-batch blended).
The crash tests kill the process there.

Examples
--------
>>> import tempfile, numpy as np
>>> from streamgmm import StreamingGaussianMixture
>>> from streamgmm.watch.checkpoint import StateDirectory
>>> model = StreamingGaussianMixture(1, random_state=0).partial_fit(np.random.default_rng(0).normal(size=(50, 2)))
>>> state = StateDirectory(tempfile.mkdtemp())
>>> with state.locked() as checkpoint:
...     state.commit(model, [{"sequence": 1, "path": "a.parquet", "status": "consumed"}], {})
1
>>> checkpoint = state.load()
>>> checkpoint.sequence, checkpoint.ledger[0]["path"], np.array_equal(checkpoint.model.means_, model.means_)
(1, 'a.parquet', True)
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from streamgmm.estimator import StreamingGaussianMixture
from streamgmm.io.model.file import ModelFileError, read_model
from streamgmm.watch.blob_store import LocalBlobs
from streamgmm.watch.state import (
    Checkpoint,
    Committed,
    Found,
    StateDirectoryBusy,
    WatchState,
    decode_checkpoint,
    encode_entries,
    model_of,
)

__all__ = ["Checkpoint", "StateDirectory", "StateDirectoryBusy", "is_state_directory", "state_summary"]

CURRENT = "current.model"
EARLY = "ledger-before-model.json"  # the checkpoint while no file has made a model yet
LEDGER = "ledger.jsonl"
MODELS = "models"
LOCK = "lock"
TEMPORARY = re.compile(r"^\..+\.[0-9a-f]{16}\.tmp$")


class StateDirectory(WatchState):
    """A watcher's state directory (see the module docstring)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        keep_models: int = 10,
        on_step: Callable[[str, int], None] | None = None,
    ):
        path = Path(path)
        super().__init__(DirectoryLayout(path, keep_models), DirectoryLock(path), keep_models, on_step)


class DirectoryLock:
    """The state directory's lock: ``fcntl.flock`` on ``lock``, which holds the holder's pid."""

    def __init__(self, path: Path):
        self.path = path

    @contextmanager
    def held(self) -> Iterator[None]:
        """Hold the lock (non-blocking: a second watcher is refused)."""
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StateDirectoryBusy(f"{self.path} is in use by another watcher (pid {pid})") from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield
        finally:
            os.close(fd)  # releases the lock

    def confirm(self) -> None:
        """A lock held by an open file cannot be lost."""


class DirectoryLayout:
    """Where a state directory keeps what (see the module docstring)."""

    ledger_damaged = "{where}: its first {size} bytes are not those the checkpoint committed (damaged?)"
    ledger_counted = "{where}: {found} committed entries, the checkpoint says {entries}"

    def __init__(self, path: Path, keep_models: int):
        self.path, self.keep_models = path, keep_models
        self.blobs = LocalBlobs(path)

    @property
    def current(self) -> Path:
        return self.path / CURRENT

    def clear_cut(self) -> None:
        """Temporary files of a killed commit; the early checkpoint if a kill came between the
        first model's commit and its removal."""
        for entry in self.path.iterdir():
            if TEMPORARY.match(entry.name) and entry.is_file():
                entry.unlink()
        if self.current.is_file():
            self.blobs.delete(EARLY)

    def find(self) -> Found | None:
        """current.model; else the checkpoint before the first model; else (current.model lost)
        the kept checkpoint that was it; None for a new state directory."""
        if self.current.is_file():
            name = CURRENT
        elif self.blobs.exists(EARLY):
            name = EARLY
        else:
            name = self._lost_checkpoint()
        if name is None:
            return None
        path = self.blobs.file(name)
        model, watch = decode_checkpoint(path, str(path), early=name == EARLY)
        return Found(str(path), model, watch, restored_from=path if name.startswith(f"{MODELS}/") else None)

    def _lost_checkpoint(self) -> str | None:
        """Without current.model: None for a new state directory; else the newest valid kept
        checkpoint in models/ if the ledger is exactly what it committed (it is the lost
        current.model, hard-linked there when committed). Anything else is refused with a line
        saying how to recover: the ledger is never cut to fit a checkpoint found this way."""
        ledger = self.path / LEDGER
        size = self.blobs.size(LEDGER)
        kept = history_files(self.path)
        if not kept and (size == 0 or ledger.read_bytes().count(b"\n") <= 1):
            return None  # new, or the first commit killed before its rename: its entry is cut
        for candidate in reversed(kept):
            try:
                watch = read_model(candidate)[0]["watch"]
                committed, digest = int(watch["ledger_bytes"]), str(watch["ledger_sha256"])
            except (ModelFileError, OSError, KeyError, TypeError, ValueError):
                continue  # damaged or pruned meanwhile: an older one may do
            if committed == size and hashlib.sha256(self.blobs.read_prefix(LEDGER, size) or b"").hexdigest() == digest:
                return f"{MODELS}/{candidate.name}"
            raise ModelFileError(
                f"{self.current} is missing and the newest kept checkpoint, {MODELS}/{candidate.name}, does not "
                f"commit the {size:,} bytes of {LEDGER} (it commits {committed:,}); restore {CURRENT} from a "
                f"backup, or copy {candidate.name} to {self.current} to go on from it (the files the ledger "
                "lists after it are then consumed again)"
            )
        raise ModelFileError(
            f"{self.current} is missing and no valid checkpoint is kept in {self.path / MODELS}, but {LEDGER} is "
            f"not empty; restore {CURRENT} from a backup, or start again in a new state directory"
        )

    def ledger_name(self, watch: dict[str, Any]) -> str:
        return LEDGER

    def ledger_bytes(self, name: str, size: int) -> tuple[str, bytes | None]:
        """The committed part of the ledger file (it may be longer: entries of a cut commit)."""
        return self.blobs.name_url(name), self.blobs.read_prefix(name, size) if size else b""

    def stage_ledger(self, ledger: list[dict[str, Any]], committed: Committed) -> tuple[Committed, dict[str, Any]]:
        """The new entries appended to ledger.jsonl after its committed part, and fsynced."""
        data = encode_entries(ledger[committed.entries :])
        self.blobs.write_at(LEDGER, committed.size, data)
        running = committed.sha256.copy()
        running.update(data)
        return Committed(len(ledger), committed.size + len(data), running), {}

    def publish(self, sequence: int, body: bytes, early: bool, before_commit: Callable[[], None]) -> None:
        """The checkpoint renamed into place: the commit point."""
        self.blobs.replace(EARLY if early else CURRENT, body, before_commit)

    def settle(self, sequence: int, has_model: bool) -> None:
        if has_model:
            self.blobs.delete(EARLY)  # this checkpoint has taken it over
            self._keep_history(sequence)

    def recover(self, checkpoint: Checkpoint | None, committed: Committed) -> None:
        """current.model again if it was lost; ledger entries appended but never committed cut;
        the last checkpoint linked into the history if the kill came between rename and link."""
        if checkpoint is not None and checkpoint.restored_from is not None:
            self.blobs.link(f"{MODELS}/{checkpoint.restored_from.name}", CURRENT, atomic=True)
        if self.blobs.size(LEDGER) > committed.size:
            self.blobs.truncate(LEDGER, committed.size)
        if checkpoint is not None and checkpoint.model is not None:
            self._keep_history(checkpoint.sequence)

    def _keep_history(self, sequence: int) -> None:
        """``models/NNNNNNNN.model`` for this checkpoint (a hard link: no copy), and only the
        last ``keep_models`` of them."""
        target = f"{MODELS}/{sequence:08d}.model"
        if not self.blobs.exists(target):
            self.blobs.link(CURRENT, target)
        kept = history_files(self.path)
        for old in kept[: max(0, len(kept) - self.keep_models)]:
            old.unlink(missing_ok=True)

    def kept(self, sequence: int) -> list[str]:
        return [f"{MODELS}/{p.name}" for p in history_files(self.path)]

    def kept_label(self, name: str) -> str:
        return name.rsplit("/", 1)[-1]

    def read_kept(self, name: str) -> StreamingGaussianMixture | None:
        return model_of(self.blobs.file(name), self.blobs.name_url(name))

    def shown_current(self) -> str:
        return str(self.current)

    def record(self, name: str, data: bytes) -> str:
        self.blobs.put(name, data)
        return self.blobs.name_url(name)


def history_files(path: str | os.PathLike[str]) -> list[Path]:
    """The checkpoints kept in ``path/models``, oldest first."""
    models = Path(path) / MODELS
    if not models.is_dir():
        return []
    return sorted(p for p in models.iterdir() if re.fullmatch(r"\d{8}\.model", p.name))


def is_state_directory(path: str | os.PathLike[str]) -> bool:
    return os.path.isdir(path) and any(os.path.isfile(os.path.join(path, name)) for name in (CURRENT, EARLY, LOCK))


def state_summary(
    path: str | os.PathLike[str], recent: int = 10
) -> tuple[dict[str, Any], StreamingGaussianMixture | None]:
    """What a state directory says (without taking the lock: the checkpoint is read whole or
    not at all): :func:`~streamgmm.watch.state.summary_of`."""
    return StateDirectory(path).summary(str(path), recent)
