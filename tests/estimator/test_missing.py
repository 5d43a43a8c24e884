"""nan_policy on arrays: exact EM for incomplete records ('marginalize'), dropping them
('skip'), and scores of incomplete records from their observed features."""

from __future__ import annotations

import os

import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from streamgmm import StreamingGaussianMixture

COVARIANCE_TYPES = ["full", "tied", "diag", "spherical"]
MEANS = np.array([[0.0, 0.0, 0.0], [6.0, 4.0, -3.0]])
COVARIANCES = np.array(
    [[[1.0, 0.8, 0.3], [0.8, 1.5, 0.2], [0.3, 0.2, 1.0]], [[1.2, -0.6, 0.0], [-0.6, 1.0, 0.3], [0.0, 0.3, 0.8]]]
)


def mixture_sample(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < 0.4
    return np.where(
        labels[:, None],
        rng.multivariate_normal(MEANS[1], COVARIANCES[1], n),
        rng.multivariate_normal(MEANS[0], COVARIANCES[0], n),
    )


def missing_at_random(X: np.ndarray, seed: int) -> np.ndarray:
    """Feature 1 goes missing mostly when feature 0 is high within its cluster (its value
    depends only on what is observed: missing at random), and feature 2 at random."""
    rng = np.random.default_rng(seed)
    high = (X[:, 0] > 0.5) & (X[:, 0] < 3) | (X[:, 0] > 6.5)
    holed = X.copy()
    holed[high & (rng.random(len(X)) < 0.9), 1] = np.nan
    holed[rng.random(len(X)) < 0.1, 2] = np.nan
    return holed


def sorted_means(model: StreamingGaussianMixture) -> np.ndarray:
    return model.means_[np.argsort(model.means_[:, 0])]


@pytest.mark.parametrize(
    "plan",
    [
        {},  # the sample is all the data: EM on it is the fit
        {"init_size": 500, "batch_size": 1000},  # a sample, online passes, then exact EM passes
        {"init_size": 500, "batch_size": 1000, "algorithm": "online", "max_passes": 3},
    ],
)
def test_marginalize_recovers_the_means_under_missing_at_random_where_skip_is_biased(plan: dict) -> None:
    X = missing_at_random(mixture_sample(6000, seed=0), seed=1)
    assert 0.25 < np.isnan(X).any(axis=1).mean() < 0.5
    options = dict(n_components=2, random_state=0, tol=1e-6, **plan)
    marginal = StreamingGaussianMixture(nan_policy="marginalize", **options).fit(X)
    skipped = StreamingGaussianMixture(nan_policy="skip", **options).fit(X)
    marginal_error = np.abs(sorted_means(marginal) - MEANS).max()
    skip_error = np.abs(sorted_means(skipped) - MEANS).max()
    assert marginal_error < 0.1, marginal_error
    assert skip_error > 0.4, skip_error
    assert skipped.n_skipped_ == int(np.isnan(X).any(axis=1).sum())
    assert marginal.n_skipped_ == 0


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("algorithm", ["auto", "online", "batch"])
def test_marginalize_on_complete_data_is_raise(covariance_type: str, algorithm: str) -> None:
    X = mixture_sample(400, seed=2)
    options = dict(n_components=2, covariance_type=covariance_type, algorithm=algorithm, random_state=0)
    options.update(init_size=200, batch_size=64, max_iter=20)
    a = StreamingGaussianMixture(nan_policy="raise", **options).fit(X)
    b = StreamingGaussianMixture(nan_policy="marginalize", **options).fit(X)
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=0, atol=1e-12, err_msg=name)
    np.testing.assert_allclose(a.predict_proba(X), b.predict_proba(X), rtol=0, atol=1e-12)


def full_covariances(model: StreamingGaussianMixture) -> np.ndarray:
    k, d = model.means_.shape
    c = model.covariances_
    return {
        "full": lambda: c,
        "tied": lambda: np.broadcast_to(c, (k, d, d)),
        "diag": lambda: np.array([np.diag(v) for v in c]),
        "spherical": lambda: np.array([np.eye(d) * v for v in c]),
    }[model.covariance_type]()


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_scores_of_incomplete_rows_are_their_marginal_posteriors(covariance_type: str) -> None:
    X = mixture_sample(500, seed=3)
    model = StreamingGaussianMixture(2, covariance_type=covariance_type, random_state=0, nan_policy="marginalize")
    model.fit(missing_at_random(X, seed=4))
    rows = X[:6].copy()
    rows[0, 1] = rows[1, [0, 2]] = rows[2, 2] = rows[3, 0] = np.nan
    rows[5] = np.nan  # nothing observed
    covariances = full_covariances(model)
    resp, log_prob, labels = model.predict_proba(rows), model.score_samples(rows), model.predict(rows)
    for i in range(5):
        seen = ~np.isnan(rows[i])
        joint = np.array(
            [
                np.log(model.weights_[j])
                + multivariate_normal(model.means_[j, seen], covariances[j][np.ix_(seen, seen)]).logpdf(rows[i, seen])
                for j in range(2)
            ]
        )
        np.testing.assert_allclose(log_prob[i], logsumexp(joint), rtol=1e-10)
        np.testing.assert_allclose(resp[i], np.exp(joint - logsumexp(joint)), rtol=1e-9, atol=1e-12)
        assert labels[i] == np.argmax(joint)
    assert np.isnan(resp[5]).all() and np.isnan(log_prob[5]) and labels[5] == -1
    # The complete row takes the usual path.
    assert labels[4] == model.predict(X[4:5])[0]


def test_rows_with_nothing_observed_are_left_out_of_fitting() -> None:
    X = mixture_sample(300, seed=5)
    holed = np.concatenate([X, np.full((7, 3), np.nan)])
    options = dict(n_components=2, random_state=0, nan_policy="marginalize")
    a = StreamingGaussianMixture(**options).fit(holed)
    b = StreamingGaussianMixture(**options).fit(X)
    np.testing.assert_allclose(a.means_, b.means_, atol=1e-12)
    assert a.n_skipped_ == 7
    # score and bic count the scored records only.
    assert a.score(holed) == pytest.approx(a.score(X), rel=1e-12)
    assert a.bic(holed) == pytest.approx(a.bic(X), rel=1e-12)


def test_skip_fits_the_complete_rows_and_scores_the_others_nan() -> None:
    X = missing_at_random(mixture_sample(300, seed=6), seed=7)
    complete = ~np.isnan(X).any(axis=1)
    a = StreamingGaussianMixture(2, random_state=0, nan_policy="skip").fit(X)
    b = StreamingGaussianMixture(2, random_state=0).fit(X[complete])
    np.testing.assert_allclose(a.means_, b.means_, atol=1e-12)
    assert a.n_skipped_ == int((~complete).sum())
    labels = a.predict(X)
    assert (labels[~complete] == -1).all()
    np.testing.assert_array_equal(labels[complete], b.predict(X[complete]))
    assert np.isnan(a.score_samples(X)[~complete]).all()


def test_marginalize_in_partial_fit_and_on_a_stream_of_chunks() -> None:
    X = missing_at_random(mixture_sample(3000, seed=8), seed=9)
    options = dict(n_components=2, random_state=0, nan_policy="marginalize", batch_size=500)
    streamed = StreamingGaussianMixture(**options)
    for chunk in np.array_split(X, 6):
        streamed.partial_fit(chunk)
    assert np.abs(sorted_means(streamed) - MEANS).max() < 0.25
    chunks = StreamingGaussianMixture(**options).fit(list(np.array_split(X, 6)))
    assert np.abs(sorted_means(chunks) - MEANS).max() < 0.15


def test_nan_policy_raise_refuses_nan_and_bad_policies_are_named() -> None:
    X = mixture_sample(50, seed=10)
    X[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN at row 3, column 1"):
        StreamingGaussianMixture(1).fit(X)
    with pytest.raises(ValueError, match="nan_policy"):
        StreamingGaussianMixture(1, nan_policy="drop").fit(X)
    X[3, 1] = np.inf
    with pytest.raises(ValueError, match="infinity at row 3, column 1"):
        StreamingGaussianMixture(1, nan_policy="marginalize").fit(X)


def test_nan_policy_is_saved_with_the_model(tmp_path: os.PathLike) -> None:
    X = missing_at_random(mixture_sample(200, seed=11), seed=12)
    model = StreamingGaussianMixture(2, random_state=0, nan_policy="marginalize").fit(X)
    path = os.path.join(tmp_path, "model.sgmm")
    model.save(path)
    loaded = StreamingGaussianMixture.load(path)
    assert loaded.nan_policy == "marginalize"
    np.testing.assert_array_equal(loaded.predict_proba(X[:20]), model.predict_proba(X[:20]))


@pytest.mark.parametrize("policy", ["skip", "marginalize"])
def test_a_dataframe_scores_every_row_in_place(policy: str) -> None:
    """Scoring a table keeps its rows in line (a fitting reader would leave some out)."""
    pd = pytest.importorskip("pandas")
    X = missing_at_random(mixture_sample(400, seed=13), seed=14)
    X[5] = np.nan
    frame = pd.DataFrame(X, columns=["a", "b", "c"])
    model = StreamingGaussianMixture(2, random_state=0, nan_policy=policy).fit(frame)
    assert model.n_skipped_ == (np.isnan(X).any(axis=1).sum() if policy == "skip" else 1)
    labels = model.predict(frame[["c", "a", "b"]])  # read by the fitted names
    np.testing.assert_array_equal(labels, model.predict(X))
    np.testing.assert_array_equal(model.score_samples(frame), model.score_samples(X))
    assert labels.shape == (400,) and labels[5] == -1
