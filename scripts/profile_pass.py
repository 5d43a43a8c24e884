"""Where one online pass over a lake goes, thread by thread: a profile of the matrix's pass.

One process, one lake (``scripts/bench --matrix``'s 1M x 16, K=8 lakes: ``--lake DIR``). The
model is fitted as ``streamgmm fit --algorithm online --passes 1`` fits it (float64, row groups
shuffled, ``--passthrough id``, the CLI's ``ProgressSource`` with its bar off); then further
passes are run the way the CLI's second pass runs (the estimator's online runner, a shuffled
visit, the trace callback), which is what the matrix's "marginal online pass" times.

Printed, per ``--batch-sizes`` (default 8192, the default, then 16384 and 32768):

- rates: the median over ``--rounds`` of an uninstrumented pass, against bare decode
  (``scripts/bench.py``'s ``decode``, measured in the same round);
- the timers table (one instrumented pass per round, the median round shown): for each of the
  threads of a pass (``streamgmm-decode``, in a shuffled pass: pyarrow decode, to float64, the
  range/NaN check; ``streamgmm-prefetch``: the row-group permutation and gather, and in file
  order the decode too; ``streamgmm-batches-ahead``: the hand-over, and a column-major copy where
  a batch needs one; ``MainThread``: the E-step, blend, M-step, re-seeding) the wall and CPU seconds per
  million records in each step, as a share of the pass's wall time, including the time each
  waits on its queue (``get``: starved; ``put``: blocked by the next stage). Rows are inclusive;
  an indented row is part of the row above it, ``(rest)`` is what the named rows do not cover.
  Timers wrap the functions named below in this process only; nothing in the package changes.

With ``--cprofile`` it also prints cProfile's top functions (by own time) of the main thread
over one pass. ``--passes-only N`` just runs N passes (for a sampling profiler around it), and
``--py-spy FILE`` summarises a ``py-spy record --threads --native --idle -f raw`` output of such
a run by thread (recognised by its frames) and step::

    .venv/bin/python scripts/profile_pass.py --lake /tmp/f17/lakes/diag-1000000 --covariance diag
    .venv/bin/py-spy record --threads --native --idle -r 250 -f raw -o /tmp/diag.txt -- \\
        .venv/bin/python scripts/profile_pass.py --lake /tmp/f17/lakes/diag-1000000 \\
        --covariance diag --passes-only 6
    .venv/bin/python scripts/profile_pass.py --py-spy /tmp/diag.txt

Batch EM on Dask has its own profile: ``scripts/profile_dask.py``.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import os
import pstats
import queue
import statistics
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from py_spy_summary import summarise_py_spy  # noqa: E402

MAIN, PREFETCH, AHEAD = "MainThread", "streamgmm-prefetch", "streamgmm-batches-ahead"
DECODE = "streamgmm-decode"
THREADS = (DECODE, PREFETCH, AHEAD, MAIN)


class Timers:
    """Inclusive wall and CPU seconds per (thread name, label), and each thread's lifetime."""

    def __init__(self) -> None:
        self.wall: dict[tuple[str, str], float] = defaultdict(float)
        self.cpu: dict[tuple[str, str], float] = defaultdict(float)
        self.calls: dict[tuple[str, str], int] = defaultdict(int)
        self.lock = threading.Lock()
        self.enabled = False

    def add(self, thread: str, label: str, wall: float, cpu: float) -> None:
        with self.lock:
            self.wall[thread, label] += wall
            self.cpu[thread, label] += cpu
            self.calls[thread, label] += 1

    def wrap(self, label: str, function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if not self.enabled:
                return function(*args, **kwargs)
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                name = threading.current_thread().name
                self.add(name, label, time.perf_counter() - wall, time.thread_time() - cpu)

        return timed

    def reset(self) -> None:
        self.wall.clear()
        self.cpu.clear()
        self.calls.clear()


class _Proxy:
    """A module whose ``run`` (the C kernel's entry) is timed; every other name passes through."""

    def __init__(self, module: Any, timers: Timers):
        self._module = module
        self.run = timers.wrap("C kernel (_fused.run)", module.run)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)


def instrument(timers: Timers) -> None:
    """Wrap the steps of a pass with ``timers`` where the package looks them up."""
    import streamgmm.em.online as online
    import streamgmm.io.columns as columns
    import streamgmm.io.lake_footers as lake_footers
    import streamgmm.io.parquet_source as parquet_source
    import streamgmm.kernels.chunk as chunk
    import streamgmm.kernels.quadratic as quadratic
    from streamgmm.mixture.statistics import SufficientStatistics

    def patch(owner: Any, name: str, label: str) -> None:
        if hasattr(owner, name):
            setattr(owner, name, timers.wrap(label, getattr(owner, name)))
        else:
            print(f"(no {name} in {owner.__name__}: not timed)", file=sys.stderr)

    # the compute thread
    patch(online, "online_update", "online_update (one step)")
    patch(online, "chunk_statistics", "E-step (chunk_statistics)")
    patch(chunk, "expansion", "kernel inputs (expansion)")
    patch(quadratic, "expanded_log_density", "kernel inputs (expanded_log_density)")
    patch(quadratic, "direct_form", "kernel inputs (direct_form)")
    if quadratic._fused is not None:
        quadratic._fused = _Proxy(quadratic._fused, timers)
    patch(online, "lowest", "worst records (lowest)")
    patch(online, "blend_step", "blend_step (blend, M-step, re-seed)")
    patch(SufficientStatistics, "blend", "blend")
    patch(SufficientStatistics, "to_params", "M-step (to_params)")
    patch(np.linalg, "cholesky", "cholesky")
    patch(online, "reseed", "re-seeding check (reseed)")
    # the reading threads
    patch(parquet_source.ParquetSource, "_group_rows", "row group read (_group_rows)")
    patch(lake_footers.FooterCache, "fragment", "footer / fragment (FooterCache.fragment)")
    patch(columns.FeatureReader, "features", "to float64 + checks (FeatureReader.features)")
    patch(columns, "to_matrix", "to float64 (to_matrix)")
    patch(columns, "in_range", "range / NaN check (in_range)")
    patch(np, "asfortranarray", "column-major copy (asfortranarray)")
    patch(queue.Queue, "get", "waiting: queue get (starved)")
    patch(queue.Queue, "put", "waiting: queue put (blocked)")
    run = threading.Thread.run

    def timed_run(self: threading.Thread) -> None:
        if not timers.enabled:
            return run(self)
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            run(self)
        finally:
            timers.add(self.name, "thread", time.perf_counter() - wall, time.thread_time() - cpu)

    threading.Thread.run = timed_run


# Rows of the table: (thread, label, depth); a row's "(rest)" is itself minus its children.
LAYOUT = {
    DECODE: [
        ("thread", 0),
        ("row group read (_group_rows)", 1),
        ("footer / fragment (FooterCache.fragment)", 2),
        ("to float64 + checks (FeatureReader.features)", 2),
        ("to float64 (to_matrix)", 3),
        ("range / NaN check (in_range)", 3),
        ("waiting: queue get (starved)", 1),
        ("waiting: queue put (blocked)", 1),
    ],
    PREFETCH: [
        ("thread", 0),
        ("waiting: queue get (starved)", 1),
        ("row group read (_group_rows)", 1),
        ("footer / fragment (FooterCache.fragment)", 2),
        ("to float64 + checks (FeatureReader.features)", 2),
        ("to float64 (to_matrix)", 3),
        ("range / NaN check (in_range)", 3),
        ("waiting: queue put (blocked)", 1),
    ],
    AHEAD: [
        ("thread", 0),
        ("waiting: queue get (starved)", 1),
        ("column-major copy (asfortranarray)", 1),
        ("waiting: queue put (blocked)", 1),
    ],
    MAIN: [
        ("pass", 0),
        ("waiting: queue get (starved)", 1),
        ("online_update (one step)", 1),
        ("E-step (chunk_statistics)", 2),
        ("kernel inputs (expansion)", 3),
        ("kernel inputs (expanded_log_density)", 3),
        ("kernel inputs (direct_form)", 3),
        ("C kernel (_fused.run)", 3),
        ("worst records (lowest)", 2),
        ("blend_step (blend, M-step, re-seed)", 2),
        ("blend", 3),
        ("M-step (to_params)", 3),
        ("cholesky", 4),
        ("re-seeding check (reseed)", 3),
    ],
}
REST = {
    DECODE: {
        "thread": "generators, free-array wait",
        "row group read (_group_rows)": "pyarrow decode + copy into array",
    },
    PREFETCH: {"thread": "permute + gather + rebatch + generators", "row group read (_group_rows)": "pyarrow decode"},
    AHEAD: {"thread": "generators, ProgressSource"},
    MAIN: {
        "pass": "loop, trace callback",
        "online_update (one step)": "step size, gather of worst",
        "E-step (chunk_statistics)": "wrapper: arrays, statistics",
        "blend_step (blend, M-step, re-seed)": "state objects",
    },
}


def table(cells: dict[tuple[str, str], tuple[float, float, int]], n: int, pass_wall: float, batches: int) -> list[str]:
    """The timers of one pass as lines: seconds per million records and % of the pass's wall."""
    scale = 1e6 / n
    lines = [f"{'thread / step':<58}{'wall s/M':>9}{'CPU s/M':>9}{'% pass':>8}{'calls':>7}"]
    for thread in THREADS:
        rows = LAYOUT[thread]
        for i, (label, depth) in enumerate(rows):
            wall, cpu, calls = cells.get((thread, label), (0.0, 0.0, 0))
            if calls == 0:
                continue
            name = f"{thread}: {label}" if depth == 0 else "  " * depth + label
            lines.append(f"{name:<58}{wall * scale:9.3f}{cpu * scale:9.3f}{100 * wall / pass_wall:8.1f}{calls:7d}")
            children = []
            for child, child_depth in rows[i + 1 :]:
                if child_depth <= depth:
                    break
                if child_depth == depth + 1 and (thread, child) in cells:
                    children.append(cells[thread, child])
            if children and label in REST.get(thread, {}):
                rest_wall = wall - sum(c[0] for c in children)
                rest_cpu = cpu - sum(c[1] for c in children)
                rest = "  " * (depth + 1) + f"(rest: {REST[thread][label]})"
                lines.append(
                    f"{rest:<58}{rest_wall * scale:9.3f}{rest_cpu * scale:9.3f}{100 * rest_wall / pass_wall:8.1f}"
                )
    threads_cpu = sum(cells[thread, "pass" if thread == MAIN else "thread"][1] for thread in THREADS)
    process_cpu = cells["process", "CPU"][1]
    lines.append(f"{'other threads (pyarrow pool, BLAS): CPU':<58}{'':9}{(process_cpu - threads_cpu) * scale:9.3f}")
    lines.append(f"{'process: CPU, cores busy':<58}{'':9}{process_cpu * scale:9.3f}{process_cpu / pass_wall:8.2f}")
    main_wall, main_cpu, _ = cells[MAIN, "pass"]
    kernel = cells.get((MAIN, "C kernel (_fused.run)"), (0.0, 0.0, 0))
    waiting = cells.get((MAIN, "waiting: queue get (starved)"), (0.0, 0.0, 0))[0]
    fixed = main_wall - kernel[0] - waiting
    fixed_cpu = main_cpu - kernel[1]
    lines.append(
        f"{batches} mini-batches; the compute thread outside the C kernel and its queue: wall "
        f"{1e3 * fixed / batches:.3f} ms per mini-batch ({fixed * scale:.3f} s/M), CPU "
        f"{1e3 * fixed_cpu / batches:.3f} ms ({fixed_cpu * scale:.3f} s/M)"
    )
    return lines


def build(lake: str, covariance: str, seed: int) -> tuple[Any, Any]:
    """The model after ``streamgmm fit --algorithm online --passes 1``, and the CLI's source."""
    from streamgmm import ParquetSource, StreamingGaussianMixture
    from streamgmm.cli.command import ProgressSource

    source = ProgressSource(ParquetSource(lake, passthrough=["id"]), False, "fit")
    model = StreamingGaussianMixture(
        8, covariance_type=covariance, algorithm="online", max_passes=1, random_state=seed, shuffle="row_groups"
    )
    return model.fit(source), source


def one_pass(model: Any, source: Any, batch_size: int, seed: int | None) -> tuple[float, float, float]:
    """Wall, main-thread and process CPU seconds of one more pass from the fitted state, as the CLI's second."""
    from streamgmm.em.fit_history import FitHistory

    model.set_params(batch_size=batch_size)
    runners = model._runners(source, None)
    start, cpu, process = time.perf_counter(), time.thread_time(), time.process_time()
    model._run_online(
        source,
        model._state,
        runners,
        FitHistory(),
        max_passes=1,
        rng=None if seed is None else np.random.default_rng(seed),
    )
    return time.perf_counter() - start, time.thread_time() - cpu, time.process_time() - process


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
    package = os.path.dirname(sys.modules["streamgmm"].__file__)
    commit = os.popen(f"git -C {package} describe --always --dirty 2>/dev/null").read().strip() or "not a git checkout"
    print(
        f"{args.lake}: {n:,} records x {source.n_features} features, {source.n_row_groups} row groups, "
        f"{args.covariance}, K=8, float64, row groups shuffled; {os.cpu_count()} CPUs; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load {os.getloadavg()[0]:.2f}; "
        f"streamgmm from {package} ({commit})"
    )
    timers = Timers()
    instrument(timers)
    passes: dict[int, list[float]] = defaultdict(list)
    in_order: list[float] = []
    decodes: list[float] = []
    profiled: dict[int, list[tuple[float, dict]]] = defaultdict(list)
    for round_ in range(args.rounds):
        decodes.append(bench.decode(args.lake, names)["seconds"])
        in_order.append(one_pass(model, source, sizes[0], None)[0])
        for size in sizes:  # in each round: a pass without timers, then one with
            passes[size].append(one_pass(model, source, size, 1000 * round_ + size)[0])
            timers.reset()
            timers.enabled = True
            wall, cpu, process = one_pass(model, source, size, 1000 * round_ + size + 1)
            timers.enabled = False
            timers.add(MAIN, "pass", wall, cpu)
            timers.add("process", "CPU", wall, process)
            cells = {key: (timers.wall[key], timers.cpu[key], timers.calls[key]) for key in timers.wall}
            profiled[size].append((wall, cells))
        print(f"round {round_ + 1} done, load {os.getloadavg()[0]:.2f}", file=sys.stderr, flush=True)
    decode = statistics.median(decodes)
    print(f"bare decode: median {decode:.3f} s ({n / decode / 1e6:.2f} M records/s) over {args.rounds} rounds")
    plain = statistics.median(in_order)
    print(
        f"a pass in file order (no shuffle), batch_size {sizes[0]}: {plain:.3f} s ({decode / plain:.3f} of bare decode)"
    )
    for size in sizes:
        runs = profiled[size]
        wall, cells = sorted(runs, key=lambda r: r[0])[len(runs) // 2]
        plain = statistics.median(passes[size])
        print(
            f"\nbatch_size {size}: pass without timers, median of {len(passes[size])}: {plain:.3f} s "
            f"({n / plain / 1e6:.2f} M records/s, {decode / plain:.3f} of bare decode); "
            f"with timers, the median run: {wall:.3f} s ({decode / wall:.3f} of bare decode)"
        )
        print("\n".join(table(cells, n, wall, -(-n // size))))
    print()
    print("\n".join(reader_steps(source, sizes[0], args.rounds)))
    if args.cprofile:
        profiler = cProfile.Profile()
        profiler.enable()
        one_pass(model, source, sizes[0], 7)
        profiler.disable()
        print(
            f"\ncProfile, main thread, one pass at batch_size {sizes[0]} (timers on), top {args.cprofile} by own time:"
        )
        stats = pstats.Stats(profiler, stream=sys.stdout)
        stats.sort_stats("tottime").print_stats(args.cprofile)


def reader_steps(source: Any, batch_size: int, repeat: int) -> list[str]:
    """The reading thread's steps, each alone on this thread over the whole lake (best of
    ``repeat``, CPU seconds per million records), and a gather that skips two copies."""
    from streamgmm.io.columns import in_range, to_matrix

    lake = source.source if hasattr(source, "source") else source
    names = lake.feature_names
    groups = [lake.row_groups[i] for i in range(lake.n_row_groups)]
    n = lake.n_records
    decoded = [[to_matrix(batch, names) for batch, _ in lake.record_batches(g, names, 65536)] for g in groups]
    columns = [np.asfortranarray(np.concatenate(parts)) for parts in decoded]
    rows = [np.ascontiguousarray(X) for X in columns]
    rng = np.random.default_rng(0)
    orders = [rng.permutation(X.shape[0]) for X in rows]

    def scan() -> None:
        for g in groups:
            for batch, _ in lake.record_batches(g, names, 65536):
                batch.column(0)

    def scan_to_matrix() -> None:
        for g in groups:
            for batch, _ in lake.record_batches(g, names, 65536):
                in_range(to_matrix(batch, names))

    def gather(pick: Callable[[np.ndarray, np.ndarray], np.ndarray], source: list, fortran: bool) -> Callable:
        def run() -> None:
            for X, order in zip(source, orders):
                for start in range(0, X.shape[0], batch_size):
                    batch = pick(X, order[start : start + batch_size])
                    if fortran:
                        np.asfortranarray(batch)

        return run

    def by_column(F: np.ndarray, index: np.ndarray) -> np.ndarray:
        out = np.empty((index.shape[0], F.shape[1]), order="F")
        for j in range(F.shape[1]):
            np.take(F[:, j], index, out=out[:, j])
        return out

    fancy, take = (lambda X, index: X[index]), (lambda X, index: np.take(X, index, axis=0))
    steps = [
        ("pyarrow scan of the row groups (record_batches)", scan),
        ("  + to float64 (to_matrix) + in_range", scan_to_matrix),
        ("to row-major (the copy into _group_rows' array)", lambda: [np.ascontiguousarray(X) for X in columns]),
        ("permutation of each row group", lambda: [rng.permutation(X.shape[0]) for X in rows]),
        ("gather rows[order] (row-major)", gather(fancy, rows, False)),
        ("gather rows[order] + asfortranarray (as now)", gather(fancy, rows, True)),
        ("instead: np.take(rows, order, axis=0)", gather(take, rows, False)),
        ("instead: np.take(rows, order, axis=0) + asfortranarray", gather(take, rows, True)),
        ("instead: np.take per column into a column-major batch", gather(by_column, columns, False)),
    ]
    lines = [f"the reading thread's steps alone (in turn, best of {repeat}; CPU s per million records, every thread):"]
    for label, run in steps:
        best = min(_cpu(run) for _ in range(repeat))
        lines.append(f"  {label:<56}{best * 1e6 / n:7.3f}")
    return lines


def _cpu(run: Callable[[], Any]) -> float:
    start = time.process_time()  # pyarrow decodes in its own threads
    run()
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lake", help="a lake of scripts/bench --matrix (e.g. /tmp/f17/lakes/full-1000000)")
    parser.add_argument("--covariance", default="full", choices=["full", "tied", "diag", "spherical"])
    parser.add_argument("--batch-sizes", default="8192,16384,32768")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cprofile", type=int, default=0, metavar="N", help="print cProfile's top N functions")
    parser.add_argument("--passes-only", type=int, default=0, metavar="N", help="only run N passes (for py-spy)")
    parser.add_argument("--py-spy", metavar="FILE", help="summarise a py-spy raw output and exit")
    args = parser.parse_args()
    if args.py_spy:
        summarise_py_spy(args.py_spy, MAIN, (DECODE, PREFETCH, AHEAD), THREADS)
        return
    if not args.lake:
        parser.error("--lake is required")
    profile(args)


if __name__ == "__main__":
    main()
