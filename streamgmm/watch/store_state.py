"""A watcher's state under an object-store prefix (``--state s3://bucket/state/``): the layout of
a :class:`~streamgmm.watch.state.WatchState` on an object store (:class:`~.blob_store.ObjectStore`),
kept by a lease (:mod:`.lease`). The same checkpoint and ledger as a local state directory
(:mod:`.checkpoint`), committed the way an object store allows, with a pointer written last.

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
conditional writes (:attr:`~streamgmm.watch.blob_store.ObjectStore.atomic`), the pointer is written
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
import json
import re
import secrets
from collections.abc import Callable
from typing import Any

from streamgmm.estimator import StreamingGaussianMixture
from streamgmm.io.model.file import ModelFileError
from streamgmm.watch.blob_store import Conflict, ObjectStore
from streamgmm.watch.lease import LEASE, Lease, LeaseLost
from streamgmm.watch.state import (
    WATCH_VERSION,
    Checkpoint,
    Committed,
    Found,
    WatchState,
    check_keep_models,
    decode_checkpoint,
    encode_entries,
    model_of,
)

POINTER = "CURRENT"
POINTER_FORMAT = "streamgmm.watch.pointer"
CHECKPOINTS = "checkpoints"
LEDGERS = "ledgers"
NAME = re.compile(r"^(\d{8})-([0-9a-f]{16})\.(model|json|jsonl)$")


class StoreState(WatchState):
    """A watcher's state under an object-store prefix (see the module docstring)."""

    def __init__(
        self,
        url: str,
        keep_models: int = 10,
        on_step: Callable[[str, int], None] | None = None,
        lease_seconds: float = 60.0,
    ):
        check_keep_models(keep_models)
        self.store = ObjectStore(url)
        self.lease = Lease(self.store, lease_seconds)
        super().__init__(PrefixLayout(self.store, keep_models), self.lease, keep_models, on_step)

    @property
    def pointer_name(self) -> str | None:
        """The checkpoint the pointer named when last read or written."""
        return self.layout.pointer_name


class PrefixLayout:
    """Where a state prefix keeps what (see the module docstring)."""

    ledger_damaged = "{where}: not the {size} bytes the checkpoint committed (damaged?)"
    ledger_counted = "{where}: {found} entries, the checkpoint says {entries}"

    def __init__(self, store: ObjectStore, keep_models: int):
        self.store, self.keep_models = store, keep_models
        self.path = store.base
        self.pointer_version: str | None = None
        self.pointer_name: str | None = None
        self._staged: tuple[str, str, bytes] | None = None  # token, ledger name, ledger bytes

    @property
    def current(self) -> str:
        return self.store.name_url(POINTER)

    def clear_cut(self) -> None:
        """Nothing: objects of a cut commit are referenced by nothing, and tidied after loading."""

    def find(self) -> Found | None:
        """The checkpoint the pointer names; None before the first commit. A damaged pointer or
        checkpoint is a :class:`ModelFileError` naming the object."""
        found = self.store.get(POINTER)
        if found is None:
            self.pointer_version, self.pointer_name = None, None
            self._check_not_lost()
            return None
        data, version = found
        pointer = self._parse_pointer(data)
        name = pointer["checkpoint"]
        where = self.store.name_url(name)
        got = self.store.get(name)
        if got is None:
            raise ModelFileError(f"{where}: missing, but {self.current} names it")
        if hashlib.sha256(got[0]).hexdigest() != pointer["sha256"]:
            raise ModelFileError(f"{where}: not the bytes {self.current} committed (damaged?)")
        model, watch = decode_checkpoint(got[0], where, early=name.endswith(".json"))
        self.pointer_version, self.pointer_name = version, name
        return Found(where, model, watch)

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

    def ledger_name(self, watch: dict[str, Any]) -> str:
        return str(watch["ledger"])

    def ledger_bytes(self, name: str, size: int) -> tuple[str, bytes | None]:
        got = self.store.get(name)
        return self.store.name_url(name), got[0] if got is not None else None

    def stage_ledger(self, ledger: list[dict[str, Any]], committed: Committed) -> tuple[Committed, dict[str, Any]]:
        """The whole ledger, for a new object written with the checkpoint (a store has no append)."""
        token = secrets.token_hex(8)
        data = encode_entries(ledger)
        name = f"{LEDGERS}/{len(ledger):08d}-{token}.jsonl"
        self._staged = (token, name, data)
        return Committed(len(ledger), len(data), hashlib.sha256(data)), {"ledger": name}

    def publish(self, sequence: int, body: bytes, early: bool, before_commit: Callable[[], None]) -> None:
        """The ledger and checkpoint objects under new keys, then the pointer: the commit point,
        written only if it is still the version this watcher read."""
        token, ledger_name, data = self._staged
        self.store.put(ledger_name, data)
        name = f"{CHECKPOINTS}/{sequence:08d}-{token}.{'json' if early else 'model'}"
        self.store.put(name, body)
        before_commit()
        pointer = {
            "format": POINTER_FORMAT,
            "version": WATCH_VERSION,
            "sequence": sequence,
            "checkpoint": name,
            "sha256": hashlib.sha256(body).hexdigest(),
        }
        try:
            self.pointer_version = self.store.put_if(POINTER, json.dumps(pointer).encode(), self.pointer_version)
        except Conflict:
            raise LeaseLost(
                f"{self.current} was changed by another watcher since this one read it; stopping ({name} is not "
                "committed)"
            ) from None
        self.pointer_name = name

    def settle(self, sequence: int, has_model: bool) -> None:
        self._tidy(sequence)

    def recover(self, checkpoint: Checkpoint | None, committed: Committed) -> None:
        self._tidy(committed.entries)

    def _tidy(self, sequence: int) -> None:
        """Delete checkpoints and ledgers no longer kept: newer than the pointer's (a commit cut
        before its pointer), or older than the last ``keep_models``."""
        checkpoints = self.store.names(CHECKPOINTS)
        committed = [n for n in checkpoints if _sequence_of(n) <= sequence]
        keep = set(committed[-self.keep_models :]) if sequence else set()
        keep |= {self.pointer_name} if self.pointer_name else set()
        for name in checkpoints:
            if name not in keep:
                self.store.delete(name)
        kept_tokens = {_token_of(n) for n in keep}
        for name in self.store.names(LEDGERS):
            if _token_of(name) not in kept_tokens:
                self.store.delete(name)

    def kept(self, sequence: int) -> list[str]:
        names = self.store.names(CHECKPOINTS)
        return [n for n in names if n.endswith(".model") and _sequence_of(n) <= sequence]

    def kept_label(self, name: str) -> str:
        return name.split("/", 1)[1]

    def read_kept(self, name: str) -> StreamingGaussianMixture | None:
        got = self.store.get(name)
        return model_of(got[0], self.store.name_url(name)) if got is not None else None  # None: pruned

    def shown_current(self) -> str:
        return self.store.name_url(self.pointer_name) if self.pointer_name else self.current

    def record(self, name: str, data: bytes) -> str:
        self.store.put(name, data)
        return self.store.name_url(name)


def _sequence_of(name: str) -> int:
    match = NAME.match(name.rsplit("/", 1)[-1])
    return int(match.group(1)) if match else 0


def _token_of(name: str) -> str | None:
    match = NAME.match(name.rsplit("/", 1)[-1])
    return match.group(2) if match else None


def is_store_state(url: str) -> bool:
    """Whether ``url`` is a watcher's state prefix (it holds a pointer or a lease)."""
    store = ObjectStore(url)
    return any(store.get(name) is not None for name in (POINTER, LEASE))


def store_state_summary(url: str, recent: int = 10) -> tuple[dict[str, Any], StreamingGaussianMixture | None]:
    """:func:`~streamgmm.watch.checkpoint.state_summary` for a state prefix (no lease taken: the
    pointer names whole objects)."""
    state = StoreState(url)
    return state.summary(state.path, recent)
