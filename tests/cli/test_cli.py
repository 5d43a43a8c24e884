"""The ``streamgmm`` command on a small lake: one fit as a subprocess (``python -m streamgmm``),
the console script and the terminal's progress bars in processes of their own, the rest in this
process (a subprocess pays about a second of imports)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from shared_helpers import assert_one_error_line, on_a_terminal, run_streamgmm, run_streamgmm_here

from streamgmm import StreamingGaussianMixture

K = 3
N_RECORDS = 20_000
FEATURES = ["x0", "x1", "x2"]


def features_of(path: Path) -> np.ndarray:
    table = pq.read_table(path)
    return np.column_stack([table[name].to_numpy() for name in FEATURES])


@pytest.fixture(scope="module")
def lake(make_lake):
    return make_lake(
        "cli",
        n_records=N_RECORDS,
        n_components=K,
        n_features=3,
        n_files=4,
        partitions=2,
        row_group_size=2500,
        held_out=4000,
        seed=11,
    )


@pytest.fixture(scope="module")
def fitted(lake, tmp_path_factory):
    """``fit --json`` without -q on a non-terminal: (its result, its model path)."""
    model_path = tmp_path_factory.mktemp("models") / "model.sgmm"
    result = run_streamgmm("fit", lake.path, "-k", K, "--model", model_path, "--passthrough", "id", "--json")
    return result, model_path


@pytest.fixture(scope="module")
def assigned(lake, fitted, tmp_path_factory):
    _, model_path = fitted
    out = tmp_path_factory.mktemp("assign") / "scored"
    result = run_streamgmm_here(
        "assign", lake.path, "--model", model_path, "--out", out, "--keep", "id,day", "--json", "-q"
    )
    return result, out


def test_fit_json(lake, fitted):
    result, model_path = fitted
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # not a terminal: no progress bar
    summary = json.loads(result.stdout)
    assert summary["command"] == "fit"
    assert summary["records"] == N_RECORDS
    assert summary["files"] == 4
    assert summary["skipped"] == 0
    assert summary["n_components"] == K
    assert summary["covariance_type"] == "full"
    assert summary["feature_names"] == FEATURES  # no id: it is passed through
    assert summary["model"] == str(model_path)

    model = StreamingGaussianMixture.load(model_path)
    assert list(model.feature_names_in_) == FEATURES
    np.testing.assert_allclose(summary["weights"], model.weights_)
    held_out = features_of(lake.held_out_path)
    ours = model.score(held_out)
    truth = lake.params.log_likelihood(held_out).mean()
    assert abs(ours - truth) < 0.02, (ours, truth)


def test_assign_json_and_info(lake, fitted, assigned):
    _, model_path = fitted
    result, out = assigned
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    model = StreamingGaussianMixture.load(model_path)
    summary = json.loads(result.stdout)
    assert summary["command"] == "assign"
    assert summary["out"] == str(out)
    assert summary["files"] == 4
    assert summary["records"] == N_RECORDS
    assert summary["skipped"] == 0
    assert summary["model_fingerprint"] == model.params_.fingerprint()
    for rel in lake.files:
        table = pq.read_table(out / rel)
        assert table.column_names[:2] == ["id", "day"]
        np.testing.assert_array_equal(table["id"].to_numpy(), pq.read_table(lake.path / rel)["id"].to_numpy())
        np.testing.assert_allclose(
            table["log_likelihood"].to_numpy(),
            model.score_samples(features_of(lake.path / rel)),
            rtol=1e-12,
            atol=1e-12,
        )

    output_file = out / lake.files[-1]
    on_model, on_file, on_dir = (run_streamgmm_here("info", path, "--json") for path in (model_path, output_file, out))
    for result in (on_model, on_file, on_dir):
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""

    info = json.loads(on_model.stdout)
    assert info["kind"] == "model"
    assert info["n_components"] == K
    assert info["feature_names"] == FEATURES
    assert info["algorithm"] == "auto"
    assert info["records_seen"] == N_RECORDS
    np.testing.assert_allclose(info["means"], model.means_)

    info = json.loads(on_file.stdout)
    assert info["kind"] == "output file"
    assert info["path"] == str(output_file)
    assert info["fingerprint"] == model.params_.fingerprint()
    assert info["keep"] == ["id", "day"]
    assert info["feature_names"] == FEATURES
    np.testing.assert_array_equal(np.array(info["weights"]), model.weights_)

    info = json.loads(on_dir.stdout)
    assert info["kind"] == "output directory"
    assert info["rows"] == N_RECORDS
    assert info["model_fingerprint"] == model.params_.fingerprint()
    assert [entry["output"] for entry in info["files"]] == lake.files
    assert sum(entry["rows"] for entry in info["files"]) == N_RECORDS


def test_plain_output_on_a_non_terminal(lake, fitted, tmp_path):
    """Not a terminal: no progress bar even without -q (with -q: see the fixtures); the text
    summary is one line on stdout."""
    _, model_path = fitted
    result = run_streamgmm_here(
        "assign", lake.path, "--model", model_path, "--out", tmp_path / "plain", "--dtype", "float32"
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"wrote responsibilities of {N_RECORDS:,} records to 4 file(s)")
    table = pq.read_table(tmp_path / "plain" / lake.files[0])
    assert table.schema.field("resp_0").type == pa.float32()


def test_assign_codec_and_result_type(lake, fitted, tmp_path):
    """--compression and --result-dtype reach the files; results against the model's own
    float64 scoring (float32 within half an ulp of values <= 1)."""
    _, model_path = fitted
    model = StreamingGaussianMixture.load(model_path)
    out = tmp_path / "zstd32"
    result = run_streamgmm_here(
        "assign", lake.path, "--model", model_path, "--out", out, "--compression", "zstd", "--result-dtype", "float32"
    )
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "_SUCCESS").read_text())["compression"] == "zstd"
    for rel in lake.files:
        written = pq.ParquetFile(out / rel)
        assert {written.metadata.row_group(0).column(i).compression for i in range(written.metadata.num_columns)} == {
            "ZSTD"
        }
        table = written.read()
        assert table.schema.field("resp_0").type == pa.float32()
        source = pq.read_table(lake.path / rel)
        X = np.column_stack([source[name].to_numpy() for name in model.feature_names_in_])
        resp = np.column_stack([table[f"resp_{k}"].to_numpy() for k in range(model.n_components)])
        np.testing.assert_allclose(resp, model.predict_proba(X), rtol=0, atol=2.0**-24)
    refused = run_streamgmm_here(
        "assign", lake.path, "--model", model_path, "--out", tmp_path / "bad", "--compression", "brotli"
    )
    assert refused.returncode == 2 and "--compression" in refused.stderr


def test_errors(lake, fitted, tmp_path):
    _, model_path = fitted
    missing = tmp_path / "does_not_exist"
    not_parquet = tmp_path / "notes"
    not_parquet.mkdir()
    (not_parquet / "readme.parquet").write_text("this is not a parquet file\n" * 20)
    drift = tmp_path / "drift"
    drift.mkdir()
    first = pq.read_table(lake.path / lake.files[0])
    pq.write_table(first, drift / "a.parquet")
    second = pq.read_table(lake.path / lake.files[1])
    second = second.set_column(
        second.schema.get_field_index("x1"), "x1", pa.array(second["x1"].to_numpy().astype(np.float32))
    )
    pq.write_table(second, drift / "b.parquet")
    nan_dir = tmp_path / "with_nan"
    nan_dir.mkdir()
    x1 = first["x1"].to_pylist()
    x1[7] = None
    x1[1000] = float("nan")
    x1[3000] = float("inf")
    nan_table = first.set_column(first.schema.get_field_index("x1"), "x1", pa.array(x1, pa.float64()))
    pq.write_table(nan_table, nan_dir / "nan.parquet", row_group_size=2000)
    model = tmp_path / "m.sgmm"

    missing_path, no_model_dir, unknown_column, bad_file, drifted, nan_raise, nan_skip, no_k, bad_covariance = (
        run_streamgmm_here(*command)
        for command in (
            ["fit", missing, "-k", 2, "--model", model],
            ["fit", lake.path, "-k", 2, "--model", tmp_path / "no_such_dir" / "m.sgmm"],
            ["fit", lake.path, "-k", 2, "--model", model, "--columns", "x0,nope"],
            ["fit", not_parquet, "-k", 2, "--model", model],
            ["fit", drift / "a.parquet", drift / "b.parquet", "-k", 2, "--model", model, "--passthrough", "id"],
            ["assign", nan_dir, "--model", model_path, "--out", tmp_path / "raise", "--nan-policy", "raise"],
            [
                "assign",
                nan_dir,
                "--model",
                model_path,
                "--out",
                tmp_path / "skip",
                "--nan-policy",
                "skip",
                "--json",
                "--keep",
                "id",
            ],
            ["fit", lake.path, "--model", model],
            ["fit", lake.path, "-k", 2, "--model", model, "--covariance", "round"],
        )
    )
    assert_one_error_line(missing_path, str(missing))
    assert_one_error_line(no_model_dir, "no_such_dir", "does not exist")
    assert_one_error_line(unknown_column, "'nope'")
    assert_one_error_line(bad_file, "readme.parquet")
    line = assert_one_error_line(drifted, "schema drift", "'x1'", "b.parquet", "a.parquet")
    assert "float" in line
    assert_one_error_line(nan_raise, "nan.parquet", "row group 0", "row 7", "'x1'")
    assert not (tmp_path / "raise" / "_SUCCESS").exists()
    assert not model.exists()  # no failed fit wrote a model

    assert nan_skip.returncode == 0, nan_skip.stderr
    summary = json.loads(nan_skip.stdout)
    assert summary["skipped"] == 3
    assert summary["records"] == first.num_rows
    scored = pq.read_table(tmp_path / "skip" / "nan.parquet")
    assert scored["component"].null_count == 3
    assert np.flatnonzero(scored["resp_0"].is_null().to_numpy(zero_copy_only=False)).tolist() == [7, 1000, 3000]

    for usage, fragment in ((no_k, "-k"), (bad_covariance, "invalid choice")):
        assert usage.returncode == 2, usage.stderr
        assert "usage:" in usage.stderr
        assert fragment in usage.stderr


def test_fit_with_filter(lake, tmp_path):
    model_path = tmp_path / "late.sgmm"
    result = run_streamgmm_here(
        "fit", lake.path, "-k", K, "--model", model_path, "--passthrough", "id", "--filter", "day>=1", "--json", "-q"
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    expected = ds.dataset(lake.path, format="parquet", partitioning="hive").count_rows(filter=ds.field("day") >= 1)
    assert 0 < expected < N_RECORDS
    assert summary["records"] == expected
    assert summary["files"] == sum(rel.startswith("day=1/") for rel in lake.files)
    assert StreamingGaussianMixture.load(model_path).records_seen_ == expected


def test_fit_in_float32(lake, fitted, tmp_path):
    """``--compute-dtype float32`` (the fused kernel where it was built) fits as well."""
    model_path = tmp_path / "single.sgmm"
    result = run_streamgmm_here(
        "fit", lake.path, "-k", K, "--model", model_path, "--passthrough", "id", "--compute-dtype", "float32", "-q"
    )
    assert result.returncode == 0, result.stderr
    single, double = StreamingGaussianMixture.load(model_path), StreamingGaussianMixture.load(fitted[1])
    assert single.compute_dtype == "float32" and double.compute_dtype == "float64"
    held_out = features_of(lake.held_out_path)
    truth = lake.params.log_likelihood(held_out).mean()
    assert abs(single.score(held_out) - truth) < 0.02
    assert single.score(held_out) == pytest.approx(double.score(held_out), abs=1e-3)


def test_console_script():
    script = Path(sys.executable).parent / "streamgmm"
    assert script.exists()
    assert os.access(script, os.X_OK)
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for command in ("fit", "assign", "info"):
        assert command in result.stdout


def test_progress_bars_on_a_terminal_and_not_with_q(lake, tmp_path):
    # Small batches so the pass takes long enough for several redraws; online, because the
    # default fits a lake this small (the initialisation sample holds all of it) without a pass.
    code, stdout, shown = on_a_terminal(
        "fit",
        lake.path,
        "-k",
        K,
        "--model",
        tmp_path / "m.sgmm",
        "--passthrough",
        "id",
        "--batch-size",
        "64",
        "--algorithm",
        "online",
    )
    assert code == 0, shown
    assert "fit pass 1" in shown and "records/s" in shown and f"/{N_RECORDS / 1000:.1f}k" in shown
    assert stdout.startswith("fitted 3 full components on 20,000 records")
    code, stdout, shown = on_a_terminal(
        "fit", lake.path, "-k", K, "--model", tmp_path / "q.sgmm", "--passthrough", "id", "-q"
    )
    assert code == 0 and shown == "" and stdout.startswith("fitted")


def test_info_on_parquet_data(lake):
    """Any Parquet data is described as fit would read it (oracle: pyarrow's own footers)."""
    result = run_streamgmm_here("info", lake.path, "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["kind"] == "parquet data" and info["files"] == len(lake.files)
    assert info["records"] == N_RECORDS
    assert info["row_groups"] == sum(pq.ParquetFile(lake.path / f).num_row_groups for f in lake.files)
    assert info["numeric_columns"] == ["id", *FEATURES] and info["partitions"] == ["day"]
    assert info["unfinished_output"] is False


def test_fit_with_moves_off(lake, tmp_path):
    model_path = tmp_path / "plain.sgmm"
    result = run_streamgmm_here(
        "fit", lake.path, "-k", K, "--model", model_path, "--passthrough", "id", "--moves", "off", "-q"
    )
    assert result.returncode == 0, result.stderr
    model = StreamingGaussianMixture.load(model_path)
    assert model.get_params()["moves"] == "off"
    assert model.fit_history_.moves == []


def test_hostile_moves_value_is_a_usage_error(lake, tmp_path):
    fit, watch = (
        run_streamgmm_here(*command)
        for command in (
            ["fit", lake.path, "-k", K, "--model", tmp_path / "m.sgmm", "--moves", "sometimes"],
            ["watch", lake.path, "--state", tmp_path / "state", "-k", K, "--once", "--moves", "sometimes"],
        )
    )
    for result, command in ((fit, "fit"), (watch, "watch")):
        assert result.returncode == 2 and result.stdout == "", result.stderr
        errors = [line for line in result.stderr.splitlines() if "error" in line]
        assert len(errors) == 1, result.stderr  # argparse's usage, then one line naming the option and value
        assert errors[0].startswith(f"streamgmm {command}: error: argument --moves: invalid choice"), errors
        assert "'sometimes'" in errors[0], errors
    assert not (tmp_path / "m.sgmm").exists() and not (tmp_path / "state").exists()
