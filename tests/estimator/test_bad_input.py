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


def test_object_array_of_strings_names_the_value() -> None:
    # numpy's own classes: a string that is not a number is a ValueError; an object that is not
    # a number at all (a dict) a TypeError, which scikit-learn's check_dtype_object expects.
    with pytest.raises(ValueError, match="non-numeric values in an object array.*'x'"):
        StreamingGaussianMixture(2).fit(np.array([["x", 1.0], ["y", 2.0], ["z", 3.0]], dtype=object))
    with pytest.raises(TypeError, match="non-numeric values in an object array.*dict"):
        StreamingGaussianMixture(2).fit(np.array([[{}, 1.0], [2.0, 2.0], [3.0, 3.0]], dtype=object))


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
        (dict(step_exponent="x"), "Invalid value for 'step_exponent': 'x'"),
        (dict(tol=float("nan")), "Invalid value for 'tol'"),
        (dict(batch_size=0), "batch_size"),
        (dict(max_iter=-1), "max_iter"),
        (dict(init_params="magic"), "init_params"),
        (dict(reg_covar=-1.0), "reg_covar"),
        (dict(means_init=np.zeros((2, 2))), r"means_init must be a finite array of shape \(3, 3\)"),
        (dict(weights_init=[0.5, 0.5, 0.5]), "weights_init must be 3 non-negative numbers summing to 1"),
        (dict(precisions_init=-np.ones((3, 3, 3))), "precisions_init must be positive definite"),
        (dict(precisions_init=np.ones((3, 3)), covariance_type="diag"), None),
        (dict(precisions_init=-np.ones((3, 3)), covariance_type="diag"), "precisions_init must be positive"),
        (
            dict(precisions_init=np.ones((2, 3, 3))),
            r"precisions_init for covariance_type='full' must have shape \(3, 3, 3\)",
        ),
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


@pytest.mark.parametrize(
    "method", ["predict", "predict_proba", "score", "score_samples", "bic", "aic", "sample", "save"]
)
def test_using_an_unfitted_model(method: str, tmp_path) -> None:
    args = {"sample": (3,), "save": (tmp_path / "m.sgmm",)}.get(method, (GOOD,))
    with pytest.raises(NotFittedError, match="StreamingGaussianMixture instance is not fitted yet"):
        getattr(StreamingGaussianMixture(2), method)(*args)


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


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (dict(algorithm="batch"), "batch EM makes one pass per iteration and needs a source it can read again"),
        (dict(algorithm="online", max_passes=2), "several passes need a source that can be read again"),
    ],
)
def test_one_shot_generator_cannot_be_read_twice(params: dict, message: str) -> None:
    chunks = (GOOD[i : i + 50] for i in range(0, 200, 50))
    model = StreamingGaussianMixture(2, random_state=0, **params)
    with pytest.raises(ValueError, match=message):
        model.fit(chunks)
    assert not hasattr(model, "means_")  # refused, not fitted on what could be read once
    # The same chunks as a list, or a callable returning a fresh iterator, are fine.
    StreamingGaussianMixture(2, random_state=0, **params).fit([GOOD[i : i + 50] for i in range(0, 200, 50)])
    StreamingGaussianMixture(2, random_state=0, **params).fit(lambda: (GOOD[i : i + 50] for i in range(0, 200, 50)))


def test_nothing_is_dropped_silently_from_a_chunk_stream() -> None:
    chunks = [GOOD[:70], GOOD[70:71], GOOD[71:]]
    model = StreamingGaussianMixture(2, random_state=0).fit(chunks)
    assert model.records_seen_ == GOOD.shape[0]


# --------------------------------------------------------------------------- more shapes of bad input


@pytest.mark.parametrize(
    ("X", "error", "message"),
    [
        ([[1.0, 2.0], [3.0], [4.0, 5.0]], ValueError, "cannot be read as a numeric array"),
        (GOOD + 1j, ValueError, "Complex data not supported"),
        ([["a", "b"], ["c", "d"]], ValueError, "non-numeric array of dtype <U1"),
        (None, TypeError, "cannot stream records from NoneType"),
        (3.0, TypeError, "cannot stream records from float"),
    ],
)
def test_things_that_are_not_a_matrix(X, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        StreamingGaussianMixture(2).fit(X)


def chunk_list() -> list[np.ndarray]:
    return [GOOD[i : i + 50] for i in range(0, 200, 50)]


@pytest.mark.parametrize("value, kind", [(np.nan, "NaN"), (-np.inf, "infinity")])
@pytest.mark.parametrize("form", ["list", "callable", "generator"])
def test_non_finite_value_in_the_third_chunk_names_chunk_row_and_column(form: str, value: float, kind: str) -> None:
    def chunks() -> list[np.ndarray]:
        out = [c.copy() for c in chunk_list()]
        out[2][7, 1] = value
        return out

    stream = {"list": chunks(), "callable": lambda: iter(chunks()), "generator": iter(chunks())}[form]
    # init_size=20: a generator's sample is its first chunk, so the bad chunk is met mid-stream.
    model = StreamingGaussianMixture(2, init_size=20, random_state=0)
    with pytest.raises(ValueError, match=f"chunk 2: Input contains {kind} at row 7, column 1"):
        model.fit(stream)
    assert not hasattr(model, "means_")


def test_a_failed_fit_leaves_a_fitted_model_as_it_was() -> None:
    model = StreamingGaussianMixture(2, init_size=20, random_state=0).fit(GOOD)
    means, steps = model.means_.copy(), model.n_steps_
    bad = chunk_list()
    bad[2] = with_value(np.nan, row=107)[100:150]
    with pytest.raises(ValueError, match="chunk 2: Input contains NaN at row 7"):
        model.fit(iter(bad))
    with pytest.raises(ValueError, match="Input contains NaN at row 17"):
        model.partial_fit(with_value(np.nan))
    np.testing.assert_array_equal(model.means_, means)
    assert model.n_steps_ == steps and model.records_seen_ == GOOD.shape[0]


@pytest.mark.parametrize(
    ("bad_chunk", "error", "message"),
    [
        (GOOD[:10, 0], ValueError, "chunk 1: expected a 2-D array .* got 1-D"),
        (GOOD[:10].reshape(10, 3, 1), ValueError, "chunk 1: expected a 2-D array .* got 3-D"),
        (np.array([["a", "b", "c"]]), ValueError, "chunk 1: non-numeric array of dtype <U1"),
        (sp.csr_matrix(GOOD[:10]), TypeError, "chunk 1: sparse data is not supported"),
    ],
)
def test_a_bad_chunk_is_named(bad_chunk, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        StreamingGaussianMixture(2, random_state=0).fit([GOOD[:50], bad_chunk, GOOD[50:]])


@pytest.mark.parametrize(
    "stream",
    [
        pytest.param(lambda: [GOOD[:2], GOOD[2:4]], id="list"),
        pytest.param(lambda: iter([GOOD[:2], GOOD[2:4]]), id="generator"),
        pytest.param(lambda: [], id="empty-list"),
    ],
)
def test_fewer_records_than_components_in_a_stream(stream) -> None:
    n = sum(c.shape[0] for c in stream())
    with pytest.raises(ValueError, match=f"n_components = 5, n_samples = {n}: fewer records than components"):
        StreamingGaussianMixture(5, random_state=0).fit(stream())


def test_fewer_records_than_components_in_a_first_partial_fit() -> None:
    with pytest.raises(ValueError, match="n_components = 5, n_samples = 3: fewer records than components"):
        StreamingGaussianMixture(5, random_state=0).partial_fit(GOOD[:3])


@pytest.mark.parametrize("method", ["predict", "predict_proba", "score", "score_samples", "partial_fit"])
def test_inference_and_updates_check_their_input_too(method: str) -> None:
    model = StreamingGaussianMixture(2, random_state=0).fit(GOOD)
    call = getattr(model, method)
    with pytest.raises(ValueError, match="X has 2 features, but StreamingGaussianMixture is expecting 3"):
        call(GOOD[:, :2])
    with pytest.raises(ValueError, match="Input contains NaN at row 17, column 2"):
        call(with_value(np.nan))
    with pytest.raises(ValueError, match="Input contains infinity at row 3, column 0"):
        call(with_value(np.inf, row=3, col=0))
    with pytest.raises(ValueError, match="expected a 2-D array"):
        call(GOOD[0])


def test_warm_start_refuses_a_different_number_of_features() -> None:
    model = StreamingGaussianMixture(2, warm_start=True, random_state=0).fit(GOOD)
    with pytest.raises(ValueError, match="X has 2 features, but StreamingGaussianMixture is expecting 3"):
        model.fit(GOOD[:, :2])
