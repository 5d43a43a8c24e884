"""Batch EM iterations on a Dask ``LocalCluster`` against the same iterations in this process.

Writes (or reuses, ``--lake DIR``) a synthetic lake, then runs ``--iterations`` batch EM
iterations from the same start over it: in this process (:func:`streamgmm.em.batch.run_batch_em`
over a :class:`~streamgmm.ParquetSource`), and with :func:`streamgmm.dask.em.run_dask_batch_em`
on a ``LocalCluster`` of 1 and of 2 worker processes (1 thread each; a real scheduler process),
with the decoded partitions persisted on the workers and without. Each iteration is timed on its
own (the time between two ``on_iteration`` calls); the first is dropped (it starts the workers'
imports and, with persist, decodes the files), and the median of the rest is printed as
ms/iteration with its ratio to the local median. The runs alternate (local, cluster, local, ...)
``--repeats`` times so that load from other processes hits both alike; every model is checked
against the local one. Example::

    .venv/bin/python scripts/bench_dask.py                       # 1M x 16, K=8 full
    .venv/bin/python scripts/bench_dask.py --records 200000 --repeats 1
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from pathlib import Path

import bench_common
import numpy as np

from streamgmm import ParquetSource
from streamgmm.dask.em import run_dask_batch_em
from streamgmm.dask.source import dask_source
from streamgmm.datasets.synthetic_lake import read_truth
from streamgmm.em.batch import run_batch_em
from streamgmm.mixture.params import MixtureParams


def iteration_times(run, params: MixtureParams, shift: np.ndarray, source, iterations: int, batch_size: int):
    """Seconds per iteration (the first dropped) and the result of ``iterations`` batch EM iterations."""
    stamps = [time.perf_counter()]
    result = run(
        source,
        params,
        shift=shift,
        reg_covar=1e-6,
        tol=0.0,
        max_iter=iterations,
        batch_size=batch_size,
        on_iteration=lambda i, _: stamps.append(time.perf_counter()),
    )
    return list(np.diff(stamps)[1:]), result


def main() -> None:
    parser = bench_common.parser(__doc__, lake=None, records=1_000_000, features=16, components=8, json=None)
    parser.add_argument("--files", type=int, default=16)
    parser.add_argument("--iterations", type=int, default=6, help="batch EM iterations per run (the first is dropped)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each configuration, interleaved")
    parser.add_argument("--batch-size", type=int, default=8192)
    parser.add_argument("--workers", default="1,2", help="comma-separated cluster sizes")
    args = parser.parse_args()
    written = {"n_records": args.records, "n_components": args.components, "n_features": args.features}
    with bench_common.lake(args.lake, n_files=args.files, seed=0, **written) as lake:
        run(Path(lake), args)


def run(lake: Path, args: argparse.Namespace) -> None:
    from distributed import Client, LocalCluster

    truth, names = read_truth(lake)
    source = ParquetSource(lake, columns=names)
    # A start near the optimum but not at it: every iteration does the same work either way.
    rng = np.random.default_rng(0)
    means = truth.means + rng.normal(0, 0.3, truth.means.shape)
    start = MixtureParams.from_covariances(truth.weights, means, truth.covariances, truth.covariance_type)
    shift = truth.weights @ truth.means
    print(
        f"lake {lake}: {source.n_records} records x {source.n_features}, {len(source.files)} files, "
        f"K={truth.n_components} {truth.covariance_type}; {args.iterations} iterations per run, first dropped"
    )
    times: dict[str, list[float]] = {}
    local_model = None
    for n_workers in (int(w) for w in args.workers.split(",")):
        with (
            LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
            Client(cluster) as client,
        ):
            for _ in range(args.repeats):
                seconds, result = iteration_times(run_batch_em, start, shift, source, args.iterations, args.batch_size)
                times.setdefault("local", []).extend(seconds)
                local_model = result.params
                for persist in (True, False):
                    on_dask = dask_source(source, client=client, persist=persist)
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")  # distributed's large-graph warnings
                        seconds, result = iteration_times(
                            run_dask_batch_em, start, shift, on_dask, args.iterations, args.batch_size
                        )
                    label = (
                        f"{n_workers} worker{'s' if n_workers > 1 else ''}, {'persist' if persist else 'no persist'}"
                    )
                    times.setdefault(label, []).extend(seconds)
                    gap = max(
                        np.abs(result.params.means - local_model.means).max(),
                        np.abs(result.params.covariances - local_model.covariances).max(),
                    )
                    if gap > 1e-8:
                        raise SystemExit(f"{label}: parameters differ from the local run by {gap:.2e}")
    local = statistics.median(times["local"])
    print(f"medians of {args.repeats} runs")
    medians = {label: statistics.median(seconds) for label, seconds in times.items()}
    cells = [[label, 1000 * median, median / local] for label, median in medians.items()]
    print(bench_common.table(["configuration", "ms/iteration", "ratio to local"], cells, ["", ".1f", ".2f"]))
    bench_common.write_json(args.json, {"ms_per_iteration": {label: 1000 * m for label, m in medians.items()}})


if __name__ == "__main__":
    main()
