"""A cluster job: fit a Gaussian mixture to a Parquet lake on a Dask cluster, then score every
record there.

Step 1 fits on the workers, one partition per input file (online EM in waves of one file per
worker thread, or exact batch EM with ``--algorithm batch``) and saves the model; only
parameters and statistics travel to this process. Step 2 writes per-record responsibilities, the
most likely component and the log-likelihood as Parquet, each output file written by the worker
that reads its input file, with a ``_SUCCESS`` manifest written last. The workers must see the
lake and ``--out`` (a shared filesystem, or URLs pyarrow can open).

    python pipelines/dask_cluster_job.py LAKE --out out/scored [--scheduler tcp://host:8786 | --workers 4] \\
        [-k 5] [--model out/model.sgmm] [--passthrough id] [--keep id] [--algorithm online|batch]

Without ``--scheduler`` it starts a ``LocalCluster`` of ``--workers`` processes (default 2) and
stops it at the end. It prints one JSON line per step and exits non-zero with a one-line message
if the input is bad; a failed run leaves no ``_SUCCESS``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from lake_job import main_of, run_job

from streamgmm import StreamingGaussianMixture
from streamgmm.cli.parser import column_list
from streamgmm.dask.source import connect


def run(
    lake: str, *, client: Any, out: str, components: int = 5, model_path: str | None = None, **options: Any
) -> tuple[StreamingGaussianMixture, dict[str, Any], dict[str, Any]]:
    """Fit and assign on ``client``'s cluster; returns the model and the two step summaries
    (:func:`lake_job.run_job`'s options)."""
    model_path = model_path or out.rstrip("/") + ".model.sgmm"
    return run_job(lake, client=client, out=out, components=components, model_path=model_path, **options)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("lake", help="Parquet file, directory (hive partitions welcome), glob or URL")
    parser.add_argument("--out", required=True, help="output directory for the responsibilities")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--scheduler", metavar="ADDRESS", help="address of a running Dask scheduler")
    where.add_argument("--workers", type=int, metavar="N", help="start a LocalCluster of N processes (default 2)")
    parser.add_argument("--components", "-k", type=int, default=5)
    parser.add_argument("--model", help="model file to write (default: OUT.model.sgmm)")
    parser.add_argument("--algorithm", choices=["auto", "online", "batch"], default="online")
    parser.add_argument("--passthrough", type=column_list, default=[], help="numeric non-feature columns, e.g. id")
    parser.add_argument("--keep", type=column_list, default=[], help="columns copied to the output, e.g. id")
    parser.add_argument("--nan-policy", choices=["raise", "skip"], default="raise")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    workers = None if args.scheduler else (args.workers or 2)

    def steps() -> tuple[Any, dict[str, Any], dict[str, Any]]:
        with connect(args.scheduler, workers) as client:
            return run(
                args.lake,
                client=client,
                out=args.out,
                components=args.components,
                model_path=args.model,
                algorithm=args.algorithm,
                passthrough=args.passthrough,
                keep=args.keep,
                nan_policy=args.nan_policy,
                seed=args.seed,
            )

    return main_of("dask_cluster_job", steps)


if __name__ == "__main__":
    sys.exit(main())
