"""The ``streamgmm`` command line: its parser, one function per sub-command."""

from __future__ import annotations

import argparse
from typing import Any

from streamgmm.cli.checks import (
    argument_type,
    fraction,
    lease_seconds,
    non_negative_float,
    parameter_type,
    parse_filter,
    point_in_time,
    positive_float,
    positive_int,
    seed,
)
from streamgmm.estimator.constraints import allowed
from streamgmm.selection.search import SELECT_CONSTRAINTS


def column_list(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected comma-separated column names")
    return names


def build_parser() -> argparse.ArgumentParser:
    """The ``streamgmm`` argument parser: one sub-command per job."""
    parser = argparse.ArgumentParser(
        prog="streamgmm", description="Gaussian mixture models fitted by streaming EM over Parquet lakes."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    _fit_command(commands)
    _assign_command(commands)
    _watch_command(commands)
    _select_command(commands)
    _plot_command(commands)
    _info_command(commands)
    return parser


def _common(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--json", action="store_true", help="print a machine-readable summary on stdout")
    sub.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def _reading(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("sources", nargs="+", metavar="SOURCE", help="Parquet file, directory, glob or URL")
    sub.add_argument(
        "--filter",
        action="append",
        type=parse_filter,
        default=[],
        metavar="EXPR",
        help="keep rows where EXPR holds, e.g. 'day >= 3' (repeat to combine with AND)",
    )
    sub.add_argument(
        "--nan-policy",
        choices=allowed("nan_policy"),
        default="raise",
        help="null/NaN/inf features: an error (default), skip those rows, or marginalize missing "
        "(null/NaN) features in EM (rows with none observed are skipped)",
    )
    sub.add_argument("--batch-size", type=parameter_type("batch_size"), default=None, help="records per mini-batch")
    table = sub.add_mutually_exclusive_group()
    table.add_argument(
        "--version", type=int, metavar="N", help="a Delta table's version, or an Iceberg snapshot id (default: current)"
    )
    table.add_argument(
        "--as-of",
        type=point_in_time,
        metavar="TIME",
        help="a Delta or Iceberg table as it was at TIME (ISO 8601, e.g. 2026-11-01T12:00Z)",
    )


def _moves(sub: argparse.ArgumentParser, default: str | None) -> None:
    sub.add_argument(
        "--moves",
        choices=allowed("moves"),
        default=default,
        help="auto: births and merges of components for data read in stored order (sorted by time or key), "
        "refits on a sample; off: plain stepwise EM"
        + (" (default auto)" if default else " (default: the model's own, auto for a new one)"),
    )


def _storage(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--storage-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="object-store setting, e.g. endpoint_url=http://host:9000, region=..., profile=... "
        "(repeatable; sets the standard AWS_*/GOOGLE_*/AZURE_* variables)",
    )


def _features(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--columns", type=column_list, help="feature columns (default: every numeric column)")
    sub.add_argument(
        "--passthrough",
        type=column_list,
        default=[],
        metavar="COLUMNS",
        help="numeric columns that are not features, e.g. id",
    )


def _weights(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--weight-column",
        metavar="NAME",
        help="numeric column of record weights, e.g. a count per row (a row of weight w counts as w rows)",
    )


def _cluster(sub: argparse.ArgumentParser) -> None:
    where = sub.add_mutually_exclusive_group()
    where.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run on the Dask cluster at ADDRESS (e.g. tcp://host:8786); files must be shared",
    )
    where.add_argument(
        "--workers", type=positive_int, metavar="N", help="run on a local Dask cluster of N worker processes"
    )


def _fit_command(commands: Any) -> None:
    fit = commands.add_parser("fit", help="fit a mixture to Parquet data and save the model")
    _storage(fit)
    _reading(fit)
    _cluster(fit)
    fit.add_argument(
        "--persist",
        choices=["auto", "yes", "no"],
        default="auto",
        help="on a cluster, keep decoded partitions in the workers' memory between passes "
        "(auto: when they take at most a quarter of it)",
    )
    fit.add_argument(
        "-k", "--components", type=parameter_type("n_components"), required=True, help="number of components K"
    )
    fit.add_argument("--model", required=True, help="where to write the model file")
    fit.add_argument("--covariance", choices=allowed("covariance_type"), default="full")
    _features(fit)
    _weights(fit)
    fit.add_argument(
        "--algorithm",
        choices=allowed("algorithm"),
        default="auto",
        help="auto (default): converged start on a sample, one online pass, exact EM to tol; "
        "online: stepwise EM passes only; batch: exact EM only",
    )
    fit.add_argument("--passes", type=parameter_type("max_passes"), default=1, help="online EM passes (default 1)")
    # Not the estimator's constraint (an integer >= 0): a command-line fit makes at least one iteration.
    fit.add_argument(
        "--max-iter",
        type=positive_int,
        default=100,
        help="exact EM passes at most, and EM iterations on the sample (default 100)",
    )
    fit.add_argument(
        "--shuffle",
        choices=["row_groups", "none"],
        default="row_groups",
        help="online visit order: row groups shuffled (default) or the files' order",
    )
    fit.add_argument("--seed", type=seed, default=0, help="random seed (default 0)")
    _moves(fit, "auto")
    fit.add_argument(
        "--compute-dtype",
        choices=allowed("compute_dtype"),
        default="float64",
        help="precision of the full-covariance E-step; float32 is about twice as fast "
        "(statistics still summed in float64; default float64)",
    )
    _common(fit)


def _assign_command(commands: Any) -> None:
    assign_ = commands.add_parser("assign", help="write per-record responsibilities as Parquet")
    _storage(assign_)
    _reading(assign_)
    _cluster(assign_)
    assign_.add_argument("--model", required=True, help="a model file written by 'streamgmm fit'")
    assign_.add_argument("--out", required=True, help="output directory")
    assign_.add_argument(
        "--keep", type=column_list, default=[], metavar="COLUMNS", help="columns copied through unchanged, e.g. id"
    )
    assign_.add_argument(
        "--result-dtype",
        "--dtype",
        dest="result_dtype",
        choices=["float64", "float32"],
        default="float64",
        help="type of the resp_* columns: float32 halves their size (default float64)",
    )
    assign_.add_argument(
        "--compression",
        choices=["snappy", "zstd", "lz4", "gzip", "none"],
        default="snappy",
        help="Parquet codec of the output files (default snappy; see docs/cli.md for sizes and times)",
    )
    assign_.add_argument(
        "--out-format",
        choices=["parquet", "delta"],
        default="parquet",
        help="parquet (default): one file per input file and _SUCCESS; delta: one commit of a Delta table",
    )
    assign_.add_argument("--overwrite", action="store_true", help="replace an earlier output in --out")
    _common(assign_)


def _watch_command(commands: Any) -> None:
    watch = commands.add_parser("watch", help="keep a model current as Parquet files arrive in a directory")
    _storage(watch)
    watch.add_argument(
        "landing", metavar="LANDING_DIR", help="directory (or s3://... prefix) new Parquet files arrive in"
    )
    watch.add_argument(
        "--state", required=True, metavar="STATE_DIR", help="checkpoint, ledger and history (a directory or s3://...)"
    )
    watch.add_argument(
        "-k", "--components", type=parameter_type("n_components"), help="number of components of a new model"
    )
    watch.add_argument("--columns", type=column_list, help="feature columns of a new model (default: numeric)")
    watch.add_argument(
        "--passthrough", type=column_list, default=[], help="numeric columns that are not features of a new model (ids)"
    )
    watch.add_argument("--covariance", choices=allowed("covariance_type"), default="full")
    watch.add_argument("--seed", type=seed, default=0, help="random seed of a new model (default 0)")
    watch.add_argument("--model", help="start from this saved model instead of -k")
    watch.add_argument("--step-floor", type=fraction, help="keep the step size above F to follow drift (e.g. 0.05)")
    _moves(watch, None)
    watch.add_argument("--batch-size", type=parameter_type("batch_size"), default=None, help="records per mini-batch")
    watch.add_argument(
        "--nan-policy",
        choices=allowed("nan_policy"),
        default="raise",
        help="null/NaN/inf features: quarantine the file (default), skip those rows, or marginalize "
        "missing (null/NaN) features",
    )
    _weights(watch)
    watch.add_argument("--interval", type=positive_float, default=1.0, help="seconds between looks (default 1)")
    watch.add_argument(
        "--settle", type=non_negative_float, default=1.0, help="seconds a file must be unmodified (default 1)"
    )
    watch.add_argument("--assign-out", metavar="DIR", help="also write each new file's responsibilities here")
    watch.add_argument("--keep", type=column_list, default=[], help="input columns copied into those outputs")
    watch.add_argument("--keep-models", type=positive_int, default=10, help="checkpoints kept in STATE_DIR/models")
    watch.add_argument("--once", action="store_true", help="consume the files there, then exit")
    watch.add_argument(
        "--lease-seconds",
        type=lease_seconds,
        default=60.0,
        help="a state on an object store: how long this watcher's lease lasts unrenewed (default 60, at most 86400)",
    )
    _common(watch)


def _select_command(commands: Any) -> None:
    select = commands.add_parser("select", help="fit candidate K (and covariance types) in one stream, pick by BIC/AIC")
    _storage(select)
    _reading(select)
    select.add_argument("-k", "--components", required=True, metavar="KS", help="candidates, e.g. 2..12 or 2,4,8")
    select.add_argument(
        "--covariance",
        type=column_list,
        default=["full"],
        metavar="TYPES",
        help="covariance types to try, e.g. full,diag (default full)",
    )
    _features(select)
    _weights(select)
    select.add_argument(
        "--held-out",
        type=argument_type(SELECT_CONSTRAINTS["held_out"], "held_out"),
        metavar="N",
        help="score on a reservoir of N records kept out of training (no scoring pass)",
    )
    select.add_argument("--criterion", choices=SELECT_CONSTRAINTS["criterion"].values, default="bic")
    select.add_argument("--model", help="where to write the best model")
    select.add_argument("--passes", type=parameter_type("max_passes"), default=1, help="online EM passes (default 1)")
    select.add_argument("--seed", type=seed, default=0, help="random seed (default 0)")
    _common(select)


def _plot_command(commands: Any) -> None:
    plot = commands.add_parser(
        "plot", help="draw a model (over a sample of data) and its fit history as PNG; a watcher's drift signal too"
    )
    _storage(plot)
    plot.add_argument(
        "model",
        metavar="MODEL",
        help="a model file, or a watcher's state directory (its current model, and each file's score before it was "
        "learnt against the level of earlier files)",
    )
    plot.add_argument("--out", required=True, metavar="FILE.png")
    plot.add_argument("--data", nargs="+", metavar="SOURCE", help="Parquet data to sample records from")
    plot.add_argument("--pairs", metavar="PAIRS", help="feature pairs, by index or name: 0:1,2:3 or x0:x2")
    plot.add_argument("--sample", type=positive_int, default=5000, help="records drawn (default 5000)")
    plot.add_argument("--seed", type=seed, default=0, help="random seed of the sample (default 0)")
    plot.add_argument("--json", action="store_true", help="print a machine-readable summary on stdout")


def _info_command(commands: Any) -> None:
    info = commands.add_parser("info", help="describe a model, an output, a watcher's state directory, or Parquet data")
    _storage(info)
    info.add_argument("path")
    info.add_argument("--json", action="store_true", help="print a machine-readable summary on stdout")
