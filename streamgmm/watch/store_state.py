"""A watcher's state under an object-store prefix (``--state s3://bucket/state/``): the same
checkpoint and ledger as a local state directory (:mod:`.checkpoint`), committed the way an object
store allows, with a pointer written last.

Layout::

    PREFIX/CURRENT                              the pointer: which checkpoint is current (JSON)
    PREFIX/checkpoints/00000012-<token>.model   a checkpoint: a model file whose model.json "watch"
                                                section names its ledger object, with its length
                                                and SHA-256 (.json while no file has made a model)
    PREFIX/ledgers/00000012-<token>.jsonl       the whole ledger as of that checkpoint
    PREFIX/quarantine/*.json                    one record per quarantined file
    PREFIX/LEASE                                the running watcher's lease (:mod:`.lease`)

A commit writes the ledger object and the checkpoint object under new keys (nothing reads them
yet), then the pointer: the pointer's write is the commit point. A crash before it leaves the
previous pointer, checkpoint and ledger as they were; the objects written meanwhile are
referenced by nothing, ignored, and deleted by the next watcher. Where the store checks
conditional writes (:attr:`~streamgmm.watch.lease.ObjectStore.atomic`), the pointer is written
only if it is still the version this watcher read, so a watcher whose lease was taken over
cannot overwrite a newer commit. The last ``keep_models`` checkpoints and their ledgers are kept.

Each commit writes the whole ledger (about 400 bytes per file seen): an object store has no
append. ``on_step`` points are those of :class:`~streamgmm.watch.checkpoint.StateDirectory`:
``before_temp`` (nothing written yet), ``before_rename`` (checkpoint and ledger objects written,
pointer not) and ``after_rename`` (pointer written).

Examples
--------
>>> import tempfile, numpy as np
>>> from streamgmm import StreamingGaussianMixture
>>> from streamgmm.watch.store_state import StoreState
>>> model = StreamingGaussianMixture(1, random_state=0).partial_fit(np.random.default_rng(0).normal(size=(50, 2)))
>>> state = StoreState(f"file://{tempfile.mkdtemp()}/state")  # s3://bucket/state/ alike
>>> with state.locked() as checkpoint:
...     state.commit(model, [{"sequence": 1, "path": "a.parquet", "status": "consumed"}], {})
1
>>> checkpoint = state.load()
>>> checkpoint.sequence, checkpoint.ledger[0]["path"], np.array_equal(checkpoint.model.means_, model.means_)
(1, 'a.parquet', True)
>>> sorted(name.split("/")[0] for name in state.store.names("checkpoints") + state.store.names("ledgers"))
['checkpoints', 'ledgers']
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import secrets
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from streamgmm.estimator import StreamingGaussianMixture
from streamgmm.io.atomic_write import MAX_NAME_BYTES, bounded_name
from streamgmm.io.model_file import ModelFileError, parse_json, read_model, write_model_to
from streamgmm.watch.checkpoint import (
    WATCH_FORMAT,
    WATCH_VERSION,
    Checkpoint,
    checked_checkpoint,
    checkpoint_of_document,
    now_iso,
    summary_of,
)
from streamgmm.watch.lease import Conflict, Lease, LeaseLost, ObjectStore

POINTER = "CURRENT"
POINTER_FORMAT = "streamgmm.watch.pointer"
CHECKPOINTS = "checkpoints"
LEDGERS = "ledgers"
QUARANTINE = "quarantine"
NAME = re.compile(r"^(\d{8})-([0-9a-f]{16})\.(model|json|jsonl)$")


def _no_step(point: str, sequence: int) -> None:
    """The default ``on_step``: nothing."""


class StoreState:
    """A watcher's state under an object-store prefix (see the module docstring)."""

    def __init__(
        self,
        url: str,
        keep_models: int = 10,
        on_step: Callable[[str, int], None] | None = None,
        lease_seconds: float = 60.0,
    ):
        if keep_models < 1:
            raise ValueError(f"keep_models must be >= 1, got {keep_models}")
        self.store = ObjectStore(url)
        self.path = self.store.base
        self.keep_models = keep_models
        self.on_step = on_step if on_step is not None else _no_step
        self.lease = Lease(self.store, lease_seconds)
        self._pointer_version: str | None = None
        self._pointer_name: str | None = None
        self._sequence = 0

    @property
    def current(self) -> str:
        return self.store.name_url(POINTER)

    @property
    def pointer_name(self) -> str | None:
        """The checkpoint the pointer named when last read or written."""
        return self._pointer_name

    @contextmanager
    def locked(self) -> Iterator[Checkpoint | None]:
        """Hold the lease (a second watcher is refused while it is live) and yield the last
        checkpoint (None if there is none yet), after removing what crashed commits left."""
        self.lease.acquire()
        try:
            checkpoint = self.load()
            self._tidy()
            yield checkpoint
        finally:
            self.lease.release()

    # ------------------------------------------------------------------ reading

    def load(self) -> Checkpoint | None:
        """The checkpoint the pointer names, with its ledger; None before the first commit.
        A damaged pointer, checkpoint or ledger is a :class:`ModelFileError` naming the object."""
        found = self.store.get(POINTER)
        if found is None:
            self._pointer_version, self._pointer_name, self._sequence = None, None, 0
            self._check_not_lost()
            return None
        data, version = found
        pointer = self._parse_pointer(data)
        name = pointer["checkpoint"]
        got = self.store.get(name)
        if got is None:
            raise ModelFileError(f"{self.store.name_url(name)}: missing, but {self.current} names it")
        if hashlib.sha256(got[0]).hexdigest() != pointer["sha256"]:
            raise ModelFileError(f"{self.store.name_url(name)}: not the bytes {self.current} committed (damaged?)")
        model, watch = self._read_checkpoint(name, got[0])
        try:
            sequence, ledger_name = int(watch["sequence"]), str(watch["ledger"])
            size, digest = int(watch["ledger_bytes"]), str(watch["ledger_sha256"])
            updated, config = str(watch["updated"]), dict(watch.get("config", {}))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFileError(f"{self.store.name_url(name)}: corrupt watcher checkpoint ({exc})") from None
        ledger = self._read_ledger(ledger_name, size, digest, sequence)
        self._pointer_version, self._pointer_name, self._sequence = version, name, sequence
        return Checkpoint(model, ledger, sequence, updated, config)

    def _parse_pointer(self, data: bytes) -> dict[str, Any]:
        try:
            pointer = json.loads(data)
            if pointer.get("format") != POINTER_FORMAT or pointer.get("version") != WATCH_VERSION:
                raise ValueError(f"format {pointer.get('format')!r} version {pointer.get('version')!r}")
            name, digest = str(pointer["checkpoint"]), str(pointer["sha256"])
        except (ValueError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise ModelFileError(f"{self.current}: not a watcher pointer, or damaged ({exc})") from None
        if not name.startswith(f"{CHECKPOINTS}/") or not NAME.match(name.split("/", 1)[1]):
            raise ModelFileError(f"{self.current}: names no checkpoint ({name!r})")
        return {"checkpoint": name, "sha256": digest}

    def _read_checkpoint(self, name: str, data: bytes) -> tuple[StreamingGaussianMixture | None, dict[str, Any]]:
        where = self.store.name_url(name)
        if name.endswith(".json"):
            return checked_checkpoint(lambda: (None, parse_json(data, where)), where)
        return checked_checkpoint(lambda: checkpoint_of_document(*_read_model_bytes(data, where)), where)

    def _read_ledger(self, name: str, size: int, digest: str, entries: int) -> list[dict[str, Any]]:
        where = self.store.name_url(name)
        got = self.store.get(name)
        if got is None:
            raise ModelFileError(f"{where}: missing, but the checkpoint commits {entries} entries of it")
        data = got[0]
        if len(data) != size or hashlib.sha256(data).hexdigest() != digest:
            raise ModelFileError(f"{where}: not the {size} bytes the checkpoint committed (damaged?)")
        ledger = [json.loads(line) for line in data.splitlines()]
        if len(ledger) != entries:
            raise ModelFileError(f"{where}: {len(ledger)} entries, the checkpoint says {entries}")
        return ledger

    def _check_not_lost(self) -> None:
        """Without a pointer: a new state, or one whose first commit was cut before its pointer
        (its checkpoint is number 1). A later checkpoint means the pointer was lost: refused,
        rather than consuming every file again."""
        later = [n for n in self.store.names(CHECKPOINTS) if _sequence_of(n) > 1]
        if later:
            raise ModelFileError(
                f"{self.current} is missing but {self.store.name_url(later[-1])} exists; restore {POINTER} "
                "from a backup, or start again under a new state prefix"
            )

    # ------------------------------------------------------------------ writing

    def commit(
        self, model: StreamingGaussianMixture | None, ledger: list[dict[str, Any]], config: dict[str, Any]
    ) -> int:
        """Commit ``model`` with ``ledger``: the ledger and checkpoint objects, then the pointer
        (the commit point); return the sequence number. The caller holds the lease."""
        sequence = len(ledger)
        if sequence < self._sequence:
            raise ValueError(f"the ledger has {sequence} entries, fewer than the {self._sequence} committed")
        self.on_step("before_temp", sequence)
        token = secrets.token_hex(8)
        data = b"".join(json.dumps(entry, sort_keys=True).encode() + b"\n" for entry in ledger)
        ledger_name = f"{LEDGERS}/{sequence:08d}-{token}.jsonl"
        self.store.put(ledger_name, data)
        watch = {
            "format": WATCH_FORMAT,
            "version": WATCH_VERSION,
            "sequence": sequence,
            "updated": now_iso(),
            "config": config,
            "ledger": ledger_name,
            "ledger_bytes": len(data),
            "ledger_sha256": hashlib.sha256(data).hexdigest(),
        }
        if model is not None:
            document, arrays = model.model_document()
            raw = io.BytesIO()
            write_model_to(raw, {**document, "watch": watch}, arrays)
            body, name = raw.getvalue(), f"{CHECKPOINTS}/{sequence:08d}-{token}.model"
        else:
            body, name = json.dumps(watch, indent=1).encode(), f"{CHECKPOINTS}/{sequence:08d}-{token}.json"
        self.store.put(name, body)
        self.on_step("before_rename", sequence)
        self.lease.renew()  # a watcher whose lease was lost stops here, before the commit point
        pointer = {
            "format": POINTER_FORMAT,
            "version": WATCH_VERSION,
            "sequence": sequence,
            "checkpoint": name,
            "sha256": hashlib.sha256(body).hexdigest(),
        }
        try:
            self._pointer_version = self.store.put_if(POINTER, json.dumps(pointer).encode(), self._pointer_version)
        except Conflict:
            raise LeaseLost(
                f"{self.current} was changed by another watcher since this one read it; stopping ({name} is not "
                "committed)"
            ) from None
        self._pointer_name, self._sequence = name, sequence
        self.on_step("after_rename", sequence)
        self._tidy()
        return sequence

    def _tidy(self) -> None:
        """Delete checkpoints and ledgers no longer kept: newer than the pointer's (a commit cut
        before its pointer), or older than the last ``keep_models``."""
        checkpoints = self.store.names(CHECKPOINTS)
        committed = [n for n in checkpoints if _sequence_of(n) <= self._sequence]
        keep = set(committed[-self.keep_models :]) if self._sequence else set()
        keep |= {self._pointer_name} if self._pointer_name else set()
        for name in checkpoints:
            if name not in keep:
                self.store.delete(name)
        kept_tokens = {_token_of(n) for n in keep}
        for name in self.store.names(LEDGERS):
            if _token_of(name) not in kept_tokens:
                self.store.delete(name)

    def record_quarantine(self, entry: dict[str, Any]) -> str:
        """A human-readable record of a quarantined file (the ledger is the authority)."""
        name = re.sub(r"[^\w.=-]", "_", entry["path"].replace("/", "__"))
        suffix = f".{(entry.get('sha256') or 'unhashed')[:12]}.json"
        target = f"{QUARANTINE}/{bounded_name(name, MAX_NAME_BYTES - len(suffix))}{suffix}"
        self.store.put(target, (json.dumps(entry, indent=1) + "\n").encode())
        return self.store.name_url(target)


def _sequence_of(name: str) -> int:
    match = NAME.match(name.rsplit("/", 1)[-1])
    return int(match.group(1)) if match else 0


def _token_of(name: str) -> str | None:
    match = NAME.match(name.rsplit("/", 1)[-1])
    return match.group(2) if match else None


def _read_model_bytes(data: bytes, where: str) -> tuple[dict[str, Any], dict[str, Any]]:
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


def is_store_state(url: str) -> bool:
    """Whether ``url`` is a watcher's state prefix (it holds a pointer or a lease)."""
    store = ObjectStore(url)
    return any(store.get(name) is not None for name in (POINTER, "LEASE"))


def store_state_summary(url: str, recent: int = 10) -> tuple[dict[str, Any], StreamingGaussianMixture | None]:
    """:func:`~streamgmm.watch.checkpoint.state_summary` for a state prefix (no lease taken: the
    pointer names whole objects)."""
    state = StoreState(url)
    checkpoint = state.load()
    names = state.store.names(CHECKPOINTS)
    kept = [n for n in names if n.endswith(".model") and _sequence_of(n) <= (checkpoint.sequence if checkpoint else 0)]

    def oldest() -> StreamingGaussianMixture | None:
        got = state.store.get(kept[0])
        if got is None:
            return None  # pruned between listing and reading
        try:
            return StreamingGaussianMixture.from_document(*_read_model_bytes(got[0], state.store.name_url(kept[0])))
        except (ModelFileError, KeyError, TypeError, ValueError):
            return None

    current = state.store.name_url(state.pointer_name) if state.pointer_name else state.current
    return summary_of(state.path, checkpoint, current, [n.split("/", 1)[1] for n in kept], oldest, recent)
