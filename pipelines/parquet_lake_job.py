"""A scheduled batch job: fit a Gaussian mixture to a Parquet lake, then score every record.

Step 1 fits the lake by streaming (the default fit: a start on a sample, one online pass with
row groups in random order, exact EM passes until tol; bounded memory) and saves the model;
step 2 streams it again and writes per-record responsibilities, the most likely
component and the log-likelihood as Parquet, one output file per input file, with a
``_SUCCESS`` manifest written last. Run it from cron, Airflow or a shell:

    python pipelines/parquet_lake_job.py LAKE --components 5 --model out/model.sgmm \\
        --out out/scored --passthrough id --keep id [--nan-policy skip] [--filter 'day >= 3']

It prints one JSON line per step (the same summaries as ``streamgmm fit/assign --json``) and
exits non-zero with a one-line message if the input is bad; a failed run leaves no ``_SUCCESS``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from lake_job import main_of, run_job

from streamgmm import StreamingGaussianMixture
from streamgmm.cli.checks import parse_filter
from streamgmm.cli.parser import column_list


def run(lake: str, **options: Any) -> tuple[StreamingGaussianMixture, dict[str, Any], dict[str, Any]]:
    """Fit and assign in this process; returns the model and the two step summaries
    (:func:`lake_job.run_job`'s options)."""
    return run_job(lake, **options)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("lake", help="Parquet file, directory (hive partitions welcome), glob or URL")
    parser.add_argument("--components", "-k", type=int, required=True)
    parser.add_argument("--model", required=True, help="model file to write")
    parser.add_argument("--out", required=True, help="output directory for the responsibilities")
    parser.add_argument("--covariance", default="full", choices=["full", "tied", "diag", "spherical"])
    parser.add_argument("--passthrough", type=column_list, default=[], help="numeric non-feature columns, e.g. id")
    parser.add_argument("--keep", type=column_list, default=[], help="columns copied to the output, e.g. id")
    parser.add_argument("--nan-policy", choices=["raise", "skip"], default="raise")
    parser.add_argument("--filter", action="append", type=parse_filter, default=[], metavar="EXPR")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    return main_of(
        "parquet_lake_job",
        lambda: run(
            args.lake,
            components=args.components,
            model_path=args.model,
            out=args.out,
            covariance=args.covariance,
            passthrough=args.passthrough,
            keep=args.keep,
            nan_policy=args.nan_policy,
            filters=args.filter,
            seed=args.seed,
        ),
    )


if __name__ == "__main__":
    sys.exit(main())
