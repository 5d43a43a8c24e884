"""The watcher's drift signal: how well the model predicted each file before learning it.

**Score.** Each consumed file's ledger entry holds ``score``, the prequential score of its
records: their mean log-likelihood per record (nats; records-weighted with a weight column),
each mini-batch scored under the parameters just before the update that learns it. It is the
``lower_bound_`` of the file's ``partial_fit`` call, which online EM computes anyway: no extra
pass. The file's first mini-batch is scored by the model as committed before the file; each
later one by that model after the file's earlier mini-batches. A file that starts a new model
(no model before it) and a file without records have no score (``null``).

**Level.** ``level`` and ``level_sd`` are an exponentially weighted mean and standard deviation
of the scores of the files consumed before this one, with a half-life of
:data:`HALF_LIFE_FILES` files; ``level_files`` counts the scores behind them. Quarantined,
duplicate and unscored files leave the level as it was.

**Flag.** A file is ``flagged`` when its score is more than :data:`FLAG_SDS` standard
deviations below the level and more than :data:`MIN_DROP` nats per record below it, once the
level holds at least :data:`MIN_LEVEL_FILES` scores. A flagged file enters the level as if it
had scored exactly at that threshold, so one outlying file (a regime change scores hundreds of
nats below the level) moves the level no more than a borderline file would, while a lasting
change moves it file by file until its files are no longer flagged.

**Moves.** ``moves`` lists the births (each with the merges that made room) taken while learning
the file, as the model's ``fit_history_.moves`` records them: kind, step (the mini-batch),
born, merged, gain, records.

The level is a function of the ledger's scores alone (:func:`level_of`), so a watcher resumed
from a checkpoint continues it exactly; entries written before these fields existed, or with a
missing or non-finite score, are skipped.

Examples
--------
>>> level = Level()
>>> for score in (-3.0, -3.1, -2.9, -3.0):
...     level = level.updated(score)
>>> level.files, round(level.mean, 3), level.flags(-3.5), level.flags(-40.0)
(4, -2.999, False, True)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

HALF_LIFE_FILES = 8  # the level forgets a file's score by half after this many more scores
# Three standard deviations: a file of the usual kind is flagged about once in a few hundred
# files (if its score were roughly normal), while a regime change is flagged by far.
FLAG_SDS = 3.0
# nats per record: files of similar data score alike to within a few hundredths of a nat, so
# their spread alone would flag harmless changes; a drop of a whole nat means the model gives
# the new records under 1/e of the density it gives the usual ones.
MIN_DROP = 1.0
# Scores the level must hold before it flags: a mean and spread of fewer files say too little.
MIN_LEVEL_FILES = 3
SERIES_FILES = 20  # files `streamgmm info` lists in the drift series
ALPHA = 1.0 - 0.5 ** (1.0 / HALF_LIFE_FILES)  # the weight of the newest score in the level
ENTRY_FIELDS = ("score", "level", "level_sd", "level_files", "flagged", "moves")
MOVE_FIELDS = ("kind", "step", "born", "merged", "gain", "records")


@dataclass(frozen=True)
class Level:
    """The exponentially weighted mean and variance of the scores so far."""

    mean: float | None = None
    variance: float = 0.0
    files: int = 0

    @property
    def sd(self) -> float | None:
        return math.sqrt(self.variance) if self.mean is not None else None

    def threshold(self) -> float | None:
        """The score below which a file is flagged; None while the level is too young."""
        if self.mean is None or self.files < MIN_LEVEL_FILES:
            return None
        return self.mean - max(FLAG_SDS * math.sqrt(self.variance), MIN_DROP)

    def flags(self, score: float | None) -> bool:
        threshold = self.threshold()
        return score is not None and threshold is not None and score < threshold

    def updated(self, score: float | None) -> Level:
        """The level once ``score`` is in (a flagged score enters at the threshold; None, no
        score, leaves it as it was)."""
        if score is None:
            return self
        if self.mean is None:
            return Level(score, 0.0, 1)
        threshold = self.threshold()
        if threshold is not None:
            score = max(score, threshold)
        diff = score - self.mean
        step = ALPHA * diff
        return Level(self.mean + step, (1.0 - ALPHA) * (self.variance + diff * step), self.files + 1)

    def fields(self) -> dict[str, Any]:
        """The level as a ledger entry states it (before the entry's own score is in)."""
        return {"level": self.mean, "level_sd": self.sd, "level_files": self.files}


def finite(value: Any) -> float | None:
    """``value`` as a finite float, or None (missing, not a number, NaN or infinite): what a
    ledger written by an older watcher, or by hand, may hold."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def level_of(ledger: Iterable[dict[str, Any]]) -> Level:
    """The level after every entry of ``ledger``, from their scores alone."""
    level = Level()
    for entry in ledger:
        if isinstance(entry, dict) and entry.get("status") == "consumed":
            level = level.updated(finite(entry.get("score")))
    return level


def moves_in(moves: Sequence[dict[str, Any]], first_step: int, last_step: int) -> list[dict[str, Any]]:
    """The moves taken at mini-batches ``first_step + 1 .. last_step``, as plain JSON values."""
    return [clean_move(move) for move in moves if first_step < int(move["step"]) <= last_step]


def clean_move(move: Any) -> dict[str, Any] | None:
    """A move as plain JSON values (a non-finite number as None); None if it is not one."""
    if not isinstance(move, dict):
        return None
    try:
        step = move.get("step")
        return {
            "kind": str(move.get("kind", "birth")),
            "step": int(step) if isinstance(step, (int, float)) and not isinstance(step, bool) else None,
            "born": [int(k) for k in move.get("born") or ()],
            "merged": [[int(a), int(b)] for a, b in move.get("merged") or ()],
            "gain": finite(move.get("gain")),
            "records": finite(move.get("records")),
        }
    except (TypeError, ValueError, OverflowError):
        return None


def entry_moves(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """A ledger entry's moves, whatever an older or damaged entry holds there."""
    moves = entry.get("moves")
    if not isinstance(moves, list):
        return []
    return [move for move in map(clean_move, moves) if move is not None]


def describe_moves(moves: Sequence[dict[str, Any]]) -> str:
    """``birth 2 (merged 1+2), birth 1 (merged 0+1)``: what each move did."""
    parts = []
    for move in moves:
        born = ",".join(map(str, move["born"])) or "?"
        merged = ", ".join(f"{a}+{b}" for a, b in move["merged"])
        parts.append(f"{move['kind']} {born}" + (f" (merged {merged})" if merged else ""))
    return "; ".join(parts)


def series_point(entry: dict[str, Any]) -> dict[str, Any]:
    """One file of the drift series, as ``info`` reports it (every number finite or None)."""
    records = finite(entry.get("records_used"))
    sequence = finite(entry.get("sequence"))
    level_files = finite(entry.get("level_files"))
    return {
        "sequence": int(sequence) if sequence is not None else None,
        "path": str(entry.get("path")),
        "records_used": int(records) if records is not None else None,
        "score": finite(entry.get("score")),
        "level": finite(entry.get("level")),
        "level_sd": finite(entry.get("level_sd")),
        "level_files": int(level_files) if level_files is not None else 0,
        "flagged": entry.get("flagged") is True,
        "moves": entry_moves(entry),
    }


def drift_series(ledger: Iterable[Any]) -> list[dict[str, Any]]:
    """Every consumed file of ``ledger`` as a point of the drift series, oldest first."""
    return [series_point(entry) for entry in ledger if isinstance(entry, dict) and entry.get("status") == "consumed"]


def drift_summary(ledger: Sequence[Any], last: int = SERIES_FILES) -> dict[str, Any]:
    """What ``info`` says about the drift signal: the settings, the flagged files, and the last
    ``last`` consumed files."""
    series = drift_series(ledger)
    flagged = [point for point in series if point["flagged"]]
    return {
        "half_life_files": HALF_LIFE_FILES,
        "flag_sds": FLAG_SDS,
        "min_drop": MIN_DROP,
        "min_level_files": MIN_LEVEL_FILES,
        "files_scored": sum(point["score"] is not None for point in series),
        "files_flagged": len(flagged),
        "last_flagged": {"sequence": flagged[-1]["sequence"], "path": flagged[-1]["path"]} if flagged else None,
        "series": series[-last:] if last > 0 else [],
    }
