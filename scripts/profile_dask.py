"""Where a batch EM iteration on a Dask LocalCluster goes, against the same iteration locally.

The matrix's row ``Dask batch EM ms/iteration, 2 workers, no persist / local``
(``scripts/bench_dask.py``): on a lake (``--lake DIR``, e.g. ``/tmp/lakes/full-1000000``),
7 batch EM iterations (the first dropped) in this process and on a ``LocalCluster`` of
``--workers`` one-thread worker processes without persist. Printed: each side's median
iteration; the cluster's split into its longest task's compute time (Dask's task stream) and
the rest (scatter, scheduling, gathering, the M-step here); the CPU seconds per iteration of
this process and of the workers (all their threads); and, from a second cluster whose workers
sample their task thread every millisecond (``client.profile``), where those samples fall.

    .venv/bin/python scripts/profile_dask.py --lake /tmp/lakes/full-1000000 [--workers 2]
"""

from __future__ import annotations

import os
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import bench_common
import numpy as np

DASK_STEPS = [
    ("get", "waiting for its reading thread (queue get)"),
    ("wait", "waiting for its reading thread (queue get)"),
    ("chunk_statistics", "E-step (chunk_statistics, the C kernel inside)"),
    ("offer", "worst records for re-seeding (reseeding.offer)"),
    ("open_partition", "opening the partition (footers, row groups)"),
]


def dask_profile(lake: str, iterations: int, n_workers: int, batch_size: int) -> None:
    """Batch EM iterations without persist on a LocalCluster of ``n_workers`` one-thread workers
    (as ``scripts/bench_dask.py``), against the same iterations in this process: each
    iteration's wall time, its tasks' compute time (Dask's task stream) and, inside the tasks,
    where the task thread's samples fall (``client.profile``, sampled every millisecond)."""
    import dask
    from distributed import Client, LocalCluster, get_task_stream

    from streamgmm import ParquetSource
    from streamgmm.dask.em import run_dask_batch_em
    from streamgmm.dask.source import dask_source
    from streamgmm.datasets.synthetic_lake import read_truth
    from streamgmm.em.batch import run_batch_em
    from streamgmm.mixture.params import MixtureParams

    truth, names = read_truth(lake)
    source = ParquetSource(lake, columns=names)
    means = truth.means + np.random.default_rng(0).normal(0, 0.3, truth.means.shape)  # as bench_dask.py
    start = MixtureParams.from_covariances(truth.weights, means, truth.covariances, truth.covariance_type)
    shift = truth.weights @ truth.means

    def stamps(run: Callable[..., Any], on: Any) -> list[float]:
        marks = [time.time()]
        cpu.append(time.process_time())
        run(
            on,
            start,
            shift=shift,
            reg_covar=1e-6,
            tol=0.0,
            max_iter=iterations,
            batch_size=batch_size,
            on_iteration=lambda i, _: marks.append(time.time()),
        )
        return marks

    cpu: list[float] = []
    # Timings and CPU on a cluster with Dask's default profiler; the samples on a second one
    # that samples every millisecond (which costs the workers CPU).
    for sampling in (False, True):
        config = {"distributed.worker.profile.interval": "1ms", "distributed.worker.profile.cycle": "100ms"}
        with (
            dask.config.set(config if sampling else {}),
            LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
            Client(cluster) as client,
        ):
            on_dask = dask_source(source, client=client, persist=False)
            stamps(run_dask_batch_em, on_dask)  # the workers' imports
            if sampling:
                sampled = stamps(run_dask_batch_em, on_dask)
                samples = client.profile(start=sampled[1], stop=sampled[-1])
                continue
            local = np.diff(stamps(run_batch_em, source))[1:]
            local_cpu = (time.process_time() - cpu[-1]) / iterations
            idle = client.run(time.process_time)
            time.sleep(1.0)
            idle = sum(value - idle[w] for w, value in client.run(time.process_time).items())
            before = client.run(time.process_time), time.process_time()
            with get_task_stream(client) as stream:
                marks = stamps(run_dask_batch_em, on_dask)
            after = client.run(time.process_time), time.process_time()
    workers_cpu = sum(after[0][w] - before[0][w] for w in before[0]) / iterations
    client_cpu = (after[1] - before[1]) / iterations
    print(
        f"{lake}: {source.n_records:,} records, {len(source.files)} files; {n_workers} workers; median of "
        f"{iterations - 1} iterations (the first dropped); load {os.getloadavg()[0]:.2f}"
    )
    print_iterations(local, *iteration_spans(marks, stream.data))
    print_cpu(local_cpu, workers_cpu, client_cpu, idle)
    print_samples(samples)


def iteration_spans(marks: list[float], tasks_seen: list[dict]) -> tuple[list, list, list, list]:
    """Per cluster iteration (between two marks, the first dropped): its wall time, its longest
    task's compute, all its tasks' compute, and the rest of its task stream (transfers)."""
    walls, longest, computes, others = [], [], [], []
    for begin, end in zip(marks[1:-1], marks[2:]):
        tasks = [t for t in tasks_seen if any(begin <= ss["start"] < end for ss in t["startstops"])]
        spans = [ss for t in tasks for ss in t["startstops"] if begin <= ss["start"] < end]
        compute = [ss["stop"] - ss["start"] for ss in spans if ss["action"] == "compute"]
        walls.append(end - begin)
        longest.append(max(compute, default=0.0))
        computes.append(sum(compute))
        others.append(sum(ss["stop"] - ss["start"] for ss in spans if ss["action"] != "compute"))
    return walls, longest, computes, others


def print_iterations(local: Any, walls: list, longest: list, computes: list, others: list) -> None:
    """The medians of a local and a cluster iteration, and where the cluster's time goes."""
    med = lambda values: 1e3 * statistics.median(values)  # noqa: E731
    print(f"  local iteration (this process, read-ahead thread)   {med(local):7.1f} ms")
    print(
        f"  cluster iteration                                   {med(walls):7.1f} ms  ({med(walls) / med(local):.2f} of local)"
    )
    print(f"    longest task's compute                            {med(longest):7.1f} ms")
    print(f"    all tasks' compute, summed over workers           {med(computes):7.1f} ms")
    print(f"    transfers and deserialisation in the task stream  {med(others):7.1f} ms")
    print(f"    outside the longest task (scatter, scheduling, gather, M-step)  {med(walls) - med(longest):5.1f} ms")


def print_cpu(local_cpu: float, workers_cpu: float, client_cpu: float, idle: float) -> None:
    """CPU seconds per iteration, locally and on the cluster, and the idle workers' own."""
    print(
        f"  CPU per iteration: local process {1e3 * local_cpu:.1f} ms (all its threads); cluster: workers "
        f"{1e3 * workers_cpu:.1f} ms (all their threads, summed), this process "
        f"(client and scheduler) {1e3 * client_cpu:.1f} ms; the workers idle: {1e3 * idle:.1f} ms CPU per second"
    )


def print_samples(samples: dict) -> None:
    """Where the task thread's samples (``client.profile``'s tree) fall, by step of the pass."""
    totals: dict[str, int] = defaultdict(int)

    def walk(node: dict, path: set[str]) -> None:
        path = path | {node.get("description", {}).get("name", "")}
        own = node["count"] - sum(child["count"] for child in node["children"].values())
        totals[next((label for name, label in DASK_STEPS if name in path), "other")] += own
        for child in node["children"].values():
            walk(child, path)

    walk(samples, set())
    total = sum(totals.values()) or 1
    print(f"  inside the tasks, the task thread's {total} samples (client.profile):")
    for step, count in sorted(totals.items(), key=lambda item: -item[1]):
        print(f"    {step:<48}{100 * count / total:6.1f}%")


def main() -> None:
    parser = bench_common.parser(__doc__, lake=None)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=7, help="batch EM iterations per run (the first dropped)")
    parser.add_argument("--batch-size", type=int, default=8192)
    args = parser.parse_args()
    if not args.lake:
        parser.error("--lake is required (a lake of scripts/bench --matrix)")
    dask_profile(args.lake, args.iterations, args.workers, args.batch_size)


if __name__ == "__main__":
    main()
