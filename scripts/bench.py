"""streamgmm side by side with scikit-learn and with the bare cost of decoding the data.

On one synthetic Parquet lake with known generating parameters (``write_lake``, sorted by
component: the hard case for online EM), each method runs in a fresh interpreter of its own so
its peak RSS (the kernel's ``VmHWM``) is its own: pyarrow decoding the feature columns into
float64 arrays (the ceiling of any single pass), scikit-learn's ``GaussianMixture`` on the data
loaded in memory, and streamgmm's default fit (``algorithm="auto"``: a start on a sample, one
online pass, exact EM until ``tol``), online EM alone (one pass; one pass + 2 exact passes), exact
batch EM out of core, and the online pass with ``compute_dtype="float32"``. Prints a table, writes
JSON. ``--scaling`` fits lakes of 1e5, 1e6 and 1e7 records (written to disk, never held in
memory) to show time growing linearly and peak RSS staying flat. ``--matrix`` prints the
whole table instead (every covariance type, large shapes, assign, start-up, Dask; see
``scripts/bench_matrix.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import bench_common
import numpy as np

HELD_OUT_DIR = "_held_out"


# ---------------------------------------------------------------------- measured in a child


# The bare decode and the online pass alone are each timed as the best of this many runs.
REPEATS = 3


def data_files(lake: str) -> list[str]:
    return sorted(str(p) for p in Path(lake).glob("*.parquet"))


def load(files: list[str], names: list[str]) -> np.ndarray:
    import pyarrow.parquet as pq

    from streamgmm.io.records.columns import to_matrix

    return np.concatenate([to_matrix(pq.read_table(f, columns=names), names) for f in files])


def decode(lake: str, names: list[str]) -> dict:
    """pyarrow ``iter_batches`` of the feature columns into a preallocated float64 array,
    column-major as streamgmm decodes (contiguous column copies: the fastest bare decode)."""
    import pyarrow.parquet as pq

    start = time.perf_counter()
    out = np.empty((65536, len(names)), order="F")
    n = 0
    for path in data_files(lake):
        for batch in pq.ParquetFile(path).iter_batches(batch_size=65536, columns=names):
            rows = batch.num_rows
            for j in range(len(names)):
                out[:rows, j] = batch.column(j).to_numpy()
            n += rows
    return {"seconds": time.perf_counter() - start, "records_read": n}


def worker(method: str, lake: str, k: int, covariance_type: str, seed: int) -> dict:
    from streamgmm.datasets.synthetic_lake import read_truth

    truth, names = read_truth(lake)
    held_out = load(data_files(os.path.join(lake, HELD_OUT_DIR)), names)
    n_records = json.loads((Path(lake) / "_truth.json").read_text())["n_records"]
    if method == "decode":
        # Best of REPEATS, as the pass alone below: both are single passes on a noisy machine.
        runs = [decode(lake, names) for _ in range(REPEATS)]
        result = min(runs, key=lambda r: r["seconds"])
    elif method == "truth":
        result = {"seconds": float("nan"), "records_read": 0, "held_out": float(truth.log_likelihood(held_out).mean())}
    elif method.startswith("sklearn"):
        from sklearn.mixture import GaussianMixture

        X = load(data_files(lake), names)
        n_init = int(method.split("n_init=")[1]) if "n_init=" in method else 1
        model = GaussianMixture(k, covariance_type=covariance_type, tol=1e-3, n_init=n_init, random_state=seed)
        start = time.perf_counter()
        model.fit(X)
        seconds = time.perf_counter() - start
        # In memory: no records are read during the fit, so no records/s.
        result = {
            "seconds": seconds,
            "records_read": 0,
            "n_iter": int(model.n_iter_),
            "held_out": float(model.score(held_out)),
        }
    else:
        from streamgmm import ParquetSource, StreamingGaussianMixture

        dtype = "float32" if method.endswith("float32") else "float64"
        source = ParquetSource(lake, passthrough=["id"])
        model = StreamingGaussianMixture(k, covariance_type=covariance_type, random_state=seed, compute_dtype=dtype)
        start = time.perf_counter()
        if method.startswith("batch"):
            model.set_params(algorithm="batch", max_iter=200).fit(source)
            passes = model.n_iter_
        elif method == "default":
            model.fit(source)  # algorithm="auto": one online pass, then exact EM until tol
            passes = model.n_iter_
        else:
            model.set_params(algorithm="online").fit(source)
            passes = 1
            if "polish" in method:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # 2 iterations are not meant to converge
                    model.set_params(algorithm="batch", warm_start=True, max_iter=2).fit(source)
                passes += model.n_iter_
        seconds = time.perf_counter() - start
        result = {
            "seconds": seconds,
            "records_read": n_records * passes,
            "passes": int(passes),
            "held_out": float(model.score(held_out)),
        }
        if method.startswith("online") and "polish" not in method:
            # The online pass alone (the fit's time includes the initialisation): one more pass,
            # as partial_fit streams it (same E-step, blend and M-step per mini-batch).
            pass_times = []
            for _ in range(REPEATS):
                start = time.perf_counter()
                model.partial_fit(source)
                pass_times.append(time.perf_counter() - start)
            result["pass_seconds"] = min(pass_times)
    result["peak_rss"] = bench_common.peak_rss()
    return result


def gemm_peak() -> dict:
    """float64 and float32 GEMM throughput (GFLOP/s) of numpy's BLAS on large square products."""
    out = {}
    for dtype in (np.float64, np.float32):
        a = np.random.default_rng(0).normal(size=(2048, 2048)).astype(dtype)
        a @ a
        best = bench_common.best_of(lambda: a @ a, 5)
        out[np.dtype(dtype).name] = 2 * 2048**3 / best / 1e9
    return out


# ---------------------------------------------------------------------- the driver


METHODS = {
    "decode": "pyarrow decode (ceiling)",
    "truth": "generating parameters",
    "sklearn": "scikit-learn n_init=1",
    "sklearn n_init=4": "scikit-learn n_init=4",
    "default": "streamgmm default (auto)",
    "online": "streamgmm online, 1 pass",
    "online float32": "streamgmm online f32, 1 pass",
    "online+polish": "streamgmm online + 2 exact",
    "batch": "streamgmm batch EM (exact)",
}


def run_child(method: str, lake: str, args: argparse.Namespace) -> dict:
    command = [
        sys.executable,
        __file__,
        "--worker",
        method,
        "--lake",
        lake,
        "--components",
        str(args.components),
        "--covariance",
        args.covariance,
        "--seed",
        str(args.seed),
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{method} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def make_lake(path: str, n_records: int, args: argparse.Namespace, held_out: int) -> None:
    from streamgmm.datasets.synthetic_lake import write_lake

    write_lake(
        path,
        n_records=n_records,
        n_features=args.features,
        n_components=args.components,
        n_files=max(1, min(args.files * max(1, n_records // 1_000_000), n_records)),
        covariance_type=args.covariance,
        sort_by="component",
        held_out=held_out,
        seed=args.seed,
    )


def comparison(args: argparse.Namespace, lake: str, n_records: int) -> dict:
    results = {}
    for method in args.methods.split(","):
        results[method] = run_child(method, lake, args)
        print(f"  measured {method}: {results[method]['seconds']:.2f} s", file=sys.stderr, flush=True)
    gemm = gemm_peak()
    k, d = args.components, args.features
    # The full-covariance kernel's two products per record, each K x p multiply-adds over the
    # p = 1 + d + d(d+1)/2 quadratic features (streamgmm/quadratic.py): 4 K p flops per pass.
    flops_per_record = 4 * k * (1 + d + d * (d + 1) // 2)
    decode_rate = results["decode"]["records_read"] / results["decode"]["seconds"] if "decode" in results else None
    sk = results.get("sklearn")
    truth = results.get("truth", {}).get("held_out")
    entries = []  # (method, label, seconds, records/s, result)
    for method, r in results.items():
        rate = r["records_read"] / r["seconds"] if r["records_read"] else None
        entries.append((method, METHODS[method], r["seconds"], rate, r))
        if "pass_seconds" in r:
            entries.append(
                (
                    f"{method} pass",
                    "  its online pass alone",
                    r["pass_seconds"],
                    n_records / r["pass_seconds"],
                    {**r, "held_out": None},
                )
            )
    rows = []
    for method, label, seconds, rate, r in entries:
        row = {
            "method": method,
            "label": label,
            "seconds": seconds,
            "records_per_s": rate,
            "peak_rss_mib": r["peak_rss"] / bench_common.MiB,
            "held_out": r.get("held_out"),
        }
        if sk and method not in ("decode", "truth"):
            row["wall_vs_sklearn"] = seconds / sk["seconds"]
        if decode_rate and rate and method not in ("decode", "truth"):
            row["rate_vs_decode"] = rate / decode_rate
        if row["held_out"] is not None:
            row["gap_to_sklearn"] = (sk["held_out"] - row["held_out"]) if sk else None
            row["gap_to_truth"] = (truth - row["held_out"]) if truth is not None else None
        if method.startswith(("online", "batch")) and rate:
            name = "float32" if "float32" in method else "float64"
            row["gemm_fraction"] = rate * flops_per_record / 1e9 / gemm[name]
        rows.append(row)
    from streamgmm.kernels import quadratic

    # The children import streamgmm as this process does, so they take the same kernel.
    kernel = f"fused {quadratic.FUSED_KERNELS[0]}" if quadratic.fused_kernel_enabled() else "blas"
    return {
        "records": n_records,
        "rows": rows,
        "gemm_gflops": gemm,
        "flops_per_record": flops_per_record,
        "e_step_kernel": kernel,
    }


def print_table(report: dict) -> None:
    def f(value, fmt):
        width = int(fmt.split(".")[0])
        return "-".rjust(width) if value is None else format(value, fmt)

    print(
        f"{'method':<30} {'wall s':>7} {'Mrec/s':>7} {'RSS MiB':>8} {'held-out':>9} {'gap truth':>9} "
        f"{'gap sk':>8} {'/sk wall':>8} {'/decode':>7} {'GEMM%':>6}"
    )
    for r in report["rows"]:
        rate = None if r["records_per_s"] is None else r["records_per_s"] / 1e6
        seconds = None if np.isnan(r["seconds"]) else r["seconds"]
        gemm = None if r.get("gemm_fraction") is None else 100 * r["gemm_fraction"]
        print(
            f"{r['label']:<30} {f(seconds, '7.2f')} {f(rate, '7.2f')} {r['peak_rss_mib']:8.0f} "
            f"{f(r['held_out'], '9.4f')} {f(r.get('gap_to_truth'), '9.4f')} {f(r.get('gap_to_sklearn'), '8.4f')} "
            f"{f(r.get('wall_vs_sklearn'), '8.3f')} {f(r.get('rate_vs_decode'), '7.2f')} {f(gemm, '6.1f')}"
        )
    by = {r["method"]: r for r in report["rows"]}
    checks = []
    if {"online", "sklearn n_init=4", "sklearn", "truth"} <= by.keys():
        for method in ("default", "online", "online float32"):
            if method in by:
                r = by[method]
                within = r["gap_to_truth"] <= 0.005
                faster = r["seconds"] <= by["sklearn n_init=4"]["seconds"] / 10
                no_worse = r["held_out"] >= by["sklearn"]["held_out"] - 1e-4
                checks.append(
                    f"{method}: within 0.005 of truth {within}, <= 1/10 of sklearn n_init=4 wall "
                    f"{faster}, not worse than sklearn default {no_worse}"
                )
    for method in ("online pass", "online float32 pass"):
        if method in by and by[method].get("rate_vs_decode") is not None:
            checks.append(f"{method} at {100 * by[method]['rate_vs_decode']:.0f}% of bare decode (target >= 50%)")
    for line in checks:
        print("target: " + line)
    print(f"full-covariance E-step kernel: {report.get('e_step_kernel', 'blas')}")
    g = report["gemm_gflops"]
    print(
        f"GEMM peak (2048^2 products, every core): float64 {g['float64']:.0f} GFLOP/s, float32 {g['float32']:.0f}; "
        f"cost model {report['flops_per_record']} flop/record/pass (4 K p, the kernel's two products)"
    )


def scaling(args: argparse.Namespace, root: str) -> list[dict]:
    rows = []
    for n in (int(float(x)) for x in args.scaling_records.split(",")):
        lake = os.path.join(root, f"scaling-{n}")
        start = time.perf_counter()
        make_lake(lake, n, args, held_out=20_000)
        print(f"  wrote {n:,} records in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
        r = run_child("online", lake, args)
        rows.append(
            {
                "records": n,
                "seconds": r["seconds"],
                "records_per_s": n / r["seconds"],
                "pass_seconds": r["pass_seconds"],
                "peak_rss_mib": r["peak_rss"] / bench_common.MiB,
                "held_out": r["held_out"],
            }
        )
        shutil.rmtree(lake)
    # The fit includes a fixed initialisation (a sample and EM on it); the pass alone shows
    # the per-record cost, which should not change with N.
    print(f"{'records':>12} {'fit s':>8} {'pass s':>8} {'pass Mrec/s':>11} {'peak RSS MiB':>12}")
    for r in rows:
        print(
            f"{r['records']:>12,} {r['seconds']:8.2f} {r['pass_seconds']:8.2f} "
            f"{r['records'] / r['pass_seconds'] / 1e6:11.2f} {r['peak_rss_mib']:12.0f}"
        )
    if len(rows) > 1:
        low, high = rows[-2], rows[-1]
        print(
            f"target: peak RSS {high['records']:,} vs {low['records']:,} records "
            f"{100 * (high['peak_rss_mib'] / low['peak_rss_mib'] - 1):+.1f}% (within 10%), "
            f"max {max(r['peak_rss_mib'] for r in rows):.0f} MiB (under 512)"
        )
    return rows


def main() -> None:
    if "--matrix" in sys.argv[1:]:
        # The whole table (scripts/bench_matrix.py), with its own options.
        import bench_matrix

        bench_matrix.main([a for a in sys.argv[1:] if a != "--matrix"])
        return
    parser = bench_common.parser(
        __doc__,
        records=1_000_000,
        features=16,
        components=8,
        covariance="full",
        seed=0,
        lake=None,
        tmp=tempfile.gettempdir(),
        json=os.path.join(tempfile.gettempdir(), "streamgmm-bench.json"),
    )
    parser.add_argument("--held-out", type=int, default=200_000)
    parser.add_argument("--files", type=int, default=8, help="files per million records")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {list(METHODS)}")
    parser.add_argument("--scaling", action="store_true", help="also fit 1e5, 1e6 and 1e7 records")
    parser.add_argument("--scaling-records", default="1e5,1e6,1e7")
    parser.add_argument("--no-comparison", action="store_true", help="only the scaling run")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.lake, args.components, args.covariance, args.seed)))
        return
    unknown = set(args.methods.split(",")) - set(METHODS)
    if unknown:
        parser.error(f"unknown methods {sorted(unknown)}; choose from {list(METHODS)}")
    report: dict = {"machine": bench_common.machine(), "argv": sys.argv[1:]}
    root = tempfile.mkdtemp(prefix="streamgmm-bench-", dir=args.tmp)
    try:
        if not args.no_comparison:
            lake = args.lake
            if lake is None:
                lake = os.path.join(root, "lake")
                make_lake(lake, args.records, args, args.held_out)
            written = json.loads((Path(lake) / "_truth.json").read_text())
            n_records = written["n_records"]
            print(
                f"{n_records:,} records x {args.features} features, K={args.components} {args.covariance}, "
                f"sorted by {written['sort_by']}, {written['n_files']} files; held-out {written['held_out']:,}; "
                f"{os.cpu_count()} CPUs",
                flush=True,
            )
            report["comparison"] = comparison(args, lake, n_records)
            print_table(report["comparison"])
        if args.scaling:
            report["scaling"] = scaling(args, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    bench_common.write_json(args.json, report)


if __name__ == "__main__":
    main()
