"""The CLI on a local Dask cluster: the dashboard's link is printed, and --persist reaches the
fit."""

from __future__ import annotations

import numpy as np
import pytest
from shared_helpers import run_streamgmm, run_streamgmm_here

from streamgmm import StreamingGaussianMixture

pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def lake(make_lake):
    return make_lake(
        "cli_cluster", n_records=6_000, n_components=2, n_features=2, n_files=3, row_group_size=1000, seed=2
    )


def fit(lake, model, *options: str) -> list:
    """``streamgmm fit`` of the lake's records into ``model``, as an argument list."""
    return ["fit", lake.path, "-k", "2", "--model", model, *options]


def test_cli_fit_on_workers_prints_the_dashboard_and_persists_to_the_same_model(lake, tmp_path) -> None:
    pytest.importorskip("bokeh", reason="the dashboard needs bokeh")
    kept = run_streamgmm(
        *fit(lake, tmp_path / "kept.model", "--workers", "2", "--persist", "yes", "--algorithm", "batch"), timeout=300
    )
    assert kept.returncode == 0, kept.stderr
    assert "streamgmm: fit: Dask dashboard at http://127.0.0.1:" in kept.stderr
    again = run_streamgmm(
        *fit(lake, tmp_path / "read.model", "--workers", "2", "--persist", "no", "--algorithm", "batch", "-q"),
        timeout=300,
    )
    assert again.returncode == 0, again.stderr
    assert "dashboard" not in again.stderr  # -q: nothing on stderr
    one, other = (StreamingGaussianMixture.load(tmp_path / name) for name in ("kept.model", "read.model"))
    np.testing.assert_allclose(one.means_, other.means_, rtol=0, atol=1e-10)


def test_persist_is_a_cluster_option(lake, tmp_path) -> None:
    result = run_streamgmm_here(*fit(lake, tmp_path / "m.model", "--persist", "maybe"))
    assert result.returncode == 2 and "--persist: invalid choice: 'maybe'" in result.stderr
