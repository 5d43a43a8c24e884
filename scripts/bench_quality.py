"""Fit quality on real data: streamgmm's default fit against scikit-learn's default fit (issue 14).

For each case, both ``sklearn.mixture.GaussianMixture`` and ``streamgmm.StreamingGaussianMixture``
are fitted with their defaults (only ``n_components``, ``covariance_type`` and
``random_state=seed`` are set) to the same array, for seeds 0, 1 and 2. The metric is the mean
log-likelihood per record on the data fitted (``model.score(X)`` on both sides), averaged over the
seeds. ``gap`` is scikit-learn's mean minus ours (positive: we fit worse); a case passes when
``gap <= 0.005`` nats/record. The wall time of each ``fit`` is measured too; ``ratio`` is ours over
scikit-learn's. Issue 14 asks for a ratio of at most 1.5 under 10k records, and on the 300k-record
table at most 0.2 (full) and 0.5 (diag); the ``time`` column checks those targets (it only gates the
exit code with ``--gate-time``: wall times on a shared machine are noisy). Both sides run with one
BLAS/OpenMP thread unless ``--blas-threads`` says otherwise (0: the libraries' defaults).

Cases, all offline:

- scikit-learn's bundled sets (iris, wine, breast_cancer, digits), raw and standardised, the four
  covariance types, K = classes - 1 (at least 1), classes, classes + 2;
- synthetic stress that is not Gaussian blobs, generated with fixed seeds: Student-t (df=3)
  components, skewed (lognormal / exponential) components, clusters at scales 1e-3 and 1e3 in one
  set, weights 1% against 99%, strongly overlapping components, features whose scales are 1e6
  apart (raw units, with a 1e6 offset), and sorted streams (by component, by a feature);
- heavy cases (names start with ``heavy``; skipped by ``--quick``): 100k-300k records, among them
  the 300k x 5, K=8 table of the timing targets.

Warnings raised by either side (ConvergenceWarning, RuntimeWarning, ...) are caught and counted.
The exit code is 1 when any case fails (or raises). tests/test_real_data_quality.py runs the
light cases in CI through ``cases`` and ``compare``.

    .venv/bin/python scripts/bench_quality.py [--quick] [--cases SUBSTRING[,SUBSTRING]] [--seeds 0,1,2]
                                              [--json PATH] [--gate-time] [--blas-threads N]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import hashlib
import json
import platform
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

TOLERANCE = 0.005
SEEDS = (0, 1, 2)
COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
SMALL_RECORDS = 10_000
SMALL_TIME_TARGET = 1.5
# One BLAS/OpenMP thread on both sides by default: on this shared 2-core machine OpenBLAS's two
# threads made scikit-learn's digits fit ~20x slower under load (29 s against 1.5 s for 3 seeds,
# same scores), so wall times measured contention rather than work.
BLAS_THREADS = 1
ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Case:
    """One comparison: a data set (a key of ``DATASETS``), K and a covariance type."""

    name: str
    dataset: str
    n_components: int
    covariance_type: str
    heavy: bool = False
    time_target: float | None = None


@dataclasses.dataclass
class Row:
    """The outcome of one case: per-seed scores and fit seconds on both sides."""

    case: str
    n: int
    d: int
    k: int
    covariance_type: str
    sklearn_scores: list[float]
    ours_scores: list[float]
    sklearn_seconds: list[float]
    ours_seconds: list[float]
    sklearn_warnings: int
    ours_warnings: int
    time_target: float | None
    error: str | None = None

    @property
    def sklearn_mean(self) -> float:
        return float(np.mean(self.sklearn_scores)) if self.sklearn_scores else float("nan")

    @property
    def ours_mean(self) -> float:
        return float(np.mean(self.ours_scores)) if self.ours_scores else float("nan")

    @property
    def gap(self) -> float:
        """scikit-learn's mean score minus ours: positive when streamgmm fits worse."""
        gap = self.sklearn_mean - self.ours_mean
        return gap if np.isfinite(gap) else float("inf")

    @property
    def passed(self) -> bool:
        return self.error is None and self.gap <= TOLERANCE

    @property
    def ratio(self) -> float:
        """streamgmm's fit wall time over scikit-learn's (mean per seed)."""
        sk = float(np.mean(self.sklearn_seconds)) if self.sklearn_seconds else float("nan")
        return float(np.mean(self.ours_seconds)) / sk if self.ours_seconds and sk > 0 else float("nan")

    @property
    def time_ok(self) -> bool | None:
        return None if self.time_target is None else bool(self.ratio <= self.time_target)

    def as_dict(self) -> dict:
        fields = dataclasses.asdict(self)
        fields.update(
            sklearn_mean=self.sklearn_mean,
            ours_mean=self.ours_mean,
            gap=self.gap,
            passed=self.passed,
            ratio=self.ratio,
            time_ok=self.time_ok,
        )
        return fields


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
# Issue 14's wall-time targets on the 300k-record table, ours over scikit-learn's.
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


# ---------------------------------------------------------------------------------- comparison


def _timed_fit(model, X: np.ndarray) -> tuple[float, float, int]:
    """Fit ``model`` to X; return its score on X, the fit's wall seconds and the warnings it raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        started = time.perf_counter()
        model.fit(X)
        seconds = time.perf_counter() - started
        score = float(model.score(X))
    return score, seconds, len(caught)


def compare(
    case: Case, seeds: Sequence[int] = SEEDS, blas_threads: int | None = BLAS_THREADS, ours: dict | None = None
) -> Row:
    """Fit both defaults to the case's data for each seed: scores on the data fitted and wall times.

    ``blas_threads`` limits BLAS and OpenMP threads on both sides (None: the libraries' defaults);
    ``ours`` sets streamgmm parameters away from their defaults (to measure a choice)."""
    limit = threadpool_limits(limits=blas_threads) if blas_threads else contextlib.nullcontext()
    with limit:
        return _compare(case, seeds, ours or {})


def _compare(case: Case, seeds: Sequence[int], ours: dict) -> Row:
    from sklearn.mixture import GaussianMixture

    from streamgmm import StreamingGaussianMixture

    X = load(case.dataset)
    n, d = X.shape
    target = case.time_target if case.time_target is not None else (SMALL_TIME_TARGET if n < SMALL_RECORDS else None)
    row = Row(case.name, n, d, case.n_components, case.covariance_type, [], [], [], [], 0, 0, target)
    for seed in seeds:
        kwargs = {"n_components": case.n_components, "covariance_type": case.covariance_type, "random_state": seed}
        score, seconds, caught = _timed_fit(GaussianMixture(**kwargs), X)
        row.sklearn_scores.append(score)
        row.sklearn_seconds.append(seconds)
        row.sklearn_warnings += caught
        score, seconds, caught = _timed_fit(StreamingGaussianMixture(**kwargs, **ours), X)
        row.ours_scores.append(score)
        row.ours_seconds.append(seconds)
        row.ours_warnings += caught
    return row


def safe_compare(case: Case, seeds: Sequence[int], blas_threads: int | None, ours: dict | None = None) -> Row:
    """``compare``, with an exception on either side reported in the row (the case then fails)."""
    try:
        return compare(case, seeds, blas_threads, ours)
    except Exception as error:  # noqa: BLE001 - a benchmark reports every failure and goes on
        X = load(case.dataset)
        return Row(
            case.name,
            X.shape[0],
            X.shape[1],
            case.n_components,
            case.covariance_type,
            [],
            [],
            [],
            [],
            0,
            0,
            None,
            error=f"{type(error).__name__}: {error}",
        )


def describe(row: Row) -> str:
    """One line for an assertion message: the scores per seed and the gap."""
    return (
        f"{row.case}: sklearn {row.sklearn_mean:.4f} {np.round(row.sklearn_scores, 4).tolist()}, "
        f"streamgmm {row.ours_mean:.4f} {np.round(row.ours_scores, 4).tolist()}, gap {row.gap:+.4f} "
        f"(tolerance {TOLERANCE}); warnings sklearn {row.sklearn_warnings}, streamgmm {row.ours_warnings}"
    )


# ---------------------------------------------------------------------------------- report

HEADER = (
    f"{'case':<34} {'n':>7} {'d':>3} {'K':>3} {'cov':<9} {'sklearn':>12} {'streamgmm':>12} {'gap':>9} "
    f"{'sk s':>7} {'ours s':>7} {'ratio':>6} {'time':>9} {'warn':>7} result"
)


def format_row(row: Row) -> str:
    if row.error:
        return f"{row.case:<34} {row.n:>7} {row.d:>3} {row.k:>3} {row.covariance_type:<9} ERROR {row.error}"
    time_check = "-" if row.time_ok is None else f"{'ok' if row.time_ok else 'SLOW'}<={row.time_target:g}"
    return (
        f"{row.case:<34} {row.n:>7} {row.d:>3} {row.k:>3} {row.covariance_type:<9} {row.sklearn_mean:>12.4f} "
        f"{row.ours_mean:>12.4f} {row.gap:>+9.4f} {np.mean(row.sklearn_seconds):>7.3f} "
        f"{np.mean(row.ours_seconds):>7.3f} {row.ratio:>6.2f} {time_check:>9} "
        f"{row.sklearn_warnings:>3}/{row.ours_warnings:<3} {'PASS' if row.passed else 'FAIL'}"
    )


def summary(rows: list[Row], seconds: float) -> list[str]:
    failed = [r for r in rows if not r.passed]
    slow = [r for r in rows if r.time_ok is False]
    timed = sum(r.time_ok is not None for r in rows)
    lines = [
        (
            f"{len(rows) - len(failed)}/{len(rows)} cases within {TOLERANCE} nats/record of scikit-learn's default; "
            f"{len(slow)} of {timed} timed cases over their wall-time target; {seconds:.0f} s in all"
        )
    ]
    small = [r for r in rows if r.n < SMALL_RECORDS and not r.error]
    if small:
        sk, us = sum(sum(r.sklearn_seconds) for r in small), sum(sum(r.ours_seconds) for r in small)
        lines.append(
            f"cases under {SMALL_RECORDS:,} records, all fits: scikit-learn {sk:.2f} s, "
            f"streamgmm {us:.2f} s (ratio {us / sk:.2f})"
        )
    lines += [
        f"  FAIL {r.case}: gap {r.gap:+.4f}" + (f" ({r.error})" if r.error else "")
        for r in sorted(failed, key=lambda r: -r.gap)
    ]
    lines += [f"  SLOW {r.case}: ratio {r.ratio:.2f} > {r.time_target:g}" for r in slow]
    return lines


def _source_digest() -> tuple[str, str]:
    """Where streamgmm was imported from and a digest of its Python sources (runs on edited trees differ)."""
    import streamgmm

    package = Path(streamgmm.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(package.glob("*.py")):
        digest.update(path.name.encode() + path.read_bytes())
    return str(package), digest.hexdigest()[:16]


def _provenance(seeds: Sequence[int]) -> dict:
    import sklearn

    package, digest = _source_digest()

    def git(*args: str) -> str:
        result = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return result.stdout.strip()

    return {
        "commit": git("rev-parse", "HEAD"),
        "streamgmm_dirty": bool(git("status", "--porcelain", "streamgmm")),
        "streamgmm_path": package,
        "streamgmm_sources_sha256": digest,
        "sklearn": sklearn.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "seeds": list(seeds),
        "tolerance": TOLERANCE,
    }


def _warm_up() -> None:
    """One tiny fit on each side, so that first-call costs (imports, caches) land on no case."""
    X = np.random.default_rng(0).normal(size=(200, 2))
    from sklearn.mixture import GaussianMixture

    from streamgmm import StreamingGaussianMixture

    for model in (GaussianMixture(2, random_state=0), StreamingGaussianMixture(2, random_state=0)):
        _timed_fit(model, X)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="", help="run only cases whose name contains one of these (comma-separated)")
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="comma-separated seeds (default 0,1,2)")
    parser.add_argument("--quick", action="store_true", help="skip the heavy cases (100k-300k records)")
    parser.add_argument("--json", metavar="PATH", help="also write the rows and provenance as JSON")
    parser.add_argument(
        "--blas-threads",
        type=int,
        default=BLAS_THREADS,
        help="BLAS/OpenMP threads on both sides (default 1; 0: the libraries' defaults)",
    )
    parser.add_argument("--gate-time", action="store_true", help="exit 1 also when a wall-time target is missed")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a streamgmm parameter away from its default, e.g. n_init=4 (repeatable)",
    )
    return parser.parse_args(argv)


def parameters(settings: Sequence[str]) -> dict:
    """``NAME=VALUE`` settings as estimator parameters (numbers where they parse as numbers)."""
    out = {}
    for setting in settings:
        name, _, text = setting.partition("=")
        try:
            out[name] = json.loads(text)
        except json.JSONDecodeError:
            out[name] = text
    return out


def selected(args: argparse.Namespace) -> list[Case]:
    patterns = [p for p in args.cases.split(",") if p]
    return [c for c in cases(heavy=not args.quick) if not patterns or any(p in c.name for p in patterns)]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s]
    chosen = selected(args)
    if not chosen:
        print("no case matches --cases", file=sys.stderr)
        return 2
    _warm_up()
    # Taken before the run: the sources as imported, not as they may be edited meanwhile.
    provenance = {**_provenance(seeds), "blas_threads": args.blas_threads or "default", "set": args.set}
    print(HEADER, flush=True)
    started, rows = time.perf_counter(), []
    for case in chosen:
        rows.append(safe_compare(case, seeds, args.blas_threads or None, parameters(args.set)))
        print(format_row(rows[-1]), flush=True)
    print("\n".join(summary(rows, time.perf_counter() - started)))
    if args.json:
        document = {"provenance": provenance, "rows": [r.as_dict() for r in rows]}
        Path(args.json).write_text(json.dumps(document, indent=1) + "\n")
    failed = any(not r.passed for r in rows) or (args.gate_time and any(r.time_ok is False for r in rows))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
