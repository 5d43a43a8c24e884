"""``assign`` against its I/O floor, for each covariance type, on one synthetic Parquet lake.

The floor is what any responsibilities pass must do at least, with pyarrow and no compute: read
each file's features and ``id``, convert the features to float64 arrays, and write ``id`` and
the K + 2 result columns (``resp_*``, ``component``, ``log_likelihood``) with the same codec and
one output row group per input row group. Its result values are a real model's (computed once,
before timing), so the encoder compresses what assign would write. Both are timed in the same
run, alternately, and the median of ``--repeats`` runs of each is reported with their ratio.

Usage::

    .venv/bin/python scripts/bench_assign.py [--lake DIR] [--covariance full,diag,...]
        [--compression snappy] [--result-dtype float64] [--repeats 3] [--json PATH]

Without ``--lake`` it writes a 1M x 16, K=8 lake (8 files) under ``--tmp`` and deletes it after.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")


def data_files(lake: str) -> list[str]:
    return sorted(str(p) for p in Path(lake).glob("*.parquet"))


def feature_names(lake: str) -> list[str]:
    return [name for name in pq.read_schema(data_files(lake)[0]).names if name.startswith("x")]


def fitted_model(lake: str, k: int, covariance_type: str):
    """A model fitted on the first file (in memory, a few EM iterations): the bench times
    scoring, so the fit only has to be a plausible mixture."""
    from streamgmm import StreamingGaussianMixture

    names = feature_names(lake)
    table = pq.read_table(data_files(lake)[0], columns=names)
    X = np.column_stack([table.column(name).to_numpy() for name in names])
    model = StreamingGaussianMixture(k, covariance_type=covariance_type, random_state=0, max_iter=5, tol=1e-2)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(pa.table({name: X[:, j] for j, name in enumerate(names)}))
    return model


def floor_pass(lake: str, out: str, names: list[str], results: pa.Table, compression: str) -> float:
    """Read features + id, decode the features to float64, write id + the result columns."""
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    start = time.perf_counter()
    for path in data_files(lake):
        source = pq.ParquetFile(path)
        target = os.path.join(out, os.path.basename(path))
        with pq.ParquetWriter(
            target, pa.schema([pa.field("id", pa.int64())] + list(results.schema)), compression=compression
        ) as writer:
            for group in range(source.num_row_groups):
                table = source.read_row_group(group, columns=["id"] + names)
                X = np.empty((table.num_rows, len(names)), order="F")
                for j, name in enumerate(names):
                    X[:, j] = table.column(name).to_numpy()
                n = table.num_rows
                columns = [table.column("id")] + [results.column(i).slice(0, n) for i in range(results.num_columns)]
                writer.write_table(pa.Table.from_arrays(columns, schema=writer.schema), row_group_size=n)
    return time.perf_counter() - start


def assign_pass(model, lake: str, out: str, compression: str, result_dtype: str) -> float:
    from streamgmm import assign

    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    kwargs = {"compression": compression} if compression != "snappy" else {}
    assign(model, lake, out, keep=["id"], dtype=result_dtype, **kwargs)
    return time.perf_counter() - start


def output_bytes(out: str) -> int:
    return sum(os.path.getsize(path) for path in data_files(out))


def result_table(model, lake: str, result_dtype: str) -> pa.Table:
    """The result columns of the largest row group, as assign computes them (once, untimed)."""
    names = feature_names(lake)
    source = pq.ParquetFile(data_files(lake)[0])
    rows = max(source.metadata.row_group(i).num_rows for i in range(source.num_row_groups))
    table = source.read_row_group(0, columns=names)
    X = np.column_stack([table.column(name).to_numpy() for name in names])[:rows]
    resp = model.predict_proba(X)
    log_likelihood = model.score_samples(X)
    columns = {f"resp_{k}": pa.array(resp[:, k].astype(result_dtype)) for k in range(resp.shape[1])}
    columns["component"] = pa.array(resp.argmax(axis=1).astype(np.int32))
    columns["log_likelihood"] = pa.array(log_likelihood)
    return pa.table(columns)


def bench(lake: str, covariance_type: str, args: argparse.Namespace, tmp: str) -> dict:
    model = fitted_model(lake, args.components, covariance_type)
    names = feature_names(lake)
    results = result_table(model, lake, args.result_dtype)
    floor_out, assign_out = os.path.join(tmp, "floor"), os.path.join(tmp, "assigned")
    floors, assigns = [], []
    for _ in range(args.repeats):
        floors.append(floor_pass(lake, floor_out, names, results, args.compression))
        assigns.append(assign_pass(model, lake, assign_out, args.compression, args.result_dtype))
    row = {
        "covariance": covariance_type,
        "floor_s": statistics.median(floors),
        "assign_s": statistics.median(assigns),
        "floor_runs": floors,
        "assign_runs": assigns,
        "floor_bytes": output_bytes(floor_out),
        "assign_bytes": output_bytes(assign_out),
    }
    row["ratio"] = row["assign_s"] / row["floor_s"]
    shutil.rmtree(floor_out, ignore_errors=True)
    shutil.rmtree(assign_out, ignore_errors=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lake", help="an existing lake (features x0.., an int64 id); default: write one")
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=16)
    parser.add_argument("--components", type=int, default=8)
    parser.add_argument("--covariance", default=",".join(COVARIANCE_TYPES), help="comma-separated types")
    parser.add_argument("--compression", default="snappy", help="codec of both outputs (assign's default snappy)")
    parser.add_argument("--result-dtype", default="float64", choices=["float64", "float32"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tmp", default=tempfile.gettempdir())
    parser.add_argument("--json", help="also write the rows as JSON here")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench_assign_", dir=args.tmp)
    try:
        lake = args.lake
        if lake is None:
            lake = os.path.join(tmp, "lake")
            import subprocess

            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "streamgmm.datasets.synthetic_lake",
                    "--records",
                    str(args.records),
                    "--features",
                    str(args.features),
                    "--components",
                    str(args.components),
                    "--files",
                    "8",
                    lake,
                ],
                check=True,
                stdout=subprocess.DEVNULL,
            )
        rows = []
        print(
            f"lake {lake}: {args.components} components, codec {args.compression}, "
            f"results {args.result_dtype}, median of {args.repeats}"
        )
        print(
            f"{'covariance':<10} {'floor s':>8} {'assign s':>9} {'assign/floor':>13} {'floor MB':>9} {'assign MB':>10}"
        )
        for covariance_type in args.covariance.split(","):
            row = bench(lake, covariance_type, args, tmp)
            rows.append(row)
            print(
                f"{covariance_type:<10} {row['floor_s']:8.2f} {row['assign_s']:9.2f} {row['ratio']:13.2f} "
                f"{row['floor_bytes'] / 1e6:9.1f} {row['assign_bytes'] / 1e6:10.1f}",
                flush=True,
            )
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=1))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
