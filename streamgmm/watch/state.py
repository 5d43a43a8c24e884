"""A watcher's state, wherever it lives: one checkpoint committing the model AND the ledger of
the files seen, an exclusion that keeps a second watcher off, and quarantine records.

:class:`WatchState` is the one implementation of loading, committing, recovering and
summarising a state. Where the bytes go is a :class:`StateLayout` over a blob store
(:mod:`.blob_store`): the state directory (:class:`~streamgmm.watch.checkpoint.StateDirectory`,
an append-only ledger file and a checkpoint renamed into place) or a prefix on an object store
(:class:`~streamgmm.watch.store_state.StoreState`, whole objects and a pointer written last).
What keeps a second watcher off is an :class:`Exclusion`: a lock on the directory, or a lease on
the prefix (:mod:`.lease`).

A commit goes: the ledger staged (:meth:`StateLayout.stage_ledger`), ``on_step("before_temp")``,
the checkpoint written and, just before its commit point, ``on_step("before_rename")`` and a
last check that this watcher still holds the state (:meth:`Exclusion.confirm`); then the commit
point (:meth:`StateLayout.publish`), ``on_step("after_rename")`` and the layout's tidying of its
history (:meth:`StateLayout.settle`). A crash at any instant leaves the previous checkpoint with
its ledger or the next one with its ledger: a file is never counted twice nor lost.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from streamgmm.estimator import StreamingGaussianMixture
from streamgmm.estimator.persistence import model_document, model_from_document
from streamgmm.io.model.file import ModelFileError, parse_json, read_model, write_model_to
from streamgmm.io.output.atomic_write import MAX_NAME_BYTES, bounded_name
from streamgmm.watch.drift import drift_summary

WATCH_FORMAT = "streamgmm.watch"
WATCH_VERSION = 1
QUARANTINE = "quarantine"
CRASH_POINTS = ("mid_file", "before_temp", "before_rename", "after_rename")


class StateDirectoryBusy(RuntimeError):
    """Another watcher holds the state's lock or lease."""


def no_step(point: str, sequence: int) -> None:
    """The default ``on_step``: nothing."""


def check_keep_models(keep_models: int) -> None:
    if keep_models < 1:
        raise ValueError(f"keep_models must be >= 1, got {keep_models}")


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


@dataclass
class Checkpoint:
    """What a state holds: the model (None while every file so far was quarantined or empty)
    and the ledger of files seen."""

    model: StreamingGaussianMixture | None
    ledger: list[dict[str, Any]]
    sequence: int
    updated: str
    config: dict[str, Any] = field(default_factory=dict)
    restored_from: Path | None = None  # the kept checkpoint read because current.model was lost


@dataclass
class Committed:
    """The committed ledger: its entries, its length in bytes and the running hash of them."""

    entries: int = 0
    size: int = 0
    sha256: Any = field(default_factory=hashlib.sha256)


@dataclass
class Found:
    """The committed checkpoint a layout found: where (for messages), model and "watch" section."""

    where: str
    model: StreamingGaussianMixture | None
    watch: dict[str, Any]
    restored_from: Path | None = None


class Exclusion(Protocol):
    """What keeps a second watcher off a state: a directory lock or an object-store lease."""

    def held(self) -> AbstractContextManager[None]:
        """Hold the state for the block; :class:`StateDirectoryBusy` if another watcher does."""

    def confirm(self) -> None:
        """Just before a commit point: raise if this watcher no longer holds the state."""


class StateLayout(Protocol):
    """Where a state's checkpoint, ledger and history live (see the module docstring)."""

    path: Any  # what messages call the state
    ledger_damaged: str  # message templates, with {where} {size} and {found} {entries}
    ledger_counted: str

    @property
    def current(self) -> Any:
        """The name of the commit point (current.model, or the pointer object)."""

    def clear_cut(self) -> None:
        """Before loading under the exclusion: remove what a cut commit left that loading trips on."""

    def find(self) -> Found | None:
        """The committed checkpoint, None for a new state; a lost one is an error."""

    def ledger_name(self, watch: dict[str, Any]) -> str:
        """The name of the ledger a checkpoint's "watch" section commits."""

    def ledger_bytes(self, name: str, size: int) -> tuple[str, bytes | None]:
        """Where the ledger is, and its committed ``size`` bytes (None if it is missing)."""

    def stage_ledger(self, ledger: list[dict[str, Any]], committed: Committed) -> tuple[Committed, dict[str, Any]]:
        """Make the new ledger ready to be committed; return it as committed, and what the
        checkpoint's "watch" section names it by."""

    def publish(self, sequence: int, body: bytes, early: bool, before_commit: Callable[[], None]) -> None:
        """Write the checkpoint ``body`` (``early``: no model yet) and commit it."""

    def settle(self, sequence: int, has_model: bool) -> None:
        """After a commit: the kept history updated, and what is no longer kept removed."""

    def recover(self, checkpoint: Checkpoint | None, committed: Committed) -> None:
        """After loading under the exclusion: undo what a killed commit left."""

    def kept(self, sequence: int) -> list[str]:
        """The kept checkpoints with a model, oldest first, up to ``sequence``."""

    def kept_label(self, name: str) -> str:
        """How a summary names a kept checkpoint."""

    def read_kept(self, name: str) -> StreamingGaussianMixture | None:
        """A kept checkpoint's model; None if it is gone or unreadable."""

    def shown_current(self) -> str:
        """How a summary names the current checkpoint."""

    def record(self, name: str, data: bytes) -> str:
        """Write a record (a quarantine note) under ``name``; return where it is."""


class WatchState:
    """A watcher's state: one layout, one exclusion (see the module docstring)."""

    def __init__(
        self,
        layout: StateLayout,
        exclusion: Exclusion,
        keep_models: int = 10,
        on_step: Callable[[str, int], None] | None = None,
    ):
        check_keep_models(keep_models)
        self.layout, self.exclusion, self.keep_models = layout, exclusion, keep_models
        self.on_step = on_step if on_step is not None else no_step
        self.committed = Committed()

    @property
    def path(self) -> Any:
        return self.layout.path

    @property
    def current(self) -> Any:
        return self.layout.current

    @contextmanager
    def locked(self) -> Iterator[Checkpoint | None]:
        """Hold the state (a second watcher is refused) and yield the last checkpoint (None if
        there is none yet), after undoing what a killed commit left."""
        with self.exclusion.held():
            self.layout.clear_cut()
            checkpoint = self.load()
            self.layout.recover(checkpoint, self.committed)
            yield checkpoint

    def load(self) -> Checkpoint | None:
        """The last committed checkpoint with its ledger, or None before the first one. Reads
        only what is committed (no exclusion needed: nothing is changed). A damaged checkpoint
        or ledger is a :class:`ModelFileError` naming it."""
        found = self.layout.find()
        if found is None:
            self.committed = Committed()
            return None
        watch = found.watch
        try:
            sequence, name = int(watch["sequence"]), self.layout.ledger_name(watch)
            size, digest = int(watch["ledger_bytes"]), str(watch["ledger_sha256"])
            updated, config = str(watch["updated"]), dict(watch.get("config", {}))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFileError(f"{found.where}: corrupt watcher checkpoint ({exc})") from None
        where, data = self.layout.ledger_bytes(name, size)
        if data is None:
            raise ModelFileError(f"{where}: missing, but the checkpoint commits {sequence} entries of it")
        running = hashlib.sha256(data)
        if len(data) != size or running.hexdigest() != digest:
            raise ModelFileError(self.layout.ledger_damaged.format(where=where, size=size))
        ledger = [json.loads(line) for line in data.splitlines()]
        if len(ledger) != sequence:
            raise ModelFileError(self.layout.ledger_counted.format(where=where, found=len(ledger), entries=sequence))
        self.committed = Committed(sequence, size, running)
        return Checkpoint(found.model, ledger, sequence, updated, config, restored_from=found.restored_from)

    def commit(
        self, model: StreamingGaussianMixture | None, ledger: list[dict[str, Any]], config: dict[str, Any]
    ) -> int:
        """Commit ``model`` with ``ledger`` (the committed entries plus new ones); return the
        sequence number, the number of entries. The caller holds the state (:meth:`locked`)."""
        sequence = len(ledger)
        if sequence < self.committed.entries:
            raise ValueError(f"the ledger has {sequence} entries, fewer than the {self.committed.entries} committed")
        committed, names = self.layout.stage_ledger(ledger, self.committed)
        watch = {
            "format": WATCH_FORMAT,
            "version": WATCH_VERSION,
            "sequence": sequence,
            "updated": now_iso(),
            "config": config,
            **names,
            "ledger_bytes": committed.size,
            "ledger_sha256": committed.sha256.hexdigest(),
        }
        self.on_step("before_temp", sequence)
        body = encode_checkpoint(model, watch)

        def before_commit() -> None:
            self.on_step("before_rename", sequence)
            self.exclusion.confirm()  # a watcher that lost the state stops here, before the commit point

        self.layout.publish(sequence, body, model is None, before_commit)
        self.committed = committed
        self.on_step("after_rename", sequence)
        self.layout.settle(sequence, model is not None)
        return sequence

    def record_quarantine(self, entry: dict[str, Any]) -> str:
        """A human-readable record of a quarantined file (the ledger is the authority; this is
        rewritten identically if a restart quarantines the same file again); where it is."""
        name = re.sub(r"[^\w.=-]", "_", entry["path"].replace(os.sep, "__").replace("/", "__"))
        suffix = f".{(entry.get('sha256') or 'unhashed')[:12]}.json"
        # Bounded like every name the watcher writes: a long or deep landing path is hashed.
        target = f"{QUARANTINE}/{bounded_name(name, MAX_NAME_BYTES - len(suffix))}{suffix}"
        return self.layout.record(target, (json.dumps(entry, indent=1) + "\n").encode())

    def summary(self, shown: str, recent: int = 10) -> tuple[dict[str, Any], StreamingGaussianMixture | None]:
        """:func:`summary_of` this state (no exclusion taken: the checkpoint is read whole or
        not at all); ``shown`` is how the report names the state."""
        checkpoint = self.load()
        kept = self.layout.kept(checkpoint.sequence if checkpoint is not None else 0)
        current = self.layout.shown_current()

        def oldest() -> StreamingGaussianMixture | None:
            return self.layout.read_kept(kept[0])

        return summary_of(shown, checkpoint, current, [self.layout.kept_label(n) for n in kept], oldest, recent)


def encode_entries(entries: list[dict[str, Any]]) -> bytes:
    """Ledger lines: one JSON object a line, keys sorted."""
    return b"".join(json.dumps(entry, sort_keys=True).encode() + b"\n" for entry in entries)


def encode_checkpoint(model: StreamingGaussianMixture | None, watch: dict[str, Any]) -> bytes:
    """A checkpoint's bytes: a model file whose model.json holds ``watch``; without a model,
    ``watch`` alone as JSON."""
    if model is None:
        return json.dumps(watch, indent=1).encode()
    document, arrays = model_document(model)
    raw = io.BytesIO()
    write_model_to(raw, {**document, "watch": watch}, arrays)
    return raw.getvalue()


def read_model_bytes(data: bytes, where: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A model file's document and arrays from its bytes (read through a temporary file, as
    :func:`read_model` reads paths); problems name ``where``."""
    with tempfile.TemporaryDirectory(prefix="streamgmm-checkpoint-") as folder:
        path = os.path.join(folder, "checkpoint.model")
        with open(path, "wb") as out:
            out.write(data)
        try:
            return read_model(path)
        except ModelFileError as exc:
            raise ModelFileError(str(exc).replace(path, where)) from None


def decode_checkpoint(
    source: bytes | Path, where: str, early: bool
) -> tuple[StreamingGaussianMixture | None, dict[str, Any]]:
    """A checkpoint's model (None for an ``early`` one, before the first model) and "watch"
    section, from its file or bytes, checked (:func:`checked_checkpoint`)."""
    if early:
        data = source.read_bytes() if isinstance(source, Path) else source
        return checked_checkpoint(lambda: (None, parse_json(data, where)), where)
    if isinstance(source, Path):
        return checked_checkpoint(lambda: checkpoint_of_document(*read_model(source)), where)
    return checked_checkpoint(lambda: checkpoint_of_document(*read_model_bytes(source, where)), where)


def model_of(source: bytes | Path, where: str) -> StreamingGaussianMixture | None:
    """A kept checkpoint's model; None if it cannot be read (pruned meanwhile, or damaged)."""
    try:
        document, arrays = read_model(source) if isinstance(source, Path) else read_model_bytes(source, where)
        return model_from_document(StreamingGaussianMixture, document, arrays)
    except (ModelFileError, OSError, KeyError, TypeError, ValueError):
        return None


def checkpoint_of_document(
    document: dict[str, Any], arrays: dict[str, Any]
) -> tuple[StreamingGaussianMixture | None, Any]:
    """A checkpoint's model and its "watch" section, from a model document."""
    return model_from_document(StreamingGaussianMixture, document, arrays), document.get("watch")


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


def summary_of(
    path: str,
    checkpoint: Checkpoint | None,
    current: str,
    kept: list[str],
    oldest: Callable[[], StreamingGaussianMixture | None],
    recent: int = 10,
) -> tuple[dict[str, Any], StreamingGaussianMixture | None]:
    """What a state says: counts of the ledger, the last update, the last updates and how far
    each moved the parameters, the kept history, quarantined files with their reasons, and the
    drift signal (:func:`~streamgmm.watch.drift.drift_summary`). ``current`` names the
    checkpoint, ``kept`` the kept checkpoints, ``oldest`` reads the first."""
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
