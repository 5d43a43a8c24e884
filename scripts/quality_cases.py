"""The cases of ``scripts/bench_quality.py``: scikit-learn's bundled data sets (raw and
standardised) and synthetic data that are not Gaussian blobs (heavy tails, skew, mixed scales,
rare components, overlap, sorted streams, a large table), each with the K and covariance types
it is fitted with."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence

import numpy as np

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")


@dataclasses.dataclass(frozen=True)
class Case:
    """One comparison: a data set (a key of ``DATASETS``), K and a covariance type."""

    name: str
    dataset: str
    n_components: int
    covariance_type: str
    heavy: bool = False
    time_target: float | None = None


# ---------------------------------------------------------------------------------- data sets


def _bundled(name: str, standardise: bool) -> np.ndarray:
    from sklearn import datasets
    from sklearn.preprocessing import StandardScaler

    X = getattr(datasets, f"load_{name}")().data.astype(np.float64)
    return StandardScaler().fit_transform(X) if standardise else X


def _n_classes(name: str) -> int:
    from sklearn import datasets

    return len(np.unique(getattr(datasets, f"load_{name}")().target))


def _affine(
    rng: np.random.Generator, noise: np.ndarray, labels: np.ndarray, means: np.ndarray, scales: Sequence[float]
) -> np.ndarray:
    """Component k's records: ``means[k] + noise @ (scales[k] * (I + random))``."""
    d = means.shape[1]
    out = np.empty_like(noise)
    for k, scale in enumerate(scales):
        factor = scale * (np.eye(d) + 0.4 * rng.normal(size=(d, d)))
        rows = labels == k
        out[rows] = means[k] + noise[rows] @ factor
    return out


def _student_t_noise(rng: np.random.Generator, n: int, d: int, df: float = 3.0) -> np.ndarray:
    """Multivariate Student-t (df) noise: heavy tails, infinite kurtosis at df=3."""
    return rng.standard_normal((n, d)) / np.sqrt(rng.chisquare(df, n) / df)[:, None]


def _skewed_noise(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """Centred lognormal (sigma 0.75) or exponential marginals, each column with a random sign."""
    columns = []
    for j in range(d):
        column = rng.lognormal(0.0, 0.75, n) if j % 2 == 0 else rng.exponential(1.0, n)
        columns.append(rng.choice([-1.0, 1.0]) * (column - column.mean()))
    return np.column_stack(columns)


def _labels(rng: np.random.Generator, n: int, weights: Sequence[float]) -> np.ndarray:
    return rng.choice(len(weights), size=n, p=np.asarray(weights) / np.sum(weights))


def _mixture(seed: int, n: int, d: int, k: int, noise: str, spread: float = 8.0) -> tuple[np.ndarray, np.ndarray]:
    """K components of Student-t or skewed noise, random means, shapes, scales and weights."""
    rng = np.random.default_rng(seed)
    labels = _labels(rng, n, rng.dirichlet(np.full(k, 5.0)))
    z = _student_t_noise(rng, n, d) if noise == "t" else _skewed_noise(rng, n, d)
    return _affine(rng, z, labels, rng.normal(0.0, spread, (k, d)), rng.uniform(0.5, 2.0, k)), labels


def _two_scales(seed: int, n: int) -> np.ndarray:
    """Two clusters of spread 1e-3 (5e-3 apart) and two of spread 1e3, in one 2-d set."""
    rng = np.random.default_rng(seed)
    labels = _labels(rng, n, [1, 1, 1, 1])
    means = np.array([[0.0, 0.0], [4e-3, 3e-3], [4e3, 0.0], [-3e3, 5e3]])
    return _affine(rng, rng.standard_normal((n, 2)), labels, means, [1e-3, 1e-3, 1e3, 1e3])


def _rare(seed: int, n: int) -> np.ndarray:
    """Weights 1% and 99%: a small component about 5 standard deviations from a large one."""
    rng = np.random.default_rng(seed)
    labels = _labels(rng, n, [0.01, 0.99])
    means = np.array([[3.0, 3.0, 3.0], [0.0, 0.0, 0.0]])
    return _affine(rng, _student_t_noise(rng, n, 3, df=8.0), labels, means, [0.7, 1.0])


def _overlap(seed: int, n: int) -> np.ndarray:
    """Three components whose means lie about one standard deviation apart."""
    rng = np.random.default_rng(seed)
    labels = _labels(rng, n, [0.4, 0.35, 0.25])
    means = np.array([[0.0, 0.0], [1.0, 0.5], [0.5, 1.2]])
    return _affine(rng, rng.standard_normal((n, 2)), labels, means, [1.0, 0.8, 1.2])


def _unit_scales(seed: int, n: int) -> np.ndarray:
    """Raw units 1e6 apart: metres (spread ~1e-3), a quantity ~1e3 around an offset of 1e6, and one ~1."""
    X, _ = _mixture(seed, n, 3, 3, "t", spread=4.0)
    return X * np.array([1e-3, 1e3, 1.0]) + np.array([0.0, 1e6, 0.0])


def _sorted(X: np.ndarray, key: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(X[np.argsort(key, kind="stable")])


def _sorted_by_feature(X: np.ndarray) -> np.ndarray:
    return _sorted(X, X[:, 0])


def _table(seed: int, n: int) -> np.ndarray:
    """A standardised 5-column table: 8 components, half Student-t, half skewed."""
    t = _mixture(seed, n // 2, 5, 4, "t")[0]
    s = _mixture(seed + 1, n - n // 2, 5, 4, "skewed")[0]
    X = np.concatenate([t, s + 3.0])
    X = X[np.random.default_rng(seed + 2).permutation(n)]
    return (X - X.mean(axis=0)) / X.std(axis=0)


def _synthetic() -> dict[str, Callable[[], np.ndarray]]:
    return {
        "student-t": lambda: _mixture(101, 12_000, 3, 4, "t")[0],
        "skewed": lambda: _mixture(102, 12_000, 3, 3, "skewed")[0],
        "two-scales": lambda: _two_scales(103, 8_000),
        "rare-1pct": lambda: _rare(104, 20_000),
        "overlap": lambda: _overlap(105, 10_000),
        "units-1e6-apart": lambda: _unit_scales(106, 10_000),
        "sorted-by-component": lambda: _sorted(*_mixture(107, 16_000, 3, 4, "t")),
        "sorted-by-feature": lambda: _sorted_by_feature(_mixture(108, 16_000, 3, 3, "skewed")[0]),
        "heavy-student-t-100k": lambda: _mixture(201, 100_000, 5, 6, "t")[0],
        "heavy-sorted-200k": lambda: _sorted(*_mixture(202, 200_000, 4, 5, "skewed")),
        "heavy-table-300k": lambda: _table(203, 300_000),
    }


BUNDLED = ("iris", "wine", "breast_cancer", "digits")
# Synthetic set -> its true K (heavy sets start with "heavy").
SYNTHETIC_K = {
    "student-t": 4,
    "skewed": 3,
    "two-scales": 4,
    "rare-1pct": 2,
    "overlap": 3,
    "units-1e6-apart": 3,
    "sorted-by-component": 4,
    "sorted-by-feature": 3,
    "heavy-student-t-100k": 6,
    "heavy-sorted-200k": 5,
    "heavy-table-300k": 8,
}
# The wall-time targets on the 300k-record table, ours over scikit-learn's.
TABLE_TIME_TARGETS = {"full": 0.2, "diag": 0.5}


@functools.cache
def load(dataset: str) -> np.ndarray:
    """The records of a data set: ``"<bundled>-raw"``, ``"<bundled>-std"`` or a synthetic name."""
    name, _, form = dataset.rpartition("-")
    if name in BUNDLED:
        return _bundled(name, standardise=form == "std")
    return _synthetic()[dataset]()


# ---------------------------------------------------------------------------------- cases


def bundled_cases() -> list[Case]:
    out = []
    for name in BUNDLED:
        classes = _n_classes(name)
        for form in ("raw", "std"):
            for k in sorted({max(classes - 1, 1), classes, classes + 2}):
                for t in COVARIANCE_TYPES:
                    out.append(Case(f"{name}-{form}-K{k}-{t}", f"{name}-{form}", k, t))
    return out


def synthetic_cases(heavy: bool) -> list[Case]:
    out = []
    for dataset, k in SYNTHETIC_K.items():
        is_heavy = dataset.startswith("heavy")
        if is_heavy and not heavy:
            continue
        for t in ("full", "diag"):
            target = TABLE_TIME_TARGETS[t] if dataset == "heavy-table-300k" else None
            out.append(Case(f"{dataset}-K{k}-{t}", dataset, k, t, heavy=is_heavy, time_target=target))
    return out


def cases(heavy: bool = True) -> list[Case]:
    """Every case; the heavy ones (100k-300k records) only when ``heavy``."""
    return bundled_cases() + synthetic_cases(heavy)
