"""A scheduled batch job: fit a Gaussian mixture to a Parquet lake, then score every record.

Step 1 streams the lake once (online EM, row groups in random order, bounded memory) and saves
the model; step 2 streams it again and writes per-record responsibilities, the most likely
component and the log-likelihood as Parquet, one output file per input file, with a
``_SUCCESS`` manifest written last. Run it from cron, Airflow or a shell:

    python pipelines/parquet_lake_job.py LAKE --components 5 --model out/model.sgmm \\
        --out out/scored --passthrough id --keep id [--nan-policy skip] [--filter 'day >= 3']

It prints one JSON line per step (the same summaries as ``streamgmm fit/assign --json``) and
exits non-zero with a one-line message if the input is bad; a failed run leaves no ``_SUCCESS``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from streamgmm import DataError, ModelFileError, ParquetSource, StreamingGaussianMixture, assign
from streamgmm.cli.checks import parse_filter
from streamgmm.cli.command import combined_filter
from streamgmm.cli.parser import column_list


def run(
    lake: str,
    *,
    components: int,
    model_path: str,
    out: str,
    covariance: str = "full",
    passthrough: list[str] | None = None,
    keep: list[str] | None = None,
    nan_policy: str = "raise",
    filters: list[Any] | None = None,
    seed: int = 0,
    overwrite: bool = True,
) -> tuple[StreamingGaussianMixture, dict[str, Any], dict[str, Any]]:
    """Fit and assign; returns the model and the two step summaries."""
    source = ParquetSource(
        lake, passthrough=passthrough or [], filter=combined_filter(filters or []), nan_policy=nan_policy
    )
    started = time.perf_counter()
    model = StreamingGaussianMixture(components, covariance_type=covariance, random_state=seed).fit(source)
    fit_seconds = time.perf_counter() - started
    model.save(model_path)
    fitted = {
        "step": "fit",
        "files": len(source.files),
        "records": model.records_seen_,
        # The default on a lake larger than its sample: one online pass, then exact EM until tol.
        "passes": model.n_iter_,
        "skipped": model.n_skipped_,
        "features": model._feature_names(),
        "seconds": round(fit_seconds, 3),
        "records_per_second": round(model.records_seen_ / fit_seconds),
        "model": model_path,
    }
    summary = assign(model, source, out, keep=keep or [], overwrite=overwrite)
    scored = {
        "step": "assign",
        "files": len(summary.files),
        "records": summary.rows,
        "skipped": summary.skipped,
        "seconds": round(summary.seconds, 3),
        "records_per_second": round(summary.rows / summary.seconds) if summary.seconds else None,
        "out": summary.out,
        "model_fingerprint": summary.fingerprint,
    }
    return model, fitted, scored


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
    try:
        _, fitted, scored = run(
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
        )
    except (DataError, ModelFileError, ValueError, OSError) as exc:
        print(f"parquet_lake_job: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    print(json.dumps(fitted))
    print(json.dumps(scored))
    return 0


if __name__ == "__main__":
    sys.exit(main())
