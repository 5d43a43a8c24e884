"""What a usable model holds: one check of a model's contents, wherever a model enters or leaves.

:func:`validate_model` is called by :func:`streamgmm.io.model_file.read_model` (so ``load``, the
watcher's ``--model`` and its checkpoints, ``assign`` and ``info`` all get it) and by
:func:`streamgmm.io.model_file.write_model_to` (so a model that would be refused on reading is never
written). :func:`check_mixture_arrays` is the part about the mixture's parameters, for callers
that hold them in memory (the end of a fit):

- every array finite;
- shapes consistent with the means' (K, d) and the covariance type;
- weights in [0, 1] summing to 1;
- precisions positive definite: their Cholesky factors triangular with positive diagonals
  (positive scales for ``diag`` and ``spherical``); covariances' diagonals positive;
- ``feature_names_in`` absent or a list of d strings.

Examples
--------
>>> import numpy as np
>>> from streamgmm.io.model_check import check_mixture_arrays
>>> check_mixture_arrays(np.array([0.5, 0.5]), np.zeros((2, 1)), np.ones(2), np.ones(2), "spherical")
>>> check_mixture_arrays(np.array([0.5, np.nan]), np.zeros((2, 1)), np.ones(2), np.ones(2), "spherical")
Traceback (most recent call last):
...
streamgmm.io.model_check.ModelContentError: weights holds a non-finite value (nan at index (1,))
"""

from __future__ import annotations

from typing import Any

import numpy as np

from streamgmm.mixture import covariance as cov

# How far the weights' sum may be from 1: rounding of K additions and one division, with room.
WEIGHT_SUM_TOLERANCE = 1e-6


class ModelContentError(ValueError):
    """A model whose parameters are not those of a usable Gaussian mixture."""


def expected_shapes(means_shape: tuple[int, ...], covariance_type: str) -> dict[str, tuple[int, ...]]:
    """The shape of every array a model of these means holds (or may hold, for ``param.*``)."""
    if len(means_shape) != 2:
        raise ModelContentError(f"array means has shape {means_shape}, expected (n_components, n_features)")
    k, d = means_shape
    covariances = cov.covariance_shape(k, d, covariance_type)
    return {
        "weights": (k,),
        "means": (k, d),
        "covariances": covariances,
        "precisions_cholesky": covariances,
        "statistics.second": cov.second_moment_shape(k, d, covariance_type),
        "statistics.sums": (k, d),
        "statistics.counts": (k,),
        "statistics.shift": (d,),
        "param.weights_init": (k,),
        "param.means_init": (k, d),
        "param.precisions_init": covariances,
    }


def covariance_type_of(document: dict[str, Any]) -> str:
    params = document.get("estimator_params")
    covariance_type = params.get("covariance_type", "full") if isinstance(params, dict) else None
    if covariance_type not in cov.COVARIANCE_TYPES:
        raise ModelContentError(f"covariance_type {covariance_type!r} is not one of {', '.join(cov.COVARIANCE_TYPES)}")
    return covariance_type


def validate_model(document: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Raise :class:`ModelContentError` (a ``ValueError``) naming the first problem of a model
    document and its arrays, as :func:`streamgmm.io.model_file.read_model` returns them."""
    covariance_type = covariance_type_of(document)
    for name in ("weights", "means", "covariances", "precisions_cholesky"):
        if name not in arrays:
            raise ModelContentError(f"array {name} is missing")
    for name, value in arrays.items():
        if value.dtype.kind != "f":
            raise ModelContentError(f"array {name} holds {value.dtype}, not floats")
        check_finite(value, name)
    for name, shape in expected_shapes(arrays["means"].shape, covariance_type).items():
        if name in arrays and arrays[name].shape != shape:
            raise ModelContentError(f"array {name} has shape {arrays[name].shape}, expected {shape}")
    check_mixture_arrays(
        arrays["weights"], arrays["means"], arrays["covariances"], arrays["precisions_cholesky"], covariance_type
    )
    fitted = document.get("fitted", {})
    if not isinstance(fitted, dict):
        raise ModelContentError("'fitted' is not a JSON object")
    check_feature_names(fitted.get("feature_names_in"), arrays["means"].shape[1])


def check_mixture_arrays(
    weights: np.ndarray,
    means: np.ndarray,
    covariances: np.ndarray,
    precisions_cholesky: np.ndarray,
    covariance_type: str,
) -> None:
    """Raise ``ValueError`` naming the first way these parameters are not a usable mixture
    (see the module docstring); return None when they are."""
    arrays = {
        "weights": weights,
        "means": means,
        "covariances": covariances,
        "precisions_cholesky": precisions_cholesky,
    }
    arrays = {name: np.asarray(value) for name, value in arrays.items()}
    for name, value in arrays.items():
        check_finite(value, name)
    shapes = expected_shapes(np.shape(means), covariance_type)
    for name, value in arrays.items():
        if np.shape(value) != shapes[name]:
            raise ModelContentError(f"array {name} has shape {np.shape(value)}, expected {shapes[name]}")
    weights = arrays["weights"]
    if np.any(weights < 0) or np.any(weights > 1) or abs(float(np.sum(weights)) - 1.0) > WEIGHT_SUM_TOLERANCE:
        raise ModelContentError(
            f"weights must lie in [0, 1] and sum to 1; they sum to {float(np.sum(weights))!r} "
            f"(smallest {float(np.min(weights))!r}, largest {float(np.max(weights))!r})"
        )
    _check_positive_definite(arrays["covariances"], arrays["precisions_cholesky"], covariance_type)


def _check_positive_definite(covariances: np.ndarray, factors: np.ndarray, covariance_type: str) -> None:
    if covariance_type in ("diag", "spherical"):
        if np.any(factors <= 0) or np.any(covariances <= 0):
            raise ModelContentError(f"{covariance_type} variances and precisions must be positive")
        return
    factors = factors[None] if covariance_type == "tied" else factors
    covariances = covariances[None] if covariance_type == "tied" else covariances
    diagonals = np.diagonal(factors, axis1=1, axis2=2)
    if np.any(diagonals <= 0) or np.any(np.tril(factors, -1) != 0):
        raise ModelContentError(
            "precisions_cholesky must be upper triangular with a positive diagonal "
            "(the precisions are not positive definite)"
        )
    if np.any(np.diagonal(covariances, axis1=1, axis2=2) <= 0):
        raise ModelContentError("covariances must have a positive diagonal (they are not positive definite)")


def check_finite(value: np.ndarray, name: str) -> None:
    if value.dtype.kind in "fc" and not np.isfinite(value).all():
        index = tuple(int(i) for i in np.argwhere(~np.isfinite(value))[0])
        raise ModelContentError(f"{name} holds a non-finite value ({value[index]} at index {index})")


def check_feature_names(names: Any, n_features: int) -> None:
    """``feature_names_in`` of a model file: absent (None) or a list of ``n_features`` strings."""
    if names is None:
        return
    if not isinstance(names, list) or len(names) != n_features or not all(isinstance(n, str) for n in names):
        shown = repr(names) if len(repr(names)) <= 200 else repr(names)[:200] + "..."
        raise ModelContentError(f"feature_names_in must be a list of {n_features} column names, got {shown}")
