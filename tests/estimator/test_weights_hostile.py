"""Record weights of hostile scales: weights are relative, so w, w * 1e-18, w * 1e-300 and
w * 1e300 must give the same fit, on every path (the default plan, online EM, a stream of
partial fits, a saved and resumed model, the command line), and a total of weight that is zero
or not representable is one clear error.

The oracle is the fit with the weights w themselves (between 0.5 and 2, where nothing is near a
threshold); fits are compared component by component, in the order of their first mean.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from shared_helpers import assert_one_error_line, run_streamgmm

from streamgmm import StreamingGaussianMixture, make_mixture, select

SCALES = [1e-18, 1e-300, 1e300]


@pytest.fixture(scope="module")
def weighted_data() -> tuple[np.ndarray, np.ndarray]:
    X, _, _ = make_mixture(12_000, n_components=3, n_features=2, random_state=0)
    w = np.random.default_rng(1).uniform(0.5, 2.0, X.shape[0])
    return X, w


def parameters(model: StreamingGaussianMixture) -> list[np.ndarray]:
    order = np.argsort(model.means_[:, 0])
    return [model.weights_[order], model.means_[order], model.covariances_[order]]


def assert_same_fit(a: StreamingGaussianMixture, b: StreamingGaussianMixture, tol: float) -> None:
    for name, got, want in zip(("weights", "means", "covariances"), parameters(a), parameters(b)):
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol, err_msg=name)


def options(**extra) -> dict:
    # A sample smaller than the data (the default plan streams passes) and short batches at the
    # end of every pass, whose step counts their weight.
    return dict(n_components=3, random_state=0, init_size=3000, batch_size=1500, **extra)


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("algorithm, tol", [("auto", 1e-10), ("online", 1e-8)])
def test_fit_is_the_same_for_weights_of_any_scale(weighted_data, algorithm, tol, scale) -> None:
    X, w = weighted_data
    reference = StreamingGaussianMixture(**options(algorithm=algorithm)).fit(X, sample_weight=w)
    scaled = StreamingGaussianMixture(**options(algorithm=algorithm)).fit(X, sample_weight=w * scale)
    assert_same_fit(scaled, reference, tol)
    # records_seen_ is the total weight, in the user's unit.
    assert scaled.records_seen_ == pytest.approx(reference.records_seen_ * scale, rel=1e-12)
    assert scaled.fit_history_.records[-1] == pytest.approx(scaled.records_seen_, rel=1e-12)


@pytest.mark.parametrize("scale", SCALES)
def test_partial_fit_and_a_resumed_model_are_the_same_for_weights_of_any_scale(weighted_data, tmp_path, scale):
    X, w = weighted_data
    edges = [0, 2500, 2600, 7000, 7001, 12_000]  # chunks of uneven sizes: short batches step by their weight
    reference = StreamingGaussianMixture(**options())
    scaled = StreamingGaussianMixture(**options())
    for i, (lo, hi) in enumerate(zip(edges, edges[1:])):
        reference.partial_fit(X[lo:hi], sample_weight=w[lo:hi])
        scaled.partial_fit(X[lo:hi], sample_weight=w[lo:hi] * scale)
        if i == 1:
            # The weights' unit is part of the model: a resumed stream goes on in it.
            scaled.save(tmp_path / "model.sgmm")
            scaled = StreamingGaussianMixture.load(tmp_path / "model.sgmm")
        assert_same_fit(scaled, reference, 1e-8)
    assert scaled.records_seen_ == pytest.approx(w.sum() * scale, rel=1e-12)


def test_select_trains_every_candidate_alike_for_weights_of_any_scale(weighted_data) -> None:
    X, w = weighted_data
    common = dict(n_components=[2, 3], random_state=0, init_size=3000, batch_size=1500, n_init=2)
    reference = select(X, sample_weight=w, **common)
    scaled = select(X, sample_weight=w * 1e-300, **common)
    for got, want in zip(scaled.candidates, reference.candidates):
        assert_same_fit(got.model, want.model, 1e-10)
    assert scaled.best.n_components == reference.best.n_components


def test_weights_whose_total_is_zero_or_not_representable_are_one_clear_error(weighted_data) -> None:
    X, w = weighted_data
    with pytest.raises(ValueError, match="weight zero"):
        StreamingGaussianMixture(**options()).fit(X, sample_weight=np.zeros_like(w))
    # Every weight is finite, but their total (about 1.5e312) is not.
    with pytest.raises(ValueError, match="total is not representable") as error:
        StreamingGaussianMixture(**options()).fit(X, sample_weight=np.full_like(w, 1.3e308))
    assert "\n" not in str(error.value)
    # A weight whose ratio to the stream's unit overflows cannot be put in that unit: the
    # chunk is refused and the model stays as it was.
    model = StreamingGaussianMixture(**options()).partial_fit(X[:3000], sample_weight=np.full(3000, 1e-300))
    means, seen = model.means_.copy(), model.records_seen_
    with pytest.raises(ValueError, match="range is not representable"):
        model.partial_fit(X[3000:4000], sample_weight=np.r_[1e300, np.ones(999)])
    assert (model.means_ == means).all() and model.records_seen_ == seen


def test_the_command_line_fits_a_weight_column_of_any_scale_alike(weighted_data, tmp_path) -> None:
    X, w = weighted_data
    models = {}
    for scale in [1.0, *SCALES, 1.3e308]:
        lake = tmp_path / f"lake-{scale:g}"
        lake.mkdir()
        weights = np.full_like(w, scale) if scale == 1.3e308 else w * scale  # every one finite, the total not
        table = pa.table({"x0": X[:, 0], "x1": X[:, 1], "w": weights})
        pq.write_table(table, lake / "part-0.parquet", row_group_size=2000)
        model = tmp_path / f"model-{scale:g}.sgmm"
        result = run_streamgmm(
            "fit", lake, "-k", 3, "--weight-column", "w", "--seed", 0, "--batch-size", 1500,
            "--model", model, "--json", timeout=300,
        )  # fmt: skip
        if scale == 1.3e308:
            assert_one_error_line(result, "total is not representable")
            assert not model.exists()
            continue
        assert result.returncode == 0, result.stderr
        summary = json.loads(result.stdout)
        # The total weight of the records, not a count rounded to zero.
        assert summary["records"] == pytest.approx(w.sum() * scale, rel=1e-12)
        models[scale] = StreamingGaussianMixture.load(model)
    for scale in SCALES:
        assert_same_fit(models[scale], models[1.0], 1e-10)


def test_a_model_whose_weight_unit_is_not_one_does_not_continue_on_dask(weighted_data) -> None:
    """Dask fits read the weights as given on the workers: mixed into statistics kept in another
    unit they would weigh the new records wrongly, so the continuation is refused in one line."""
    dd = pytest.importorskip("dask.dataframe")
    pd = pytest.importorskip("pandas")
    from streamgmm.dask.source import dask_source

    X, w = weighted_data
    model = StreamingGaussianMixture(**options()).fit(X, sample_weight=w * 1e-300)
    means = model.means_.copy()
    frame = pd.DataFrame({"a": X[:, 0], "b": X[:, 1], "w": w * 1e-300})
    source = dask_source(dd.from_pandas(frame, npartitions=3), weight_column="w")
    with pytest.raises(ValueError, match="measures record weights in units of 1.2") as error:
        model.set_params(warm_start=True).fit(source)
    assert "\n" not in str(error.value) and (model.means_ == means).all()
