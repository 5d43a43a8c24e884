"""Delta tables an unlucky user meets: a schema that gained a column by legal evolution (old
files lack it: nulls), a version whose data files VACUUM removed, and a damaged log (a truncated
commit, a gap in the versions): each read as Delta means it, or refused in one line naming the
table and the version."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from shared_helpers import all_records, assert_one_error_line, run_streamgmm_here

from streamgmm import ParquetSource, StreamingGaussianMixture
from streamgmm.io.records.columns import DataError

deltalake = pytest.importorskip("deltalake")


def old_rows(n: int = 600) -> pa.Table:
    rng = np.random.default_rng(0)
    return pa.table({"id": np.arange(n), "x0": rng.normal(size=n), "x1": rng.normal(size=n)})


def new_rows(n: int = 400) -> pa.Table:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(n, 3))
    return pa.table({"id": np.arange(1000, 1000 + n), "x0": x[:, 0], "x1": x[:, 1], "x2": x[:, 2]})


@pytest.fixture(scope="module")
def evolved(tmp_path_factory) -> str:
    """Version 0: 600 rows of x0, x1; version 1: 400 rows with a new column x2 (schema merged)."""
    path = str(tmp_path_factory.mktemp("evolved") / "table")
    deltalake.write_deltalake(path, old_rows())
    deltalake.write_deltalake(path, new_rows(), mode="append", schema_mode="merge")
    return path


def test_a_column_added_by_schema_evolution_is_null_in_the_old_files(evolved) -> None:
    source = ParquetSource(evolved, nan_policy="skip")
    assert source.feature_names == ["id", "x0", "x1", "x2"] and source.n_records == 1000
    X = all_records(source.batches(256))
    expected = new_rows().select(["id", "x0", "x1", "x2"]).to_pandas().to_numpy()
    np.testing.assert_array_equal(X[np.argsort(X[:, 0])], expected)  # the old rows are skipped, as all-null x2
    assert source.skipped_records == 600


def test_the_nan_policy_decides_about_the_old_files_nulls(evolved) -> None:
    columns = ["x0", "x1", "x2"]
    with pytest.raises(DataError, match=r"column 'x2'") as raised:
        StreamingGaussianMixture(2, random_state=0).fit(ParquetSource(evolved, columns=columns))
    assert "schema drift" not in str(raised.value)
    skipped = StreamingGaussianMixture(2, random_state=0).fit(
        ParquetSource(evolved, columns=columns, nan_policy="skip")
    )
    assert skipped.records_seen_ == 400
    marginal = ParquetSource(evolved, columns=columns, nan_policy="marginalize")
    fitted = StreamingGaussianMixture(2, random_state=0).fit(marginal)
    assert fitted.records_seen_ == 1000
    # x0 is seen in every row: its fitted mean is the mean of all 1,000 values, not of the 400 new ones.
    everything = np.concatenate([old_rows().column("x0").to_numpy(), new_rows().column("x0").to_numpy()])
    mean_x0 = float(fitted.weights_ @ fitted.means_[:, 0])
    assert abs(mean_x0 - everything.mean()) < 0.02


def test_info_and_fit_of_an_evolved_table_on_the_command_line(evolved, tmp_path) -> None:
    info = run_streamgmm_here("info", evolved, "--json")
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["numeric_columns"] == ["id", "x0", "x1", "x2"]
    fit = run_streamgmm_here(
        "fit",
        evolved,
        "-k",
        "2",
        "--columns",
        "x0,x1,x2",
        "--nan-policy",
        "marginalize",
        "--model",
        str(tmp_path / "m"),
    )
    assert fit.returncode == 0, fit.stderr
    refused = run_streamgmm_here("fit", evolved, "-k", "2", "--model", str(tmp_path / "m2"))
    assert refused.returncode == 1 and "schema drift" not in refused.stderr and "'x2'" in refused.stderr


# ---------------------------------------------------------------------- damaged tables


@pytest.fixture(scope="module")
def vacuumed(tmp_path_factory) -> str:
    """Version 0 replaced by an overwrite (version 1), then VACUUM: version 0's file is gone."""
    path = str(tmp_path_factory.mktemp("vacuumed") / "table")
    deltalake.write_deltalake(path, old_rows())
    deltalake.write_deltalake(path, old_rows(50), mode="overwrite")
    deltalake.DeltaTable(path).vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False)
    return path


def log_file(path: str, version: int) -> Path:
    return Path(path, "_delta_log", f"{version:020d}.json")


def test_a_version_whose_files_vacuum_removed_names_the_table_the_version_and_the_file(vacuumed) -> None:
    with pytest.raises(DataError) as raised:
        ParquetSource(vacuumed, version=0)
    message = str(raised.value)
    gone = deltalake.DeltaTable(vacuumed, version=0).file_uris()[0].removeprefix("file://")
    assert message.startswith(f"{vacuumed}: ") and "version 0" in message
    assert os.path.basename(gone) in message and "missing" in message
    result = run_streamgmm_here("fit", vacuumed, "--version", "0", "-k", "1", "--model", "/dev/null/m")
    assert_one_error_line(result, "version 0")


def test_a_truncated_commit_is_one_line_naming_its_version(vacuumed, tmp_path) -> None:
    path = str(tmp_path / "table")
    shutil.copytree(vacuumed, path)
    commit = log_file(path, 1)
    text = commit.read_text()
    commit.write_text(text[: len(text) // 2])
    with pytest.raises(DataError) as raised:
        ParquetSource(path)
    message = str(raised.value)
    assert message.startswith(f"{path}: ") and "version 1" in message and commit.name in message
    assert "<unknown>" not in message and "pthread" not in message and len(message) < 400
    result = run_streamgmm_here("info", path)
    assert_one_error_line(result, commit.name)


def test_a_gap_in_the_log_is_one_line_naming_the_missing_version(vacuumed, tmp_path) -> None:
    path = str(tmp_path / "table")
    shutil.copytree(vacuumed, path)
    for _ in range(2):
        deltalake.write_deltalake(path, old_rows(10), mode="append")
    log_file(path, 2).unlink()
    with pytest.raises(DataError) as raised:
        ParquetSource(path)
    message = str(raised.value)
    assert message.startswith(f"{path}: ") and "version 2" in message
    assert "ParsedLogPath" not in message and len(message) < 400
    result = run_streamgmm_here("info", path)
    assert_one_error_line(result, "version 2")
