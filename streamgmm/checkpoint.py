"""The watcher's state directory: one atomic checkpoint holding the model AND the ledger of the
files seen, a lock, the model history and the quarantine records.

Layout::

    STATE_DIR/current.model          the checkpoint: a model file (StreamingGaussianMixture.load reads
                                     it) whose model.json also holds "watch": sequence number, time,
                                     configuration and the ledger (one entry per file seen)
    STATE_DIR/models/00000012.model  the last N checkpoints (hard links to earlier current.model files)
    STATE_DIR/quarantine/*.json      one record per quarantined file: which file, why
    STATE_DIR/lock                   fcntl.flock'ed by the running watcher; holds its pid
    STATE_DIR/ledger-before-model.json  the ledger alone while no file has made a model yet (only
                                     quarantined or empty files); the first checkpoint takes it over

The commit point is the rename of current.model's temporary file (written and fsynced first).
Model state and ledger travel in that one file, so a crash at any instant leaves either the
previous checkpoint or the next one: a file is never counted twice nor lost. Everything else
(history links, quarantine records, temporary files) is derived and redone or removed on restart.

For the crash tests, ``STREAMGMM_WATCH_CRASH_AT="POINT:N"`` kills the process with SIGKILL (a
real ``kill -9``) at POINT of the file whose ledger entry is number N: ``mid_file`` (after its
first mini-batch was blended), ``before_temp`` (model updated and output written, nothing of the
checkpoint on disk), ``before_rename`` (temporary file written and fsynced) or ``after_rename``.

Example:

>>> import tempfile, numpy as np
>>> from streamgmm import StreamingGaussianMixture
>>> from streamgmm.checkpoint import StateDirectory
>>> model = StreamingGaussianMixture(1, random_state=0).partial_fit(np.random.default_rng(0).normal(size=(50, 2)))
>>> state = StateDirectory(tempfile.mkdtemp())
>>> with state.locked():
...     state.commit(model, [{"sequence": 1, "path": "a.parquet", "status": "consumed"}], {})
1
>>> checkpoint = state.load()
>>> checkpoint.sequence, checkpoint.ledger[0]["path"], np.array_equal(checkpoint.model.means_, model.means_)
(1, 'a.parquet', True)
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import re
import secrets
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .atomic_write import create_new, write_bytes_atomically
from .estimator import StreamingGaussianMixture
from .model_file import ModelFileError, read_model, write_model_to

WATCH_FORMAT = "streamgmm.watch"
WATCH_VERSION = 1
CURRENT = "current.model"
EARLY = "ledger-before-model.json"  # the ledger while no file has made a model yet
MODELS = "models"
QUARANTINE = "quarantine"
LOCK = "lock"
CRASH_ENV = "STREAMGMM_WATCH_CRASH_AT"
CRASH_POINTS = ("mid_file", "before_temp", "before_rename", "after_rename")
TEMPORARY = re.compile(r"^\..+\.[0-9a-f]{16}\.tmp$")


class StateDirectoryBusy(RuntimeError):
    """Another watcher holds the state directory's lock."""


def crash_point(point: str, sequence: int) -> None:
    """Kill this process with SIGKILL if ``STREAMGMM_WATCH_CRASH_AT`` names this point (tests only)."""
    if os.environ.get(CRASH_ENV) == f"{point}:{sequence}":
        os.kill(os.getpid(), signal.SIGKILL)


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def fsync_directory(path: Path) -> None:
    """Make a rename in ``path`` durable (it survives power loss, not only a killed process)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class Checkpoint:
    """What a state directory holds: the model and the ledger of files seen."""

    model: StreamingGaussianMixture
    ledger: list[dict[str, Any]]
    sequence: int
    updated: str
    config: dict[str, Any] = field(default_factory=dict)


class StateDirectory:
    """A watcher's state directory (see the module docstring)."""

    def __init__(self, path: str | os.PathLike[str], keep_models: int = 10):
        if keep_models < 1:
            raise ValueError(f"keep_models must be >= 1, got {keep_models}")
        self.path = Path(path)
        self.keep_models = keep_models

    @property
    def current(self) -> Path:
        return self.path / CURRENT

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the state directory's lock (non-blocking: a second watcher is refused)."""
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
            self._clean_up()
            yield
        finally:
            os.close(fd)  # releases the lock

    def _clean_up(self) -> None:
        """Remove temporary files of a killed commit, and link the last checkpoint into the
        history if the kill came between the rename and the link."""
        for entry in self.path.iterdir():
            if TEMPORARY.match(entry.name) and entry.is_file():
                entry.unlink()
        if self.current.is_file():
            (self.path / EARLY).unlink(missing_ok=True)  # killed between the first commit and this removal
            checkpoint = self.load()
            if checkpoint is not None:
                self._keep_history(checkpoint.sequence)

    def load(self) -> Checkpoint | None:
        """The last committed checkpoint, or None before the first one."""
        if not self.current.is_file():
            return None
        document, arrays = read_model(self.current)
        watch = document.get("watch")
        if not isinstance(watch, dict) or watch.get("format") != WATCH_FORMAT:
            raise ModelFileError(f"{self.current}: a model file, but not a watcher checkpoint (no ledger)")
        if watch.get("version") != WATCH_VERSION:
            raise ModelFileError(f"{self.current}: watcher checkpoint version {watch.get('version')!r} is not supported")
        try:
            model = StreamingGaussianMixture._from_document(document, arrays)
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFileError(f"{self.current}: corrupt model file ({exc})") from None
        return Checkpoint(model, list(watch["ledger"]), int(watch["sequence"]), str(watch["updated"]),
                          dict(watch.get("config", {})))

    def commit(self, model: StreamingGaussianMixture, ledger: list[dict[str, Any]], config: dict[str, Any]) -> int:
        """Write the checkpoint (model and ledger) atomically; return its sequence number, the
        number of ledger entries. The caller holds the lock."""
        sequence = len(ledger)
        document, arrays = model._model_document()
        document["watch"] = {
            "format": WATCH_FORMAT, "version": WATCH_VERSION, "sequence": sequence, "updated": now_iso(),
            "config": config, "ledger": ledger,
        }
        crash_point("before_temp", sequence)
        tmp = self.path / f".{CURRENT}.{secrets.token_hex(8)}.tmp"
        try:
            with create_new(tmp) as raw:
                write_model_to(raw, document, arrays)
                raw.flush()
                os.fsync(raw.fileno())
            crash_point("before_rename", sequence)
            os.replace(tmp, self.current)  # the commit point
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        fsync_directory(self.path)
        crash_point("after_rename", sequence)
        (self.path / EARLY).unlink(missing_ok=True)  # its entries are in this ledger now
        self._keep_history(sequence)
        return sequence

    def commit_early_ledger(self, ledger: list[dict[str, Any]], config: dict[str, Any]) -> int:
        """Before the first model exists (every file so far quarantined or empty), commit the
        ledger alone, atomically; the first model checkpoint takes it over."""
        body = {"format": WATCH_FORMAT, "version": WATCH_VERSION, "sequence": len(ledger), "updated": now_iso(),
                "config": config, "ledger": ledger}
        write_bytes_atomically(self.path / EARLY, json.dumps(body, indent=1).encode())
        return len(ledger)

    def load_early_ledger(self) -> tuple[list[dict[str, Any]], str] | None:
        """(ledger, time of update) committed before the first model, if any and no model since."""
        if self.current.is_file() or not (self.path / EARLY).is_file():
            return None
        try:
            body = json.loads((self.path / EARLY).read_text())
            return list(body["ledger"]), str(body["updated"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelFileError(f"{self.path / EARLY}: corrupt watcher ledger ({exc})") from None

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
        target = directory / f"{name}.{(entry.get('sha256') or 'unhashed')[:12]}.json"
        write_bytes_atomically(target, (json.dumps(entry, indent=1) + "\n").encode())
        return target


def history_files(path: str | os.PathLike[str]) -> list[Path]:
    """The checkpoints kept in ``path/models``, oldest first."""
    models = Path(path) / MODELS
    if not models.is_dir():
        return []
    return sorted(p for p in models.iterdir() if re.fullmatch(r"\d{8}\.model", p.name))


def is_state_directory(path: str | os.PathLike[str]) -> bool:
    return os.path.isdir(path) and (os.path.isfile(os.path.join(path, CURRENT)) or os.path.isfile(os.path.join(path, LOCK)))


def state_summary(path: str | os.PathLike[str], recent: int = 10) -> tuple[dict[str, Any], StreamingGaussianMixture | None]:
    """What a state directory says (without taking the lock: the checkpoint is read whole or
    not at all): counts of the ledger, the last update, the last updates and how far each
    moved the parameters, the kept history, quarantined files with their reasons."""
    state = StateDirectory(path)
    checkpoint = state.load()
    if checkpoint is None:
        early = state.load_early_ledger()
        ledger, sequence, updated, model = (early[0], len(early[0]), early[1], None) if early else ([], 0, None, None)
    else:
        ledger, sequence, updated, model = checkpoint.ledger, checkpoint.sequence, checkpoint.updated, checkpoint.model
    kept = history_files(path)

    def count(status: str) -> int:
        return sum(entry["status"] == status for entry in ledger)

    displacement = None
    if kept and model is not None:
        try:
            oldest = StreamingGaussianMixture.load(kept[0])
            if oldest.means_.shape == model.means_.shape:
                displacement = np.linalg.norm(model.means_ - oldest.means_, axis=1).tolist()
        except (ModelFileError, OSError):
            pass  # pruned between listing and reading
    return {
        "kind": "watch state",
        "path": str(path),
        "model": str(state.current) if model is not None else None,
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
        "recent": [
            {key: entry.get(key) for key in ("sequence", "path", "status", "records_used", "mean_shift", "weight_shift", "at")}
            for entry in ledger[-recent:]
        ],
        "quarantined": [{"path": e["path"], "reason": e.get("reason")} for e in ledger if e["status"] == "quarantined"],
        "models": [p.name for p in kept],
        "mean_displacement_since_oldest_kept": displacement,
    }, model
