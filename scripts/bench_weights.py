"""Record weights: the cost of a weighted pass against the unweighted pass over the same records.

One pass is the E-step of every mini-batch of the records (``chunk_statistics`` of column-major
batches of ``--batch`` records, as a source hands them to a fit), under a mixture fitted to a
sample of them. It is timed without weights, with continuous weights (uniform on [0, 2), every
record's weight distinct: the fit's unit makes weights average about one) and with counts (the
integers 0 to 3). On a shared machine whole passes vary by tens of percent, so the three are
timed batch by batch, back to back, each batch's best of ``--repeats`` kept and summed into the
pass; the table gives each weighted pass over the unweighted one, per covariance type. ``STREAMGMM_FUSED=0`` measures the path without the
fused kernel. To compare with another tree, run it there (``PYTHONPATH=<tree>``).

Usage: ``.venv/bin/python scripts/bench_weights.py [--records 1000000] [--features 16]
[--components 8] [--repeats 3] [--batch 8192] [--dtype float64] [--json PATH]``
"""

from __future__ import annotations

import bench_common
import numpy as np

from streamgmm import StreamingGaussianMixture, random_mixture, sample_mixture
from streamgmm.kernels.chunk import chunk_statistics


def pass_seconds(batches: list[np.ndarray], params, shift: np.ndarray, dtype, weights: dict, repeats: int) -> dict:
    """Each way of weighing the records (``weights``: name to per-batch weights or None): the
    sum over batches of the batch's best time, the ways alternating batch by batch."""
    best = {name: np.full(len(batches), np.inf) for name in weights}
    for _ in range(repeats):
        for i, batch in enumerate(batches):
            for name, w in weights.items():
                seconds = bench_common.timed(
                    lambda: chunk_statistics(batch, params, shift, dtype, weights=None if w is None else w[i])
                )[0]
                best[name][i] = min(best[name][i], seconds)
    return {name: float(times.sum()) for name, times in best.items()}


def main() -> None:
    parser = bench_common.parser(__doc__, records=1_000_000, features=16, components=8, repeats=3, json=None)
    parser.add_argument("--batch", type=int, default=8192, help="records per mini-batch (default: %(default)s)")
    parser.add_argument("--dtype", default="float64", choices=("float64", "float32"))
    parser.add_argument("--covariance", default=",".join(bench_common.COVARIANCE_TYPES))
    args = parser.parse_args()
    dtype = np.dtype(args.dtype)
    rng = np.random.default_rng(0)
    rows = []
    for covariance_type in args.covariance.split(","):
        truth = random_mixture(args.components, args.features, covariance_type=covariance_type, random_state=7)
        X, _ = sample_mixture(truth, args.records, random_state=1)
        model = StreamingGaussianMixture(args.components, covariance_type=covariance_type, random_state=0)
        params = model.fit(X[:20_000]).params_
        shift = X.mean(axis=0)
        batches = [np.asfortranarray(X[i : i + args.batch]) for i in range(0, args.records, args.batch)]
        weights = {
            "none": None,
            "continuous": [rng.uniform(0.0, 2.0, b.shape[0]) for b in batches],
            "counts 0-3": [rng.integers(0, 4, b.shape[0]).astype(np.float64) for b in batches],
        }
        best = pass_seconds(batches, params, shift, dtype, weights, args.repeats)
        bench_common.note(f"{covariance_type}: {best}")
        rows.append(
            {
                "covariance": covariance_type,
                "unweighted_s": best["none"],
                "continuous_ratio": best["continuous"] / best["none"],
                "counts_ratio": best["counts 0-3"] / best["none"],
            }
        )
    print(
        f"{args.records:,} records x {args.features} features, K={args.components}, {args.dtype}, "
        f"batches of {args.batch}; each batch's best of {args.repeats}"
    )
    print(
        bench_common.table(
            ["covariance", "unweighted pass s", "continuous weights' pass / unweighted", "counts 0-3 / unweighted"],
            [[r["covariance"], r["unweighted_s"], r["continuous_ratio"], r["counts_ratio"]] for r in rows],
            ["", ".3f", ".2f", ".2f"],
        )
    )
    bench_common.write_json(args.json, {"machine": bench_common.machine(), "args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
