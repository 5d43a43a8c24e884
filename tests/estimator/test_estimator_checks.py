"""scikit-learn's own estimator checks, run against StreamingGaussianMixture.

One expected failure, the one scikit-learn's own KMeans has: with several components the fit's
random seeding draws a weighted sample's candidates differently from those of its repeated
rows (shuffled, in the check), so EM may end in another local optimum. Equivalence from the
same start is tested exactly in tests/estimator/test_weights.py."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from sklearn.base import clone, is_clusterer
from sklearn.mixture import GaussianMixture
from sklearn.utils import get_tags
from sklearn.utils.estimator_checks import parametrize_with_checks

from streamgmm import StreamingGaussianMixture

# One estimator per algorithm and covariance type, each small enough that the whole run takes
# a few seconds: every check fits on tens of records.
ESTIMATORS = [
    StreamingGaussianMixture(),
    StreamingGaussianMixture(3, algorithm="batch", covariance_type="diag", max_iter=20),
    StreamingGaussianMixture(2, covariance_type="tied", batch_size=16, max_passes=2),
    StreamingGaussianMixture(2, algorithm="batch", covariance_type="spherical", n_init=1, batch_size=7),
    # allow_nan: scikit-learn's checks then feed NaN and expect a fit.
    StreamingGaussianMixture(2, nan_policy="marginalize", n_init=2),
]


def expected_failures(estimator: StreamingGaussianMixture) -> dict[str, str]:
    if estimator.n_components == 1:
        return {}  # one component has one optimum: weights and repeats agree
    return {
        "check_sample_weight_equivalence_on_dense_data": (
            "random seeding: weighted and repeated data draw different candidates (as KMeans)"
        )
    }


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=expected_failures)
def test_sklearn_estimator_checks(estimator, check) -> None:
    check(estimator)


def test_module_does_not_import_sklearn() -> None:
    code = "import sys, streamgmm; sys.exit(1 if any(m.startswith('sklearn') for m in sys.modules) else 0)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_not_fitted_error_is_sklearns_too() -> None:
    from sklearn.exceptions import NotFittedError as SklearnNotFittedError

    from streamgmm import NotFittedError

    for method in ("predict", "predict_proba", "score_samples", "score", "bic", "aic"):
        with pytest.raises(SklearnNotFittedError) as info:
            getattr(StreamingGaussianMixture(), method)([[0.0]])
        assert isinstance(info.value, NotFittedError), method
    with pytest.raises(SklearnNotFittedError):
        StreamingGaussianMixture().sample(3)


def test_tags_are_those_of_gaussian_mixture() -> None:
    ours, theirs = get_tags(StreamingGaussianMixture()), get_tags(GaussianMixture())
    # A density model with predict, like GaussianMixture: not a clusterer (no labels_).
    assert ours.estimator_type == theirs.estimator_type == "density_estimator"
    assert not is_clusterer(StreamingGaussianMixture())
    assert ours.target_tags.required is theirs.target_tags.required is False
    assert ours.input_tags.allow_nan is theirs.input_tags.allow_nan is False
    assert ours.input_tags.sparse is theirs.input_tags.sparse is False
    assert ours.requires_fit and ours.input_tags.two_d_array


def test_clone_keeps_parameters_and_drops_the_fit() -> None:
    means = np.array([[0.0], [5.0]])
    model = StreamingGaussianMixture(2, means_init=means, batch_size=8, random_state=3)
    X = np.concatenate([np.zeros((20, 1)), np.full((20, 1), 5.0)]) + np.linspace(0, 1, 40)[:, None]
    model.fit(X)
    copy = clone(model)
    assert copy.get_params().keys() == model.get_params().keys()
    for name, value in model.get_params().items():
        np.testing.assert_array_equal(getattr(copy, name), value, err_msg=name)
    assert copy.means_init is not model.means_init  # a copy, not the same array
    assert not hasattr(copy, "means_") and not hasattr(copy, "n_features_in_")
    # Same parameters, same (seeded) fit.
    np.testing.assert_array_equal(copy.fit(X).means_, model.means_)


def test_numpy_array_api_dispatch_check_runs_in_a_subprocess() -> None:
    """check_array_api_input is skipped above unless SCIPY_ARRAY_API=1 was set before scipy was
    imported; run it where it is, so no check of the list goes unexercised."""
    import os

    code = "\n".join(
        [
            "from sklearn.utils.estimator_checks import check_array_api_input",
            "from streamgmm import StreamingGaussianMixture",
            *(
                f"check_array_api_input('StreamingGaussianMixture', {est!r}, array_namespace='numpy', "
                "expect_only_array_outputs=False)"
                for est in ESTIMATORS
            ),
        ]
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, "SCIPY_ARRAY_API": "1"}, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_nan_is_allowed_by_the_tags_only_where_the_policy_takes_it() -> None:
    assert get_tags(StreamingGaussianMixture()).input_tags.allow_nan is False
    for policy in ("skip", "marginalize"):
        assert get_tags(StreamingGaussianMixture(nan_policy=policy)).input_tags.allow_nan is True
    assert StreamingGaussianMixture(nan_policy="skip").get_params()["nan_policy"] == "skip"
