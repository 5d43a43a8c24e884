"""Keep a mixture current as Parquet files arrive in a landing directory: each new file updates
the model by online EM (``partial_fit``) and is committed, with the ledger of files seen, in one
atomic checkpoint (see :mod:`streamgmm.watch.checkpoint`).

Which files: every regular file under the landing directory (recursively) whose name, and whose
directories' names, do not start with ``.`` or ``_``; it is taken once it has not been modified
for ``settle`` seconds (by its mtime, and unchanged in size and mtime since the last look; a file
dated in the future by its size and content instead, see :mod:`streamgmm.watch.landing`), in
the order (modification time, relative path). A file is consumed once: the ledger keys it by
relative path, size, mtime and SHA-256 of its content. A file whose content was consumed before
(a copy, or the same file touched) is recorded as a duplicate and not used again; a file replaced
in place by different content is new data and is consumed as such (the ledger keeps both).
Landing and state can be object-store prefixes (:mod:`.store_landing`, :mod:`.store_state`).

A file that cannot be used (no valid Parquet footer once settled, unreadable, a feature column
missing or not numeric, non-finite values under ``nan_policy="raise"``, no usable record) is
quarantined: the ledger records why, ``STATE_DIR/quarantine/`` holds a record of it, the file is
left where it is (the landing directory is not the watcher's), and the watcher goes on. If the
file is later rewritten (new size or mtime), it is looked at again.

Determinism: the first usable file initialises the model with ``seed``; ``partial_fit`` does not
shuffle, and the checkpoint holds all it depends on, so the same files give the same model, and a
run killed at any instant and restarted ends with the model an uninterrupted run ends with.
Before the first model exists (only quarantined or empty files so far) the ledger is committed
alone; the first model's checkpoint takes it over.

Examples
--------
>>> import tempfile, numpy as np, pyarrow as pa, pyarrow.parquet as pq
>>> from streamgmm import StreamingGaussianMixture
>>> from streamgmm.watch.watcher import watch
>>> landing, state = tempfile.mkdtemp(), tempfile.mkdtemp()
>>> rng = np.random.default_rng(0)
>>> for i in range(3):
...     X = np.concatenate([rng.normal(-5, 1, (500, 2)), rng.normal(5, 1, (500, 2))])
...     pq.write_table(pa.table({"a": X[:, 0], "b": X[:, 1]}), f"{landing}/part-{i}.parquet")
>>> summary = watch(landing, state, n_components=2, seed=0, settle=0, once=True)
>>> summary.files_consumed, summary.records_used
(3, 3000)
>>> model = StreamingGaussianMixture.load(f"{state}/current.model")
>>> np.round(np.sort(model.means_[:, 0]))
array([-5.,  5.])
"""

from __future__ import annotations

import copy
import os
import secrets
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from streamgmm.assignment.local import assign
from streamgmm.estimator import StreamingGaussianMixture
from streamgmm.estimator.base import settings_of
from streamgmm.io.lake.paths import is_url, overlap, refuse_url
from streamgmm.io.model.checks import check_mixture_arrays
from streamgmm.io.output.atomic_write import fsync_directory
from streamgmm.io.records.columns import DataError, check_nan_policy
from streamgmm.io.sources.chunk_source import Batch
from streamgmm.io.sources.parquet import ParquetSource
from streamgmm.watch.checkpoint import StateDirectory
from streamgmm.watch.drift import Level, level_of
from streamgmm.watch.landing import Held, Landing, LandingFile, LocalLanding, Settling
from streamgmm.watch.ledger_entry import describe, new_entry, quarantined, record_learning
from streamgmm.watch.settings import check_columns, check_model_matches, check_resumed
from streamgmm.watch.state import Checkpoint, WatchState, now_iso
from streamgmm.watch.store_landing import StoreLanding, same_store_overlap
from streamgmm.watch.store_state import StoreState


@dataclass
class WatchSummary:
    """What one run of the watcher did."""

    state: str
    files_consumed: int = 0
    files_quarantined: int = 0
    files_duplicate: int = 0
    records_used: int = 0
    records_skipped: int = 0
    files_flagged: int = 0  # scored far below the level of earlier files (see :mod:`.drift`)
    sequence: int = 0  # ledger entries in the last checkpoint
    stopped_by: str | None = None  # the signal that stopped a polling run


class _AfterFirstBatch:
    """A source that calls ``on_step("mid_file", sequence)`` once its first mini-batch has been
    blended (the watcher's own commit steps are :class:`~streamgmm.watch.state.WatchState`'s)."""

    def __init__(self, source: ParquetSource, sequence: int, on_step: Callable[[str, int], None]):
        self.source, self.sequence, self.on_step = source, sequence, on_step

    def __getattr__(self, name: str) -> Any:
        return getattr(self.source, name)

    def batches(self, batch_size: int, rng: np.random.Generator | None = None) -> Iterator[Batch]:
        for i, batch in enumerate(self.source.batches(batch_size, rng)):
            yield batch
            if i == 0:  # resumed for the next batch: the first one has been blended by now
                self.on_step("mid_file", self.sequence)


class Watcher:
    """Consume the Parquet files arriving under ``landing`` into a model kept in ``state``.

    Parameters
    ----------
    landing : the directory files arrive in (read only), or an object-store prefix
        (``s3://bucket/landing/``, see :mod:`streamgmm.watch.store_landing`).
    state : the state directory (created if needed; see :mod:`streamgmm.watch.checkpoint`), or an
        object-store prefix (see :mod:`streamgmm.watch.store_state`).
    n_components, columns, covariance_type, seed, batch_size : a new model, when ``state`` holds
        none yet and no ``init_model`` is given (``columns``: default every numeric column).
    passthrough : numeric columns that are not features of a new model (ids), as for ``fit``.
    init_model : path of a saved model to continue (its running statistics and step counter).
    step_floor : keep each step size above this, so old data is forgotten and drift followed;
        None keeps the model's own (0 for a new one).
    moves : ``"auto"`` (births, merges and refits, for files that arrive in stored order: sorted by
        time or key, see :mod:`streamgmm.em.moves`) or ``"off"`` (the plain recursion); None keeps
        the model's own (``"auto"`` for a new one).
    nan_policy : ``"raise"`` (a file with a null/NaN feature is quarantined), ``"skip"`` or
        ``"marginalize"`` (missing features marginalized; rows with none observed skipped).
    weight_column : a numeric column of record weights, never a feature (a bad weight quarantines
        its file); a checkpoint of another weight column or nan handling is refused.
    interval : seconds between looks at the landing directory.
    settle : seconds a file must be left unmodified before it is read.
    assign_out : also write each consumed file's responsibilities to the same relative path
        under this directory (one atomic file per input, by the model after that file).
    keep : input columns copied into those outputs, row for row (ids).
    keep_models : checkpoints kept in ``state/models`` (``state/checkpoints/`` on an object store).
    lease_seconds : a state on an object store: how long this watcher's lease lasts unrenewed
        (see :mod:`streamgmm.watch.lease`); a watcher killed with its lease live keeps a second
        one out that long.
    log : called with one line per event (default: nothing).
    on_step : called with ``(point, sequence)`` at each step of consuming a file (see
        :mod:`streamgmm.watch.checkpoint`); the crash tests kill the process there.
    """

    def __init__(
        self,
        landing: str | os.PathLike[str],
        state: str | os.PathLike[str],
        *,
        n_components: int | None = None,
        columns: Sequence[str] | None = None,
        passthrough: Sequence[str] = (),
        covariance_type: str = "full",
        seed: int | None = 0,
        batch_size: int | None = None,
        init_model: str | os.PathLike[str] | None = None,
        step_floor: float | None = None,
        moves: str | None = None,
        nan_policy: str = "raise",
        weight_column: str | None = None,
        interval: float = 1.0,
        settle: float = 1.0,
        assign_out: str | os.PathLike[str] | None = None,
        keep: Sequence[str] = (),
        keep_models: int = 10,
        lease_seconds: float = 60.0,
        log: Callable[[str], None] | None = None,
        on_step: Callable[[str, int], None] | None = None,
    ):
        self.landing, self.state, self.assign_out = open_places(
            landing, state, assign_out, keep_models, lease_seconds, on_step
        )
        if interval <= 0 or settle < 0:
            raise ValueError(f"interval must be > 0 and settle >= 0, got {interval} and {settle}")
        check_columns(columns, passthrough, keep, weight_column)
        self.n_components = n_components
        self.columns = list(columns) if columns is not None else None
        self.passthrough = list(passthrough)
        self.keep = list(keep)
        self.covariance_type = covariance_type
        self.seed = seed
        self.batch_size = batch_size
        self.init_model = init_model
        self.step_floor = step_floor
        self.moves = moves
        self.nan_policy = nan_policy
        self.weight_column = weight_column
        self.interval = float(interval)
        self.settle = float(settle)
        self.log = log or (lambda line: None)
        self.model: StreamingGaussianMixture | None = None
        self.ledger: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._settling = Settling(self.settle, self.log, self.landing.content_sha256)
        self._reported: set[str] = set()  # unreadable entries of the landing directory, logged once
        self._consumed: dict[str, dict[str, Any]] = {}  # content hash -> first ledger entry consuming it
        self._handled: set[tuple[str, int, int]] = set()  # (path, size, mtime_ns) of every entry
        self._held: Held | None = None  # the file being consumed
        self._level = Level()  # the drift level of the committed files' scores (see :mod:`.drift`)
        # Settings are checked now: found while reading a file, they would quarantine every file.
        check_nan_policy(nan_policy)
        if n_components is not None:
            settings_of(self._new_model())

    # ------------------------------------------------------------------ running

    def run(self, once: bool = False) -> WatchSummary:
        """Consume files until stopped (SIGTERM/SIGINT or :meth:`stop`: the current file is
        finished and committed first), or with ``once`` until none is left or settling."""
        summary = WatchSummary(str(self.state.path))
        handlers = self._install_signal_handlers(summary)
        try:
            with self.state.locked() as checkpoint:
                self._start(checkpoint)
                summary.sequence = len(self.ledger)
                while not self._stop.is_set():
                    processed, settling = self._poll(summary)
                    if once and not processed and not settling:
                        break
                    if not processed:
                        self._stop.wait(self.interval)
        finally:
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
        return summary

    def stop(self) -> None:
        """Finish the current file, commit, and return from :meth:`run`."""
        self._stop.set()

    def _install_signal_handlers(self, summary: WatchSummary) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}

        def handler(signum: int, frame: Any) -> None:
            summary.stopped_by = signal.Signals(signum).name
            self._stop.set()

        return {signum: signal.signal(signum, handler) for signum in (signal.SIGTERM, signal.SIGINT)}

    def _start(self, checkpoint: Checkpoint | None) -> None:
        """The model and ledger to continue from: the last checkpoint, else a new start."""
        if checkpoint is not None and checkpoint.restored_from is not None:
            self.log(
                f"{self.state.current} was missing: restored from {checkpoint.restored_from}, which "
                "commits the whole ledger"
            )
        if checkpoint is not None:
            self.ledger = checkpoint.ledger
            self.log(f"resuming from checkpoint {checkpoint.sequence} ({len(self.ledger)} file(s) seen)")
        if checkpoint is not None and checkpoint.model is not None:
            check_model_matches(self.state.path, checkpoint.model, self.n_components, self.columns)
            check_resumed(self.state.path, checkpoint.config, self._config())
            self.model = checkpoint.model
        elif self.init_model is not None:
            self.model = StreamingGaussianMixture.load(self.init_model)
        elif self.n_components is None:
            raise ValueError(
                f"{self.state.path} holds no model yet: give n_components (-k) or an initial model (--model)"
            )
        else:
            self.model = None
        self._handled = {(e["path"], e["size"], e["mtime_ns"]) for e in self.ledger}
        for entry in self.ledger:
            if entry["status"] == "consumed":
                self._consumed.setdefault(entry["sha256"], entry)
        self._level = level_of(self.ledger)
        asked = {"step_floor": self.step_floor, "moves": self.moves}  # None: the model's own
        given = {name: value for name, value in asked.items() if value is not None}
        if self.model is not None and given:
            settings_of(self.model.set_params(**given))
        if self.assign_out is not None:
            self.assign_out.mkdir(parents=True, exist_ok=True)
            for leftover in self.assign_out.glob(".watch-*.tmp"):
                shutil.rmtree(leftover, ignore_errors=True)  # a killed run's unfinished output

    def _new_model(self) -> StreamingGaussianMixture:
        extra = {"batch_size": self.batch_size} if self.batch_size else {}
        if self.moves is not None:
            extra["moves"] = self.moves
        return StreamingGaussianMixture(
            self.n_components,
            covariance_type=self.covariance_type,
            random_state=self.seed,
            step_floor=self.step_floor or 0.0,
            shuffle=False,
            **extra,
        )

    def _config(self) -> dict[str, Any]:
        return {
            "landing": str(self.landing),
            "nan_policy": self.nan_policy,
            "weight_column": self.weight_column,
            "assign_out": str(self.assign_out) if self.assign_out else None,
        }

    # ------------------------------------------------------------------ one look

    def _poll(self, summary: WatchSummary) -> tuple[int, int]:
        """Consume the files that are ready; return (files handled, files still settling)."""
        handled = self._handled
        processed = settling = 0
        now = time.time_ns()
        remote = isinstance(self.landing, StoreLanding)
        avoid = [path for path in (self.state.path, self.assign_out) if path is not None and is_url(path) == remote]
        files, problems = self.landing.files(avoid=avoid)
        for problem in problems:
            if problem not in self._reported:
                self._reported.add(problem)
                self.log(f"cannot look into {problem}; files there are not consumed until it can be read")
        for file in files:
            if (file.relative, file.size, file.mtime_ns) in handled:
                continue
            if self._stop.is_set():
                break
            if file.size == 0:
                continue  # created, not yet written: not data
            if not self._settling.ready(file, now):
                settling += 1
                continue
            entry = self._consume(file)
            if entry is None:
                settling += 1  # changed while being read
                continue
            processed += 1
            status = entry["status"]
            summary.files_consumed += status == "consumed"
            summary.files_quarantined += status == "quarantined"
            summary.files_duplicate += status == "duplicate"
            summary.files_flagged += entry["flagged"]
            summary.records_used += entry["records_used"]
            summary.records_skipped += entry["records_skipped"]
            summary.sequence = entry["sequence"]
        return processed, settling

    def _consume(self, file: LandingFile) -> dict[str, Any] | None:
        """Use one settled file and commit; None if it changed while being read."""
        sequence = len(self.ledger) + 1
        entry = new_entry(sequence, file)
        try:
            held = self.landing.hold(file)
        except FileNotFoundError:
            return None  # removed since the listing
        except (OSError, pa.ArrowException) as exc:
            return self._finish(self._quarantined(entry, f"{file.path}: unreadable ({exc})"), self.model)
        if held.etag is not None:
            entry["etag"] = held.etag
        with held:
            return self._use(file, held, entry)

    def _use(self, file: LandingFile, held: Held, entry: dict[str, Any]) -> dict[str, Any] | None:
        """Hash the open file, then learn from it; None (nothing committed) if the path stops
        naming that unmodified file before the reading is done: what is hashed is what is read."""
        try:
            entry["sha256"] = held.sha256()
        except OSError as exc:
            return self._finish(self._quarantined(entry, f"{file.path}: unreadable ({exc})"), self.model)
        expected = self._settling.expected_sha256(file)
        if not held.unchanged() or expected not in (None, entry["sha256"]):
            self._settling.forget(file)  # settles again from this content
            return None
        earlier = self._consumed.get(entry["sha256"])
        if earlier is not None:
            entry.update(
                status="duplicate", reason=f"same content as {earlier['path']} (ledger entry {earlier['sequence']})"
            )
            return self._finish(entry, self.model)
        try:
            self._held = held
            updated = self._update(file, entry)
        except (DataError, ValueError, OSError, pa.ArrowException) as exc:
            if not held.unchanged():
                return None
            return self._finish(self._quarantined(entry, " ".join(str(exc).split())), self.model)
        if not held.unchanged():
            return None  # replaced or rewritten while being read: this update is void
        return self._finish(entry, updated)

    def _update(self, file: LandingFile, entry: dict[str, Any]) -> StreamingGaussianMixture | None:
        """The model after this file, read from ``self._held`` (a new object: the committed one
        is kept until the checkpoint is written), and its output written when asked."""
        held = self._held
        if held.parquet_rows() == 0:
            return self.model  # a valid file without records: seen, nothing learnt
        before = self.model
        model = copy.deepcopy(before) if before is not None else self._new_model()
        names = before.fitted_state_.feature_names if before is not None else self.columns
        reading = {"nan_policy": self.nan_policy, "weight_column": self.weight_column}
        source = held.parquet_source(columns=names, passthrough=self.passthrough, **reading)
        if before is not None and names is None and source.n_features != before.n_features_in_:
            raise DataError(f"{file.path}: {source.n_features} numeric columns, the model has {before.n_features_in_}")
        records = model.records_seen_ if before is not None else 0
        steps = model.n_steps_ if before is not None else 0
        model.partial_fit(_AfterFirstBatch(source, entry["sequence"], self.state.on_step))
        try:  # a file that leaves no usable model is quarantined, not committed (nor retried forever)
            check_mixture_arrays(
                model.weights_, model.means_, model.covariances_, model.precisions_cholesky_, model.covariance_type
            )
        except ValueError as exc:
            raise DataError(f"{file.path}: the model after this file is not usable ({exc})") from None
        record_learning(entry, before, model, records, steps, self._level)
        if self.assign_out is not None:
            entry["output"] = self._write_output(model, file)
        return model

    def _write_output(self, model: StreamingGaussianMixture, file: LandingFile) -> str:
        """The file's responsibilities at the same relative path under ``assign_out``: written by
        the assign pass into a hidden directory, then renamed into place. Written before the
        checkpoint; a restart that consumes the file again replaces it."""
        work = self.assign_out / f".watch-{secrets.token_hex(8)}.tmp"
        try:
            source = self._held.parquet_source(
                columns=model.fitted_state_.feature_names, passthrough=self.keep, nan_policy=self.nan_policy
            )
            summary = assign(model, source, work, keep=self.keep)
            target = self.assign_out / file.relative
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(summary.outputs[0], target)
            fsync_directory(target.parent)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return file.relative

    def _quarantined(self, entry: dict[str, Any], reason: str) -> dict[str, Any]:
        quarantined(entry, reason, now_iso())  # what the failed attempt filled in is void
        self.state.record_quarantine(entry)
        return entry

    def _finish(self, entry: dict[str, Any], model: StreamingGaussianMixture | None) -> dict[str, Any]:
        """Add the entry to the ledger and commit it with ``model`` (the ledger alone before the
        first model exists)."""
        entry["at"] = entry["at"] or now_iso()
        self.state.commit(model, self.ledger + [entry], self._config())
        if model is not None:
            self.model = model
        self.ledger.append(entry)
        self._handled.add((entry["path"], entry["size"], entry["mtime_ns"]))
        if entry["status"] == "consumed":
            self._consumed.setdefault(entry["sha256"], entry)
            self._level = self._level.updated(entry["score"])
        committed = f"checkpoint {entry['sequence']}" + ("" if model is not None else " (ledger only: no model yet)")
        self.log(f"{entry['path']}: {describe(entry)}; {committed}")
        return entry


def open_places(
    landing: str | os.PathLike[str],
    state: str | os.PathLike[str],
    assign_out: str | os.PathLike[str] | None,
    keep_models: int,
    lease_seconds: float,
    on_step: Callable[[str, int], None] | None,
) -> tuple[Landing, WatchState, Path | None]:
    """The landing, the state and the output directory a :class:`Watcher` opens, refused if
    one of them overlaps the landing (the watcher would read its own files)."""
    refuse_url(assign_out, "--assign-out")
    # file:// URLs are local paths: walked link-aware, and the state renamed into place.
    landing, state = (p.removeprefix("file://") if isinstance(p, str) else p for p in (landing, state))
    opened: Landing = StoreLanding(landing) if is_url(landing) else LocalLanding(landing)
    if is_url(state):
        kept: WatchState = StoreState(state, keep_models, on_step, lease_seconds)
        if is_url(landing) and same_store_overlap(state, landing):
            raise ValueError(f"state {kept.path} and landing {opened} overlap; the watcher would read its own files")
    else:
        kept = StateDirectory(Path(state).absolute(), keep_models, on_step)
    out = Path(assign_out).absolute() if assign_out is not None else None
    for name, path in (("state directory", kept.path), ("--assign-out", out)):
        # By real paths: a link must not lead the watcher into reading its own files.
        local = isinstance(opened, LocalLanding) and isinstance(path, Path)
        if local and overlap(path, opened.path):
            raise ValueError(
                f"{name} {path} and landing directory {opened} overlap; the watcher would read its own files"
            )
    return opened, kept, out


def watch(
    landing: str | os.PathLike[str],
    state: str | os.PathLike[str],
    *,
    once: bool = False,
    **options: Any,
) -> WatchSummary:
    """Run a :class:`Watcher` (same options) until stopped, or with ``once`` until the files
    there are consumed. The model is then at ``STATE_DIR/current.model``."""
    return Watcher(landing, state, **options).run(once=once)
