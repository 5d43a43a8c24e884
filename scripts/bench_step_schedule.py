"""One online pass per step exponent, on a 1M x 16, K=8 full mixture, shuffled and sorted by
component; prints the held-out gap to the generating parameters (nats/record) and wall time."""

from __future__ import annotations

import bench_common
import numpy as np

from streamgmm import StreamingGaussianMixture, make_mixture


def main() -> None:
    parser = bench_common.parser(__doc__, records=1_000_000, features=16, components=8, seed=0)
    parser.add_argument("--exponents", default="0.6,0.8,1.0")
    args = parser.parse_args()
    held_out = args.records // 5
    X, labels, truth = make_mixture(
        args.records + held_out,
        args.components,
        args.features,
        separation=9.2,
        condition=10,
        random_state=args.seed,
    )
    train, test = X[: args.records], X[args.records :]
    by_component = train[np.argsort(labels[: args.records], kind="stable")]
    true_ll = truth.log_likelihood(test).mean()
    print(f"{args.records:,} x {args.features}, K={args.components} full; held-out truth {true_ll:.4f}")
    print(f"{'order':>9} {'exponent':>8} {'gap':>9} {'seconds':>8}")
    for order, data in (("shuffled", train), ("sorted", by_component)):
        for exponent in (float(e) for e in args.exponents.split(",")):
            model = StreamingGaussianMixture(
                args.components, step_exponent=exponent, shuffle=False, random_state=args.seed
            )
            elapsed, _ = bench_common.timed(lambda: model.fit(data))  # noqa: B023 - called at once
            print(f"{order:>9} {exponent:8.2f} {true_ll - model.score(test):9.4f} {elapsed:8.2f}", flush=True)


if __name__ == "__main__":
    main()
