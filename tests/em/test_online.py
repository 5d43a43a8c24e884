"""Online EM over chunk streams: passes, reproducibility, re-seeding, iterables."""

from __future__ import annotations

import numpy as np
import pytest

from streamgmm import StreamingGaussianMixture, make_mixture
from streamgmm.mixture.reseeding import MIN_WEIGHT, worst_rows


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, object]:
    X, _, truth = make_mixture(30_000, 3, 3, random_state=4)
    return X, truth


def test_same_random_state_gives_identical_fits(data) -> None:
    X, _ = data
    a = StreamingGaussianMixture(3, random_state=7).fit(X)
    b = StreamingGaussianMixture(3, random_state=7).fit(X)
    np.testing.assert_array_equal(a.means_, b.means_)
    np.testing.assert_array_equal(a.covariances_, b.covariances_)


def test_several_passes_count_records_and_stop_at_tol(data) -> None:
    X, _ = data
    three = StreamingGaussianMixture(3, algorithm="online", max_passes=3, tol=0.0, random_state=0).fit(X)
    assert three.n_iter_ == 3 and not three.converged_
    assert three.records_seen_ == 3 * X.shape[0]
    assert three.n_steps_ == 3 * int(np.ceil(X.shape[0] / three.batch_size))
    # A good start settles within a pass or two: with a loose tol it stops early, converged.
    early = StreamingGaussianMixture(3, algorithm="online", max_passes=10, tol=1e-2, random_state=0).fit(X)
    assert early.converged_ and 2 <= early.n_iter_ < 10


def test_iterables_of_chunks_stream_like_the_array(data) -> None:
    X, _ = data
    kwargs = dict(batch_size=1000, shuffle=False, random_state=0, init_size=X.shape[0])
    from_array = StreamingGaussianMixture(3, **kwargs).fit(X)
    pieces = np.split(X, [7, 2000, 2001, 15_500])
    from_list = StreamingGaussianMixture(3, **kwargs).fit(pieces)
    from_callable = StreamingGaussianMixture(3, **kwargs).fit(lambda: iter(pieces))
    # The sample is the whole data in all three (init_size >= n), so the fits must agree.
    for other in (from_list, from_callable):
        np.testing.assert_allclose(other.means_, from_array.means_, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(other.covariances_, from_array.covariances_, rtol=1e-10, atol=1e-12)
        assert other.records_seen_ == X.shape[0]


def test_one_shot_generator_is_streamed_once(data) -> None:
    X, truth = data
    gen = (X[i : i + 777] for i in range(0, X.shape[0], 777))
    model = StreamingGaussianMixture(3, init_size=5000, random_state=0).fit(gen)
    assert model.records_seen_ == X.shape[0]
    assert truth.log_likelihood(X).mean() - model.score(X) < 0.02


def test_collapsed_component_is_reseeded_not_nan(data) -> None:
    X, _ = data
    # One starting mean 1e4 standard deviations away: it gets no responsibility at all, its
    # weight collapses on the first M-step, and the rule must move it back onto the data.
    means = np.array([X[0], X[1], X[:, :].mean(axis=0) + 1e4])
    model = StreamingGaussianMixture(3, means_init=means, batch_size=2000, shuffle=False, random_state=0).fit(X)
    assert np.all(np.isfinite(model.means_)) and np.all(np.isfinite(model.covariances_))
    assert model.weights_.min() > MIN_WEIGHT
    assert np.abs(model.means_).max() < 100
    assert np.all(np.linalg.eigvalsh(model.covariances_) > 0)


def test_batch_em_reseeds_a_dead_component(data) -> None:
    X, _ = data
    means = np.array([X[0], X[1], X.mean(axis=0) + 1e4])
    model = StreamingGaussianMixture(3, algorithm="batch", means_init=means, max_iter=200, random_state=0).fit(X)
    assert model.weights_.min() > 0.05  # all three true components found again
    assert np.abs(model.means_).max() < 100


def test_float32_input_fits_in_float64(data) -> None:
    X, _ = data
    model = StreamingGaussianMixture(3, random_state=0).fit(X.astype(np.float32))
    assert model.means_.dtype == np.float64
    reference = StreamingGaussianMixture(3, random_state=0).fit(X.astype(np.float32).astype(np.float64))
    np.testing.assert_array_equal(model.means_, reference.means_)


def test_warm_start_continues_from_the_fitted_parameters(data) -> None:
    X, _ = data
    model = StreamingGaussianMixture(3, algorithm="batch", tol=1e-8, max_iter=500, random_state=0).fit(X)
    model.set_params(warm_start=True, max_iter=500)
    model.fit(X)
    assert model.converged_ and model.n_iter_ <= 2  # already at the fixed point
    with pytest.raises(ValueError, match="X has 2 features"):
        model.fit(X[:, :2])
    with pytest.raises(ValueError, match="chunk 0: X has 2 features"):
        model.fit([X[:100, :2]])


def test_sorted_chunks_from_a_callable_get_a_uniform_sample() -> None:
    """A callable can be read twice: the initialisation sample comes from the whole stream, so a
    stream sorted by cluster still fits well (the README's advice for sorted streams)."""
    X, labels, truth = make_mixture(60_000, 5, 4, random_state=3)
    by_cluster = X[np.argsort(labels, kind="stable")]
    chunks = [by_cluster[i : i + 5000] for i in range(0, len(by_cluster), 5000)]
    model = StreamingGaussianMixture(5, random_state=0).fit(lambda: iter(chunks))
    assert truth.log_likelihood(X).mean() - model.score(X) < 0.01


def test_worst_rows_of_complete_records_are_the_head_of_a_stable_argsort() -> None:
    """Online EM's re-seeding candidates (reseeding.worst_rows)."""
    rng = np.random.default_rng(0)
    for values in (rng.normal(size=1000), rng.integers(0, 5, 1000).astype(float), np.zeros(7)):
        for count in (1, 3, 8, 7, 2000):
            rows = worst_rows(values[:, None], values, count)
            np.testing.assert_array_equal(rows, np.argsort(values, kind="stable")[:count])
