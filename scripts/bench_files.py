"""Peak memory and speed of a one-pass fit by number of files: does memory stay flat?

A few small lake files (``write_lake``: 16 features, 8 full-covariance components, several row
groups each) are written once; lakes of 1,000 / 4,000 / 10,000 files (``--files``) are made
from them by hard links (``os.link``) in a temporary directory. Each lake is fitted in a fresh
interpreter: ``StreamingGaussianMixture(8, algorithm="online").fit(ParquetSource(lake))``, one
online pass with row groups shuffled (the default). The child reports the seconds to list the
lake (``ParquetSource(lake)``: every footer read), the seconds of the fit (listing included),
its records, and its peak resident set (``VmHWM`` in ``/proc/self/status``: the child's own,
unlike ``ru_maxrss``). The flatness ratio is the largest peak over the smallest.

Files are small (10,000 records in 4 row groups by default) so that 10,000 of them, 1e8
records, pass in a minute or two: 1M-record files would make that lake 1e10 records.

Usage::

    .venv/bin/python scripts/bench_files.py [--files 1000,4000,10000] [--records-per-file 10000]
        [--row-group 2500] [--distinct 4] [--repeats 1] [--tmp /tmp] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

import bench_common

MiB = 2**20

CHILD = r"""
import json, sys, time

def status(key):
    with open("/proc/self/status") as lines:
        return next(int(line.split()[1]) * 1024 for line in lines if line.startswith(key + ":"))

from streamgmm import ParquetSource, StreamingGaussianMixture

baseline = status("VmRSS")
start = time.perf_counter()
source = ParquetSource(sys.argv[1])
listed = time.perf_counter() - start
listed_rss = status("VmRSS")
gmm = StreamingGaussianMixture(8, algorithm="online", random_state=0).fit(source)
seconds = time.perf_counter() - start
print(json.dumps({
    "files": len(source.files), "records": int(gmm.records_seen_), "list_seconds": listed,
    "seconds": seconds, "baseline": baseline, "listed_rss": listed_rss, "peak": status("VmHWM"),
}))
"""


def write_distinct(root: str, args: argparse.Namespace) -> list[str]:
    """``args.distinct`` lake files of ``args.records_per_file`` records each."""
    from streamgmm.datasets.synthetic_lake import write_lake

    info = write_lake(
        os.path.join(root, "distinct"),
        n_records=args.records_per_file * args.distinct,
        n_features=16,
        n_components=8,
        n_files=args.distinct,
        row_group_size=args.row_group,
        seed=0,
    )
    return [str(info.path / name) for name in info.files]


def link_lake(path: str, originals: list[str], n_files: int) -> None:
    """``n_files`` hard links to the originals, in turn; copies where links are refused."""
    os.makedirs(path)
    for i in range(n_files):
        original, target = originals[i % len(originals)], os.path.join(path, f"part-{i:06d}.parquet")
        try:
            os.link(original, target)
        except OSError:
            shutil.copyfile(original, target)


def fit_in_child(lake: str) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, lake], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the fit of {lake} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = bench_common.parser(__doc__, repeats=1, tmp=None, json=None)
    parser.add_argument("--files", default="1000,4000,10000", help="lake sizes in files, comma-separated")
    parser.add_argument("--records-per-file", type=int, default=10_000)
    parser.add_argument("--row-group", type=int, default=2_500, help="records per row group")
    parser.add_argument("--distinct", type=int, default=4, help="distinct files written (the rest are links)")
    args = parser.parse_args()
    sizes = [int(n) for n in args.files.split(",")]

    root = tempfile.mkdtemp(prefix="streamgmm-bench-files-", dir=args.tmp)
    rows = []
    try:
        originals = write_distinct(root, args)
        for n_files in sizes:
            lake = os.path.join(root, f"lake-{n_files}")
            link_lake(lake, originals, n_files)
            runs = [fit_in_child(lake) for _ in range(args.repeats)]
            row = {key: statistics.median([run[key] for run in runs]) for key in runs[0]}
            row["runs"] = runs
            rows.append(row)
            shutil.rmtree(lake)
            print(
                f"{int(row['files']):>7,} files {int(row['records']):>13,} records  list {row['list_seconds']:6.1f} s  "
                f"fit {row['seconds']:6.1f} s  {row['records'] / row['seconds'] / 1e6:5.2f} M records/s  "
                f"RSS after listing {row['listed_rss'] / MiB:6.1f} MiB  peak {row['peak'] / MiB:6.1f} MiB",
                flush=True,
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    peaks = [row["peak"] for row in rows]
    print(
        f"flatness: peak RSS at {sizes[-1]:,} files / at {sizes[0]:,} files = {peaks[-1] / peaks[0]:.3f}; "
        f"largest / smallest peak = {max(peaks) / min(peaks):.3f}"
    )
    bench_common.write_json(args.json, {"args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
