"""dask-ml's wrappers around the estimator: ``Incremental`` needs ``classes_`` for
``predict_proba`` and ``score``."""

from __future__ import annotations

import numpy as np
import pytest

from streamgmm import NotFittedError, StreamingGaussianMixture
from streamgmm.datasets.mixtures import make_mixture

da = pytest.importorskip("dask.array")
wrappers = pytest.importorskip("dask_ml.wrappers", reason="dask-ml is not installed")


def test_classes_are_the_component_indices() -> None:
    model = StreamingGaussianMixture(3)
    assert not hasattr(model, "classes_")
    with pytest.raises(NotFittedError):
        model.classes_  # noqa: B018
    X, _, _ = make_mixture(3000, 3, 2, random_state=1)
    np.testing.assert_array_equal(model.fit(X).classes_, [0, 1, 2])


def test_incremental_predict_proba_and_score_match_the_same_partial_fits() -> None:
    X, _, _ = make_mixture(12_000, 3, 2, random_state=4)
    array = da.from_array(X, chunks=(3000, 2))
    incremental = wrappers.Incremental(
        StreamingGaussianMixture(3, batch_size=1000, random_state=0), shuffle_blocks=False
    )
    incremental.fit(array)
    local = StreamingGaussianMixture(3, batch_size=1000, random_state=0)
    for start in range(0, X.shape[0], 3000):
        local.partial_fit(X[start : start + 3000])
    np.testing.assert_allclose(incremental.predict_proba(array).compute(), local.predict_proba(X), rtol=0, atol=1e-12)
    # A mixture's score is its mean log-likelihood (scikit-learn's GaussianMixture.score).
    assert incremental.score(array, None) == pytest.approx(local.score(X), rel=1e-12)
