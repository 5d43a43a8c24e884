"""Bad input gets a ValueError (TypeError for sparse or unconvertible objects) naming the problem."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from streamgmm import NotFittedError, StreamingGaussianMixture

GOOD = np.random.default_rng(0).normal(size=(200, 3))


def with_value(value: float, row: int = 17, col: int = 2) -> np.ndarray:
    X = GOOD.copy()
    X[row, col] = value
    return X


@pytest.mark.parametrize(
    ("X", "message"),
    [
        (with_value(np.nan), "Input contains NaN at row 17, column 2"),
        (with_value(np.inf), "Input contains infinity at row 17, column 2"),
        (GOOD[:, 0], "expected a 2-D array .* got 1-D"),
        (GOOD.reshape(200, 3, 1), "got 3-D"),
        (np.array([["a", "b"], ["c", "d"]]), "non-numeric array of dtype <U1"),
        (np.zeros((0, 3)), "0 sample"),
        (np.zeros((5, 0)), "0 feature"),
        (GOOD[:2], "fewer records than components"),
    ],
)
def test_bad_arrays(X: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        StreamingGaussianMixture(3).fit(X)


def test_object_array_of_strings_is_a_type_error() -> None:
    with pytest.raises((TypeError, ValueError), match="string|non-numeric"):
        StreamingGaussianMixture(2).fit(np.array([["x", 1.0], ["y", 2.0], ["z", 3.0]], dtype=object))


def test_sparse_input_is_refused_by_name() -> None:
    with pytest.raises(TypeError, match="sparse"):
        StreamingGaussianMixture(2).fit(sp.csr_matrix(GOOD))


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (dict(covariance_type="banana"), "covariance_type.*'banana'.*full, tied, diag, spherical"),
        (dict(algorithm="sgd"), "algorithm.*'sgd'"),
        (dict(step_exponent=0.5), r"step_exponent must be in \(0.5, 1\]"),
        (dict(step_exponent=1.5), r"step_exponent must be in \(0.5, 1\]"),
        (dict(step_floor=2.0), "step_floor"),
        (dict(batch_size=0), "batch_size"),
        (dict(max_iter=0), "max_iter"),
        (dict(init_params="magic"), "init_params"),
        (dict(reg_covar=-1.0), "reg_covar"),
        (dict(means_init=np.zeros((2, 2))), r"means_init must be a finite array of shape \(3, 3\)"),
        (dict(weights_init=[0.5, 0.5, 0.5]), "weights_init must be 3 non-negative numbers summing to 1"),
        (dict(precisions_init=-np.ones((3, 3, 3))), "precisions_init must be positive definite"),
        (dict(precisions_init=np.ones((3, 3)), covariance_type="diag"), None),
        (dict(precisions_init=-np.ones((3, 3)), covariance_type="diag"), "precisions_init must be positive"),
        (dict(precisions_init=np.ones((2, 3, 3))), r"precisions_init for covariance_type='full' must have shape \(3, 3, 3\)"),
    ],
)
def test_bad_parameters(params: dict, message: str | None) -> None:
    if message is None:  # the well-formed control case fits
        StreamingGaussianMixture(3, **params).fit(GOOD)
        return
    with pytest.raises(ValueError, match=message):
        StreamingGaussianMixture(3, **params).fit(GOOD)


def test_zero_components() -> None:
    with pytest.raises(ValueError, match="n_components"):
        StreamingGaussianMixture(0).fit(GOOD)


def test_predict_before_fit() -> None:
    with pytest.raises(NotFittedError, match="not fitted yet"):
        StreamingGaussianMixture(2).predict(GOOD)


def test_wrong_number_of_features_at_predict() -> None:
    model = StreamingGaussianMixture(2, random_state=0).fit(GOOD)
    with pytest.raises(ValueError, match="X has 2 features, but StreamingGaussianMixture is expecting 3"):
        model.predict(GOOD[:, :2])
    with pytest.raises(ValueError, match="NaN"):
        model.score_samples(with_value(np.nan))


def test_nan_inside_a_later_chunk_names_the_chunk_and_row() -> None:
    chunks = [GOOD[:50], GOOD[50:100], with_value(np.nan, row=120)[100:], GOOD[:10]]
    with pytest.raises(ValueError, match="chunk 2: Input contains NaN at row 20, column 2"):
        StreamingGaussianMixture(2, random_state=0).fit(chunks)


def test_chunks_with_different_widths_are_refused() -> None:
    with pytest.raises(ValueError, match="chunk 1: X has 2 features, but .* expecting 3"):
        StreamingGaussianMixture(2, random_state=0).fit([GOOD[:100], GOOD[:50, :2]])


@pytest.mark.parametrize("params", [dict(algorithm="batch"), dict(max_passes=2)])
def test_one_shot_generator_cannot_be_read_twice(params: dict) -> None:
    chunks = (GOOD[i : i + 50] for i in range(0, 200, 50))
    with pytest.raises(ValueError, match="read again|fresh iterator"):
        StreamingGaussianMixture(2, random_state=0, **params).fit(chunks)


def test_nothing_is_dropped_silently_from_a_chunk_stream() -> None:
    chunks = [GOOD[:70], GOOD[70:71], GOOD[71:]]
    model = StreamingGaussianMixture(2, random_state=0).fit(chunks)
    assert model.records_seen_ == GOOD.shape[0]
