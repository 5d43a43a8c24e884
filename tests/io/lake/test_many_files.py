"""Lakes of many files: the same fit as one file of the same records, memory that does not grow
with the number of files by more than a few hundred bytes a file, and files that change or go
away between listing and reading reported by name.

Lakes are made of a few distinct small files hard-linked many times (``os.link``), the way
``scripts/bench_files.py`` makes lakes of 10,000 files.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from shared_helpers import all_records

from streamgmm import DataError, ParquetSource, StreamingGaussianMixture
from streamgmm.io.lake.footers import FOOTER_CACHE_FILES

FEATURES = ["x0", "x1", "x2"]
ROWS_PER_FILE = 100
ROW_GROUP = 50


def distinct_files(root: Path, count: int) -> list[Path]:
    """``count`` files of ``ROWS_PER_FILE`` records from three well separated components, two
    row groups each."""
    rng = np.random.default_rng(7)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        labels = rng.integers(0, 3, ROWS_PER_FILE)
        X = rng.normal(size=(ROWS_PER_FILE, 3)) + 6.0 * labels[:, None]
        table = pa.table({"id": np.arange(ROWS_PER_FILE) + i * ROWS_PER_FILE} | dict(zip(FEATURES, X.T)))
        pq.write_table(table, root / f"distinct-{i}.parquet", row_group_size=ROW_GROUP)
        paths.append(root / f"distinct-{i}.parquet")
    return paths


def linked_lake(path: Path, originals: list[Path], n_files: int) -> list[Path]:
    """``n_files`` hard links to the originals in turn (copies where links are refused)."""
    path.mkdir(parents=True)
    files = []
    for i in range(n_files):
        target = path / f"part-{i:05d}.parquet"
        try:
            os.link(originals[i % len(originals)], target)
        except OSError:
            shutil.copyfile(originals[i % len(originals)], target)
        files.append(target)
    return files


@pytest.fixture(scope="module")
def originals(tmp_path_factory) -> list[Path]:
    return distinct_files(tmp_path_factory.mktemp("originals"), 3)


def fitted(source, **params):
    gmm = StreamingGaussianMixture(3, batch_size=64, random_state=0, **params).fit(source)
    return gmm.weights_, gmm.means_, gmm.covariances_


@pytest.mark.parametrize(
    "params",
    [{"algorithm": "online"}, {"algorithm": "online", "shuffle": False}, {"algorithm": "batch"}],
    ids=["online-shuffled", "online-in-order", "batch"],
)
def test_a_lake_of_many_files_fits_as_one_file_of_the_same_records(tmp_path, originals, params) -> None:
    files = linked_lake(tmp_path / "lake", originals, 300)
    # The same records in the same row groups, in one file (one footer).
    one = tmp_path / "one" / "all.parquet"
    one.parent.mkdir()
    pq.write_table(pa.concat_tables([pq.read_table(f) for f in files]), one, row_group_size=ROW_GROUP)
    lake, single = ParquetSource(tmp_path / "lake", passthrough=["id"]), ParquetSource(one, passthrough=["id"])
    assert len(lake.files) == 300 and lake.n_row_groups == single.n_row_groups == 600
    assert lake.n_records == single.n_records == 300 * ROWS_PER_FILE
    for got, expected in zip(fitted(lake, **params), fitted(single, **params)):
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)
    # Reading every file kept no more footers than the cache holds.
    assert len(lake.footers.files) <= FOOTER_CACHE_FILES
    # A source travels (to Dask workers, copies) without its footers, and reads the same.
    copy = pickle.loads(pickle.dumps(lake))
    assert copy.footers.files == {} and copy.n_records == lake.n_records
    np.testing.assert_array_equal(all_records(copy.batches(500)), all_records(single.batches(500)))


MEASURE = r"""
import json, sys, tracemalloc
import numpy as np, pyarrow.dataset, pyarrow.parquet

def resident():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))

from streamgmm import ParquetSource

before = resident()
tracemalloc.start()
source = ParquetSource(sys.argv[1], passthrough=["id"])
held = tracemalloc.get_traced_memory()[0]
tracemalloc.stop()
records = sum(batch.n_records for batch in source.batches(1000, np.random.default_rng(0)))
print(json.dumps({"held": held, "resident": resident() - before, "records": records}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmRSS (/proc/self/status) is Linux only")
def test_memory_of_a_source_does_not_grow_with_the_number_of_files(tmp_path, originals) -> None:
    """Between 200 and 2,000 files: Python objects held by the source (tracemalloc) and the
    resident set after a shuffled pass over every file (which read every footer), each in a
    fresh interpreter. Holding each file's parsed footer (as pyarrow fragments do) costs about
    19 kB a file for these small files."""
    reports = {}
    for n_files in (200, 2000):
        linked_lake(tmp_path / f"lake{n_files}", originals, n_files)
        done = subprocess.run(
            [sys.executable, "-c", MEASURE, str(tmp_path / f"lake{n_files}")], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        reports[n_files] = json.loads(done.stdout.strip().splitlines()[-1])
        assert reports[n_files]["records"] == n_files * ROWS_PER_FILE
    added = 1800
    held = (reports[2000]["held"] - reports[200]["held"]) / added
    resident = (reports[2000]["resident"] - reports[200]["resident"]) / added
    print(f"\nper added file: {held:.0f} bytes of Python objects, {resident:.0f} bytes resident")
    assert held < 400  # a path and a few numbers per row group
    assert resident < 8 * 1024


def test_a_source_keeps_no_footer_objects_per_file(tmp_path, originals) -> None:
    """In this process: the Python objects a source holds grow by a path and two row groups'
    numbers per file, not by an object per file or row group."""
    linked_lake(tmp_path / "lake", originals, 500)
    tracemalloc.start()
    try:
        source = ParquetSource(tmp_path / "lake", passthrough=["id"])
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert source.n_row_groups == 1000
    assert held / 500 < 400, held


# ---------------------------------------------------------------------- changed after listing


def replace(path: Path, table: pa.Table, **write_options) -> None:
    """Write ``table`` to ``path`` as a new file (not through a hard link shared by others)."""
    path.unlink()
    pq.write_table(table, path, **write_options)


def visit_all(source: ParquetSource, rng: np.random.Generator | None) -> int:
    return sum(batch.n_records for batch in source.batches(64, rng))


@pytest.mark.parametrize("shuffled", [False, True], ids=["in-order", "shuffled"])
def test_a_file_whose_columns_changed_after_listing_is_named_when_visited(tmp_path, originals, shuffled) -> None:
    files = linked_lake(tmp_path / "lake", originals, 40)
    source = ParquetSource(tmp_path / "lake", passthrough=["id"])
    changed = files[23]
    table = pq.read_table(changed)
    replace(changed, table.set_column(2, "x1", pa.array([str(v) for v in table.column("x1").to_pylist()])))
    with pytest.raises(DataError) as excinfo:
        visit_all(source, np.random.default_rng(0) if shuffled else None)
    message = str(excinfo.value)
    assert str(changed) in message and "'x1'" in message and "changed since" in message, message


def test_a_file_whose_row_groups_changed_after_listing_is_named_when_visited(tmp_path, originals) -> None:
    files = linked_lake(tmp_path / "lake", originals, 10)
    source = ParquetSource(tmp_path / "lake", passthrough=["id"])
    replace(files[4], pq.read_table(files[4]), row_group_size=30)
    with pytest.raises(DataError, match=f"{files[4]}: the file changed since the lake was listed"):
        visit_all(source, None)


@pytest.mark.parametrize("shuffled", [False, True], ids=["in-order", "shuffled"])
def test_a_file_removed_after_listing_is_one_error_naming_it(tmp_path, originals, shuffled) -> None:
    files = linked_lake(tmp_path / "lake", originals, 40)
    source = ParquetSource(tmp_path / "lake", passthrough=["id"])
    files[17].unlink()
    with pytest.raises(DataError) as excinfo:
        visit_all(source, np.random.default_rng(0) if shuffled else None)
    assert str(excinfo.value) == f"{files[17]}: the file is gone (removed or renamed since the lake was listed)"
    assert excinfo.value.__cause__ is None and excinfo.value.__suppress_context__
    gmm = StreamingGaussianMixture(3, random_state=0)
    with pytest.raises(DataError, match=str(files[17])):
        gmm.fit(source)
