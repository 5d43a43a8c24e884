"""Fitting a Parquet lake holds one row group at a time: peak memory does not grow with the
number of files.

Two lakes of identical files (250k records x 8 features each, written once by ``write_lake`` with
its default row groups of 131072 records, then linked): 2 files and 16 files. Each is fitted in
a fresh interpreter, which reports its resident set size just before the fit (after the imports)
and its peak after it. Run with ``pytest -s`` to see the numbers.

The peak is the kernel's high-water mark of the child's own address space (``VmHWM`` in
``/proc/self/status``). ``ru_maxrss`` is printed too but not used: Linux carries the parent's
high-water mark over ``fork``/``vfork`` + ``exec`` into the child's ``ru_maxrss``, so a child of
a pytest process that has just written a 256 MB lake reports the parent's peak, whatever it does.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

from streamgmm import ParquetSource
from streamgmm.datasets.synthetic_lake import write_lake
from streamgmm.io.sources.parquet import PREFETCH_RECORDS, READ_BATCH

RECORDS_PER_FILE = 250_000
N_FEATURES = 8
MiB = 2**20

FIT = r"""
import json, resource, sys, time
import numpy as np, psutil, pyarrow, pyarrow.dataset, pyarrow.parquet
from streamgmm import ParquetSource, StreamingGaussianMixture

def high_water_mark():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))

baseline = psutil.Process().memory_info().rss
start = time.perf_counter()
gmm = StreamingGaussianMixture(4, batch_size=8192, random_state=0).fit(ParquetSource(sys.argv[1], passthrough=["id"]))
seconds = time.perf_counter() - start
print(json.dumps({
    "baseline": baseline, "peak": high_water_mark(),
    "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,  # KiB on Linux
    "records": int(gmm.records_seen_), "seconds": seconds,
}))
"""


@pytest.fixture(scope="session")
def lakes(tmp_path_factory):
    """``{n_files: lake directory}``, every file the same 250k records (identical sizes, and one
    file to generate instead of 16)."""
    root = tmp_path_factory.mktemp("bounded_memory")
    info = write_lake(
        root / "one", n_records=RECORDS_PER_FILE, n_components=4, n_features=N_FEATURES, n_files=1, seed=0
    )
    original = info.path / info.files[0]
    lakes = {}
    for n_files in (2, 16):
        lake = root / f"lake_{n_files}"
        lake.mkdir()
        for i in range(n_files):
            target = lake / f"part-{i:05d}.parquet"
            try:
                os.link(original, target)
            except OSError:
                shutil.copyfile(original, target)
        lakes[n_files] = lake
    return lakes


def measure(path) -> dict:
    result = subprocess.run([sys.executable, "-c", FIT, str(path)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    report["growth"] = max(report["peak"] - report["baseline"], 0)
    return report


@pytest.fixture(scope="module")
def measured(lakes) -> dict[int, dict]:
    """One fresh interpreter per lake, run one after the other (not to compete for memory)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("VmHWM (/proc/self/status) is Linux only")
    reports = {n_files: measure(lake) for n_files, lake in lakes.items()}
    for n_files, r in reports.items():
        print(
            f"\n{n_files} files: {r['records']} records, baseline RSS {r['baseline'] / MiB:.1f} MiB, peak "
            f"{r['peak'] / MiB:.1f} MiB, growth {r['growth'] / MiB:.1f} MiB (ru_maxrss {r['ru_maxrss'] / MiB:.1f} "
            f"MiB, inherited), fit {r['seconds']:.1f} s",
            end="",
        )
    data_bytes = reports[16]["records"] * N_FEATURES * 8
    print(f"\n16-file lake as float64: {data_bytes / MiB:.1f} MiB; a third of it {data_bytes / 3 / MiB:.1f} MiB")
    return reports


def test_peak_memory_of_a_fit_does_not_grow_with_the_number_of_files(measured) -> None:
    small, large = measured[2], measured[16]
    assert small["records"] == 2 * RECORDS_PER_FILE and large["records"] == 16 * RECORDS_PER_FILE
    # Eight times the files and records, the same peak (to allocator noise).
    assert abs(large["growth"] - small["growth"]) <= max(32 * MiB, 0.25 * small["growth"])
    # Streamed, not loaded: well under the 244 MiB the records take as float64.
    assert large["growth"] < large["records"] * N_FEATURES * 8 / 2


def test_peak_memory_growth_is_below_a_third_of_the_data(measured) -> None:
    """A third of the records as float64, plus three row groups' features (131072 x 8 float64,
    8 MiB each): two that the read-ahead thread decodes while the pass computes on the one
    before, and the next row group that a shuffled pass decodes while it cuts one."""
    large = measured[16]
    assert large["growth"] < large["records"] * N_FEATURES * 8 / 3 + 3 * 131072 * N_FEATURES * 8


@pytest.mark.parametrize(
    "shuffled",
    [
        False,
        True,
    ],
    ids=["plain", "shuffled"],
)
def test_a_pass_holds_about_one_row_group(lakes, shuffled: bool) -> None:
    """The module's promise: numpy memory (which tracemalloc counts exactly) stays within two row
    groups' features plus one mini-batch. A shuffled pass holds two row groups itself (the one
    being cut into batches, and the next one, decoded meanwhile by a thread of its own), so its
    bound adds what it holds besides: the decoded part of a row group being copied in
    (``READ_BATCH`` records), the permutation, and the queue of batches read ahead
    (``PREFETCH_RECORDS`` records)."""
    source = ParquetSource(lakes[2] / "part-00000.parquet", passthrough=["id"])
    largest = max(group.num_rows for group in source.row_groups)
    assert largest == 131072
    bound = 2 * largest * N_FEATURES * 8 + 8192 * N_FEATURES * 8
    if shuffled:
        bound += (READ_BATCH + PREFETCH_RECORDS) * N_FEATURES * 8 + largest * 8
    rng = np.random.default_rng(0) if shuffled else None
    tracemalloc.start()
    try:
        n = sum(batch.n_records for batch in source.batches(8192, rng))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    print(f"\n{'shuffled' if shuffled else 'plain'} pass: numpy peak {peak / MiB:.1f} MiB, bound {bound / MiB:.1f} MiB")
    assert n == RECORDS_PER_FILE
    assert peak <= bound
