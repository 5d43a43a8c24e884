"""Online EM on Dask in waves of W partitions: held-out quality and time against W; and batch
EM on Dask against one process from the same start.

Writes a synthetic lake (known generating mixture, one Dask partition per file), fits it once in
one process (online EM over row groups) and then on a LocalCluster with W = 1, 2, ... files per
step, and prints per fit the held-out gap to the generating parameters (nats/record; lower is
better) and the wall time. Then runs ``--batch-iter`` iterations of batch EM from the online
fit's parameters in one process and on the cluster, and prints both times and the largest
difference between the two models' parameters. Example:

    .venv/bin/python scripts/bench_dask_waves.py --records 400000 --files 40 --workers 2
"""

from __future__ import annotations

import tempfile
import time
import warnings

import bench_common
import numpy as np
import pyarrow.parquet as pq

from streamgmm import ParquetSource, StreamingGaussianMixture
from streamgmm.dask.source import connect
from streamgmm.datasets.synthetic_lake import read_truth, write_lake


def main() -> None:
    parser = bench_common.parser(__doc__, records=400_000, components=6, features=8)
    parser.add_argument("--files", type=int, default=40)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--sort", action="store_true", help="records sorted by component (worst case)")
    parser.add_argument("--waves", default="1,2,5,10,40", help="comma-separated W values")
    parser.add_argument("--batch-iter", type=int, default=5, help="batch EM iterations to time")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        info = write_lake(
            f"{tmp}/lake",
            n_records=args.records,
            n_components=args.components,
            n_features=args.features,
            n_files=args.files,
            row_group_size=max(1000, args.records // (4 * args.files)),
            held_out=50_000,
            sort_by="component" if args.sort else None,
            seed=0,
        )
        truth, names = read_truth(info.path)
        held_out = pq.read_table(info.held_out_path, columns=names).to_pandas().to_numpy()
        best = truth.log_likelihood(held_out).mean()
        source = ParquetSource(info.path, columns=names)
        print(
            f"lake: {args.records} records, {args.files} files, K={args.components}, d={args.features}, "
            f"{'sorted by component' if args.sort else 'shuffled'}; held-out gap in nats/record"
        )

        def report(label: str, model: StreamingGaussianMixture, seconds: float) -> None:
            print(f"{label:<28} gap {best - model.score(held_out):.5f}  steps {model.n_steps_:>4}  {seconds:6.2f} s")

        started = time.perf_counter()
        model = StreamingGaussianMixture(args.components, random_state=0).fit(source)
        report("one process (row groups)", model, time.perf_counter() - started)
        with connect(workers=args.workers) as client:
            StreamingGaussianMixture(args.components, random_state=0).fit(source, client=client)  # warm up
            for wave in (int(w) for w in args.waves.split(",")):
                started = time.perf_counter()
                model = StreamingGaussianMixture(args.components, random_state=0).fit(
                    source, client=client, partitions_per_step=wave
                )
                report(f"{args.workers} workers, W={wave}", model, time.perf_counter() - started)
            start = dict(weights_init=model.weights_, means_init=model.means_ + 0.1, precisions_init=model.precisions_)
            batch = dict(algorithm="batch", tol=0.0, max_iter=args.batch_iter, **start)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # max_iter is the point here, not convergence
                started = time.perf_counter()
                local = StreamingGaussianMixture(args.components, **batch).fit(source)
                local_seconds = time.perf_counter() - started
                started = time.perf_counter()
                remote = StreamingGaussianMixture(args.components, **batch).fit(source, client=client)
                remote_seconds = time.perf_counter() - started
            difference = max(
                float(np.abs(getattr(local, name) - getattr(remote, name)).max())
                for name in ("weights_", "means_", "covariances_")
            )
            print(
                f"batch EM, {args.batch_iter} iterations: one process {local_seconds:.2f} s, "
                f"{args.workers} workers {remote_seconds:.2f} s; largest parameter difference {difference:.2e}"
            )


if __name__ == "__main__":
    main()
