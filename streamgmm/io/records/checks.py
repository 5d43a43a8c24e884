"""Checks that turn user input into clean float64 matrices, with errors that say what is wrong."""

from __future__ import annotations

from typing import Any

import numpy as np


def as_float_matrix(
    X: Any,
    *,
    where: str = "X",
    n_features: int | None = None,
    min_records: int = 1,
    estimator_name: str = "StreamingGaussianMixture",
    allow_nan: bool = False,
) -> np.ndarray:
    """A 2-D float64 array of finite numbers, or a ``ValueError`` naming the problem.

    float32 and integer input are accepted and converted; nothing is silently dropped. With
    ``allow_nan`` NaN (a missing value) passes; infinity is still an error.
    """
    if hasattr(X, "toarray") or type(X).__module__.startswith("scipy.sparse"):
        raise TypeError(f"{where}: sparse data is not supported; pass a dense array (e.g. X.toarray())")
    try:
        arr = np.asarray(X)
    except Exception as exc:  # e.g. ragged nested lists
        raise ValueError(f"{where}: cannot be read as a numeric array ({exc})") from exc
    if np.iscomplexobj(arr):
        raise ValueError(f"{where}: Complex data not supported")
    if arr.dtype.kind not in "biuf":
        if arr.dtype.kind == "O":
            try:
                arr = arr.astype(np.float64)
            except (TypeError, ValueError) as exc:
                # numpy's class is kept: ValueError for unparseable strings, TypeError for objects.
                raise type(exc)(f"{where}: non-numeric values in an object array ({exc})") from exc
        else:
            raise ValueError(f"{where}: non-numeric array of dtype {arr.dtype}; expected numbers")
    if arr.ndim != 2:
        raise ValueError(
            f"{where}: expected a 2-D array of shape (n_records, n_features), got {arr.ndim}-D "
            f"with shape {arr.shape}. Reshape your data either using X.reshape(-1, 1) if it has a "
            "single feature or X.reshape(1, -1) if it holds a single record"
        )
    arr = np.asarray(arr, dtype=np.float64)
    if arr.shape[1] == 0:
        raise ValueError(f"{where}: 0 feature(s) (shape={arr.shape}) while a minimum of 1 is required.")
    if arr.shape[0] < min_records:
        raise ValueError(
            f"{where}: {arr.shape[0]} sample(s) (shape={arr.shape}) while a minimum of {min_records} is required."
        )
    if n_features is not None and arr.shape[1] != n_features:
        raise ValueError(
            f"{where}: X has {arr.shape[1]} features, but {estimator_name} is expecting {n_features} features as input"
        )
    if not in_range(arr):
        if allow_nan:
            present = arr[~np.isnan(arr)]
            if in_range(present):
                return arr
            check_finite(np.where(np.isnan(arr), 0.0, arr), where)
        else:
            check_finite(arr, where)
        row, column = first_too_large(arr)
        raise ValueError(f"{where}: row {row}, column {column}: {too_large(arr[row, column])}")
    return arr


def check_weights(weights: np.ndarray, where: str) -> None:
    """Raise ``ValueError`` naming the first record weight that is NaN, infinite or negative.

    >>> check_weights(np.array([1.0, 0.0, 2.5]), "sample_weight")
    >>> check_weights(np.array([1.0, -2.0]), "sample_weight")
    Traceback (most recent call last):
    ...
    ValueError: sample_weight: row 1: weight -2 is negative; record weights must be finite and >= 0
    """
    row = first_bad_weight(weights)
    if row is None:
        return
    value = weights[row]
    kind = "NaN" if np.isnan(value) else "infinite" if np.isinf(value) else "negative"
    raise ValueError(f"{where}: row {row}: weight {value:g} is {kind}; record weights must be finite and >= 0")


def first_bad_weight(weights: np.ndarray) -> int | None:
    """The index of the first record weight that is NaN, infinite or negative, or None.

    >>> first_bad_weight(np.array([1.0, 0.0])), first_bad_weight(np.array([1.0, np.nan, -1.0]))
    (None, 1)
    """
    if weights.size == 0 or (bool(weights.min() >= 0) and bool(weights.max() < np.inf)):
        return None
    with np.errstate(invalid="ignore"):
        return int(np.argmax(~(np.isfinite(weights) & (weights >= 0))))


def as_sample_weight(sample_weight: Any, n_records: int) -> np.ndarray:
    """``sample_weight`` as n_records finite non-negative float64 weights (scikit-learn's
    argument), or a ``ValueError`` naming the first bad one.

    >>> as_sample_weight([1, 2], 2).tolist()
    [1.0, 2.0]
    >>> as_sample_weight([1, 2], 3)
    Traceback (most recent call last):
    ...
    ValueError: sample_weight has 2 weights, but X has 3 records
    """
    try:
        w = np.asarray(sample_weight, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"sample_weight: cannot be read as numbers ({exc})") from exc
    if w.ndim == 0:
        w = np.full(n_records, float(w))
    if w.ndim != 1:
        raise ValueError(f"sample_weight must be 1-D (one weight per record), got shape {w.shape}")
    if w.shape[0] != n_records:
        raise ValueError(f"sample_weight has {w.shape[0]} weights, but X has {n_records} records")
    check_weights(w, "sample_weight")
    return w


# Values whose squares overflow float64 (above ~1.3e154) leave the moments of a fit no room: the
# statistics would turn to inf and the parameters to NaN. Such a column must be rescaled.
MAX_MAGNITUDE = 1e150


def in_range(arr: np.ndarray) -> bool:
    """Whether every value is finite and at most ``MAX_MAGNITUDE`` in magnitude (two reductions,
    no temporary: as cheap as ``np.isfinite(arr).all()``; NaN fails both comparisons)."""
    return arr.size == 0 or bool(arr.min() >= -MAX_MAGNITUDE and arr.max() <= MAX_MAGNITUDE)


def first_too_large(arr: np.ndarray) -> tuple[int, int]:
    """Row and column of the first finite value above ``MAX_MAGNITUDE`` in magnitude, of a 2-D
    array that has one."""
    rows, columns = np.nonzero(np.isfinite(arr) & (np.abs(arr) > MAX_MAGNITUDE))
    return int(rows[0]), int(columns[0])


def too_large(value: float) -> str:
    return (
        f"value {value:g} is too large in magnitude (above {MAX_MAGNITUDE:g}, its square overflows "
        "float64); rescale that column"
    )


def check_finite(arr: np.ndarray, where: str) -> None:
    if not np.isfinite(arr).all():
        row, column = first_non_finite(arr)
        kind = "NaN" if np.isnan(arr[row, column]) else "infinity"
        raise ValueError(
            f"{where}: Input contains {kind} at row {row}, column {column} "
            f"({np.count_nonzero(~np.isfinite(arr))} non-finite value(s) in all); remove or impute them first"
        )


def first_non_finite(arr: np.ndarray) -> tuple[int, int]:
    """Row and column of the first NaN or infinity of a 2-D array (row-major order)."""
    rows, columns = np.nonzero(~np.isfinite(arr))
    return int(rows[0]), int(columns[0])


def default_feature_names(n_features: int) -> list[str]:
    """The names of unnamed features: ``x0``, ``x1``, ... (also the synthetic lakes' columns).

    >>> default_feature_names(3)
    ['x0', 'x1', 'x2']
    """
    return [f"x{j}" for j in range(n_features)]
