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
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import bench_common
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

COVARIANCE_TYPES = bench_common.COVARIANCE_TYPES


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
    kwargs = {"compression": compression} if compression != "snappy" else {}
    return bench_common.timed(lambda: assign(model, lake, out, keep=["id"], dtype=result_dtype, **kwargs))[0]


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
    parser = bench_common.parser(
        __doc__.split("\n\n")[0],
        lake=None,
        records=1_000_000,
        features=16,
        components=8,
        repeats=3,
        tmp=tempfile.gettempdir(),
        json=None,
    )
    parser.add_argument("--covariance", default=",".join(COVARIANCE_TYPES), help="comma-separated types")
    parser.add_argument("--compression", default="snappy", help="codec of both outputs (assign's default snappy)")
    parser.add_argument("--result-dtype", default="float64", choices=["float64", "float32"])
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench_assign_", dir=args.tmp)
    written = {"n_records": args.records, "n_features": args.features, "n_components": args.components, "n_files": 8}
    try:
        with bench_common.lake(args.lake, tmp, **written) as lake:
            print(
                f"lake {lake}: {args.components} components, codec {args.compression}, "
                f"results {args.result_dtype}, median of {args.repeats}"
            )
            rows = []
            for covariance_type in args.covariance.split(","):
                rows.append(bench(lake, covariance_type, args, tmp))
                bench_common.note(f"{covariance_type}: {rows[-1]['ratio']:.2f}")
        header = ["covariance", "floor s", "assign s", "assign/floor", "floor MB", "assign MB"]
        cells = [
            [r["covariance"], r["floor_s"], r["assign_s"], r["ratio"], r["floor_bytes"] / 1e6, r["assign_bytes"] / 1e6]
            for r in rows
        ]
        print(bench_common.table(header, cells, ["", ".2f", ".2f", ".2f", ".1f", ".1f"]))
        bench_common.write_json(args.json, rows)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
