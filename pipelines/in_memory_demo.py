"""The default streamgmm job: fit a mixture with known parameters by one streaming pass.

Draws records from a random well-separated Gaussian mixture, streams them through online EM
(one pass, bounded memory) and through exact batch EM, and prints how close each comes to the
generating parameters on held-out records. Saves the online model and checks it reloads.

    python pipelines/in_memory_demo.py [--records N] [--features D] [--components K] [--out DIR]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from streamgmm import StreamingGaussianMixture, make_mixture
from streamgmm.datasets.mixtures import match_components


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000, help="training records (default 1000000)")
    parser.add_argument("--features", type=int, default=8)
    parser.add_argument("--components", type=int, default=5)
    parser.add_argument("--covariance", default="full", choices=["full", "tied", "diag", "spherical"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="out", help="directory for the saved model (default ./out)")
    args = parser.parse_args()

    held_out = max(args.records // 5, 1000)
    X, _, truth = make_mixture(
        args.records + held_out,
        args.components,
        args.features,
        covariance_type=args.covariance,
        random_state=args.seed,
    )
    train, test = X[: args.records], X[args.records :]
    true_ll = truth.log_likelihood(test).mean()
    print(
        f"data: {args.records:,} training + {held_out:,} held-out records, d={args.features}, "
        f"K={args.components}, covariance={args.covariance}"
    )
    print(f"held-out mean log-likelihood under the generating parameters: {true_ll:.4f}")

    results = {}
    for algorithm in ("online", "batch"):
        model = StreamingGaussianMixture(
            args.components, covariance_type=args.covariance, algorithm=algorithm, random_state=args.seed
        )
        start = time.perf_counter()
        model.fit(train)
        elapsed = time.perf_counter() - start
        score = model.score(test)
        results[algorithm] = model
        passes = f"{model.n_iter_} pass" if algorithm == "online" else f"{model.n_iter_} iterations"
        print(
            f"{algorithm:>6} EM: {elapsed:6.2f} s ({passes}, {args.records / elapsed / 1e6:.2f} M records/s per run), "
            f"held-out {score:.4f}, gap to truth {true_ll - score:+.4f} nats/record"
        )

    online = results["online"]
    order = match_components(truth.means, online.means_)
    print("\ncomponent  true weight  fitted weight  |mean error|")
    for k, j in enumerate(order):
        error = np.linalg.norm(truth.means[k] - online.means_[j])
        print(f"{k:>9}  {truth.weights[k]:11.4f}  {online.weights_[j]:13.4f}  {error:12.4f}")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "demo.model"
    online.save(path)
    reloaded = StreamingGaussianMixture.load(path)
    same = np.array_equal(reloaded.means_, online.means_) and np.array_equal(reloaded.covariances_, online.covariances_)
    print(f"\nsaved the online model to {path} ({path.stat().st_size:,} bytes); reloads identically: {same}")


if __name__ == "__main__":
    main()
