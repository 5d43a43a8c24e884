"""The runnable jobs in pipelines/, run as a user would run them (subprocesses on real files)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from streamgmm import StreamingGaussianMixture
from streamgmm.datasets.synthetic_lake import write_lake

PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"


def run_pipeline(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """One of the example pipelines (``pipelines/SCRIPT``) as a subprocess in ``cwd``."""
    return subprocess.run(
        [sys.executable, str(PIPELINES / script), *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def test_parquet_lake_job_fits_and_scores_a_lake(tmp_path: Path) -> None:
    info = write_lake(
        tmp_path / "lake",
        n_records=60_000,
        n_components=3,
        n_features=3,
        n_files=6,
        partitions=3,
        row_group_size=4000,
        sort_by="component",
        held_out=20_000,
        seed=3,
    )
    result = run_pipeline(
        "parquet_lake_job.py",
        str(info.path),
        "-k",
        "3",
        "--model",
        "model.sgmm",
        "--out",
        "scored",
        "--passthrough",
        "id",
        "--keep",
        "id",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    fitted, scored = (json.loads(line) for line in result.stdout.splitlines())
    assert fitted["records"] == scored["records"] == 60_000 and fitted["features"] == ["x0", "x1", "x2"]

    model = StreamingGaussianMixture.load(tmp_path / "model.sgmm")
    held_out = pq.read_table(info.held_out_path, columns=info.feature_names).to_pandas().to_numpy()
    # Oracle: the generating parameters. The lake is sorted by component, so this also checks
    # that the default row-group shuffling keeps one pass unbiased.
    gap = info.params.log_likelihood(held_out).mean() - model.score(held_out)
    assert abs(gap) < 0.01

    out = ds.dataset(tmp_path / "scored", format="parquet", partitioning="hive").to_table()
    lake = ds.dataset(info.path, format="parquet", partitioning="hive").to_table()
    np.testing.assert_array_equal(out["id"].to_numpy(), lake["id"].to_numpy())
    X = np.column_stack([lake[name].to_numpy() for name in info.feature_names])
    np.testing.assert_allclose(out["log_likelihood"].to_numpy(), model.score_samples(X), rtol=1e-12)
    assert (
        sorted(p.relative_to(tmp_path / "scored").as_posix() for p in (tmp_path / "scored").rglob("*.parquet"))
        == info.files
    )


def test_parquet_lake_job_reports_bad_input_in_one_line(tmp_path: Path) -> None:
    result = run_pipeline("parquet_lake_job.py", "missing", "-k", "2", "--model", "m", "--out", "o", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "parquet_lake_job: error:" in result.stderr and "missing" in result.stderr
    assert not (tmp_path / "m").exists() and not (tmp_path / "o").exists()


def test_lake_demo_recovers_the_generating_mixture(tmp_path: Path) -> None:
    result = run_pipeline(
        "lake_demo.py", "--records", "60000", "--files", "4", "--partitions", "2", "--out", "demo", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    gap_line = next(line for line in result.stdout.splitlines() if line.startswith("held-out"))
    assert abs(float(gap_line.split("gap")[1].split()[0])) < 0.01
    agree_line = next(line for line in result.stdout.splitlines() if line.startswith("assigned component"))
    assert float(agree_line.split("for")[1].split("%")[0]) > 99.0
    assert (tmp_path / "demo" / "scored" / "_SUCCESS").exists()
    # The demo ends with the picture of its fit: 8 features, three pairs of them.
    assert result.stdout.rstrip().endswith(
        f"plot of the fit (5,000 sampled records, ellipses, fit history): {Path('demo') / 'fit.png'}"
    )
    from streamgmm.plotting import png_size

    assert png_size(tmp_path / "demo" / "fit.png") == (1500, 800)
