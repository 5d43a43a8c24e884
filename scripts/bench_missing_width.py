"""Missing values at width: the rate of one pass over incomplete records against complete ones.

Complete records take the fused E-step kernel; a record with a missing feature takes the exact
E-step of ``streamgmm.mixture.incomplete``, grouped by missingness pattern: one factorisation
per (pattern, component) for full and tied covariances. With many features and values missing
completely at random nearly every incomplete record has a pattern of its own, which is the
slow case this script measures: records/s of one online pass (``partial_fit`` in mini-batches,
from a model fitted on the complete records, moves off) over the complete data and over the same
data with a fraction of every feature's values removed at random, per covariance type.

Usage: ``.venv/bin/python scripts/bench_missing_width.py [--records 20000] [--features 30]
[--components 8] [--rate 0.3] [--covariances full,diag] [--repeats 2]`` (the defaults take about
two minutes on one core).
"""

from __future__ import annotations

import bench_common
import numpy as np

from streamgmm import StreamingGaussianMixture, random_mixture, sample_mixture
from streamgmm.mixture.incomplete import missingness_patterns


def pass_seconds(model: StreamingGaussianMixture, X: np.ndarray, repeats: int) -> float:
    """Best wall time of one online pass of ``partial_fit`` over ``X`` in mini-batches."""

    def one_pass() -> None:
        for first in range(0, X.shape[0], model.batch_size):
            model.partial_fit(X[first : first + model.batch_size])

    return bench_common.best_of(one_pass, repeats)


def main() -> None:
    parser = bench_common.parser(__doc__, records=20_000, features=30, components=8, repeats=2)
    parser.add_argument("--rate", type=float, default=0.3)
    parser.add_argument("--covariances", default="full,diag")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    X_missing = None
    for covariance in args.covariances.split(","):
        truth = random_mixture(args.components, args.features, covariance_type=covariance, random_state=7)
        X, _ = sample_mixture(truth, args.records, random_state=1)
        if X_missing is None or X_missing.shape != X.shape:
            missing = rng.random(X.shape) < args.rate
            missing[missing.all(axis=1), 0] = False  # every record keeps one observed value
        X_missing = np.where(missing, np.nan, X)
        model = StreamingGaussianMixture(
            args.components, covariance_type=covariance, nan_policy="marginalize", moves="off", random_state=0
        ).fit(X)
        complete = args.records / pass_seconds(model, X, args.repeats)
        incomplete = args.records / pass_seconds(model, X_missing, args.repeats)
        rows = float(np.isnan(X_missing).any(axis=1).mean())
        patterns = missingness_patterns(~np.isnan(X_missing))[0].shape[0]
        print(
            f"{covariance:<9} {args.records:,} x {args.features}, K={args.components}, {args.rate:.0%} missing "
            f"({rows:.1%} of rows incomplete, {patterns:,} patterns): complete {complete:,.0f} records/s, "
            f"incomplete {incomplete:,.0f} records/s ({complete / incomplete:.0f}x slower)"
        )


if __name__ == "__main__":
    main()
