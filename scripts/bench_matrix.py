"""The performance table for this machine, in one command: ``scripts/bench --matrix``.

Each row is a ratio measured in one run against its reference measured in the same run, with
its target and whether it is met; fit rows carry the held-out mean log-likelihood gaps
(nats/record, positive: worse) to the generating parameters and to scikit-learn beside the
speed. Every measurement runs in a fresh process of its own (its peak RSS is its own):

- **marginal online pass / bare decode** (every covariance type, 1M x 16, K=8, sorted by
  component): ``streamgmm fit --algorithm online`` through the CLI with its defaults (float64,
  row groups shuffled) with ``--passes 2`` and ``--passes 1``; the difference of the fit times
  the CLI reports (``--json`` "seconds") is one pass, without start-up, the sample or the
  initialisation. The rate of N records in that time is divided by the bare decode rate
  (``scripts/bench.py``'s pyarrow decode of the feature columns, best of 3). Not a 4M lake
  against a 1M one: the initialisation sample reads every row group of lakes up to 64 row
  groups, so a 4x larger lake also pays 3x more sample reading, and that charged to the pass.
- **CLI fit wall / scikit-learn default**: ``streamgmm fit`` with default settings, the
  process's wall time (start-up included), against ``GaussianMixture(K, covariance_type,
  random_state=seed).fit(X)`` (``n_init=1``, ``tol=1e-3``, ``max_iter=100``, data already in
  memory; only the fit is timed). Shapes: the four above, 500k x 64 K=16 full, 2M x 2 K=3 full,
  500k x 16 K=64 diag.
- **assign / its I/O floor**: ``scripts/bench_assign.py`` (read features + id, write id + the
  K + 2 result columns with pyarrow, no compute) on the 1M x 16 lake, each covariance type.
- **CLI start**: ``scripts/bench_startup.py``: ``streamgmm --help`` against ``python -c "import
  numpy, pyarrow.parquet"``, medians of 10 fresh processes each, alternated.
- **Dask**: ``scripts/bench_dask.py`` on the 1M x 16 full lake: batch EM ms/iteration on a
  2-worker LocalCluster (1 thread each) against the same iterations in one process.
- **peak RSS by number of files**: ``scripts/bench_files.py``: one online pass over lakes of 1k,
  4k and 10k hard-linked 10k-record files; the largest peak over the smallest, and the largest.

Fit rows' quality: "trails sklearn" when the fit's held-out mean log-likelihood is more than
0.005 below scikit-learn's; with ``--baseline`` also when its gap to the generating parameters
grew by more than 0.005 since that run. A ``-`` in ``measured`` means the two sides could not be
told apart (e.g. a second pass timed shorter than the first on a busy machine).

``--matrix-runs 3`` repeats every measurement and prints medians;
``--quick`` shrinks every lake 50x for a smoke test; ``--lakes DIR`` keeps the lakes there and
reuses them; ``--only`` picks row groups; ``--baseline`` compares the quality with an earlier
``--json``. Usage::

    scripts/bench --matrix [--matrix-runs 3] [--quick] [--json PATH] [--lakes DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
sys.path.insert(0, str(SCRIPTS))

import bench_common  # noqa: E402
from bench_common import MiB, note  # noqa: E402
from bench_matrix_table import combine, format_table  # noqa: E402

# Every child's environment; --blas-threads adds the BLAS libraries' thread counts to it.
CHILD_ENV = dict(os.environ)
GROUPS = ("stream", "shapes", "assign", "startup", "dask", "files")


@dataclass(frozen=True)
class Shape:
    key: str
    records: int
    features: int
    components: int
    covariance: str
    streaming: bool = False  # also the marginal pass rate (and the lake of assign and Dask)
    fit_target: str | None = None  # the target for CLI fit wall / scikit-learn

    def label(self, records: int) -> str:
        return f"{self.covariance} {count(records)} x {self.features}, K={self.components}"


SHAPES = (
    Shape("full", 1_000_000, 16, 8, "full", streaming=True),
    Shape("tied", 1_000_000, 16, 8, "tied", streaming=True),
    Shape("diag", 1_000_000, 16, 8, "diag", streaming=True, fit_target="<= 0.5"),
    Shape("spherical", 1_000_000, 16, 8, "spherical", streaming=True, fit_target="<= 0.5"),
    Shape("wide", 500_000, 64, 16, "full"),
    Shape("narrow", 2_000_000, 2, 3, "full"),
    Shape("large-k", 500_000, 16, 64, "diag", fit_target="<= 0.3"),
)


def count(n: int) -> str:
    """1000000 -> '1M', 500000 -> '500k', 20000 -> '20k'."""
    for unit, size in (("M", 1_000_000), ("k", 1000)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return str(n)


# ---------------------------------------------------------------------- processes


def run(command: list[str], what: str) -> tuple[float, str, int]:
    """Run ``command`` to the end: (wall seconds, stdout, peak RSS in bytes from ``wait4``)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        child = subprocess.Popen(command, stdout=out, stderr=err, text=True, env=CHILD_ENV)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if child.returncode != 0:
            raise RuntimeError(f"{what} failed ({' '.join(command)}):\n{err.read()[-3000:]}")
        return wall, out.read(), usage.ru_maxrss * 1024


def last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def streamgmm_command() -> list[str]:
    """The console script a user runs, next to this interpreter."""
    script = Path(sys.executable).parent / "streamgmm"
    return [str(script)] if script.exists() else [sys.executable, "-m", "streamgmm.cli"]


def lake_path(root: Path, shape: Shape, records: int) -> Path:
    return root / f"{shape.key}-{records}"


def write_lakes(root: Path, wanted: list[tuple[Shape, int]], held_out: int, seed: int) -> None:
    """The shapes' lakes (``scripts/make_lake``'s writer, sorted by component, 8 files per
    million records), written by one child process; a finished lake already there is reused."""
    todo = [(shape, n) for shape, n in wanted if not (lake_path(root, shape, n) / "_truth.json").exists()]
    if todo:
        spec = [[str(lake_path(root, s, n)), n, s.features, s.components, s.covariance] for s, n in todo]
        command = [sys.executable, __file__, "--worker", "lakes", "--lake", json.dumps(spec)]
        seconds, _, _ = run(command + ["--held-out", str(held_out), "--seed", str(seed)], "writing the lakes")
        note(f"wrote {len(todo)} lakes in {seconds:.0f} s")


def lakes_worker(spec: str, held_out: int, seed: int) -> dict:
    from streamgmm.datasets.synthetic_lake import write_lake

    for path, records, features, components, covariance in json.loads(spec):
        shutil.rmtree(path, ignore_errors=True)
        write_lake(
            path,
            n_records=records,
            n_features=features,
            n_components=components,
            n_files=max(1, min(8 * max(1, records // 1_000_000), records)),
            covariance_type=covariance,
            sort_by="component",
            held_out=held_out,
            seed=seed,
        )
    return {}


def bench_worker(method: str, lake: Path, shape: Shape, seed: int) -> dict:
    """One of ``scripts/bench.py``'s measurements ("decode", "sklearn") in a fresh process."""
    command = [sys.executable, str(SCRIPTS / "bench.py"), "--worker", method, "--lake", str(lake)]
    command += ["--components", str(shape.components), "--covariance", shape.covariance, "--seed", str(seed)]
    return last_json(run(command, f"bench.py --worker {method}")[1])


def cli_fit(lake: Path, shape: Shape, model: Path, seed: int, *options: str) -> dict:
    command = streamgmm_command() + ["fit", "-k", str(shape.components), "--covariance", shape.covariance]
    command += ["--model", str(model), "--passthrough", "id", "--seed", str(seed), "--json", "-q", *options]
    wall, out, rss = run(command + [str(lake)], "streamgmm fit")
    summary = last_json(out)
    return {"wall": wall, "seconds": summary["seconds"], "n_iter": summary["n_iter"], "peak_rss": rss}


def sklearn_worker(lake: str, model: str, components: int, covariance: str, seed: int) -> dict:
    """scikit-learn's default fit as ``scripts/bench.py`` times it (its peak RSS taken before
    scoring), then the held-out mean log-likelihoods of ``model`` and of the generating
    parameters (untimed; here to save a process)."""
    import bench

    from streamgmm import StreamingGaussianMixture
    from streamgmm.datasets.synthetic_lake import read_truth

    result = bench.worker("sklearn", lake, components, covariance, seed)
    truth, names = read_truth(lake)
    held_out = bench.load(bench.data_files(os.path.join(lake, bench.HELD_OUT_DIR)), names)
    fitted = StreamingGaussianMixture.load(model)
    return {
        **result,
        "sklearn": result["held_out"],
        "truth": float(truth.log_likelihood(held_out).mean()),
        "held_out": float(fitted.score(held_out)),
    }


def sklearn_and_score(lake: Path, model: Path, shape: Shape, seed: int) -> dict:
    command = [sys.executable, __file__, "--worker", "sklearn", "--lake", str(lake), "--model", str(model)]
    command += ["--components", str(shape.components), "--covariance", shape.covariance, "--seed", str(seed)]
    return last_json(run(command, "scikit-learn")[1])


# ---------------------------------------------------------------------- the rows


def fastest(runs: list[dict]) -> dict:
    return min(runs, key=lambda r: r["seconds"])


def shape_rows(shape: Shape, lake: Path, records: int, work: Path, seed: int, repeats: int) -> list[dict]:
    """The shape's fit row (and, for the streaming shapes, its marginal pass row)."""
    label = shape.label(records)
    rows = []
    if shape.streaming:
        decode = bench_worker("decode", lake, shape, seed)
        decode_rate = decode["records_read"] / decode["seconds"]
        # Best of ``repeats`` each, alternated: the difference of two noisy times is noisier.
        one, two = [], []
        for _ in range(repeats):
            one.append(cli_fit(lake, shape, work / "online1.npz", seed, "--algorithm", "online", "--passes", "1"))
            two.append(cli_fit(lake, shape, work / "online2.npz", seed, "--algorithm", "online", "--passes", "2"))
        one, two = fastest(one), fastest(two)
        extra = (two["n_iter"] - one["n_iter"]) * records
        seconds = two["seconds"] - one["seconds"]
        rate = extra / seconds if extra > 0 and seconds > 0 else None
        rows.append(
            {
                "what": f"{label}: marginal online pass / bare decode",
                "measured": None if rate is None else rate / decode_rate,
                "target": ">= 0.5",
                "detail": f"pass {'-' if rate is None else f'{rate / 1e6:.2f}'} Mrec/s "
                f"({two['seconds']:.2f} - {one['seconds']:.2f} s), decode {decode_rate / 1e6:.2f} Mrec/s",
                "raw": {"decode": decode, "online_1": one, "online_2": two},
            }
        )
        note(f"{label}: {rows[-1]['detail']}")
    fit = cli_fit(lake, shape, work / "default.npz", seed)
    sk = sklearn_and_score(lake, work / "default.npz", shape, seed)
    rows.append(
        {
            "what": f"{label}: CLI fit wall / sklearn n_init=1",
            "measured": fit["wall"] / sk["seconds"],
            "target": shape.fit_target,
            "detail": f"{fit['wall']:.2f} s ({fit['n_iter']} passes, {fit['peak_rss'] / MiB:.0f} MiB) / "
            f"{sk['seconds']:.2f} s ({sk['n_iter']} iterations, {sk['peak_rss'] / MiB:.0f} MiB)",
            "held_out": sk["held_out"],
            "truth": sk["truth"],
            "sklearn": sk["sklearn"],
            "raw": {"fit": fit, "sklearn": sk},
        }
    )
    note(f"{label}: fit {rows[-1]['detail']}")
    return rows


def assign_rows(lake: Path, records: int, work: Path) -> list[dict]:
    script = SCRIPTS / "bench_assign.py"
    what = f"assign {count(records)} x 16, K=8 / I/O floor"
    if not script.exists():
        return [{"what": what, "measured": None, "target": "<= 1.5", "detail": "scripts/bench_assign.py missing"}]
    out = work / "assign.json"
    command = [sys.executable, str(script), "--lake", str(lake), "--repeats", "1", "--json", str(out)]
    run(command + ["--tmp", str(work)], "scripts/bench_assign.py")
    rows = []
    for r in json.loads(out.read_text()):
        rows.append(
            {
                "what": f"assign {r['covariance']} {count(records)} x 16, K=8 / I/O floor",
                "measured": r["ratio"],
                "target": "<= 1.5",
                "detail": f"{r['assign_s']:.2f} s / {r['floor_s']:.2f} s",
                "raw": r,
            }
        )
        note(f"assign {r['covariance']}: {rows[-1]['detail']}")
    return rows


def startup_row(repeats: int) -> dict:
    """``scripts/bench_startup.py``: median walls of fresh ``streamgmm --help`` and bare imports."""
    what = 'streamgmm --help / python -c "import numpy, pyarrow.parquet"'
    script = SCRIPTS / "bench_startup.py"
    if not script.exists():
        return {"what": what, "measured": None, "target": "<= 2", "detail": "scripts/bench_startup.py missing"}
    result = last_json(run([sys.executable, str(script), "--repeats", str(repeats)], "bench_startup.py")[1])
    cli, bare = result["medians_s"]["streamgmm --help"], result["medians_s"]["import numpy, pyarrow.parquet"]
    row = {
        "what": what,
        "measured": cli / bare,
        "target": "<= 2",
        "detail": f"{cli:.2f} s / {bare:.2f} s (medians of {repeats})",
        "raw": result,
    }
    note(f"start-up: {row['detail']}")
    return row


def dask_rows(lake: Path, iterations: int, work: Path) -> list[dict]:
    """``scripts/bench_dask.py``'s 2-worker rows against local (read from its ``--json``)."""
    script = SCRIPTS / "bench_dask.py"
    what = "Dask batch EM ms/iteration, 2 workers / local"
    if not script.exists():
        return [{"what": what, "measured": None, "target": "<= 1.0", "detail": "scripts/bench_dask.py missing"}]
    out = work / "dask.json"
    command = [sys.executable, str(script), "--lake", str(lake), "--workers", "2", "--repeats", "1"]
    run(command + ["--iterations", str(iterations), "--json", str(out)], "scripts/bench_dask.py")
    times = json.loads(out.read_text())["ms_per_iteration"]
    local = times.pop("local", None)
    rows = []
    for label, ms in times.items():
        rows.append(
            {
                "what": f"Dask batch EM ms/iteration, {label} / local",
                "measured": None if local is None else ms / local,
                "target": "<= 1.0",
                "detail": f"{ms:.0f} ms / {'-' if local is None else f'{local:.0f}'} ms",
            }
        )
        note(f"Dask {label}: {rows[-1]['detail']}")
    return rows or [{"what": what, "measured": None, "target": "<= 1.0", "detail": "no table from bench_dask.py"}]


def files_rows(quick: bool, work: Path) -> list[dict]:
    """``scripts/bench_files.py``: one-pass fits of hard-linked lakes of 1k, 4k and 10k files."""
    script = SCRIPTS / "bench_files.py"
    sizes = "100,1000" if quick else "1000,4000,10000"
    what = f"peak RSS of a one-pass fit, {sizes.replace(',', ' / ')} files"
    if not script.exists():
        return [{"what": what, "measured": None, "target": "<= 1.1", "detail": "scripts/bench_files.py missing"}]
    out = work / "files.json"
    command = [sys.executable, str(script), "--files", sizes, "--json", str(out), "--tmp", str(work)]
    run(command + (["--records-per-file", "1000", "--row-group", "250"] if quick else []), "bench_files.py")
    rows = json.loads(out.read_text())["rows"]
    peaks = [r["peak"] / MiB for r in rows]
    detail = " / ".join(f"{p:.0f}" for p in peaks) + " MiB (" + " / ".join(f"{r['records']:,.0f}" for r in rows)
    detail += " records)"
    note(f"files: {detail}")
    return [
        {
            "what": f"{what}: largest / smallest",
            "measured": max(peaks) / min(peaks),
            "target": "<= 1.1",
            "detail": detail,
            "raw": rows,
        },
        {"what": f"{what}: largest, MiB", "measured": max(peaks), "target": "<= 512", "detail": detail},
    ]


def measure(args: argparse.Namespace, lakes: dict[str, Path], scale: float, work: Path) -> list[dict]:
    """One run of every row in ``args.only``; a part that fails gives a row saying so and the
    others still run."""
    parts = []
    for shape in SHAPES:
        if shape.key in lakes and ("stream" if shape.streaming else "shapes") in args.only:
            n = records(shape, scale)
            parts.append(
                (
                    shape.label(n),
                    lambda shape=shape, n=n: shape_rows(shape, lakes[shape.key], n, work, args.seed, args.pass_repeats),
                )
            )
    if "assign" in args.only:
        parts.append(("assign", lambda: assign_rows(lakes["full"], records(SHAPES[0], scale), work)))
    if "startup" in args.only:
        parts.append(("start-up", lambda: [startup_row(2 if args.quick else 10)]))
    if "dask" in args.only:
        parts.append(("Dask", lambda: dask_rows(lakes["full"], 3 if args.quick else 6, work)))
    if "files" in args.only:
        parts.append(("files", lambda: files_rows(args.quick, work)))
    rows: list[dict] = []
    for name, part in parts:
        try:
            rows += part()
        except (RuntimeError, OSError, KeyError, ValueError) as error:
            note(f"{name} failed: {error}")
            rows.append(
                {
                    "what": f"{name}: FAILED",
                    "measured": None,
                    "target": None,
                    "detail": str(error).strip().splitlines()[-1][:200],
                }
            )
    return rows


def records(shape: Shape, scale: float) -> int:
    return max(1000, int(shape.records * scale))


def build_parser() -> argparse.ArgumentParser:
    """The matrix's options (and the hidden ones of its worker processes)."""
    parser = bench_common.parser(
        __doc__,
        tmp=tempfile.gettempdir(),
        seed=0,
        json=os.path.join(tempfile.gettempdir(), "streamgmm-bench-matrix.json"),
    )
    parser.add_argument("--matrix-runs", type=int, default=1, help="repeat every measurement; print medians")
    parser.add_argument("--quick", action="store_true", help="lakes 50x smaller: a smoke test")
    parser.add_argument("--only", default=",".join(GROUPS), help=f"comma-separated subset of {GROUPS}")
    parser.add_argument("--lakes", help="keep the lakes in this directory and reuse them (default: temporary)")
    parser.add_argument("--baseline", help="an earlier --json: flag fits whose gap to truth grew by > 0.005")
    parser.add_argument("--pass-repeats", type=int, help="CLI fits of 1 and 2 passes, best of (default 2; 1 --quick)")
    parser.add_argument(
        "--blas-threads", type=int, help="BLAS threads of every child (default: the libraries' own; 1 with --quick)"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--lake", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--components", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--covariance", help=argparse.SUPPRESS)
    parser.add_argument("--held-out", type=int, help=argparse.SUPPRESS)
    return parser


def run_matrix(args: argparse.Namespace, scale: float) -> list[dict]:
    """Every run of the matrix over lakes written (or reused) for the groups asked for."""
    work = Path(tempfile.mkdtemp(prefix="streamgmm-matrix-", dir=args.tmp))
    lake_root = Path(args.lakes) if args.lakes else work
    lake_root.mkdir(parents=True, exist_ok=True)
    try:
        wanted = [s for s in SHAPES if ("stream" if s.streaming else "shapes") in args.only]
        if args.only & {"assign", "dask"} and SHAPES[0] not in wanted:
            wanted.insert(0, SHAPES[0])
        write_lakes(lake_root, [(s, records(s, scale)) for s in wanted], 2000 if args.quick else 100_000, args.seed)
        lakes = {s.key: lake_path(lake_root, s, records(s, scale)) for s in wanted}
        runs = []
        for index in range(args.matrix_runs):
            note(f"run {index + 1} of {args.matrix_runs}")
            runs.append(measure(args, lakes, scale, work))
        return runs
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(args: argparse.Namespace, argv: list[str] | None, runs: list[dict], started: float) -> None:
    """Print the table (medians of the runs) and write the JSON report."""
    baseline = None
    if args.baseline:
        baseline = {r["what"]: r for r in json.loads(Path(args.baseline).read_text())["rows"]}
    rows = combine(runs)
    print(
        f"streamgmm benchmark matrix: {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}; {'median of ' + str(args.matrix_runs) + ' runs' if args.matrix_runs > 1 else '1 run'}"
        f"{', --quick (50x smaller lakes)' if args.quick else ''}"
        f"{f', BLAS threads {args.blas_threads}' if args.blas_threads else ''}; gaps in nats/record, positive: worse"
    )
    print(format_table(rows, baseline))
    met = [r["met"] for r in rows if r["met"] is not None]
    print(f"targets met: {sum(met)} of {len(met)}; {time.perf_counter() - started:.0f} s in all")
    document = {
        "machine": bench_common.machine(),
        "argv": sys.argv[1:] if argv is None else argv,
        "quick": args.quick,
        "matrix_runs": args.matrix_runs,
        "blas_threads": args.blas_threads,
        "rows": rows,
        "runs": runs,
    }
    bench_common.write_json(args.json, document)


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.worker == "lakes":
        print(json.dumps(lakes_worker(args.lake, args.held_out, args.seed)))
        return
    if args.worker == "sklearn":
        print(json.dumps(sklearn_worker(args.lake, args.model, args.components, args.covariance, args.seed)))
        return
    args.only = set(args.only.split(","))
    if args.pass_repeats is None:
        args.pass_repeats = 1 if args.quick else 2
    if args.blas_threads is None and args.quick:
        args.blas_threads = 1  # a smoke test on a busy machine: spinning BLAS threads can take minutes
    CHILD_ENV.update(bench_common.blas_environment(args.blas_threads))
    if args.only - set(GROUPS):
        parser.error(f"unknown groups {sorted(args.only - set(GROUPS))}; choose from {GROUPS}")
    started = time.perf_counter()
    runs = run_matrix(args, 1 / 50 if args.quick else 1.0)
    report(args, argv, runs, started)


if __name__ == "__main__":
    main()
