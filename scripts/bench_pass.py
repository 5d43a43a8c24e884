"""Where the time of one online pass goes: decoding, the E-step kernel, the rest of each step.

On a Parquet lake (``write_lake``'s default for ``scripts/bench``: 1M x 16, K=8 full, sorted by
component; or ``--lake DIR``), in one process, each measured as the best of ``--repeat`` runs
(wall and CPU seconds; CPU counts every thread):

- bare decode: pyarrow ``iter_batches`` into a float64 array, as ``scripts/bench`` measures it;
- the source alone: ``ParquetSource.batches(8192)`` consumed with no work (decoding, checks,
  cutting into mini-batches, the read-ahead thread);
- the kernel alone: ``quadratic.chunk_statistics`` over the decoded 8192-record mini-batches,
  per compute dtype: the BLAS kernel, its steps (building Z, the two products, the softmax),
  and the fused C kernel the pass uses when it was built;
- the pass in memory: ``partial_fit`` on the decoded mini-batches (kernel + blend + M-step);
- the pass over the lake: ``partial_fit`` on the ``ParquetSource``, as the benchmark times it.

It then prints the CPU budget: a pass needs at least the source's CPU time plus the in-memory
pass's; spread perfectly over every core, that bounds the pass's speed as a fraction of bare
decode. Also: one-thread GEMM throughput on a large product and on the kernel's products, the
kernel's log-likelihoods against the direct form's (``MixtureParams.log_likelihood``), and
with ``--against COMMIT`` the kernel of that git commit timed on the same chunks.

    python scripts/bench_pass.py [--lake DIR] [--records N] [--repeat 5] [--against COMMIT]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench  # noqa: E402  (scripts/bench.py: the same decode and lake as the benchmark)

from streamgmm import ParquetSource, StreamingGaussianMixture  # noqa: E402
from streamgmm.datasets.synthetic_lake import read_truth  # noqa: E402
from streamgmm.kernels import quadratic  # noqa: E402

BATCH = 8192


def best(run: Callable[[], object], repeat: int) -> tuple[float, float]:
    """(wall, CPU) seconds of the fastest of ``repeat`` runs."""
    times = []
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        run()
        times.append((time.perf_counter() - wall, time.process_time() - cpu))
    return min(times)


def kernel_steps(chunks: list[np.ndarray], model: StreamingGaussianMixture, dtype: np.dtype) -> dict[str, float]:
    """Seconds in each step of ``chunk_statistics``' block loop, summed over the records."""
    params = model._state.params
    shift = model._state.statistics.shift
    V, _ = quadratic.expanded_log_density(params, shift)
    V = V.astype(dtype)
    d, k = chunks[0].shape[1], params.n_components
    block = quadratic.block_records(d, dtype)
    Z = np.empty((quadratic.n_quadratic_features(d), block), dtype=dtype)
    L = np.empty((k, block), dtype=dtype)
    spent = dict.fromkeys(("features Z", "log-densities V Z", "softmax", "statistics Z R'"), 0.0)
    with quadratic.one_blas_thread():
        for X, start in ((c, start) for c in chunks for start in range(0, c.shape[0] - block + 1, block)):
            t0 = time.perf_counter()
            quadratic.fill_features(X[start : start + block], shift, Z)
            t1 = time.perf_counter()
            np.matmul(V, Z, out=L)
            t2 = time.perf_counter()
            quadratic.softmax_columns(L)
            t3 = time.perf_counter()
            Z @ L.T
            t4 = time.perf_counter()
            for name, seconds in zip(spent, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                spent[name] += seconds
    return spent


def kernel_at(commit: str):
    """``streamgmm/quadratic.py`` as it was at ``commit``, loaded beside the current one."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    text = subprocess.run(
        ["git", "-C", root, "show", f"{commit}:streamgmm/quadratic.py"], check=True, capture_output=True, text=True
    ).stdout
    spec = importlib.util.spec_from_loader("streamgmm._quadratic_at_commit", loader=None)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "streamgmm"  # its relative imports resolve against the installed package
    exec(compile(text, f"{commit}:streamgmm/quadratic.py", "exec"), module.__dict__)
    return module


def gemm_one_thread(dtype: np.dtype, repeat: int) -> float:
    """GFLOP/s of a 2048 x 2048 product on one BLAS thread."""
    a = np.random.default_rng(0).normal(size=(2048, 2048)).astype(dtype)
    with quadratic.one_blas_thread():
        seconds = min(best(lambda: a @ a, 1)[0] for _ in range(repeat))
    return 2 * 2048**3 / seconds / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lake", help="a lake written by scripts/make_lake or scripts/bench (default: write one)")
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--against", help="also time the kernel of this git commit (e.g. a tag or hash)")
    args = parser.parse_args()
    with bench.lake_to_time(args.lake, args.records) as lake:
        report(lake, args.repeat, args.against)


def report(lake: str, repeat: int, against: str | None) -> None:
    _, names = read_truth(lake)
    source = ParquetSource(lake, passthrough=["id"])
    X = np.asfortranarray(np.concatenate(list(source.batches(65536))))
    n, d = X.shape
    # Mini-batches decoded as the source hands them over (each column contiguous): slices of
    # one long column-major array read each column 8 MB apart, which is slower.
    chunks = [np.asfortranarray(X[start : start + BATCH]) for start in range(0, n, BATCH)]
    per_million = 1e6 / n
    print(f"{n:,} records x {d} features, {os.cpu_count()} CPUs; best of {repeat}; seconds per million records")
    rows = []

    def row(label: str, wall: float, cpu: float) -> None:
        rows.append((label, wall * per_million, cpu * per_million))
        print(f"{label:42s} wall {wall * per_million:6.3f}  CPU {cpu * per_million:6.3f}", flush=True)

    decode = best(lambda: bench.decode(lake, names), repeat)
    row("bare decode (pyarrow iter_batches)", *decode)
    alone = best(lambda: sum(batch.shape[0] for batch in source.batches(BATCH)), repeat)
    row("the source alone (ParquetSource.batches)", *alone)
    budget = {}
    for dtype in ("float64", "float32"):
        model = StreamingGaussianMixture(8, random_state=0, compute_dtype=dtype).fit(source)
        params, shift = model._state.params, model._state.statistics.shift
        kernels = ["blas"] + (quadratic.FUSED_KERNELS[:1] if quadratic.fused_kernel_enabled() else [])
        p = quadratic.n_quadratic_features(d)
        flops = 2 * 2 * params.n_components * p * n / 1e9  # two K x p products per record
        for name in reversed(kernels):  # the one a pass uses first
            kernel = best(
                lambda: [quadratic.chunk_statistics(c, params, shift, np.dtype(dtype), name) for c in chunks], repeat
            )
            row(f"{dtype}: kernel alone ({'fused ' if name != 'blas' else ''}{name})", *kernel)
            direct = params.log_likelihood(chunks[0])
            got = quadratic.chunk_statistics(chunks[0], params, shift, np.dtype(dtype), name)[3]
            print(
                f"    largest |log-likelihood - direct float64 form| on {chunks[0].shape[0]} records: "
                f"{np.abs(got - direct).max():.1e}; {flops / (kernel[0] * n / X.shape[0]):.0f} GFLOP/s of 4Kp flops per record"
            )
        if against:
            before = kernel_at(against)
            then = best(lambda: [before.chunk_statistics(c, params, shift, np.dtype(dtype)) for c in chunks], repeat)
            row(f"{dtype}: kernel alone at {against}", *then)
        steps = min(
            (kernel_steps(chunks, model, np.dtype(dtype)) for _ in range(repeat)), key=lambda s: sum(s.values())
        )
        print(
            "    BLAS kernel's steps: "
            + ", ".join(f"{name} {seconds * per_million:.3f}" for name, seconds in steps.items())
        )
        one_core = gemm_one_thread(np.dtype(dtype), repeat)
        rate = flops / ((steps["log-densities V Z"] + steps["statistics Z R'"]) * n / X.shape[0])
        print(f"    its two products: {rate:.0f} GFLOP/s; a 2048^2 product on one thread: {one_core:.0f} GFLOP/s")
        memory = best(lambda: model.partial_fit(chunks), repeat)
        row(f"{dtype}: online pass in memory", *memory)
        lake_pass = best(lambda: model.partial_fit(source), repeat)
        row(f"{dtype}: online pass over the lake", *lake_pass)
        budget[dtype] = (memory[1], lake_pass[0])
    cores = os.cpu_count() or 1
    print(f"CPU budget ({cores} cores): the source's CPU + the in-memory pass's, spread over every core")
    for dtype, (memory_cpu, lake_wall) in budget.items():
        floor = (alone[1] + memory_cpu) / cores
        print(
            f"  {dtype}: at least {floor * per_million:.3f} s per million, so at most "
            f"{100 * decode[0] / floor:.0f}% of bare decode; measured {100 * decode[0] / lake_wall:.0f}%"
        )


if __name__ == "__main__":
    main()
