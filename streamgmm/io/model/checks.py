"""What a usable model holds: one check of a model's contents, wherever a model enters or leaves.

:func:`validate_model` is called by :func:`streamgmm.io.model.file.read_model` (so ``load``, the
watcher's ``--model`` and its checkpoints, ``assign`` and ``info`` all get it) and by
:func:`streamgmm.io.model.file.write_model_to` (so a model that would be refused on reading is never
written). :func:`check_mixture_arrays` is the part about the mixture's parameters, for callers
that hold them in memory (the end of a fit):

- every array finite;
- shapes consistent with the means' (K, d) and the covariance type;
- weights in [0, 1] summing to 1;
- precisions positive definite: their Cholesky factors triangular with positive diagonals
  (positive scales for ``diag`` and ``spherical``); covariances' diagonals positive;
- ``feature_names_in`` absent or a list of d strings;
- the births' and merges' state (:class:`~streamgmm.em.moves.MoveState`), when the model has one
  (``online.moves`` in the document and the ``moves.*`` arrays): all of it, its novel share's
  statistics shaped by K, d and the covariance type with non-negative counts, its reservoir of at
  most the reservoir's capacity of d-feature records with finite log weights, its seed an integer
  in [0, 2**63), its other scalars finite (and, but for a log-likelihood, non-negative), the
  weight last tried at most the weight offered. A model without it (``moves="off"``, a model
  fitted by batch EM, or a file written before moves existed) has neither.

Examples
--------
>>> import numpy as np
>>> from streamgmm.io.model.checks import check_mixture_arrays
>>> check_mixture_arrays(np.array([0.5, 0.5]), np.zeros((2, 1)), np.ones(2), np.ones(2), "spherical")
>>> check_mixture_arrays(np.array([0.5, np.nan]), np.zeros((2, 1)), np.ones(2), np.ones(2), "spherical")
Traceback (most recent call last):
...
streamgmm.io.model.checks.ModelContentError: weights holds a non-finite value (nan at index (1,))
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from streamgmm.mixture import covariance as cov
from streamgmm.mixture.component_size import reservoir_capacity

# How far the weights' sum may be from 1: rounding of K additions and one division, with room.
WEIGHT_SUM_TOLERANCE = 1e-6

# The births' and merges' state: the reservoir (its rows, at most its capacity, vary), the novel
# records' share of the running statistics, and the scalars in the document's ``online.moves``.
RESERVOIR_ARRAYS = ("moves.records", "moves.log_weights", "moves.keys")
NOVEL_ARRAYS = ("moves.novel.shift", "moves.novel.counts", "moves.novel.sums", "moves.novel.second")
SAMPLE_ARRAYS = ("moves.sample.records", "moves.sample.log_weights", "moves.sample.keys")
MOVES_ARRAYS = RESERVOIR_ARRAYS + NOVEL_ARRAYS + SAMPLE_ARRAYS
# The most records the moves' sample may hold: far more than any sensible init_size, and a
# bound before the arrays are read.
MAX_SAMPLE_SIZE = 10_000_000
MOVES_SCALARS = (
    "seed",
    "log_scale",
    "clock",
    "offered_weight",
    "tried_at",
    "novel_n_records",
    "novel_log_likelihood",
    "next_refit",
    "sample_offered_weight",
    "level",
    "level_weight",
)
# Scalars of any sign: a log-likelihood, and the log weight of the reservoir's newest records.
SIGNED_MOVES_SCALARS = ("novel_log_likelihood", "level")


class ModelContentError(ValueError):
    """A model whose parameters are not those of a usable Gaussian mixture."""


def expected_shapes(means_shape: tuple[int, ...], covariance_type: str) -> dict[str, tuple[int, ...]]:
    """The shape of every array of fixed shape a model of these means holds (or may hold, for
    ``param.*`` and ``moves.novel.*``); the reservoir's rows vary (:func:`check_shapes`)."""
    if len(means_shape) != 2:
        raise ModelContentError(f"array means has shape {means_shape}, expected (n_components, n_features)")
    k, d = means_shape
    covariances = cov.covariance_shape(k, d, covariance_type)
    second = cov.second_moment_shape(k, d, covariance_type)
    return {
        "weights": (k,),
        "means": (k, d),
        "covariances": covariances,
        "precisions_cholesky": covariances,
        "statistics.second": second,
        "statistics.sums": (k, d),
        "statistics.counts": (k,),
        "statistics.shift": (d,),
        "param.weights_init": (k,),
        "param.means_init": (k, d),
        "param.precisions_init": covariances,
        "moves.novel.second": second,
        "moves.novel.sums": (k, d),
        "moves.novel.counts": (k,),
        "moves.novel.shift": (d,),
    }


def check_shapes(shapes: dict[str, tuple[int, ...]], covariance_type: str) -> None:
    """Raise :class:`ModelContentError` naming the first array whose shape (``shapes``, by name,
    ``means`` among them) does not fit the means' (K, d) and the covariance type: those of
    :func:`expected_shapes`, and the reservoir's (r, d) records, (r,) log weights and (r,) keys, r at
    most :func:`~streamgmm.mixture.component_size.reservoir_capacity`. Called on the ``.npy``
    headers too, before any data is read."""
    expected = expected_shapes(shapes["means"], covariance_type)
    for name, shape in shapes.items():
        if name in expected and shape != expected[name]:
            raise ModelContentError(f"array {name} has shape {shape}, expected {expected[name]}")
    d = shapes["means"][1]
    capacity = reservoir_capacity(d, covariance_type)
    rows: int | None = None
    for name, trailing in zip(RESERVOIR_ARRAYS, ((d,), (), ()), strict=True):
        shape = shapes.get(name)
        if shape is None:
            continue
        if len(shape) != 1 + len(trailing) or shape[1:] != trailing or rows not in (None, shape[0]):
            wanted = ", ".join(["r" if rows is None else str(rows), *map(str, trailing)])
            raise ModelContentError(f"array {name} has shape {shape}, expected ({wanted}{',' if not trailing else ''})")
        rows = shape[0]
        if rows > capacity:
            raise ModelContentError(
                f"array {name} holds {rows} reservoir records, more than the reservoir's capacity of {capacity}"
            )


def covariance_type_of(document: dict[str, Any]) -> str:
    params = document.get("estimator_params")
    covariance_type = params.get("covariance_type", "full") if isinstance(params, dict) else None
    if covariance_type not in cov.COVARIANCE_TYPES:
        raise ModelContentError(f"covariance_type {covariance_type!r} is not one of {', '.join(cov.COVARIANCE_TYPES)}")
    return covariance_type


def validate_model(document: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Raise :class:`ModelContentError` (a ``ValueError``) naming the first problem of a model
    document and its arrays, as :func:`streamgmm.io.model.file.read_model` returns them."""
    covariance_type = covariance_type_of(document)
    for name in ("weights", "means", "covariances", "precisions_cholesky"):
        if name not in arrays:
            raise ModelContentError(f"array {name} is missing")
    for name, value in arrays.items():
        if value.dtype.kind != "f":
            raise ModelContentError(f"array {name} holds {value.dtype}, not floats")
        if name != "moves.sample.records":  # the sample keeps missing features as NaN (check_moves)
            _check_array_finite(value, name)
    check_shapes({name: value.shape for name, value in arrays.items()}, covariance_type)
    check_mixture_arrays(
        arrays["weights"], arrays["means"], arrays["covariances"], arrays["precisions_cholesky"], covariance_type
    )
    fitted = document.get("fitted", {})
    if not isinstance(fitted, dict):
        raise ModelContentError("'fitted' is not a JSON object")
    check_feature_names(fitted.get("feature_names_in"), arrays["means"].shape[1])
    check_moves(document, arrays, covariance_type)


def check_moves(document: dict[str, Any], arrays: dict[str, np.ndarray], covariance_type: str) -> None:
    """Raise :class:`ModelContentError` naming the first problem of a model's births' and merges'
    state (the module docstring): the document's ``online.moves`` and the ``moves.*`` arrays,
    both absent or all there and usable."""
    online = document.get("online")
    if not isinstance(online, dict):
        return  # no online state at all: the model's reader refuses that, naming it
    moves = online.get("moves")
    if moves is None:
        present = [name for name in MOVES_ARRAYS if name in arrays]
        if present:
            raise ModelContentError(f"array {present[0]} is there without the document's online.moves")
        return
    if not isinstance(moves, dict):
        raise ModelContentError(f"online.moves is not a JSON object, got {type(moves).__name__}")
    _check_moves_arrays(arrays, covariance_type)
    _check_moves_scalars(moves)
    d = arrays["means"].shape[1]
    records, weights, keys = (arrays[name] for name in SAMPLE_ARRAYS)
    rows = records.shape[0] if records.ndim == 2 else -1
    if records.ndim != 2 or records.shape[1] != d or weights.shape != (rows,) or keys.shape != (rows,):
        raise ModelContentError(
            f"arrays {', '.join(SAMPLE_ARRAYS)} have shapes {records.shape}, {weights.shape}, {keys.shape}; "
            f"expected (r, {d}), (r,), (r,)"
        )
    size = moves["sample_size"]
    if rows > size:
        raise ModelContentError(f"array moves.sample.records holds {rows} records, more than sample_size {size}")
    if moves["tried_at"] > moves["offered_weight"]:
        raise ModelContentError(
            f"online.moves.tried_at ({moves['tried_at']!r}) exceeds online.moves.offered_weight "
            f"({moves['offered_weight']!r}), the weight ever offered"
        )
    counts = arrays["moves.novel.counts"]
    if np.any(counts < 0):
        index = int(np.flatnonzero(counts < 0)[0])
        raise ModelContentError(
            f"array moves.novel.counts must be non-negative, got {counts[index]!r} at index {index}"
        )


def _check_moves_arrays(arrays: dict[str, np.ndarray], covariance_type: str) -> None:
    """The ``moves.*`` arrays: all there, floats, finite (the sample's records may hold NaN), of their shapes."""
    for name in MOVES_ARRAYS:
        if name not in arrays:
            raise ModelContentError(f"array {name} is missing (the document has online.moves)")
    for name in MOVES_ARRAYS:
        if arrays[name].dtype.kind != "f":
            raise ModelContentError(f"array {name} holds {arrays[name].dtype}, not floats")
        if name == "moves.sample.records":
            # The sample keeps records with missing features (NaN) as the stream had them.
            if np.isinf(arrays[name]).any():
                raise ModelContentError(f"array {name} holds an infinite value")
            continue
        _check_array_finite(arrays[name], name)
    check_shapes(
        {"means": arrays["means"].shape, **{name: arrays[name].shape for name in MOVES_ARRAYS}}, covariance_type
    )


def _check_moves_scalars(moves: dict[str, Any]) -> None:
    """The document's ``online.moves`` numbers and flags: of their types and ranges."""
    seed = moves.get("seed")
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63:
        raise ModelContentError(f"online.moves.seed must be an integer in [0, 2**63), got {seed!r}")
    for name in MOVES_SCALARS[1:]:
        value = moves.get(name)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise ModelContentError(f"online.moves.{name} must be a finite number, got {value!r}")
        if name not in SIGNED_MOVES_SCALARS and value < 0:
            raise ModelContentError(f"online.moves.{name} must be >= 0, got {value!r}")
    # Written since changes of course exist; earlier files have none (no change under way).
    fresh_until = moves.get("fresh_until", 0.0)
    if not isinstance(fresh_until, (int, float)) or isinstance(fresh_until, bool) or not 0 <= fresh_until < math.inf:
        raise ModelContentError(f"online.moves.fresh_until must be a finite number >= 0, got {fresh_until!r}")
    for name in ("sampled", "sample_sampled", "restart", "changed"):
        if not isinstance(moves.get(name), bool):
            raise ModelContentError(f"online.moves.{name} must be true or false, got {moves.get(name)!r}")
    size = moves.get("sample_size")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_SAMPLE_SIZE:
        raise ModelContentError(f"online.moves.sample_size must be an integer in [0, {MAX_SAMPLE_SIZE}], got {size!r}")


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
        _check_array_finite(value, name)
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


def _check_array_finite(value: np.ndarray, name: str) -> None:
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
