"""The default fit (algorithm="auto") and scikit-learn parity: each cause of a gap to
scikit-learn, with the scikit-learn oracle or a closed form."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_iris
from sklearn.exceptions import ConvergenceWarning as SklearnConvergenceWarning
from sklearn.exceptions import NotFittedError as SklearnNotFittedError
from sklearn.mixture import GaussianMixture
from sklearn.preprocessing import StandardScaler

import streamgmm
from streamgmm import ConvergenceWarning, ParquetSource, StreamingGaussianMixture, make_mixture, select
from streamgmm.datasets.mixtures import match_components
from streamgmm.datasets.synthetic_lake import write_lake
from streamgmm.mixture.covariance import COVARIANCE_TYPES


def iris_standardised() -> np.ndarray:
    return StandardScaler().fit_transform(load_iris().data)


@pytest.mark.parametrize("covariance_type", ["full", "tied"])
def test_one_component_on_data_smaller_than_a_batch_is_the_closed_form(covariance_type: str) -> None:
    """Cause 1: 569 records (under one 8192-record mini-batch) used to leave the fit at its
    start. K=1 has a closed form: the mean and the biased covariance plus reg_covar."""
    X = load_breast_cancer().data
    model = StreamingGaussianMixture(1, covariance_type=covariance_type, random_state=0).fit(X)
    expected = np.cov(X, rowvar=False, bias=True) + 1e-6 * np.eye(X.shape[1])
    np.testing.assert_allclose(model.means_[0], X.mean(axis=0), rtol=1e-10)
    covariance = model.covariances_ if covariance_type == "tied" else model.covariances_[0]
    np.testing.assert_allclose(covariance, expected, rtol=1e-7, atol=1e-10)
    sk = GaussianMixture(1, covariance_type=covariance_type, random_state=0).fit(X)
    assert model.score(X) == pytest.approx(sk.score(X), abs=1e-8)


def test_user_means_are_refined_like_scikit_learns() -> None:
    """Cause 2: given scikit-learn's own fitted means, the fit must not fall below its score."""
    X = iris_standardised()
    sk = GaussianMixture(3, random_state=0).fit(X)
    ours = StreamingGaussianMixture(3, means_init=sk.means_, random_state=0).fit(X)
    assert ours.score(X) >= sk.score(X) - 1e-4
    np.testing.assert_allclose(np.sort(ours.means_, axis=0), np.sort(sk.means_, axis=0), atol=0.02)


def test_data_within_the_sample_is_fitted_by_exact_em_to_its_fixed_point() -> None:
    """The sample is all of the data: the default is EM to tol on it, so one more scikit-learn
    EM iteration from our parameters hardly moves the log-likelihood (less than tol)."""
    X, _, _ = make_mixture(3000, 4, 3, random_state=1)
    ours = StreamingGaussianMixture(4, random_state=0).fit(X)
    assert ours.converged_ and ours.records_seen_ == 3000 and len(ours.fit_history_) == 0
    sk = GaussianMixture(
        4, weights_init=ours.weights_, means_init=ours.means_, precisions_init=ours.precisions_, max_iter=1
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SklearnConvergenceWarning)
        sk.fit(X)
    assert abs(sk.score(X) - ours.score(X)) < 1e-3


def test_a_list_of_chunks_as_long_as_the_sample_is_the_whole_data() -> None:
    X, _, _ = make_mixture(4000, 3, 2, random_state=2)
    kwargs = dict(random_state=0, init_size=4000)
    array = StreamingGaussianMixture(3, **kwargs).fit(X)
    chunks = StreamingGaussianMixture(3, **kwargs).fit(np.array_split(X, 7))
    np.testing.assert_allclose(chunks.means_, array.means_, rtol=1e-12, atol=1e-12)
    assert len(chunks.fit_history_) == 0  # no online pass: the sample's EM was the fit


def test_larger_data_gets_an_online_pass_then_exact_em_until_tol() -> None:
    X, _, truth = make_mixture(60_000, 4, 3, random_state=3)
    model = StreamingGaussianMixture(4, random_state=0, init_size=5000).fit(X)
    assert model.converged_
    # One online pass (its trace), then at least two exact passes to see tol.
    assert model.fit_history_.n_batches == int(np.ceil(60_000 / model.batch_size))
    assert model.n_iter_ >= 3 and len(model.lower_bounds_) == model.n_iter_
    exact = model.lower_bounds_[1:]
    assert np.all(np.diff(exact) >= -1e-12) and abs(exact[-1] - exact[-2]) < model.tol
    assert truth.log_likelihood(X).mean() - model.score(X) < 0.005


def test_select_candidates_equal_lone_fits_on_a_lake_larger_than_the_sample(tmp_path) -> None:
    """Cause 5: with the default settings (shuffled row groups, online pass, exact EM), each
    candidate is the model a lone fit gives, and its BIC the estimator's."""
    info = write_lake(
        tmp_path / "lake",
        n_records=12_000,
        n_components=3,
        n_features=2,
        n_files=3,
        row_group_size=1000,
        sort_by="component",
        seed=4,
    )
    source = ParquetSource(info.path, columns=info.feature_names)
    options = dict(init_size=3000, batch_size=1000)
    result = select(source, n_components=[2, 3], covariance_types="full,diag", random_state=5, **options)
    for candidate in result.candidates:
        lone = StreamingGaussianMixture(
            candidate.n_components, covariance_type=candidate.covariance_type, random_state=5, **options
        ).fit(source)
        for name in ("weights_", "means_", "covariances_"):
            np.testing.assert_array_equal(getattr(candidate.model, name), getattr(lone, name))
        assert candidate.model.n_iter_ == lone.n_iter_ and candidate.model.lower_bounds_ == lone.lower_bounds_
        assert candidate.bic == pytest.approx(lone.bic(source), rel=1e-10)


# ---------------------------------------------------------------------- init_params


def blobs() -> np.ndarray:
    X, _, _ = make_mixture(3000, 3, 2, separation=12.0, random_state=7)
    return X


def start_only(init_params: str, X: np.ndarray, seed: int = 0) -> tuple[StreamingGaussianMixture, GaussianMixture]:
    """Both libraries' first M-step (max_iter=0) from the same kind of start."""
    ours = StreamingGaussianMixture(3, init_params=init_params, max_iter=0, n_init=1, random_state=seed).fit(X)
    sk = GaussianMixture(3, init_params=init_params, max_iter=0, random_state=seed).fit(X)
    return ours, sk


def test_kmeans_start_is_scikit_learns_on_separated_clusters() -> None:
    X = blobs()
    ours, sk = start_only("kmeans", X)
    order = match_components(sk.means_, ours.means_)
    np.testing.assert_allclose(ours.means_[order], sk.means_, rtol=1e-10)
    np.testing.assert_allclose(ours.weights_[order], sk.weights_, rtol=1e-10)
    np.testing.assert_allclose(ours.covariances_[order], sk.covariances_, rtol=1e-8)


@pytest.mark.parametrize("init_params", ["k-means++", "random_from_data"])
def test_single_record_starts_put_each_mean_on_a_record(init_params: str) -> None:
    """As scikit-learn: one record per component, so each mean is a record and each covariance
    is reg_covar alone."""
    X = blobs()
    ours, sk = start_only(init_params, X)
    for model in (ours, sk):
        nearest = [np.abs(X - mean).max(axis=1).min() for mean in model.means_]
        assert max(nearest) < 1e-9, nearest
        # Equal weights (scikit-learn leaves them unnormalised, 1/n each, until its first M-step).
        np.testing.assert_allclose(model.weights_, model.weights_[0])
        np.testing.assert_allclose(model.covariances_, np.broadcast_to(1e-6 * np.eye(2), (3, 2, 2)), atol=1e-12)
    np.testing.assert_allclose(ours.weights_, 1 / 3)


def test_random_start_puts_every_mean_near_the_grand_mean() -> None:
    X = blobs()
    ours, sk = start_only("random", X)
    spread = X.std(axis=0)
    for model in (ours, sk):
        assert np.all(np.abs(model.means_ - X.mean(axis=0)) < 0.2 * spread)
        assert model.weights_.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("init_params", ["kmeans", "k-means++", "random", "random_from_data"])
def test_every_start_method_fits_at_least_as_well_as_scikit_learns(init_params: str) -> None:
    X, _, truth = make_mixture(6000, 3, 2, separation=8.0, random_state=8)
    ours = [StreamingGaussianMixture(3, init_params=init_params, random_state=s).fit(X).score(X) for s in range(3)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SklearnConvergenceWarning)
        sk = [GaussianMixture(3, init_params=init_params, random_state=s).fit(X).score(X) for s in range(3)]
    assert np.mean(ours) >= np.mean(sk) - 0.005
    # "random" starts every mean at the grand mean, where EM moves so slowly that tol=1e-3 stops
    # it early (scikit-learn's too); a tighter tol reaches the generating fit from every start.
    tight = StreamingGaussianMixture(3, init_params=init_params, tol=1e-6, random_state=0).fit(X)
    assert truth.log_likelihood(X).mean() - tight.score(X) < 0.01


# ---------------------------------------------------------------------- batch parity


def test_convergence_warning_is_scikit_learns_class_when_it_is_loaded() -> None:
    X = iris_standardised()
    with pytest.warns(SklearnConvergenceWarning) as caught:
        StreamingGaussianMixture(3, algorithm="batch", max_iter=1, tol=0.0, random_state=0).fit(X)
    assert any(isinstance(w.message, ConvergenceWarning) for w in caught)


def test_convergence_warning_without_scikit_learn_loaded() -> None:
    code = (
        "import sys, warnings, numpy as np\n"
        "from streamgmm import ConvergenceWarning, StreamingGaussianMixture\n"
        "X = np.random.default_rng(0).normal(size=(300, 2))\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    StreamingGaussianMixture(2, algorithm='batch', max_iter=1, tol=0.0).fit(X)\n"
        "assert 'sklearn' not in sys.modules\n"
        "assert [type(x.message) for x in w] == [ConvergenceWarning], w\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_not_fitted_message_is_scikit_learns_with_the_class_name() -> None:
    X = iris_standardised()
    with pytest.raises(SklearnNotFittedError) as sk_error:
        GaussianMixture(2).predict(X)
    with pytest.raises(SklearnNotFittedError) as ours:
        StreamingGaussianMixture(2).predict(X)
    assert str(ours.value) == str(sk_error.value).replace("GaussianMixture", "StreamingGaussianMixture")
    assert isinstance(ours.value, streamgmm.NotFittedError)


@pytest.mark.parametrize("algorithm", ["auto", "online", "batch"])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_max_iter_zero_leaves_the_model_at_its_start(covariance_type: str, algorithm: str) -> None:
    X = iris_standardised()
    start = GaussianMixture(3, covariance_type=covariance_type, random_state=0).fit(X)
    init = dict(weights_init=start.weights_, means_init=start.means_, precisions_init=start.precisions_)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ConvergenceWarning with max_iter=0, as scikit-learn
        ours = StreamingGaussianMixture(3, covariance_type=covariance_type, algorithm="batch", max_iter=0, **init).fit(
            X
        )
        # scikit-learn cannot take precisions_init with max_iter=0 (it fails looking for
        # covariances_): its bookkeeping is compared from means and weights alone.
        sk = GaussianMixture(
            3, covariance_type=covariance_type, max_iter=0, weights_init=start.weights_, means_init=start.means_
        ).fit(X)
    for name, given in (("weights_", start.weights_), ("means_", start.means_), ("precisions_", start.precisions_)):
        np.testing.assert_allclose(getattr(ours, name), given, rtol=1e-10, atol=1e-12)
    assert (ours.n_iter_, ours.converged_, ours.lower_bound_) == (sk.n_iter_, sk.converged_, sk.lower_bound_)
    assert ours.lower_bound_ == -np.inf


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_warm_started_single_iterations_never_lower_the_bound(covariance_type: str) -> None:
    X = load_breast_cancer().data[:, :6]
    model = StreamingGaussianMixture(
        3, covariance_type=covariance_type, algorithm="batch", max_iter=1, tol=0.0, warm_start=True, random_state=0
    )
    bounds = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for _ in range(80):  # well past convergence, where rounding alone moves the bound
            bounds.append(model.fit(X).lower_bound_)
    assert np.all(np.diff(bounds) >= 0.0), np.diff(bounds).min()
    assert bounds[-1] > bounds[0]


def test_candidates_with_the_same_start_run_once() -> None:
    """Two partitions that are the same up to the order of their components give the same EM:
    the repeat is dropped, a different one kept."""
    from streamgmm.mixture.initialization import distinct

    X, _, _ = make_mixture(500, 3, 2, random_state=9)
    first = StreamingGaussianMixture(3, algorithm="batch", max_iter=0, n_init=1, random_state=0).fit(X).params_
    order = [2, 0, 1]
    shuffled = streamgmm.MixtureParams(
        first.weights[order], first.means[order], first.covariances[order], first.precisions_cholesky[order], "full"
    )
    other = streamgmm.MixtureParams(
        first.weights, first.means + 1.0, first.covariances, first.precisions_cholesky, "full"
    )
    assert distinct([first, shuffled, other]) == [first, other]
