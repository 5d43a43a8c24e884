"""The fit history: a compact, bounded trace of an online fit, kept with the model.

Each point summarises consecutive mini-batches: the records seen by the end of them, their
records-weighted mean log-likelihood (each batch scored before the update that learns from it),
the step size of the last of them, and the components re-seeded in them. A point holds
``stride`` batches; when ``capacity`` points are full, neighbouring pairs are merged and the
stride doubles, so the trace always covers the whole stream, at a resolution that halves each
time the stream doubles, in at most ``capacity`` points however long the stream runs. The
births and merges taken (:mod:`streamgmm.em.moves`) are listed apart, each with its mini-batch,
the last ``capacity`` of them.

Examples
--------
>>> from streamgmm.em.fit_history import FitHistory
>>> history = FitHistory(capacity=4)
>>> for t in range(1, 11):
...     history.record(mean_log_likelihood=-float(t), n_records=100, step_size=1 / t, reseeded=[])
>>> history.records.tolist(), history.stride, history.n_batches
([400, 800, 1000], 4, 10)
>>> history.mean_log_likelihood.tolist()
[-2.5, -6.5, -9.5]
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

DEFAULT_CAPACITY = 256


class FitHistory:
    """A bounded trace of online EM mini-batches (see the module docstring).

    ``records``, ``mean_log_likelihood``, ``step_size`` and ``reseeded`` are per point, the last
    point possibly still filling (it holds ``n_batches % stride`` batches then)."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY):
        if not isinstance(capacity, int) or capacity < 2 or capacity % 2:
            raise ValueError(f"capacity must be an even integer >= 2, got {capacity!r}")
        self.capacity = capacity
        self.stride = 1  # mini-batches per point
        self.n_batches = 0
        self._records: list[int | float] = []  # cumulative records (weight) at the end of each point
        self._n: list[int | float] = []  # records (weight) in each point
        self._batches: list[int] = []  # mini-batches in each point
        self._ll: list[float] = []  # records-weighted mean log-likelihood of each point
        self._step: list[float] = []  # step size of each point's last mini-batch
        self._reseeded: list[list[int]] = []
        self._moves: list[dict[str, Any]] = []

    def __len__(self) -> int:
        return len(self._records)

    def record(
        self,
        mean_log_likelihood: float,
        n_records: float,
        step_size: float,
        reseeded: Iterable[int],
        moves: Iterable[Any] = (),
    ) -> None:
        """Add one mini-batch (what online EM reports after each update, with the moves it
        took: :class:`~streamgmm.em.moves.Move` or their dictionaries)."""
        self.add_moves(moves)
        n_records = _count(n_records)
        total = (self._records[-1] if self._records else 0) + n_records
        self.n_batches += 1
        if self._batches and self._batches[-1] < self.stride:
            n = self._n[-1] + n_records
            if n:
                self._ll[-1] = (self._ll[-1] * self._n[-1] + float(mean_log_likelihood) * n_records) / n
            self._n[-1], self._records[-1] = n, total
            self._batches[-1] += 1
            self._step[-1] = float(step_size)
            self._reseeded[-1] = sorted(set(self._reseeded[-1]) | {int(k) for k in reseeded})
            return
        if len(self._records) == self.capacity:
            self._halve()
            self.record(mean_log_likelihood, n_records, step_size, reseeded)
            self.n_batches -= 1  # counted by the call above
            return
        self._records.append(total)
        self._n.append(n_records)
        self._batches.append(1)
        self._ll.append(float(mean_log_likelihood))
        self._step.append(float(step_size))
        self._reseeded.append(sorted({int(k) for k in reseeded}))

    def add_moves(self, moves: Iterable[Any]) -> None:
        """List moves taken (:class:`~streamgmm.em.moves.Move` or their dictionaries), keeping
        the last ``capacity``."""
        for move in moves:
            self._moves.append(dict(move if isinstance(move, dict) else move.to_dict()))
        del self._moves[: -self.capacity]

    def _halve(self) -> None:
        """Merge neighbouring pairs of points: the stride doubles, the trace keeps its span."""
        pairs = range(0, len(self._records), 2)
        n = [self._n[i] + self._n[i + 1] for i in pairs]
        self._ll = [
            (self._ll[i] * self._n[i] + self._ll[i + 1] * self._n[i + 1]) / m if m else self._ll[i + 1]
            for i, m in zip(pairs, n)
        ]
        self._n = n
        self._records = [self._records[i + 1] for i in pairs]
        self._batches = [self._batches[i] + self._batches[i + 1] for i in pairs]
        self._step = [self._step[i + 1] for i in pairs]
        self._reseeded = [sorted(set(self._reseeded[i]) | set(self._reseeded[i + 1])) for i in pairs]
        self.stride *= 2

    @property
    def records(self) -> np.ndarray:
        # Integers, unless fractional record weights made the counts fractions.
        fractional = any(isinstance(v, float) for v in self._records)
        return np.asarray(self._records, dtype=np.float64 if fractional else np.int64)

    @property
    def mean_log_likelihood(self) -> np.ndarray:
        return np.asarray(self._ll, dtype=np.float64)

    @property
    def step_size(self) -> np.ndarray:
        return np.asarray(self._step, dtype=np.float64)

    @property
    def reseeded(self) -> list[list[int]]:
        return [list(r) for r in self._reseeded]

    @property
    def moves(self) -> list[dict[str, Any]]:
        """The moves taken (the last ``capacity``), oldest first: ``kind``, ``step`` (the
        mini-batch), ``born``, ``merged``, ``gain`` and ``records``."""
        return [dict(move) for move in self._moves]

    def summary(self) -> str:
        """One line: what the trace covers."""
        if not self._records:
            return "fit history: empty (no online mini-batches)"
        reseeds = sum(len(r) for r in self._reseeded)
        return (
            f"fit history: {self.n_batches:,} mini-batches, {self._records[-1]:,} records in {len(self)} points "
            f"({self.stride} batch(es) each); mean log-likelihood {self._ll[0]:.4f} -> {self._ll[-1]:.4f}, "
            f"step size {self._step[0]:.3g} -> {self._step[-1]:.3g}, {reseeds} re-seeding(s), "
            f"{len(self._moves)} move(s)"
        )

    # ------------------------------------------------------------------ persistence (JSON)

    def to_dict(self) -> dict[str, Any]:
        return {
            "capacity": self.capacity,
            "stride": self.stride,
            "n_batches": self.n_batches,
            "records": list(self._records),
            "n_records": list(self._n),
            "batches": list(self._batches),
            "mean_log_likelihood": list(self._ll),
            "step_size": list(self._step),
            "reseeded": [list(r) for r in self._reseeded],
            "moves": self.moves,
        }

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> FitHistory:
        history = cls(int(document["capacity"]))
        history.stride = int(document["stride"])
        history.n_batches = int(document["n_batches"])
        history._records = [_count(v) for v in document["records"]]
        history._n = [_count(v) for v in document["n_records"]]
        history._batches = [int(v) for v in document["batches"]]
        history._ll = [float(v) for v in document["mean_log_likelihood"]]
        history._step = [float(v) for v in document["step_size"]]
        history._reseeded = [[int(k) for k in r] for r in document["reseeded"]]
        history._moves = [_checked_move(m) for m in document.get("moves", [])]
        lengths = {
            len(history._records),
            len(history._n),
            len(history._batches),
            len(history._ll),
            len(history._step),
            len(history._reseeded),
        }
        if (
            len(lengths) != 1
            or len(history) > history.capacity
            or history.stride < 1
            or len(history._moves) > history.capacity
        ):
            raise ValueError("fit_history: columns of different lengths or more points than its capacity")
        return history

    def copy(self) -> FitHistory:
        return FitHistory.from_dict(self.to_dict())

    def __repr__(self) -> str:
        return f"FitHistory(points={len(self)}, stride={self.stride}, n_batches={self.n_batches})"


def _count(value: float) -> int | float:
    """A count of records; a weighted source's count is its records' weight, and a fraction
    stays one, as does a weight beyond the integers float64 holds exactly (and int64's range)."""
    return int(value) if float(value).is_integer() and abs(float(value)) < 2.0**53 else float(value)


def _checked_move(move: Any) -> dict[str, Any]:
    """A move read from a file, with the fields and types :meth:`FitHistory.moves` promises."""
    if not isinstance(move, dict):
        raise ValueError("fit_history: a move is not an object")
    try:
        return {
            "kind": str(move["kind"]),
            "step": int(move["step"]),
            "born": [int(k) for k in move["born"]],
            "merged": [[int(a), int(b)] for a, b in move["merged"]],
            "gain": float(move["gain"]),
            "records": float(move["records"]),
        }
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"fit_history: a move is malformed ({error})") from None
