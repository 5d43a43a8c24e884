"""``assign(..., out_format="delta")`` against unlucky timing and foreign tables: another run
committing to the same table while this one scores, ``overwrite`` over a table streamgmm never
wrote, the files the summary counts, and peak memory against the number of records."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from shared_helpers import run_streamgmm

from streamgmm import DataError, StreamingGaussianMixture, assign
from streamgmm.assignment.delta_output import FINGERPRINT_KEY

deltalake = pytest.importorskip("deltalake")


@pytest.fixture(scope="module")
def lake(make_lake):
    return make_lake(
        "delta_hostile", n_records=4_000, n_components=3, n_features=2, n_files=4, row_group_size=500, seed=3
    )


@pytest.fixture(scope="module")
def model(lake):
    return StreamingGaussianMixture(3, random_state=0).fit(str(lake.path))


def files_on_disk(folder) -> set[str]:
    """The data files under a table folder (its log left out), relative to it."""
    found = set()
    for directory, _, names in os.walk(folder):
        if "_delta_log" in directory:
            continue
        found.update(os.path.relpath(os.path.join(directory, name), folder) for name in names)
    return found


def relative(uri: str, folder) -> str:
    return os.path.relpath(uri.removeprefix("file://"), folder)


def committed_files(folder, version: int | None = None) -> set[str]:
    """The data files the table's current version (or ``version``) names, relative to it."""
    return {relative(uri, folder) for uri in deltalake.DeltaTable(str(folder), version=version).file_uris()}


def all_committed_files(folder) -> set[str]:
    """Every data file any version of the table names (earlier versions included)."""
    last = deltalake.DeltaTable(str(folder)).version()
    return set().union(*(committed_files(folder, version) for version in range(last + 1)))


class OnFirstProgress:
    """A progress callback that runs ``action`` once, while the run is scoring (before its commit),
    in a thread of its own (a callback may be called from inside deltalake's runtime)."""

    def __init__(self, action):
        self.action, self.done = action, False
        self.error: Exception | None = None

    def __call__(self, rows: int) -> None:
        if not self.done:
            self.done = True
            thread = threading.Thread(target=self._run)
            thread.start()
            thread.join()

    def _run(self) -> None:
        try:
            self.action()
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            self.error = exc


def test_a_new_delta_table_created_meanwhile_by_another_writer_is_not_appended_to(lake, model, tmp_path) -> None:
    reference = tmp_path / "reference"
    assign(model, str(lake.path), reference, keep=["id"], out_format="delta")
    rows = deltalake.DeltaTable(str(reference)).to_pyarrow_table()  # the same rows, as a retried job writes
    out = tmp_path / "scored"
    other = OnFirstProgress(lambda: deltalake.write_deltalake(str(out), rows))
    with pytest.raises(ValueError, match=rf"{out}: another writer committed version 0 .*nothing was committed"):
        assign(model, str(lake.path), out, keep=["id"], out_format="delta", progress=other)
    assert other.done and other.error is None
    table = deltalake.DeltaTable(str(out))
    ids = table.to_pyarrow_table().column("id").to_numpy()
    assert table.version() == 0 and len(ids) == 4_000 and len(np.unique(ids)) == 4_000  # one copy
    # The losing run's data files are gone: every file on disk is one the table names.
    assert files_on_disk(out) == committed_files(out)


def test_a_second_run_into_a_folder_another_run_is_writing_is_refused(lake, model, tmp_path) -> None:
    out = tmp_path / "scored"
    other = OnFirstProgress(lambda: assign(model, str(lake.path), out, keep=["id"], out_format="delta"))
    assign(model, str(lake.path), out, keep=["id"], out_format="delta", progress=other)
    assert isinstance(other.error, ValueError) and "holds files that are not a Delta table" in str(other.error)
    table = deltalake.DeltaTable(str(out))  # the first run's commit, alone
    assert table.version() == 0 and table.to_pyarrow_table().num_rows == 4_000
    assert files_on_disk(out) == committed_files(out)


def test_an_overwrite_loses_to_a_commit_made_while_it_ran(lake, model, tmp_path) -> None:
    out = tmp_path / "scored"
    assign(model, str(lake.path), out, out_format="delta")
    other = OnFirstProgress(lambda: assign(model, str(lake.path), out, keep=["id"], out_format="delta", overwrite=True))
    with pytest.raises(ValueError, match=rf"{out}: another writer committed .*version 1"):
        assign(model, str(lake.path), out, out_format="delta", overwrite=True, progress=other)
    assert other.error is None
    table = deltalake.DeltaTable(str(out))
    assert table.version() == 1 and "id" in table.schema().to_arrow().names  # the other run's version
    assert table.to_pyarrow_table().num_rows == 4_000
    assert files_on_disk(out) == all_committed_files(out)


def test_overwrite_refuses_a_delta_table_streamgmm_did_not_write(lake, model, tmp_path) -> None:
    out = tmp_path / "foreign"
    deltalake.write_deltalake(str(out), pa.table({"order": pa.array([1, 2, 3], pa.int64())}))
    before = files_on_disk(out)
    with pytest.raises(ValueError, match=rf"{out}: .*last commit .*not .*streamgmm.*overwrite"):
        assign(model, str(lake.path), out, out_format="delta", overwrite=True)
    table = deltalake.DeltaTable(str(out))
    assert table.version() == 0 and table.schema().to_arrow().names == ["order"]
    assert files_on_disk(out) == before  # nothing written beside it either


def test_overwrite_refuses_a_table_a_foreign_writer_committed_to_last(lake, model, tmp_path) -> None:
    out = tmp_path / "scored"
    assign(model, str(lake.path), out, keep=["id"], out_format="delta")
    frame = deltalake.DeltaTable(str(out)).to_pyarrow_table().slice(0, 10)
    deltalake.write_deltalake(str(out), frame, mode="append")
    with pytest.raises(ValueError, match=rf"{out}: the Delta table's last commit \(version 1\)"):
        assign(model, str(lake.path), out, out_format="delta", overwrite=True)
    assert deltalake.DeltaTable(str(out)).version() == 1


def test_overwrite_of_streamgmm_s_own_table_still_makes_a_new_version(lake, model, tmp_path) -> None:
    out = tmp_path / "scored"
    assign(model, str(lake.path), out, keep=["id"], out_format="delta")
    summary = assign(model, str(lake.path), out, out_format="delta", overwrite=True)
    table = deltalake.DeltaTable(str(out))
    assert table.version() == 1 and table.history(1)[0][FINGERPRINT_KEY] == model.params_.fingerprint()
    assert table.to_pyarrow_table().num_rows == summary.rows == 4_000
    assert deltalake.DeltaTable(str(out), version=0).to_pyarrow_table().num_rows == 4_000  # time travel intact


def test_a_failed_delta_output_leaves_no_folder_behind(model, tmp_path) -> None:
    X = np.zeros((100, model.n_features_in_))
    X[57, 1] = np.nan
    with pytest.raises(DataError, match="row 57"):
        assign(model, X, tmp_path / "scored", out_format="delta")
    assert not (tmp_path / "scored").exists()


def test_the_summary_counts_the_files_the_table_received(lake, model, tmp_path) -> None:
    out = tmp_path / "scored"
    model.save(tmp_path / "m.model")
    result = run_streamgmm(
        "assign", lake.path, "--model", tmp_path / "m.model", "--out", out, "--out-format", "delta", "--json"
    )
    assert result.returncode == 0, result.stderr
    table = deltalake.DeltaTable(str(out))
    received = table.get_add_actions(flatten=True).num_rows
    assert json.loads(result.stdout)["files"] == received == len(committed_files(out))
    assert sum(table.get_add_actions(flatten=True).column("num_records").to_pylist()) == 4_000
    info = run_streamgmm("info", out, "--json")
    assert info.returncode == 0 and json.loads(info.stdout)["records"] == 4_000  # a table, not an unfinished output


# ---------------------------------------------------------------------- memory

ASSIGN = r"""
import json, sys
import numpy as np
from streamgmm import DataError, StreamingGaussianMixture, assign

def high_water_mark():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))

model = StreamingGaussianMixture.load(sys.argv[2])
# The imports and a warm-up on a few records, so the baseline holds what any run holds.
assign(model, np.zeros((1_000, 2)), sys.argv[3], dtype="float32", out_format="delta")
baseline = high_water_mark()
summary = assign(model, sys.argv[1], sys.argv[4], dtype="float32", out_format="delta")
print(json.dumps({"baseline": baseline, "peak": high_water_mark(), "rows": summary.rows}))
"""
RECORDS_PER_FILE = 25_000
N_COMPONENTS = 100  # 400 bytes of float32 responsibilities a record


@pytest.fixture(scope="module")
def wide_model(tmp_path_factory):
    rng = np.random.default_rng(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # two iterations: a model to score with, not a good one
        model = StreamingGaussianMixture(N_COMPONENTS, max_iter=2, random_state=0).fit(rng.normal(size=(5_000, 2)))
    path = tmp_path_factory.mktemp("wide_model") / "m.model"
    model.save(path)
    return path


def lake_of(folder, n_files: int):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(RECORDS_PER_FILE, 2))
    folder.mkdir()
    original = folder / "part-00000.parquet"
    pq.write_table(pa.table({"x0": X[:, 0], "x1": X[:, 1]}), original, row_group_size=5_000)
    for i in range(1, n_files):
        os.link(original, folder / f"part-{i:05d}.parquet")
    return folder


def test_delta_output_memory_does_not_grow_with_the_records(wide_model, tmp_path) -> None:
    """1 file against 16 (25k and 400k records, 10 and 160 MB of responsibilities): the peak over
    the baseline grows by less than a tenth of the larger output."""
    small, large = lake_of(tmp_path / "small", 1), lake_of(tmp_path / "large", 16)
    grown = {}
    for name, lake in (("small", small), ("large", large)):
        outs = [str(tmp_path / f"{name}_warm"), str(tmp_path / f"{name}_out")]
        result = subprocess.run(
            [sys.executable, "-c", ASSIGN, str(lake), str(wide_model), *outs],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stderr
        numbers = json.loads(result.stdout)
        grown[name] = numbers["peak"] - numbers["baseline"]
        print(name, numbers["rows"], "records:", grown[name] / 2**20, "MiB over the baseline")
    output_bytes = 16 * RECORDS_PER_FILE * N_COMPONENTS * 4
    assert grown["large"] - grown["small"] < output_bytes / 10


def test_a_delta_output_in_an_object_store_is_one_commit_that_loses_a_race_cleanly(lake, model, s3_bucket) -> None:
    """On the moto S3 server: the commit, and a table created meanwhile by another writer."""
    options = {"AWS_ALLOW_HTTP": "true"}
    url = f"s3://{s3_bucket}/scored"
    summary = assign(model, str(lake.path), url, keep=["id"], out_format="delta")
    table = deltalake.DeltaTable(url, storage_options=options)
    assert table.version() == 0 and table.to_pyarrow_table().num_rows == 4_000 == summary.rows
    assert len(summary.files) == len(table.file_uris())
    rows = table.to_pyarrow_table()
    raced = f"s3://{s3_bucket}/raced"
    other = OnFirstProgress(lambda: deltalake.write_deltalake(raced, rows, storage_options=options))
    with pytest.raises(ValueError, match="another writer committed version 0"):
        assign(model, str(lake.path), raced, keep=["id"], out_format="delta", progress=other)
    assert other.error is None
    assert deltalake.DeltaTable(raced, storage_options=options).to_pyarrow_table().num_rows == 4_000


def test_a_delta_output_refuses_a_prefix_holding_other_objects(lake, model, s3_bucket) -> None:
    import pyarrow.fs as pafs

    s3, _ = pafs.FileSystem.from_uri(f"s3://{s3_bucket}")
    with s3.open_output_stream(f"{s3_bucket}/theirs/notes.csv") as stream:
        stream.write(b"a,b\n1,2\n")
    with pytest.raises(ValueError, match=r"holds objects assign did not write \(notes.csv\)"):
        assign(model, str(lake.path), f"s3://{s3_bucket}/theirs", out_format="delta", overwrite=True)
    listed = s3.get_file_info(pafs.FileSelector(f"{s3_bucket}/theirs", recursive=True))
    assert [info.path for info in listed] == [f"{s3_bucket}/theirs/notes.csv"]
