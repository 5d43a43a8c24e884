"""Compiled E-step kernels (numba) against streamgmm's BLAS and C kernels: can numba fuse it?

Issue 4 asks for an online pass at >= 50% of bare decode; ``scripts/bench_pass.py`` shows the
compute per record would have to roughly halve. The obvious way is a compiled kernel that fuses
building the features, the log-densities, the softmax and the statistics per record, so nothing
but the statistics leaves the cache, and that skips the statistics of responsibilities that are
zero to float32 (below e^-80 of a record's largest). This script times such kernels, written the
two ways numba vectorises (one record at a time, and tiles of records along the vector lanes),
and their parts on their own, against ``quadratic.chunk_statistics`` on the same mini-batches:

- fused kernels: counts, sums, second moments and log-likelihoods of each 8192-record mini-batch
  (the difference from the BLAS kernel's results is printed);
- the features Z of a block: numba against ``quadratic.fill_features`` (numpy);
- the log-densities V Z of a block whose Z is in cache: numba loops against ``np.matmul``.

The fused C kernel that streamgmm uses (``streamgmm/_fused.c``, where it was built) is timed
beside them. numba is not a dependency of streamgmm (it comes with the test extra's
dask-ml); the script says so and stops when it is missing. Each timing is the best of ``--repeat`` interleaved rounds, in
seconds per million records, on one thread.

    python scripts/bench_numba.py [--lake DIR] [--records N] [--repeat 5]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench  # noqa: E402  (scripts/bench.py: the same lake as the benchmark)

from streamgmm import ParquetSource, StreamingGaussianMixture  # noqa: E402
from streamgmm.kernels import quadratic  # noqa: E402

try:
    import numba
except ImportError:  # pragma: no cover - depends on the environment
    numba = None

BATCH = 8192
TILE = 64  # records along the vector lanes: 4 AVX-512 vectors in float32; 16 or 32 were slower
# A responsibility below e^-80 of its record's largest (1.8e-35) is zero to a float32 sum.
NEGLIGIBLE = -80.0
FLUSH = 4096  # records summed in the compute dtype before adding to the float64 statistics


def compiled(function: Callable) -> Callable:
    return numba.njit(fastmath=True, nogil=True)(function)


def fused_per_record(X, shift, V, direct, W, direct_constant, S, log_norm):
    """One record at a time: z (p) in L1, K dot products, softmax, then z added to the
    statistics of each component whose responsibility is not negligible."""
    n, d = X.shape
    K, p = V.shape
    dtype = V.dtype.type
    zero, half, one = dtype(0.0), dtype(0.5), dtype(1.0)
    z = np.empty(p, V.dtype)
    L = np.empty(K, V.dtype)
    partial = np.zeros((K, p), V.dtype)
    for r in range(n):
        z[0] = 1.0
        for i in range(d):
            z[1 + i] = X[r, i] - shift[i]
        row = d + 1
        for i in range(d):
            ui = z[1 + i]
            for j in range(i, d):
                z[row] = ui * z[1 + j]
                row += 1
        for k in range(K):
            acc = zero
            for j in range(p):
                acc += V[k, j] * z[j]
            L[k] = acc
        for c in direct:
            q = zero
            for i in range(d):
                a = zero
                for j in range(d + 1):
                    a += W[c * d + i, j] * z[j]
                q += a * a
            L[c] = direct_constant[c] - half * q
        peak = L[0]
        for k in range(1, K):
            peak = max(peak, L[k])
        total = zero
        for k in range(K):
            e = L[k] - peak
            L[k] = dtype(math.exp(e)) if e > NEGLIGIBLE else zero
            total += L[k]
        log_norm[r] = math.log(total) + peak
        inverse = one / total
        for k in range(K):
            if L[k] != zero:
                g = L[k] * inverse
                for j in range(p):
                    partial[k, j] += g * z[j]
        if (r + 1) % FLUSH == 0 or r == n - 1:
            S += partial
            partial[:] = 0.0


def fused_tiles(X, shift, V, direct, W, direct_constant, S, log_norm):
    """TILE records at a time along the vector lanes: the features Zt (p, TILE) and the
    log-densities (K, TILE) as vector loops over the tile, then per record the softmax and the
    statistics of its non-negligible components (from a record-major full-square copy of z)."""
    n, d = X.shape
    K, p = V.shape
    dtype = V.dtype.type
    zero, half, one = dtype(0.0), dtype(0.5), dtype(1.0)
    Zt = np.empty((p, TILE), V.dtype)
    L = np.empty((K, TILE), V.dtype)
    a = np.empty(TILE, V.dtype)
    q = np.empty(TILE, V.dtype)
    wide = 1 + d + d * d
    z = np.empty(wide, V.dtype)
    partial = np.zeros((K, wide), V.dtype)
    since_flush = 0
    for start in range(0, n, TILE):
        b = min(TILE, n - start)
        Zt[:, b:] = 0.0
        Zt[0, :] = 1.0
        for i in range(d):
            for t in range(b):
                Zt[1 + i, t] = X[start + t, i] - shift[i]
        row = d + 1
        for i in range(d):
            for j in range(i, d):
                for t in range(TILE):
                    Zt[row, t] = Zt[1 + i, t] * Zt[1 + j, t]
                row += 1
        L[:] = 0.0
        for j in range(p):
            for k in range(K):
                v = V[k, j]
                for t in range(TILE):
                    L[k, t] += v * Zt[j, t]
        for c in direct:
            q[:] = 0.0
            for i in range(d):
                a[:] = 0.0
                for j in range(d + 1):
                    w = W[c * d + i, j]
                    for t in range(TILE):
                        a[t] += w * Zt[j, t]
                for t in range(TILE):
                    q[t] += a[t] * a[t]
            for t in range(TILE):
                L[c, t] = direct_constant[c] - half * q[t]
        for t in range(b):
            peak = L[0, t]
            for k in range(1, K):
                peak = max(peak, L[k, t])
            total = zero
            for k in range(K):
                e = L[k, t] - peak
                L[k, t] = dtype(math.exp(e)) if e > NEGLIGIBLE else zero
                total += L[k, t]
            log_norm[start + t] = math.log(total) + peak
            inverse = one / total
            z[0] = 1.0
            for i in range(d):
                z[1 + i] = Zt[1 + i, t]
            for i in range(d):
                ui = z[1 + i]
                for j in range(d):
                    z[1 + d + i * d + j] = ui * z[1 + j]
            for k in range(K):
                if L[k, t] != zero:
                    g = L[k, t] * inverse
                    for j in range(wide):
                        partial[k, j] += g * z[j]
        since_flush += b
        if since_flush >= FLUSH or start + TILE >= n:
            S += partial
            partial[:] = 0.0
            since_flush = 0


def features(X, shift, Z):
    """``quadratic.fill_features`` as loops."""
    b, d = X.shape
    Z[0, :] = 1.0
    for i in range(d):
        for t in range(b):
            Z[1 + i, t] = X[t, i] - shift[i]
    row = d + 1
    for i in range(d):
        for j in range(i, d):
            for t in range(b):
                Z[row, t] = Z[1 + i, t] * Z[1 + j, t]
            row += 1


def products(V, Z, L):
    """L = V Z with the records along the vector lanes (numba vectorises innermost loops only)."""
    K, p = V.shape
    L[:] = 0.0
    for j in range(p):
        for k in range(K):
            v = V[k, j]
            for t in range(Z.shape[1]):
                L[k, t] += v * Z[j, t]


class FusedKernel:
    """``quadratic.chunk_statistics``' interface over a compiled fused loop."""

    def __init__(self, loop: Callable, square: bool):
        self.loop, self.square = compiled(loop), square

    def __call__(self, X, params, shift, dtype):
        n, d = X.shape
        k = params.n_components
        V, error_scale = quadratic.expanded_log_density(params, shift)
        direct = quadratic.direct_components(error_scale, dtype)
        W, direct_constant = quadratic.direct_form(params, shift, direct, dtype)
        V[direct] = 0.0
        wide = 1 + d + d * d if self.square else quadratic.n_quadratic_features(d)
        S = np.zeros((k, wide))
        log_norm = np.empty(n)
        self.loop(X, shift.astype(dtype), V.astype(dtype), direct, W, direct_constant, S, log_norm)
        counts, sums = S[:, 0], np.ascontiguousarray(S[:, 1 : d + 1])
        if self.square:
            second = S[:, d + 1 :].reshape(k, d, d)
        else:
            rows, cols = quadratic.upper_triangle(d)
            second = np.empty((k, d, d))
            second[:, rows, cols] = S[:, d + 1 :]
            second[:, cols, rows] = S[:, d + 1 :]
        return counts, sums, second, log_norm


def interleaved(methods: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Best wall seconds of each method over ``repeat`` rounds, the methods taking turns."""
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(repeat):
        for name, run in methods.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: min(seconds) for name, seconds in times.items()}


def report(lake: str, repeat: int) -> None:
    source = ParquetSource(lake, passthrough=["id"])
    X = np.asfortranarray(np.concatenate(list(source.batches(65536))))
    n, d = X.shape
    chunks = [np.asfortranarray(X[start : start + BATCH]) for start in range(0, n, BATCH)]
    per_million = 1e6 / n
    kernels = {
        "per record": FusedKernel(fused_per_record, square=False),
        "tiles": FusedKernel(fused_tiles, square=True),
    }
    print(
        f"{n:,} records x {d} features, K=8 full; numba {numba.__version__}; one thread; best of {repeat}; "
        "seconds per million records"
    )
    with quadratic.one_blas_thread():
        for dtype in (np.dtype("float32"), np.dtype("float64")):
            model = StreamingGaussianMixture(8, random_state=0, compute_dtype=dtype.name).fit(source)
            params, shift = model._state.params, model._state.statistics.shift
            # The last mini-batch is shorter: its records end part way through a tile.
            checked = (chunks[0], chunks[-1])
            expected = [quadratic.chunk_statistics(c, params, shift, dtype, kernel="blas") for c in checked]
            for name, kernel in kernels.items():
                start = time.perf_counter()
                got = [kernel(c, params, shift, dtype) for c in checked]
                compile_seconds = time.perf_counter() - start
                worst = max(np.abs(a - b).max() / np.abs(a).max() for e, g in zip(expected, got) for a, b in zip(e, g))
                print(
                    f"{dtype.name} fused, {name}: compiled in {compile_seconds:.1f} s; largest difference from "
                    f"the BLAS kernel's statistics and log-likelihoods {worst:.1e} (relative to each's largest)"
                )

            def run_all(kernel: Callable) -> Callable[[], object]:
                return lambda: [kernel(c, params, shift, dtype) for c in chunks]

            contenders = {
                "BLAS kernel (chunk_statistics)": run_all(lambda *a: quadratic.chunk_statistics(*a, kernel="blas"))
            }
            contenders |= {f"fused, {name}": run_all(k) for name, k in kernels.items()}
            if quadratic.FUSED_KERNELS:
                c_kernel = quadratic.FUSED_KERNELS[0]
                contenders[f"fused C kernel ({c_kernel})"] = run_all(
                    lambda *a: quadratic.chunk_statistics(*a, kernel=c_kernel)
                )
            fused = interleaved(contenders, repeat)
            for name, seconds in fused.items():
                print(f"  {dtype.name} {name:34s} {seconds * per_million:.3f}")

            block = quadratic.block_records(d, dtype)
            p = quadratic.n_quadratic_features(d)
            Z_numpy, Z_numba = np.empty((p, block), dtype), np.empty((p, block), dtype)
            V = quadratic.expanded_log_density(params, shift)[0].astype(dtype)
            L = np.empty((params.n_components, block), dtype)
            fill, product = compiled(features), compiled(products)
            fill(chunks[0][:block], shift.astype(dtype), Z_numba)
            product(V, Z_numba, L)
            blocks = [c[start : start + block] for c in chunks for start in range(0, c.shape[0] - block + 1, block)]
            records = len(blocks) * block
            shift_dtype = shift.astype(dtype)
            parts = interleaved(
                {
                    "features Z, numpy (fill_features)": lambda: [
                        quadratic.fill_features(b, shift, Z_numpy) for b in blocks
                    ],
                    "features Z, numba": lambda: [fill(b, shift_dtype, Z_numba) for b in blocks],
                    "log-densities V Z, np.matmul": lambda: [np.matmul(V, Z_numpy, out=L) for _ in blocks],
                    "log-densities V Z, numba": lambda: [product(V, Z_numpy, L) for _ in blocks],
                },
                repeat,
            )
            flops = 2 * params.n_components * p * records
            for name, seconds in parts.items():
                rate = f"  ({flops / seconds / 1e9:.0f} GFLOP/s)" if "V Z" in name else ""
                print(f"  {dtype.name} {name:34s} {seconds * 1e6 / records:.3f}{rate}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lake", help="a lake written by scripts/make_lake or scripts/bench (default: write one)")
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    if numba is None:
        sys.exit("bench_numba needs numba, which streamgmm does not depend on: pip install numba")
    with bench.lake_to_time(args.lake, args.records) as lake:
        report(lake, args.repeat)


if __name__ == "__main__":
    main()
