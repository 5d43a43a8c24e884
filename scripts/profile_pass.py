"""Where one online pass over a lake goes, thread by thread, through the public API only.

One process, one lake (``scripts/bench --matrix``'s 1M x 16, K=8 lakes: ``--lake DIR``). The
model is fitted as ``streamgmm fit --algorithm online --passes 1`` fits it (float64, row groups
shuffled, ``passthrough=["id"]``); every further pass is ``fit`` with ``warm_start=True`` and
``max_passes=1``: one more shuffled online pass from the fitted state, which is what the matrix's
"marginal online pass" times.

Printed, per ``--batch-sizes`` (default 8192, the default, then 16384 and 32768):

- rates: the median over ``--rounds`` of a pass without the profiler, against bare decode
  (``scripts/bench.py``'s ``decode``, measured in the same round);
- the profile of one pass (the median round's): each thread that ran (``MainThread``: the
  E-step, blend, M-step, re-seeding; the ``streamgmm-*`` threads: reading, decoding, cutting
  and handing batches over) with its wall and CPU
  seconds per million records, then the steps its functions' own time falls in (``STEPS``:
  function names as cProfile reports them), as a share of the pass's wall time. Each thread
  runs under a ``cProfile.Profile`` of its own (``threading.Thread.run`` is wrapped in this
  process); the package is not changed. The profiler slows the pass; the shares are what it
  shows.

``--cprofile N`` also prints the main thread's top N functions by own time. ``--passes-only N``
just runs N passes (for a sampling profiler around it), and ``--py-spy FILE`` summarises a
``py-spy record --threads --native --idle -f raw`` output of such a run by thread and step::

    .venv/bin/python scripts/profile_pass.py --lake /tmp/lakes/diag-1000000 --covariance diag
    .venv/bin/py-spy record --threads --native --idle -r 250 -f raw -o /tmp/diag.txt -- \\
        .venv/bin/python scripts/profile_pass.py --lake /tmp/lakes/diag-1000000 \\
        --covariance diag --passes-only 6
    .venv/bin/python scripts/profile_pass.py --py-spy /tmp/diag.txt

Batch EM on Dask has its own profile: ``scripts/profile_dask.py``.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import re
import statistics
import sys
import threading
import time
from collections import defaultdict
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common  # noqa: E402

MAIN = "MainThread"
N_COMPONENTS = 8

# Function names (as profilers report them), most specific first: the step a sample or a
# function's own time is charged to.
STEPS = [
    ("take_gil", "waiting for the GIL"),
    ("_fused", "C kernel"),
    ("acquire", "waiting: lock / queue"),
    ("get", "waiting: queue get (starved)"),
    ("put", "waiting: queue put (blocked)"),
    ("wait", "waiting: queue / thread"),
    ("cholesky", "M-step: cholesky"),
    ("to_params", "M-step (to_params)"),
    ("blend", "blend"),
    ("reseed", "re-seeding check"),
    ("lowest", "worst records"),
    ("expansion", "kernel inputs"),
    ("expanded_log_density", "kernel inputs"),
    ("direct_form", "kernel inputs"),
    ("chunk_statistics", "E-step wrapper"),
    ("online_update", "online step (rest)"),
    ("asfortranarray", "column-major copy"),
    ("in_range", "range / NaN check"),
    ("to_matrix", "to float64"),
    ("fragment", "footer / fragment"),
    ("read_row_group", "pyarrow decode"),
    ("iter_batches", "pyarrow decode"),
    ("chunks", "permute + gather"),
]


def step_of(names: set[str]) -> str:
    """The step of a stack (or a function) whose frames are ``names``."""
    return next((label for name, label in STEPS if name in names), "other")


class ThreadProfiles:
    """A cProfile profile, wall and CPU seconds per thread name, for the threads run while on."""

    def __init__(self) -> None:
        self.enabled = False
        self.stats: dict[str, list[pstats.Stats]] = defaultdict(list)
        self.seconds: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
        self._lock = threading.Lock()
        run = threading.Thread.run
        profiles = self

        def profiled_run(thread: threading.Thread) -> None:
            if not profiles.enabled:
                return run(thread)
            profiles.record(thread.name, lambda: run(thread))

        threading.Thread.run = profiled_run

    def record(self, name: str, body: Any) -> Any:
        """Run ``body()`` under a profile of its own, charged to thread ``name``."""
        profiler = cProfile.Profile()
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            return profiler.runcall(body)
        finally:
            wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
            with self._lock:
                self.seconds[name][0] += wall
                self.seconds[name][1] += cpu
                self.stats[name].append(pstats.Stats(profiler))

    def table(self, n: int, pass_wall: float) -> list[str]:
        """Per thread: wall and CPU seconds per million records, then its steps by own time."""
        scale = 1e6 / n
        lines = [f"{'thread / step (own time)':<48}{'wall s/M':>9}{'CPU s/M':>9}{'% pass':>8}"]
        for name in sorted(self.stats, key=lambda t: (t != MAIN, t)):
            wall, cpu = self.seconds[name]
            lines.append(f"{name:<48}{wall * scale:9.3f}{cpu * scale:9.3f}{100 * wall / pass_wall:8.1f}")
            steps: dict[str, float] = defaultdict(float)
            for stats in self.stats[name]:
                for (_, _, function), row in stats.stats.items():  # type: ignore[attr-defined]
                    steps[step_of(set(re.findall(r"\w+", function)))] += row[2]
            for step, own in sorted(steps.items(), key=lambda item: -item[1]):
                if own * scale >= 0.0005:
                    lines.append(f"  {step:<46}{own * scale:9.3f}{'':9}{100 * own / pass_wall:8.1f}")
        return lines


def build(lake: str, covariance: str, seed: int) -> tuple[Any, Any]:
    """The model after ``streamgmm fit --algorithm online --passes 1``, and its source."""
    from streamgmm import ParquetSource, StreamingGaussianMixture

    source = ParquetSource(lake, passthrough=["id"])
    model = StreamingGaussianMixture(
        N_COMPONENTS,
        covariance_type=covariance,
        algorithm="online",
        max_passes=1,
        random_state=seed,
        shuffle="row_groups",
    )
    return model.fit(source), source


def one_pass(model: Any, source: Any, batch_size: int, seed: int) -> tuple[float, float]:
    """Wall and process CPU seconds of one more shuffled online pass from the fitted state."""
    model.set_params(warm_start=True, batch_size=batch_size, random_state=seed)
    cpu = time.process_time()
    wall, _ = bench_common.timed(lambda: model.fit(source))
    return wall, time.process_time() - cpu


def profile(args: argparse.Namespace) -> None:
    import bench  # scripts/bench.py: the same bare decode as the matrix

    from streamgmm.datasets.synthetic_lake import read_truth

    _, names = read_truth(args.lake)
    model, source = build(args.lake, args.covariance, args.seed)
    n = source.n_records
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    if args.passes_only:
        for i in range(args.passes_only):
            one_pass(model, source, sizes[0], 100 + i)
        return
    print(
        f"{args.lake}: {n:,} records x {source.n_features} features, {args.covariance}, K={N_COMPONENTS}, "
        f"float64, row groups shuffled; {os.cpu_count()} CPUs; load {os.getloadavg()[0]:.2f}"
    )
    plain: dict[int, list[float]] = defaultdict(list)
    profiled: dict[int, list[tuple[float, float, ThreadProfiles]]] = defaultdict(list)
    decodes = []
    for round_ in range(args.rounds):
        decodes.append(bench.decode(args.lake, names)["seconds"])
        for size in sizes:  # in each round: a pass without the profiler, then one with
            plain[size].append(one_pass(model, source, size, 1000 * round_ + size)[0])
            profiles = ThreadProfiles()
            profiles.enabled = True
            wall, cpu = profiles.record(MAIN, lambda: one_pass(model, source, size, 1000 * round_ + size + 1))  # noqa: B023
            profiles.enabled = False
            profiled[size].append((wall, cpu, profiles))
        bench_common.note(f"round {round_ + 1} done, load {os.getloadavg()[0]:.2f}")
    decode = statistics.median(decodes)
    print(f"bare decode: median {decode:.3f} s ({n / decode / 1e6:.2f} M records/s) over {args.rounds} rounds")
    for size in sizes:
        wall, cpu, profiles = sorted(profiled[size], key=lambda r: r[0])[len(profiled[size]) // 2]
        seconds = statistics.median(plain[size])
        print(
            f"\nbatch_size {size}: pass without the profiler, median of {args.rounds}: {seconds:.3f} s "
            f"({n / seconds / 1e6:.2f} M records/s, {decode / seconds:.3f} of bare decode); "
            f"profiled, the median run: {wall:.3f} s, process CPU {cpu * 1e6 / n:.3f} s/M ({cpu / wall:.2f} cores busy)"
        )
        print("\n".join(profiles.table(n, wall)))
    if args.cprofile:
        profiler = cProfile.Profile()
        profiler.runcall(one_pass, model, source, sizes[0], 7)
        print(f"\ncProfile, main thread, one pass at batch_size {sizes[0]}, top {args.cprofile} by own time:")
        pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(args.cprofile)


def summarise_py_spy(path: str) -> None:
    """Samples of a ``py-spy record --threads --idle -f raw`` output of ``--passes-only`` by
    thread and step, leaving out the first fit (the main thread's ``build``)."""
    totals: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    with open(path) as lines:
        for line in lines:
            stack, _, count = line.rstrip().rpartition(" ")
            frames = stack.split(";")
            thread = frames[0].partition(": ")[2] or "other threads"
            names = {frame.split(" (")[0].rsplit(".", 1)[-1] for frame in frames[1:]}
            names |= {"_fused" for frame in frames if "streamgmm/kernels/_fused" in frame}
            if thread == MAIN and "one_pass" not in names:
                continue  # the first fit, or start-up
            step = step_of(names)
            totals[thread][step] += int(count)
    for thread, steps in sorted(totals.items(), key=lambda item: (item[0] != MAIN, item[0])):
        total = sum(steps.values())
        print(f"{thread}: {total} samples")
        for step, count in sorted(steps.items(), key=lambda item: -item[1]):
            print(f"  {step:<40}{count:8d}{100 * count / total:7.1f}%")


def main() -> None:
    parser = bench_common.parser(__doc__, lake=None, covariance="full", seed=0)
    parser.add_argument("--batch-sizes", default="8192,16384,32768")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cprofile", type=int, default=0, metavar="N", help="print cProfile's top N functions")
    parser.add_argument("--passes-only", type=int, default=0, metavar="N", help="only run N passes (for py-spy)")
    parser.add_argument("--py-spy", metavar="FILE", help="summarise a py-spy raw output and exit")
    args = parser.parse_args()
    if args.py_spy:
        summarise_py_spy(args.py_spy)
        return
    if not args.lake:
        parser.error("--lake is required (a lake of scripts/bench --matrix)")
    profile(args)


if __name__ == "__main__":
    main()
