"""scikit-learn's own estimator checks, run against StreamingGaussianMixture (no expected failures)."""

from __future__ import annotations

import sys

import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from streamgmm import StreamingGaussianMixture


@parametrize_with_checks(
    [
        StreamingGaussianMixture(),
        StreamingGaussianMixture(3, algorithm="batch", covariance_type="diag", max_iter=20),
        StreamingGaussianMixture(2, covariance_type="tied", batch_size=16, max_passes=2),
    ]
)
def test_sklearn_estimator_checks(estimator, check) -> None:
    check(estimator)


def test_module_does_not_import_sklearn() -> None:
    import subprocess

    code = "import sys, streamgmm; sys.exit(1 if any(m.startswith('sklearn') for m in sys.modules) else 0)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_not_fitted_error_is_sklearns_too() -> None:
    from sklearn.exceptions import NotFittedError as SklearnNotFittedError

    from streamgmm import NotFittedError

    with pytest.raises(SklearnNotFittedError) as info:
        StreamingGaussianMixture().predict([[0.0]])
    assert isinstance(info.value, NotFittedError)
