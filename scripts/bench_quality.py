"""Fit quality on real data: streamgmm's default fit against scikit-learn's default fit.

For each case, both ``sklearn.mixture.GaussianMixture`` and ``streamgmm.StreamingGaussianMixture``
are fitted with their defaults (only ``n_components``, ``covariance_type`` and
``random_state=seed`` are set) to the same array, for seeds 0, 1 and 2. The metric is the mean
log-likelihood per record on the data fitted (``model.score(X)`` on both sides), averaged over the
seeds. ``gap`` is scikit-learn's mean minus ours (positive: we fit worse); a case passes when
``gap <= 0.005`` nats/record. The wall time of each ``fit`` is measured too; ``ratio`` is ours over
scikit-learn's. The targets are a ratio of at most 1.5 under 10k records, and on the 300k-record
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
import dataclasses
import hashlib
import json
import platform
import subprocess
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

# The cases and the shared helpers live beside this script; the test suite loads this file by
# path, not as a package.
sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common  # noqa: E402
from quality_cases import BUNDLED as BUNDLED  # noqa: E402 - re-exported for the tests
from quality_cases import COVARIANCE_TYPES as COVARIANCE_TYPES  # noqa: E402
from quality_cases import Case, cases, load  # noqa: E402

TOLERANCE = 0.005
SEEDS = (0, 1, 2)
SMALL_RECORDS = 10_000
SMALL_TIME_TARGET = 1.5
# One BLAS/OpenMP thread on both sides by default: on this shared 2-core machine OpenBLAS's two
# threads made scikit-learn's digits fit ~20x slower under load (29 s against 1.5 s for 3 seeds,
# same scores), so wall times measured contention rather than work.
BLAS_THREADS = 1
ROOT = Path(__file__).resolve().parents[1]


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


# ---------------------------------------------------------------------------------- comparison


def _timed_fit(model, X: np.ndarray) -> tuple[float, float, int]:
    """Fit ``model`` to X; return its score on X, the fit's wall seconds and the warnings it raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        seconds, _ = bench_common.timed(lambda: model.fit(X))
        score = float(model.score(X))
    return score, seconds, len(caught)


def compare(
    case: Case, seeds: Sequence[int] = SEEDS, blas_threads: int | None = BLAS_THREADS, ours: dict | None = None
) -> Row:
    """Fit both defaults to the case's data for each seed: scores on the data fitted and wall times.

    ``blas_threads`` limits BLAS and OpenMP threads on both sides (None: the libraries' defaults);
    ``ours`` sets streamgmm parameters away from their defaults (to measure a choice)."""
    with bench_common.blas_threads(blas_threads):
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
    parser = bench_common.parser(__doc__, json=None, blas_threads=BLAS_THREADS)
    parser.add_argument("--cases", default="", help="run only cases whose name contains one of these (comma-separated)")
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="comma-separated seeds (default 0,1,2)")
    parser.add_argument("--quick", action="store_true", help="skip the heavy cases (100k-300k records)")
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
    bench_common.write_json(args.json, {"provenance": provenance, "rows": [r.as_dict() for r in rows]})
    failed = any(not r.passed for r in rows) or (args.gate_time and any(r.time_ok is False for r in rows))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
