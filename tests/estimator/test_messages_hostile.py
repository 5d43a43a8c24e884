"""The batch estimator's warning and error texts are scikit-learn's, word for word.

Code (and scikit-learn's own test suite) written for ``GaussianMixture`` matches these texts;
the oracle is what scikit-learn itself emits on the same problem.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning as SklearnConvergenceWarning
from sklearn.mixture import GaussianMixture

from streamgmm import StreamingGaussianMixture


def records(n: int = 300, d: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, d))


def sklearn_warning_text(X: np.ndarray, covariance_type: str) -> str:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        GaussianMixture(3, covariance_type=covariance_type, max_iter=1, reg_covar=0, random_state=0).fit(X)
    (text,) = {str(w.message) for w in caught if issubclass(w.category, SklearnConvergenceWarning)}
    return text


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_unconverged_batch_em_warns_in_sklearns_words(covariance_type: str) -> None:
    X = records()
    expected = sklearn_warning_text(X, covariance_type)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        StreamingGaussianMixture(
            3, covariance_type=covariance_type, algorithm="batch", max_iter=1, reg_covar=0, random_state=0
        ).fit(X)
    texts = [str(w.message) for w in caught if issubclass(w.category, SklearnConvergenceWarning)]
    assert texts == [expected]


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_singular_covariance_without_reg_covar_fails_in_sklearns_words(covariance_type: str) -> None:
    # As scikit-learn's own test: two collapsed clusters, as many components as records, no
    # regularisation.
    X = np.vstack((np.ones((5, 5)), np.zeros((5, 5))))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", SklearnConvergenceWarning)  # k-means finds 2 distinct clusters
        with pytest.raises(ValueError) as sklearn_error:
            GaussianMixture(10, covariance_type=covariance_type, reg_covar=0, random_state=0).fit(X)
        with pytest.raises(ValueError) as ours:
            StreamingGaussianMixture(
                10, covariance_type=covariance_type, algorithm="batch", reg_covar=0, random_state=0
            ).fit(X)
    assert str(ours.value) == str(sklearn_error.value)
