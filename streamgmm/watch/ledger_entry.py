"""One file's ledger entry: its fields when the watcher starts on the file, what learning from it
fills in (records, step, how far the means and weights moved, the drift signal of
:mod:`.drift`), what a quarantine voids, and the log's words on it.

Every entry has the same fields, whatever became of its file: ``sequence``, ``path``, ``size``,
``mtime_ns``, ``sha256``, ``status`` (``consumed``, ``duplicate`` or ``quarantined``),
``reason``, ``records_used``, ``records_skipped``, ``step``, ``mean_shift``, ``weight_shift``,
``output``, ``at``, and the drift fields ``score``, ``level``, ``level_sd``, ``level_files``,
``flagged`` and ``moves``.

Examples
--------
>>> from types import SimpleNamespace
>>> file = SimpleNamespace(relative="part-0.parquet", size=10, mtime_ns=1)
>>> entry = new_entry(3, file)
>>> entry["sequence"], entry["status"], entry["score"], entry["moves"]
(3, 'consumed', None, [])
>>> quarantined(entry, "no usable record", "2026-01-01T00:00:00Z")["status"]
'quarantined'
>>> describe(entry)
'quarantined: no usable record'
"""

from __future__ import annotations

from typing import Any

import numpy as np

from streamgmm.watch.drift import Level, describe_moves, finite, moves_in


def new_entry(sequence: int, file: Any) -> dict[str, Any]:
    """The entry of ``file`` (a landing file: ``relative``, ``size``, ``mtime_ns``) as the
    watcher starts on it, number ``sequence`` of the ledger: consumed, nothing learnt yet."""
    return {
        "sequence": sequence,
        "path": file.relative,
        "size": file.size,
        "mtime_ns": file.mtime_ns,
        "sha256": None,
        "status": "consumed",
        "reason": None,
        "records_used": 0,
        "records_skipped": 0,
        "step": None,
        "mean_shift": None,
        "weight_shift": None,
        "output": None,
        "at": None,
        **no_drift(),
    }


def record_learning(entry: dict[str, Any], before: Any, model: Any, records: int, steps: int, level: Level) -> None:
    """Fill in what learning the file did: ``model`` is the model after the file, ``before`` the
    committed one (None: the file started a new model), ``records`` and ``steps`` the records
    seen and steps taken before the file, ``level`` the drift level of the earlier files."""
    entry["records_used"] = int(model.records_seen_ - records)
    entry["records_skipped"] = int(model.n_skipped_)
    entry["step"] = int(model.n_steps_)
    if before is not None:
        entry["mean_shift"] = float(np.linalg.norm(model.means_ - before.means_, axis=1).max())
        entry["weight_shift"] = float(np.abs(model.weights_ - before.weights_).max())
    # The drift signal (see :mod:`.drift`): each mini-batch of the file was scored before the
    # update that learns it, the first one by the committed model. A new model has no score.
    score = finite(model.lower_bound_) if before is not None else None
    entry.update(
        score=score,
        **level.fields(),
        flagged=level.flags(score),
        moves=moves_in(model.fit_history_.moves, int(steps), int(model.n_steps_)),
    )


def quarantined(entry: dict[str, Any], reason: str, at: str) -> dict[str, Any]:
    """``entry`` made a quarantine for ``reason`` at time ``at``: whatever the failed attempt
    filled in (e.g. an update whose output then failed) is void."""
    entry.update(
        status="quarantined",
        reason=reason,
        records_used=0,
        records_skipped=0,
        step=None,
        mean_shift=None,
        weight_shift=None,
        output=None,
        at=at,
        **no_drift(),
    )
    return entry


def no_drift() -> dict[str, Any]:
    """The drift fields of an entry without a score (see :mod:`.drift`)."""
    return {"score": None, "level": None, "level_sd": None, "level_files": 0, "flagged": False, "moves": []}


def describe(entry: dict[str, Any]) -> str:
    """The log's words on what became of the entry's file."""
    if entry["status"] == "consumed":
        return f"consumed, {entry['records_used']:,} records ({entry['records_skipped']:,} skipped)" + drift_note(entry)
    if entry["status"] == "duplicate":
        return f"not used again: {entry['reason']}"
    return f"quarantined: {entry['reason']}"


def drift_note(entry: dict[str, Any]) -> str:
    """The log's words on a consumed file's drift signal: its score, and why it is flagged."""
    note = "" if entry["score"] is None else f", score {entry['score']:.4g} nats/record"
    if entry["flagged"]:
        note += (
            f" (FLAGGED: far below the level {entry['level']:.4g}, sd {entry['level_sd']:.3g}, of the "
            f"{entry['level_files']} earlier score(s): has the data changed?)"
        )
    if entry["moves"]:
        note += f"; moves: {describe_moves(entry['moves'])}"
    return note
