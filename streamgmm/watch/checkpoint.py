"""The watcher's state directory: one atomic checkpoint committing the model AND the ledger of
the files seen, a lock, the model history and the quarantine records.

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
commit: ``before_temp`` (model updated and output written, nothing of the checkpoint on disk),
``before_rename`` (temporary file written and fsynced) and ``after_rename``; the watcher adds
``mid_file`` (a file's first mini-batch blended). The crash tests kill the process there.

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

import datetime
import fcntl
import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from streamgmm.estimator import StreamingGaussianMixture
from streamgmm.io.atomic_write import (
    MAX_NAME_BYTES,
    atomic_path,
    bounded_name,
    create_new,
    fsync_directory,
    write_bytes_atomically,
)
from streamgmm.io.model_file import ModelFileError, parse_json, read_model, write_model_to
from streamgmm.watch.drift import drift_summary

WATCH_FORMAT = "streamgmm.watch"
WATCH_VERSION = 1
CURRENT = "current.model"
EARLY = "ledger-before-model.json"  # the checkpoint while no file has made a model yet
LEDGER = "ledger.jsonl"
MODELS = "models"
QUARANTINE = "quarantine"
LOCK = "lock"
CRASH_POINTS = ("mid_file", "before_temp", "before_rename", "after_rename")
TEMPORARY = re.compile(r"^\..+\.[0-9a-f]{16}\.tmp$")


class StateDirectoryBusy(RuntimeError):
    """Another watcher holds the state directory's lock."""


def _no_step(point: str, sequence: int) -> None:
    """The default ``on_step``: nothing."""


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


@dataclass
class Checkpoint:
    """What a state directory holds: the model (None while every file so far was quarantined
    or empty) and the ledger of files seen."""

    model: StreamingGaussianMixture | None
    ledger: list[dict[str, Any]]
    sequence: int
    updated: str
    config: dict[str, Any] = field(default_factory=dict)
    restored_from: Path | None = None  # the kept checkpoint read because current.model was lost


class StateDirectory:
    """A watcher's state directory (see the module docstring)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        keep_models: int = 10,
        on_step: Callable[[str, int], None] | None = None,
    ):
        if keep_models < 1:
            raise ValueError(f"keep_models must be >= 1, got {keep_models}")
        self.path = Path(path)
        self.keep_models = keep_models
        self.on_step = on_step if on_step is not None else _no_step
        # The committed part of ledger.jsonl: entries, bytes, and the running hash of those bytes.
        self._entries = 0
        self._bytes = 0
        self._hash = hashlib.sha256()

    @property
    def current(self) -> Path:
        return self.path / CURRENT

    @contextmanager
    def locked(self) -> Iterator[Checkpoint | None]:
        """Hold the state directory's lock (non-blocking: a second watcher is refused), and
        yield the last checkpoint (None if there is none yet)."""
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
            yield self._recover()
        finally:
            os.close(fd)  # releases the lock

    def _recover(self) -> Checkpoint | None:
        """After a kill: remove temporary files, cut ledger entries appended but never
        committed, and link the last checkpoint into the history if the kill came between the
        rename and the link."""
        for entry in self.path.iterdir():
            if TEMPORARY.match(entry.name) and entry.is_file():
                entry.unlink()
        if self.current.is_file():
            (self.path / EARLY).unlink(missing_ok=True)  # killed between the first commit and its removal
        checkpoint = self.load()
        if checkpoint is not None and checkpoint.restored_from is not None:
            self._restore_current(checkpoint.restored_from)
        ledger = self.path / LEDGER
        if ledger.exists() and ledger.stat().st_size > self._bytes:
            os.truncate(ledger, self._bytes)
        if checkpoint is not None and checkpoint.model is not None:
            self._keep_history(checkpoint.sequence)
        return checkpoint

    def load(self) -> Checkpoint | None:
        """The last committed checkpoint, or None before the first one. Reads only the
        committed part of the ledger file (no lock needed: nothing is changed)."""
        where = self._checkpoint_file()
        if where is None:
            self._entries, self._bytes, self._hash = 0, 0, hashlib.sha256()
            return None
        model, watch = self._read_checkpoint(where)
        try:
            sequence, size, digest = int(watch["sequence"]), int(watch["ledger_bytes"]), str(watch["ledger_sha256"])
            updated, config = str(watch["updated"]), dict(watch.get("config", {}))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFileError(f"{where}: corrupt watcher checkpoint ({exc})") from None
        ledger, running = self._read_ledger(size, digest, sequence)
        self._entries, self._bytes, self._hash = sequence, size, running
        restored = where if where.parent.name == MODELS else None
        return Checkpoint(model, ledger, sequence, updated, config, restored_from=restored)

    def _checkpoint_file(self) -> Path | None:
        """current.model; else the checkpoint before the first model; else (current.model lost)
        the kept checkpoint that was it; None for a new state directory."""
        if self.current.is_file():
            return self.current
        if (self.path / EARLY).is_file():
            return self.path / EARLY
        return self._lost_checkpoint()

    def _read_checkpoint(self, where: Path) -> tuple[StreamingGaussianMixture | None, dict[str, Any]]:
        """The model (None before the first one) and the "watch" section of a checkpoint file."""
        if where.name == EARLY:
            return checked_checkpoint(lambda: (None, parse_json(where.read_bytes(), str(where))), str(where))
        return checked_checkpoint(lambda: checkpoint_of_document(*read_model(where)), str(where))

    def _lost_checkpoint(self) -> Path | None:
        """Without current.model: None for a new state directory; else the newest valid kept
        checkpoint in models/ if the ledger is exactly what it committed (it is the lost
        current.model, hard-linked there when committed). Anything else is refused with a line
        saying how to recover: the ledger is never cut to fit a checkpoint found this way."""
        ledger = self.path / LEDGER
        size = ledger.stat().st_size if ledger.exists() else 0
        kept = history_files(self.path)
        if not kept and (size == 0 or ledger.read_bytes().count(b"\n") <= 1):
            return None  # new, or the first commit killed before its rename: its entry is cut
        for candidate in reversed(kept):
            try:
                watch = read_model(candidate)[0]["watch"]
                committed, digest = int(watch["ledger_bytes"]), str(watch["ledger_sha256"])
            except (ModelFileError, OSError, KeyError, TypeError, ValueError):
                continue  # damaged or pruned meanwhile: an older one may do
            if committed == size and _sha256_of_file(ledger, size) == digest:
                return candidate
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

    def _read_ledger(self, size: int, digest: str, entries: int) -> tuple[list[dict[str, Any]], Any]:
        path = self.path / LEDGER
        data = b""
        if size:
            try:
                with open(path, "rb") as handle:
                    data = handle.read(size)
            except FileNotFoundError:
                raise ModelFileError(f"{path}: missing, but the checkpoint commits {entries} entries of it") from None
        running = hashlib.sha256(data)
        if len(data) != size or running.hexdigest() != digest:
            raise ModelFileError(f"{path}: its first {size} bytes are not those the checkpoint committed (damaged?)")
        ledger = [json.loads(line) for line in data.splitlines()]
        if len(ledger) != entries:
            raise ModelFileError(f"{path}: {len(ledger)} committed entries, the checkpoint says {entries}")
        return ledger, running

    def commit(
        self, model: StreamingGaussianMixture | None, ledger: list[dict[str, Any]], config: dict[str, Any]
    ) -> int:
        """Commit ``model`` with ``ledger`` (the committed entries plus new ones); return the
        sequence number, the number of entries. The caller holds the lock.

        The new entries are appended to ledger.jsonl and fsynced, then the checkpoint naming the
        ledger's new length and hash is written to a temporary file, fsynced and renamed: the
        commit point. Entries appended by a commit killed before its rename are cut on restart.
        Without a model yet, the checkpoint is ``ledger-before-model.json``."""
        sequence = len(ledger)
        if sequence < self._entries:
            raise ValueError(f"the ledger has {sequence} entries, fewer than the {self._entries} committed")
        data = b"".join(json.dumps(entry, sort_keys=True).encode() + b"\n" for entry in ledger[self._entries :])
        fd = os.open(self.path / LEDGER, os.O_WRONLY | os.O_CREAT, 0o666)
        try:
            os.ftruncate(fd, self._bytes)  # nothing uncommitted before the new entries
            os.pwrite(fd, data, self._bytes)
            os.fsync(fd)
        finally:
            os.close(fd)
        running = self._hash.copy()
        running.update(data)
        watch = {
            "format": WATCH_FORMAT,
            "version": WATCH_VERSION,
            "sequence": sequence,
            "updated": now_iso(),
            "config": config,
            "ledger_bytes": self._bytes + len(data),
            "ledger_sha256": running.hexdigest(),
        }
        self.on_step("before_temp", sequence)
        target = self.current if model is not None else self.path / EARLY
        # The rename at the end of atomic_path is the commit point.
        with atomic_path(target, before_rename=lambda: self.on_step("before_rename", sequence)) as tmp:
            with create_new(tmp) as raw:
                if model is not None:
                    document, arrays = model.model_document()
                    write_model_to(raw, {**document, "watch": watch}, arrays)
                else:
                    raw.write(json.dumps(watch, indent=1).encode())
        fsync_directory(self.path)
        self._entries, self._bytes, self._hash = sequence, self._bytes + len(data), running
        self.on_step("after_rename", sequence)
        if model is not None:
            (self.path / EARLY).unlink(missing_ok=True)  # this checkpoint has taken it over
            self._keep_history(sequence)
        return sequence

    def _restore_current(self, kept: Path) -> None:
        """current.model again, as the kept checkpoint it was (a hard link, else a copy)."""
        with atomic_path(self.current) as tmp:
            try:
                os.link(kept, tmp)
            except OSError:  # a filesystem without hard links
                shutil.copyfile(kept, tmp)
        fsync_directory(self.path)

    def _keep_history(self, sequence: int) -> None:
        """``models/NNNNNNNN.model`` for this checkpoint (a hard link: no copy), and only the
        last ``keep_models`` of them."""
        models = self.path / MODELS
        models.mkdir(exist_ok=True)
        target = models / f"{sequence:08d}.model"
        if not target.exists():
            try:
                os.link(self.current, target)
            except FileExistsError:
                pass
            except OSError:  # a filesystem without hard links
                with open(self.current, "rb") as source:
                    write_bytes_atomically(target, source.read())
        kept = history_files(self.path)
        for old in kept[: max(0, len(kept) - self.keep_models)]:
            old.unlink(missing_ok=True)

    def record_quarantine(self, entry: dict[str, Any]) -> Path:
        """A human-readable record of a quarantined file (the ledger is the authority; this is
        rewritten identically if a restart quarantines the same file again)."""
        directory = self.path / QUARANTINE
        directory.mkdir(exist_ok=True)
        name = re.sub(r"[^\w.=-]", "_", entry["path"].replace(os.sep, "__"))
        suffix = f".{(entry.get('sha256') or 'unhashed')[:12]}.json"
        # Bounded like every name the watcher writes: a long or deep landing path is hashed.
        target = directory / (bounded_name(name, MAX_NAME_BYTES - len(suffix)) + suffix)
        write_bytes_atomically(target, (json.dumps(entry, indent=1) + "\n").encode())
        return target


def _sha256_of_file(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    if size:
        with open(path, "rb") as handle:
            digest.update(handle.read(size))
    return digest.hexdigest()


def checkpoint_of_document(
    document: dict[str, Any], arrays: dict[str, Any]
) -> tuple[StreamingGaussianMixture | None, Any]:
    """A checkpoint's model and its "watch" section, from a model document."""
    return StreamingGaussianMixture.from_document(document, arrays), document.get("watch")


def checked_checkpoint(
    load: Callable[[], tuple[StreamingGaussianMixture | None, Any]], where: str
) -> tuple[StreamingGaussianMixture | None, dict[str, Any]]:
    """``load()``'s model and "watch" section, checked: a damaged or foreign checkpoint, or one
    of another version, is a ``ModelFileError`` naming ``where`` (a file or an object's URL)."""
    try:
        model, watch = load()
    except ModelFileError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{where}: corrupt watcher checkpoint ({exc})") from None
    if not isinstance(watch, dict) or watch.get("format") != WATCH_FORMAT:
        raise ModelFileError(f"{where}: not a watcher checkpoint (no ledger)")
    if watch.get("version") != WATCH_VERSION:
        raise ModelFileError(f"{where}: watcher checkpoint version {watch.get('version')!r} is not supported")
    return model, watch


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
    not at all): counts of the ledger, the last update, the last updates and how far each
    moved the parameters, the kept history, quarantined files with their reasons, and the drift
    signal (:func:`~streamgmm.watch.drift.drift_summary`)."""
    state = StateDirectory(path)
    kept = history_files(path)

    def oldest() -> StreamingGaussianMixture | None:
        try:
            return StreamingGaussianMixture.load(kept[0]) if kept else None
        except (ModelFileError, OSError):
            return None  # pruned between listing and reading

    return summary_of(str(path), state.load(), str(state.current), [p.name for p in kept], oldest, recent)


def summary_of(
    path: str,
    checkpoint: Checkpoint | None,
    current: str,
    kept: list[str],
    oldest: Callable[[], StreamingGaussianMixture | None],
    recent: int = 10,
) -> tuple[dict[str, Any], StreamingGaussianMixture | None]:
    """:func:`state_summary`'s report from a loaded checkpoint, wherever the state lives:
    ``current`` names the checkpoint, ``kept`` the kept checkpoints, ``oldest`` reads the first."""
    if checkpoint is None:
        ledger, sequence, updated, model = [], 0, None, None
    else:
        ledger, sequence, updated, model = checkpoint.ledger, checkpoint.sequence, checkpoint.updated, checkpoint.model

    def count(status: str) -> int:
        return sum(entry["status"] == status for entry in ledger)

    displacement = None
    first = oldest() if kept and model is not None else None
    if first is not None and first.means_.shape == model.means_.shape:
        displacement = np.linalg.norm(model.means_ - first.means_, axis=1).tolist()
    return {
        "kind": "watch state",
        "path": path,
        "model": current if model is not None else None,
        "sequence": sequence,
        "files_seen": len(ledger),
        "files_consumed": count("consumed"),
        "files_quarantined": count("quarantined"),
        "files_duplicate": count("duplicate"),
        "records_used": sum(int(entry.get("records_used", 0)) for entry in ledger),
        "records_skipped": sum(int(entry.get("records_skipped", 0)) for entry in ledger),
        "last_update": updated,
        "n_steps": int(model.n_steps_) if model is not None else 0,
        "step_floor": float(model.step_floor) if model is not None else None,
        "moves": model.moves if model is not None else None,
        "recent": [
            {
                key: entry.get(key)
                for key in ("sequence", "path", "status", "records_used", "mean_shift", "weight_shift", "at")
            }
            for entry in ledger[-recent:]
        ],
        "quarantined": [{"path": e["path"], "reason": e.get("reason")} for e in ledger if e["status"] == "quarantined"],
        "models": kept,
        "mean_displacement_since_oldest_kept": displacement,
        "drift": drift_summary(ledger),
    }, model
