"""``--weight-column`` and ``--nan-policy marginalize`` from the command line (fit, assign,
watch), run in the test's process on small lakes.

Oracles: two clusters 100 standard deviations apart, where every responsibility is exactly 0 or
1, so exact EM's fixed point is each cluster's weighted moments in closed form; the lake with
each row repeated ``count`` times; the Python API on the same files; and, for assign, the
marginal Gaussian densities of the observed features (scipy).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy.stats import multivariate_normal
from shared_helpers import assert_one_error_line, run_each_here, run_streamgmm_here

from streamgmm import ParquetSource, StreamingGaussianMixture

CENTRES = np.array([[-50.0, -50.0], [50.0, 50.0]])


def separated_records(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Records of two far-apart clusters, their cluster, and counts that grow with x within a
    cluster (so weighting moves each mean) and include zeros."""
    labels = rng.integers(0, 2, size=n)
    X = CENTRES[labels] + rng.normal(size=(n, 2)) * [[1.0, 0.5]]
    counts = np.where(X[:, 0] > CENTRES[labels, 0], 3, 1) * rng.integers(0, 3, size=n)
    return X, labels, counts


def weighted_moments(X, labels, counts, reg_covar=1e-6):
    weights, means, covariances = [], [], []
    for k in np.argsort(CENTRES[:, 0]):
        w, x = counts[labels == k].astype(float), X[labels == k]
        mean = w @ x / w.sum()
        centred = x - mean
        weights.append(w.sum() / counts.sum())
        means.append(mean)
        covariances.append((w[:, None] * centred).T @ centred / w.sum() + reg_covar * np.eye(2))
    return np.array(weights), np.array(means), np.array(covariances)


def by_mean(model: StreamingGaussianMixture):
    order = np.argsort(model.means_[:, 0])
    return model.weights_[order], model.means_[order], model.covariances_[order]


@pytest.fixture(scope="module")
def counted(tmp_path_factory):
    """A lake with a count column, and the same records repeated count times."""
    root = tmp_path_factory.mktemp("counted")
    rng = np.random.default_rng(19)
    weighted, duplicated = root / "weighted", root / "duplicated"
    weighted.mkdir()
    duplicated.mkdir()
    parts = []
    for i in range(2):
        X, labels, counts = separated_records(rng, 1500)
        parts.append((X, labels, counts))
        table = pa.table({"id": np.arange(1500) + 1500 * i, "x": X[:, 0], "y": X[:, 1], "count": counts})
        pq.write_table(table, weighted / f"part-{i}.parquet", row_group_size=500)
        Xd = np.repeat(X, counts, axis=0)
        pq.write_table(pa.table({"x": Xd[:, 0], "y": Xd[:, 1]}), duplicated / f"part-{i}.parquet", row_group_size=700)
    X, labels, counts = (np.concatenate(arrays) for arrays in zip(*parts))
    return root, X, labels, counts


def test_fit_with_a_count_column_equals_the_duplicated_lake_and_the_weighted_moments(counted, tmp_path):
    root, X, labels, counts = counted
    weighted_fit, duplicated_fit, unweighted_fit = run_each_here(
        ["fit", root / "weighted", "-k", 2, "--algorithm", "batch", "--weight-column", "count", "--passthrough", "id"]
        + ["--model", tmp_path / "weighted.sgmm", "--json"],
        ["fit", root / "duplicated", "-k", 2, "--algorithm", "batch", "--model", tmp_path / "duplicated.sgmm"],
        ["fit", root / "weighted", "-k", 2, "--algorithm", "batch", "--columns", "x,y"]
        + ["--model", tmp_path / "unweighted.sgmm"],
    )
    for result in (weighted_fit, duplicated_fit, unweighted_fit):
        assert result.returncode == 0, result.stderr
    summary = json.loads(weighted_fit.stdout)
    assert summary["weight_column"] == "count" and summary["feature_names"] == ["x", "y"]
    weighted = StreamingGaussianMixture.load(tmp_path / "weighted.sgmm")
    duplicated = StreamingGaussianMixture.load(tmp_path / "duplicated.sgmm")
    assert weighted.fitted_state_.feature_names == ["x", "y"]  # the count is not a feature
    expected = weighted_moments(X, labels, counts)
    for got, dup, want in zip(by_mean(weighted), by_mean(duplicated), expected):
        np.testing.assert_allclose(got, dup, rtol=0, atol=1e-10)
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
    # Without the weights the means are visibly elsewhere: the column was used as weights.
    unweighted = StreamingGaussianMixture.load(tmp_path / "unweighted.sgmm")
    assert np.abs(by_mean(unweighted)[1] - expected[1]).max() > 0.2


def test_bad_weights_and_weight_options_are_one_line_errors(counted, tmp_path):
    root, *_ = counted
    bad = tmp_path / "bad"
    bad.mkdir()
    table = pq.read_table(root / "weighted" / "part-0.parquet")
    count = table["count"].to_numpy().astype(float)
    count[612] = -2.0
    pq.write_table(table.set_column(3, "count", pa.array(count)), bad / "part-0.parquet", row_group_size=500)
    model = tmp_path / "m.sgmm"
    negative, missing, both, listed = run_each_here(
        ["fit", bad, "-k", 2, "--weight-column", "count", "--model", model],
        ["fit", root / "weighted", "-k", 2, "--weight-column", "counts", "--model", model],
        ["fit", root / "weighted", "-k", 2, "--weight-column", "count", "--columns", "x,count", "--model", model],
        ["select", root / "weighted", "-k", "2,3", "--weight-column", "id", "--passthrough", "id"],
    )
    assert_one_error_line(negative, "part-0.parquet", "row group 1", "row 612", "column 'count'", "weight -2")
    assert_one_error_line(missing, "no column 'counts'")
    for usage in (both, listed):
        assert usage.returncode == 2 and "--weight-column" in usage.stderr, usage.stderr
    assert not model.exists()


def write_incomplete_lake(path, rng):
    """Two clusters; x is missing at random where y is high (MAR), a few rows have nothing."""
    path.mkdir()
    X, _, _ = separated_records(rng, 2000)
    X = X / 10.0
    x = X[:, 0].copy()
    x[(X[:, 1] > 4.5) & (rng.random(2000) < 0.5)] = np.nan
    y = X[:, 1].copy()
    y[[5, 17, 1999]] = np.nan
    x[[5, 17, 1999]] = np.nan
    y[[8, 9]] = np.nan  # x observed
    table = pa.table({"id": np.arange(2000), "x": pa.array(x, from_pandas=True), "y": y})
    pq.write_table(table, path / "part-0.parquet", row_group_size=800)
    return np.column_stack([x, y])


def test_marginalize_fit_and_assign_from_the_command_line(tmp_path):
    X = write_incomplete_lake(tmp_path / "lake", np.random.default_rng(7))
    model_path = tmp_path / "m.sgmm"
    fit = run_streamgmm_here("fit", tmp_path / "lake", "-k", 2, "--passthrough", "id", "--nan-policy", "marginalize")
    assert fit.returncode == 2  # --model is required: a usage error, not a fit
    fit = run_streamgmm_here(
        "fit", tmp_path / "lake", "-k", 2, "--passthrough", "id", "--nan-policy", "marginalize", "--model", model_path
    )
    assert fit.returncode == 0, fit.stderr
    model = StreamingGaussianMixture.load(model_path)
    # The CLI's fit is the Python API's on the same lake and settings.
    api = StreamingGaussianMixture(2, random_state=0, shuffle="row_groups").fit(
        ParquetSource(tmp_path / "lake", passthrough=["id"], nan_policy="marginalize")
    )
    assert api.n_skipped_ == 3
    np.testing.assert_allclose(model.means_, api.means_, rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.sort(model.means_[:, 0]), [-5.0, 5.0], atol=0.2)

    out = tmp_path / "out"
    assign = run_streamgmm_here(
        "assign", tmp_path / "lake", "--model", model_path, "--out", out, "--keep", "id", "--nan-policy", "marginalize"
    )
    assert assign.returncode == 0, assign.stderr
    assert "3 with no feature observed written as nulls" in assign.stdout
    scored = pq.read_table(out / "part-0.parquet")
    assert scored["id"].to_pylist() == list(range(2000))
    null = scored["resp_0"].is_null().to_numpy(zero_copy_only=False)
    assert np.flatnonzero(null).tolist() == [5, 17, 1999]
    resp = np.column_stack([scored[f"resp_{k}"].to_numpy(zero_copy_only=False) for k in range(2)])
    log_likelihood = scored["log_likelihood"].to_numpy(zero_copy_only=False)
    incomplete = np.flatnonzero(np.isnan(X).any(axis=1) & ~null)
    assert incomplete.size > 100 and np.isfinite(resp[incomplete]).all()
    # Oracle: each component's marginal density of the observed features.
    for i in incomplete[:: max(1, incomplete.size // 40)]:
        seen = ~np.isnan(X[i])
        dens = [
            model.weights_[k]
            * multivariate_normal(model.means_[k][seen], model.covariances_[k][np.ix_(seen, seen)]).pdf(X[i, seen])
            for k in range(2)
        ]
        np.testing.assert_allclose(resp[i], np.array(dens) / sum(dens), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(log_likelihood[i], np.log(sum(dens)), rtol=1e-10)


def test_watch_with_a_weight_column_and_a_resume_without_it(counted, tmp_path):
    root, *_ = counted
    landing, state = tmp_path / "landing", tmp_path / "state"
    landing.mkdir()
    files = []
    for i in range(2):
        target = landing / f"part-{i}.parquet"
        target.write_bytes((root / "weighted" / f"part-{i}.parquet").read_bytes())
        os.utime(target, ns=(10**18 + i * 10**9, 10**18 + i * 10**9))  # consumed in this order
        files.append(target)
    watched = run_streamgmm_here(
        *["watch", landing, "--state", state, "-k", 2, "--weight-column", "count", "--passthrough", "id"],
        *["--once", "--settle", "0", "--json"],
    )
    assert watched.returncode == 0, watched.stderr
    assert json.loads(watched.stdout)["files_consumed"] == 2
    model = StreamingGaussianMixture.load(state / "current.model")
    assert model.fitted_state_.feature_names == ["x", "y"]
    # Oracle: the same online updates through the Python API, file by file.
    api = StreamingGaussianMixture(2, random_state=0, step_floor=0.0, shuffle=False)
    for path in files:
        api.partial_fit(ParquetSource(path, passthrough=["id"], weight_column="count"))
    np.testing.assert_allclose(model.means_, api.means_, rtol=0, atol=1e-12)
    np.testing.assert_allclose(model.covariances_, api.covariances_, rtol=0, atol=1e-12)
    # The weights are used: the unweighted updates end elsewhere.
    plain = StreamingGaussianMixture(2, random_state=0, step_floor=0.0, shuffle=False)
    for path in files:
        plain.partial_fit(ParquetSource(path, columns=["x", "y"]))
    assert np.abs(plain.means_ - model.means_).max() > 0.1

    # One after the other: two watchers started together would find the state held by the other.
    resumed = run_streamgmm_here("watch", landing, "--state", state, "--once", "--settle", "0", "-q")
    marginalized = run_streamgmm_here(
        *["watch", landing, "--state", state, "--once", "--settle", "0", "-q", "--weight-column", "count"],
        *["--nan-policy", "marginalize"],
    )
    assert_one_error_line(resumed, str(state), "weight column 'count', not without one")
    assert_one_error_line(marginalized, "--nan-policy raise, not marginalize")
