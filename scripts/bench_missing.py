"""Missing values: ``nan_policy="marginalize"`` against ``"skip"``, and the cost of a pass.

Records are drawn from a known mixture (correlated features, so the observed features say
something about the missing ones); then values are removed at rates of 10-40% of the entries
of every feature but the first, by two mechanisms:

- MCAR (missing completely at random): each entry independently with the rate's probability;
- MAR (missing at random): an entry is missing with a probability rising with the record's
  first feature (a logistic curve whose offset is set so the rate comes out as asked), as with
  a sensor that drops out at high readings.

For each mechanism and rate it fits the default model under both policies and prints the
held-out gap to the generating parameters (their mean log-likelihood on complete held-out
records minus the fit's, nats per record, positive: worse), next to the fit of the complete
data; and the rate of one online pass (``partial_fit`` over the training records in mini-batches,
from the fitted model) over the incomplete data against the same pass over the complete data.

Usage: ``.venv/bin/python scripts/bench_missing.py [--records 200000] [--covariance full]
[--rates 0.1,0.2,0.3,0.4] [--seeds 0,1] [--json PATH]``
"""

from __future__ import annotations

import argparse
import statistics

import bench_common
import numpy as np
from scipy.special import expit

from streamgmm import StreamingGaussianMixture, random_mixture, sample_mixture


def remove_values(X: np.ndarray, mechanism: str, rate: float, rng: np.random.Generator) -> np.ndarray:
    """A copy of ``X`` with a fraction ``rate`` of the entries of features 1.. set to NaN."""
    X = X.copy()
    n, d = X.shape
    if mechanism == "mcar":
        missing = rng.random((n, d - 1)) < rate
    else:
        z = (X[:, 0] - X[:, 0].mean()) / X[:, 0].std()
        # The offset that makes the mean probability equal the rate, by bisection.
        low, high = -20.0, 20.0
        for _ in range(60):
            offset = (low + high) / 2
            if expit(2.0 * z - offset).mean() > rate:
                low = offset
            else:
                high = offset
        probability = expit(2.0 * z - offset)
        missing = rng.random((n, d - 1)) < probability[:, None]
    X[:, 1:][missing] = np.nan
    return X


def held_out_gap(model: StreamingGaussianMixture, truth_score: float, X_test: np.ndarray) -> float:
    return truth_score - model.score(X_test)


def fit(X: np.ndarray, args: argparse.Namespace, seed: int, nan_policy: str) -> StreamingGaussianMixture:
    model = StreamingGaussianMixture(
        args.components, covariance_type=args.covariance, nan_policy=nan_policy, random_state=seed
    )
    return model.fit(X)


def pass_seconds(model: StreamingGaussianMixture, X: np.ndarray, batch_size: int, repeats: int = 3) -> float:
    """Best wall time of one online pass of ``partial_fit`` over ``X``."""

    def one_pass() -> None:
        for first in range(0, X.shape[0], batch_size):
            model.partial_fit(X[first : first + batch_size])

    return bench_common.best_of(one_pass, repeats)


def main() -> None:
    parser = bench_common.parser(__doc__, records=200_000, features=6, components=4, covariance="full", json=None)
    parser.add_argument("--rates", default="0.1,0.2,0.3,0.4")
    parser.add_argument("--seeds", default="0,1")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]

    # Close enough for the missing features to matter, with correlated features (condition 10).
    truth = random_mixture(
        args.components, args.features, covariance_type=args.covariance, separation=4.0, random_state=7
    )
    X, _ = sample_mixture(truth, args.records, random_state=1)
    X_test, _ = sample_mixture(truth, 50_000, random_state=2)
    truth_score = float(truth.log_likelihood(X_test).mean())
    print(
        f"{args.records:,} records x {args.features} features, K={args.components} {args.covariance}; "
        f"held-out gap to the generating parameters (nats/record, positive: worse), median over seeds {seeds}"
    )
    complete = {seed: fit(X, args, seed, "raise") for seed in seeds}
    complete_gap = statistics.median(held_out_gap(m, truth_score, X_test) for m in complete.values())
    print(f"complete data: gap {complete_gap:.4f}")
    reference = complete[seeds[0]]
    complete_pass = pass_seconds(reference, X, reference.batch_size)
    print(f"one online pass over the complete data: {args.records / complete_pass / 1e6:.2f} M records/s\n")

    header = f"{'mechanism':<9} {'rate':>5} {'rows incomplete':>16} {'marginalize':>12} {'skip':>8} {'pass rate / complete':>21}"
    print(header)
    rows = []
    for mechanism in ("mcar", "mar"):
        for rate in rates:
            X_missing = remove_values(X, mechanism, rate, np.random.default_rng(int(rate * 100)))
            incomplete = float(np.isnan(X_missing).any(axis=1).mean())
            gaps = {}
            for policy in ("marginalize", "skip"):
                models = [fit(X_missing, args, seed, policy) for seed in seeds]
                gaps[policy] = statistics.median(held_out_gap(m, truth_score, X_test) for m in models)
            marginal_model = fit(X_missing, args, seeds[0], "marginalize")
            seconds = pass_seconds(marginal_model, X_missing, marginal_model.batch_size)
            ratio = complete_pass / seconds
            rows.append(
                {
                    "mechanism": mechanism,
                    "rate": rate,
                    "rows_incomplete": incomplete,
                    "gap_marginalize": gaps["marginalize"],
                    "gap_skip": gaps["skip"],
                    "pass_rate_ratio": ratio,
                }
            )
            print(
                f"{mechanism:<9} {rate:>5.0%} {incomplete:>16.1%} {gaps['marginalize']:>12.4f} "
                f"{gaps['skip']:>8.4f} {ratio:>21.2f}"
            )
    bench_common.write_json(args.json, {"complete_gap": complete_gap, "rows": rows})


if __name__ == "__main__":
    main()
