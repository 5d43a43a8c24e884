"""Record weights: a record of weight w counts as w records.

The oracle is the same data with rows repeated (integer weights) or removed (zero weights),
fitted from the same start."""

from __future__ import annotations

import numpy as np
import pytest
from shared_helpers import assert_same_parameters, unit_matrices

from streamgmm import StreamingGaussianMixture
from streamgmm.io.sources.chunk_source import ArraySource

COVARIANCE_TYPES = ["full", "tied", "diag", "spherical"]


def data(seed: int = 0, n: int = 90) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = np.concatenate([rng.normal(-3, 1.0, (n // 2, 2)), rng.normal([3, 1], 1.5, (n - n // 2, 2))])
    return X, rng.integers(0, 4, X.shape[0])


def start(covariance_type: str) -> dict:
    return {
        "n_components": 2,
        "covariance_type": covariance_type,
        "weights_init": [0.5, 0.5],
        "means_init": [[-2.0, 0.0], [2.0, 0.0]],
        "precisions_init": unit_matrices(covariance_type, 2, 2),
    }


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_integer_weights_equal_repeated_rows_in_batch_em(covariance_type: str) -> None:
    X, w = data()
    options = dict(start(covariance_type), algorithm="batch", tol=0.0, max_iter=25, batch_size=16)
    with pytest.warns(UserWarning, match="did not converge"):
        weighted = StreamingGaussianMixture(**options).fit(X, sample_weight=w)
    with pytest.warns(UserWarning, match="did not converge"):
        repeated = StreamingGaussianMixture(**options).fit(np.repeat(X, w, axis=0))
    assert_same_parameters(weighted, repeated, atol=1e-10)
    assert weighted.lower_bound_ == pytest.approx(repeated.lower_bound_, abs=1e-10)
    assert weighted.records_seen_ == repeated.records_seen_ == int(w.sum())


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_integer_weights_equal_repeated_rows_in_online_em(covariance_type: str) -> None:
    """partial_fit chunk by chunk, each chunk one mini-batch: the weighted batch takes the step
    the repeated batch takes (its weight, not its rows, sets the step). Weights count in the
    unit of the first chunk's mean positive weight, made one here (its weights are 0 or 1)."""
    rng = np.random.default_rng(1)
    options = dict(start(covariance_type), max_iter=0, batch_size=64)
    weighted = StreamingGaussianMixture(**options)
    repeated = StreamingGaussianMixture(**options)
    for chunk in range(5):
        X, w = data(seed=10 + chunk, n=int(rng.integers(8, 20)))
        if chunk == 0:
            w = np.minimum(w, 1)
        weighted.partial_fit(X, sample_weight=w)
        repeated.partial_fit(np.repeat(X, w, axis=0))
        assert_same_parameters(weighted, repeated, atol=1e-10)
    assert weighted.n_steps_ == repeated.n_steps_ == 5
    assert weighted.records_seen_ == repeated.records_seen_
    np.testing.assert_allclose(weighted.fit_history_.step_size, repeated.fit_history_.step_size, rtol=1e-15)


def test_a_batch_of_weight_zero_is_no_step() -> None:
    X, _ = data()
    options = dict(start("full"), max_iter=0, batch_size=10)
    first = StreamingGaussianMixture(**options).partial_fit(X[:30])
    second = StreamingGaussianMixture(**options).partial_fit(X[:30])
    first.partial_fit(X[30:50], sample_weight=np.r_[np.zeros(10), np.ones(10)])
    second.partial_fit(X[40:50])
    assert_same_parameters(first, second, atol=1e-12)
    assert (first.n_steps_, first.records_seen_) == (second.n_steps_, second.records_seen_) == (4, 40)


@pytest.mark.parametrize("algorithm", ["batch", "online"])
def test_zero_weights_equal_removed_rows(algorithm: str) -> None:
    X, w = data(seed=2)
    w = np.where(w == 0, 0, 1)
    options = dict(start("diag"), algorithm=algorithm, tol=0.0, max_iter=10, batch_size=1000, shuffle=False)
    with np.errstate(all="ignore"), pytest.warns() if algorithm == "batch" else _nothing():
        weighted = StreamingGaussianMixture(**options).fit(X, sample_weight=w)
    with np.errstate(all="ignore"), pytest.warns() if algorithm == "batch" else _nothing():
        removed = StreamingGaussianMixture(**options).fit(X[w > 0])
    assert_same_parameters(weighted, removed, atol=1e-10)


def _nothing():
    import contextlib

    return contextlib.nullcontext()


def test_scaling_every_weight_changes_nothing_but_the_count() -> None:
    X, w = data(seed=3)
    w = w + 0.5
    options = dict(start("full"), algorithm="batch", tol=1e-12, max_iter=200)
    a = StreamingGaussianMixture(**options).fit(X, sample_weight=w)
    b = StreamingGaussianMixture(**options).fit(X, sample_weight=w / 1000)
    assert_same_parameters(a, b, atol=1e-9)
    assert b.records_seen_ == pytest.approx(w.sum() / 1000)


def test_a_weighted_source_fits_as_sample_weight() -> None:
    X, w = data(seed=4)
    options = dict(start("tied"), algorithm="batch", tol=1e-10, max_iter=200)
    a = StreamingGaussianMixture(**options).fit(ArraySource(X, weights=w))
    b = StreamingGaussianMixture(**options).fit(X, sample_weight=w)
    assert_same_parameters(a, b, atol=0)
    with pytest.raises(ValueError, match="weight"):
        StreamingGaussianMixture(**options).fit(ArraySource(X, weights=w), sample_weight=w)


def test_default_fit_with_weights_finds_the_repeated_fit() -> None:
    """From its own (random) start: the same optimum as the repeated rows, to EM's tolerance."""
    X, w = data(seed=5, n=400)
    weighted = StreamingGaussianMixture(2, random_state=0, tol=1e-8).fit(X, sample_weight=w)
    repeated = StreamingGaussianMixture(2, random_state=0, tol=1e-8).fit(np.repeat(X, w, axis=0))
    order_a, order_b = np.argsort(weighted.means_[:, 0]), np.argsort(repeated.means_[:, 0])
    np.testing.assert_allclose(weighted.means_[order_a], repeated.means_[order_b], atol=1e-5)


def test_score_bic_and_aic_weigh_records_as_repeats() -> None:
    X, w = data(seed=6)
    model = StreamingGaussianMixture(2, random_state=0).fit(X)
    Xr = np.repeat(X, w, axis=0)
    assert model.score(X, sample_weight=w) == pytest.approx(model.score(Xr), rel=1e-12)
    assert model.bic(X, sample_weight=w) == pytest.approx(model.bic(Xr), rel=1e-12)
    assert model.aic(X, sample_weight=w) == pytest.approx(model.aic(Xr), rel=1e-12)
    # The oracle of the weighted mean itself.
    expected = np.average(model.score_samples(X), weights=w)
    assert model.score(X, sample_weight=w) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ([1.0, 2.0], "sample_weight has 2 weights, but X has 4 records"),
        ([1.0, 2.0, -1.0, 1.0], "row 2: weight -1 is negative"),
        ([1.0, np.nan, 1.0, 1.0], "row 1: weight nan is NaN"),
        ([1.0, 1.0, 1.0, np.inf], "row 3: weight inf is infinite"),
        (np.ones((4, 1)), "sample_weight must be 1-D"),
        ([0.0, 0.0, 0.0, 0.0], "weight zero"),
    ],
)
def test_bad_weights_are_clear_errors(weights, message: str) -> None:
    X = np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 2.0], [3.0, 1.0]])
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        StreamingGaussianMixture(1).fit(X, sample_weight=weights)
    if message != "weight zero":
        with pytest.raises(ValueError, match=message.replace("(", r"\(")):
            StreamingGaussianMixture(1).partial_fit(X, sample_weight=weights)


def test_sample_weight_with_a_stream_of_chunks_is_refused() -> None:
    X, w = data()
    with pytest.raises(ValueError, match="weight_column"):
        StreamingGaussianMixture(1).fit([X[:40], X[40:]], sample_weight=w)


def test_a_dataframe_takes_sample_weight_and_a_weighted_source_scores_by_its_weights() -> None:
    pd = pytest.importorskip("pandas")
    X, w = data(seed=7)
    frame = pd.DataFrame({"a": X[:, 0], "b": X[:, 1]})
    options = dict(start("diag"), algorithm="batch", tol=1e-10, max_iter=200)
    a = StreamingGaussianMixture(**options).fit(frame, sample_weight=w)
    b = StreamingGaussianMixture(**options).fit(X, sample_weight=w)
    assert_same_parameters(a, b, atol=1e-12)
    assert list(a.feature_names_in_) == ["a", "b"]
    assert b.score(ArraySource(X, weights=w)) == pytest.approx(b.score(X, sample_weight=w), rel=1e-14)
    assert b.bic(ArraySource(X, weights=w)) == pytest.approx(b.bic(np.repeat(X, w, axis=0)), rel=1e-12)
    # score_samples of a weighted source: one value per record, weights aside.
    np.testing.assert_array_equal(b.score_samples(ArraySource(X, weights=w)), b.score_samples(X))


def test_a_weighted_stream_of_chunks_fits_as_sample_weight_and_names_a_bad_weight() -> None:
    from streamgmm.io.sources.chunk_source import IterableSource

    X, w = data(seed=8)
    chunks = [np.column_stack([X, w])[i : i + 25] for i in range(0, len(X), 25)]
    options = dict(start("full"), algorithm="batch", tol=1e-10, max_iter=200, batch_size=20)
    a = StreamingGaussianMixture(**options).fit(IterableSource(chunks, weighted=True))
    b = StreamingGaussianMixture(**options).fit(X, sample_weight=w)
    assert_same_parameters(a, b, atol=1e-12)
    assert a.n_features_in_ == 2
    chunks[2] = chunks[2].copy()
    chunks[2][4, -1] = -0.5
    with pytest.raises(ValueError, match="chunk 2: row 4: weight -0.5 is negative"):
        StreamingGaussianMixture(**options).fit(IterableSource(chunks, weighted=True))


def test_fractional_weights_survive_the_trace_and_the_model_file(tmp_path) -> None:
    X, w = data(seed=9)
    w = w + 0.25
    model = StreamingGaussianMixture(2, random_state=0, batch_size=30, algorithm="online").fit(X, sample_weight=w)
    assert model.records_seen_ == pytest.approx(w.sum())
    assert model.fit_history_.records[-1] == pytest.approx(w.sum())
    model.partial_fit(X[:30], sample_weight=w[:30])
    assert model.records_seen_ == pytest.approx(w.sum() + w[:30].sum())
    assert model.fit_history_.records[-1] == pytest.approx(model.records_seen_)
    path = tmp_path / "model.sgmm"
    model.save(path)
    loaded = StreamingGaussianMixture.load(path)
    assert loaded.records_seen_ == model.records_seen_
    assert loaded.fit_history_.to_dict() == model.fit_history_.to_dict()
