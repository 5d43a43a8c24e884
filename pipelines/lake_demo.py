"""The default streamgmm job, end to end on Parquet: make a lake, fit, assign, compare with the truth.

Writes a synthetic hive-partitioned lake whose records are sorted by their generating component
(the worst case for one-pass online EM, which row-group shuffling handles), runs the batch job
of ``pipelines/parquet_lake_job.py`` on it (fit in one streaming pass, then write
responsibilities), and prints how close the fitted mixture is to the generating one: held-out
log-likelihood, weights and means per component, and how often the assigned component is the
one that generated the record; ends by plotting the fit to ``OUT/fit.png``.

    python pipelines/lake_demo.py [--records N] [--features D] [--components K] [--out DIR]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from parquet_lake_job import run

from streamgmm.datasets.mixtures import match_components
from streamgmm.datasets.synthetic_lake import write_lake


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000, help="records in the lake (default 1000000)")
    parser.add_argument("--features", type=int, default=8)
    parser.add_argument("--components", type=int, default=5)
    parser.add_argument("--files", type=int, default=16)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="out/demo", help="working directory, replaced on each run (default out/demo)")
    args = parser.parse_args()

    work = Path(args.out)
    if work.exists():
        shutil.rmtree(work)
    held_out = max(args.records // 5, 1000)
    info = write_lake(
        work / "lake",
        n_records=args.records,
        n_components=args.components,
        n_features=args.features,
        n_files=args.files,
        partitions=args.partitions,
        row_group_size=32768,
        sort_by="component",
        held_out=held_out,
        labels=True,
        seed=args.seed,
    )
    print(
        f"lake: {info.n_records:,} records sorted by component in {len(info.files)} files under "
        f"{args.partitions} hive partitions at {info.path}; d={args.features}, K={args.components}"
    )

    model, fitted, scored = run(
        str(info.path),
        components=args.components,
        model_path=str(work / "model.sgmm"),
        out=str(work / "scored"),
        passthrough=["id", "label"],
        keep=["id", "label"],
        seed=args.seed,
    )
    print(
        f"fit:    {fitted['records']:,} records in {fitted['seconds']:.2f} s: one online pass and "
        f"{fitted['passes'] - 1} exact EM passes, initialisation included -> {fitted['model']}"
    )
    print(
        f"assign: {scored['records']:,} records in {scored['seconds']:.2f} s "
        f"({scored['records_per_second'] / 1e6:.2f} M records/s) -> {scored['out']} "
        f"({scored['files']} files + _SUCCESS)"
    )

    truth = info.params
    test = pq.read_table(info.held_out_path, columns=info.feature_names)
    X_test = np.column_stack([test.column(name).to_numpy() for name in info.feature_names])
    true_ll, fitted_ll = truth.log_likelihood(X_test).mean(), model.score(X_test)
    print(
        f"\nheld-out mean log-likelihood: generating parameters {true_ll:.4f}, fitted {fitted_ll:.4f}, "
        f"gap {true_ll - fitted_ll:+.4f} nats/record"
    )

    order = match_components(truth.means, model.means_)
    scored_table = ds.dataset(work / "scored", format="parquet", partitioning="hive").to_table(
        columns=["label", "component"]
    )
    relabel = np.empty(args.components, dtype=np.int64)
    relabel[order] = np.arange(args.components)
    agree = np.mean(relabel[scored_table["component"].to_numpy()] == scored_table["label"].to_numpy())
    print(f"assigned component == generating component for {agree:.2%} of records")

    print("\ncomponent  true weight  fitted weight  |mean error|")
    for k, j in enumerate(order):
        error = np.linalg.norm(truth.means[k] - model.means_[j])
        print(f"{k:>9}  {truth.weights[k]:11.4f}  {model.weights_[j]:13.4f}  {error:12.4f}")

    try:
        from streamgmm.plotting import plot_model

        picture = plot_model(model, str(info.path), out=str(work / "fit.png"), sample=5000, random_state=args.seed)
        print(f"\nplot of the fit (5,000 sampled records, ellipses, fit history): {picture}")
    except ImportError as exc:  # run without the plot extra: everything else has been done
        print(f"\nno plot: {exc}")


if __name__ == "__main__":
    main()
