"""What a model file's parts must agree on, beyond each part being well formed.

:mod:`streamgmm.io.model.checks` checks each array and the births' and merges' state;
this module checks what ties them together, for :func:`streamgmm.io.model.file.read_model` and
the writer (a model refused on reading is never written):

- the array names: only those the format defines (:data:`ARRAY_NAMES`), each once;
- the parameters: means within the magnitude records may have (``MAX_MAGNITUDE``: a mean is an
  average of records), each precision the inverse of its covariance (to within
  :data:`AGREEMENT_TOLERANCE`), and a record at each mean scoring a finite log-likelihood and
  finite responsibilities;
- the document's numbers: ``estimator_params.n_components`` the arrays' K,
  ``estimator_params.random_state`` a seed, ``fitted.n_features_in`` their d, the step counter,
  counts and log-likelihoods of ``online`` and ``fitted`` of their types and in range (the
  running statistics' weight positive: they are kept per record).

Examples
--------
>>> import numpy as np
>>> from streamgmm.io.model.consistency import check_parameters_agree
>>> check_parameters_agree(np.array([1.0]), np.zeros((1, 1)), np.array([4.0]), np.array([0.5]), "spherical")
>>> check_parameters_agree(np.array([1.0]), np.zeros((1, 1)), np.array([4.0]), np.array([5.0]), "spherical")
Traceback (most recent call last):
...
streamgmm.io.model.checks.ModelContentError: precisions_cholesky and covariances disagree: component 0's \
precision is not the inverse of its covariance (off by 99, more than 0.5)
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from streamgmm.io.model.checks import MOVES_ARRAYS, ModelContentError, covariance_type_of, expected_shapes
from streamgmm.io.records.checks import MAX_MAGNITUDE
from streamgmm.kernels.scoring import score_chunk
from streamgmm.mixture.params import MixtureParams

# Every array a model file may hold: the mixture, its running statistics, the ``*_init``
# parameters, and the births' and merges' state.
ARRAY_NAMES = frozenset(expected_shapes((1, 1), "full")) | frozenset(MOVES_ARRAYS)

# How far L.T @ U (L the covariance's Cholesky factor, U the precision's) may be from the identity,
# entry by entry: rounding in float64 stays below 0.2 up to condition numbers of 1e16, while a
# precision scaled by any factor of 2 or more (or a transposed factor) is further off.
AGREEMENT_TOLERANCE = 0.5


def check_consistent(document: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Raise :class:`ModelContentError` naming the first way a model's document and arrays (each
    already checked by :func:`~streamgmm.io.model.checks.validate_model`) do not fit together."""
    check_array_names(arrays)
    check_parameters_agree(
        arrays["weights"],
        arrays["means"],
        arrays["covariances"],
        arrays["precisions_cholesky"],
        covariance_type_of(document),
    )
    check_document_fields(document, arrays["means"].shape)


def check_array_names(names: Iterable[str]) -> None:
    """Raise :class:`ModelContentError` for a name the format does not define, or one listed twice."""
    seen: set[str] = set()
    for name in names:
        if name not in ARRAY_NAMES:
            shown = name if len(name) <= 80 else name[:80] + "..."
            raise ModelContentError(f"array {shown!r} is not one a streamgmm model holds")
        if name in seen:
            raise ModelContentError(f"array {name!r} is listed twice")
        seen.add(name)


def check_parameters_agree(
    weights: np.ndarray,
    means: np.ndarray,
    covariances: np.ndarray,
    precisions_cholesky: np.ndarray,
    covariance_type: str,
) -> None:
    """Raise :class:`ModelContentError` unless the parameters (finite and of the right shapes,
    :func:`~streamgmm.io.model.checks.check_mixture_arrays`) describe one usable mixture: means
    no larger than records may be, precisions the inverses of the covariances, and a record at
    each mean scored finitely."""
    largest = float(np.max(np.abs(means))) if means.size else 0.0
    if largest > MAX_MAGNITUDE:
        raise ModelContentError(
            f"means hold {largest:g}, above the {MAX_MAGNITUDE:g} any record may hold (a mean is an average of records)"
        )
    _check_inverse(covariances, precisions_cholesky, covariance_type)
    params = MixtureParams(weights, means, covariances, precisions_cholesky, covariance_type)
    with np.errstate(all="ignore"):  # overflow is what is being looked for
        log_norm, resp = score_chunk(means, params)
    finite = np.isfinite(log_norm) & np.isfinite(resp).all(axis=1)
    if not finite.all():
        k = int(np.flatnonzero(~finite)[0])
        raise ModelContentError(
            f"a record at the mean of component {k} scores a non-finite log-likelihood ({log_norm[k]}) "
            "or responsibilities: the parameters overflow"
        )


def _check_inverse(covariances: np.ndarray, factors: np.ndarray, covariance_type: str) -> None:
    """Each precision the inverse of its covariance: L.T @ U near the identity, with L the
    covariance's lower Cholesky factor and U the precision's upper one (var * u**2 near 1 for
    ``diag`` and ``spherical``)."""
    with np.errstate(all="ignore"):  # an overflow is a disagreement, reported below
        if covariance_type in ("diag", "spherical"):
            products = covariances * factors**2
            off = np.abs(products - 1.0)
            off = off.reshape(off.shape[0], -1).max(axis=1) if covariance_type == "diag" else off
        else:
            stack_c = covariances[None] if covariance_type == "tied" else covariances
            stack_u = factors[None] if covariance_type == "tied" else factors
            off = np.empty(stack_c.shape[0])
            eye = np.eye(stack_c.shape[-1])
            for k, (c, u) in enumerate(zip(stack_c, stack_u, strict=True)):
                try:
                    lower = np.linalg.cholesky(c)
                except np.linalg.LinAlgError:
                    where = "the tied covariance" if covariance_type == "tied" else f"covariance {k}"
                    raise ModelContentError(f"{where} is not positive definite") from None
                off[k] = np.max(np.abs(lower.T @ u - eye))
    bad = ~(off <= AGREEMENT_TOLERANCE)  # NaN (an overflow) is bad too
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        which = "the tied precision is" if covariance_type == "tied" else f"component {k}'s precision is"
        raise ModelContentError(
            f"precisions_cholesky and covariances disagree: {which} not the inverse of its covariance "
            f"(off by {off[k]:.3g}, more than {AGREEMENT_TOLERANCE})"
        )


def check_document_fields(document: dict[str, Any], means_shape: tuple[int, ...]) -> None:
    """Raise :class:`ModelContentError` naming the first number of the document (the module
    docstring) that does not fit the arrays' (K, d) or is out of range."""
    k, d = means_shape
    params = document.get("estimator_params")
    if not isinstance(params, dict):
        raise ModelContentError("missing or malformed 'estimator_params' (not a JSON object)")
    n_components = params.get("n_components")
    if not _is_int(n_components) or n_components != k:
        raise ModelContentError(
            f"estimator_params.n_components is {n_components!r}, but the arrays hold {k} components"
        )
    seed = params.get("random_state")
    if seed is not None and not (_is_int(seed) and 0 <= seed < 2**64):
        raise ModelContentError(f"estimator_params.random_state must be null or an integer in [0, 2**64), got {seed!r}")
    fitted = document.get("fitted")
    online = document.get("online")
    for name, section in (("fitted", fitted), ("online", online)):
        if not isinstance(section, dict):
            raise ModelContentError(f"missing or malformed {name!r} (not a JSON object)")
    if fitted.get("n_features_in") != d or not _is_int(fitted.get("n_features_in")):
        raise ModelContentError(f"fitted.n_features_in is {fitted.get('n_features_in')!r}, but the means have {d}")
    if not isinstance(fitted.get("converged"), bool):
        raise ModelContentError(f"fitted.converged must be true or false, got {fitted.get('converged')!r}")
    for where, name, value in (
        ("fitted", "n_iter", fitted.get("n_iter")),
        ("fitted", "n_skipped", fitted.get("n_skipped", 0)),
        ("online", "step", online.get("step")),
    ):
        if not (_is_int(value) and value >= 0):
            raise ModelContentError(f"{where}.{name} must be an integer >= 0, got {value!r}")
    records_seen = online.get("records_seen")
    if not _is_number(records_seen) or not 0 <= records_seen < math.inf:
        raise ModelContentError(f"online.records_seen must be a finite number >= 0, got {records_seen!r}")
    # The running statistics are kept per record: of a positive weight, whatever the stream's.
    n_records = online.get("statistics_n_records")
    if not _is_number(n_records) or not 0 < n_records < math.inf:
        raise ModelContentError(f"online.statistics_n_records must be a finite number > 0, got {n_records!r}")
    if not (_is_number(online.get("statistics_log_likelihood")) and math.isfinite(online["statistics_log_likelihood"])):
        raise ModelContentError(
            f"online.statistics_log_likelihood must be a finite number, got {online.get('statistics_log_likelihood')!r}"
        )
    # A log-likelihood bound may be -inf (no EM iteration yet), never NaN or +inf.
    history = fitted.get("history", [])
    if not isinstance(history, list):
        raise ModelContentError(f"fitted.history must be a list of numbers, got {type(history).__name__}")
    for name, value in (("lower_bound", fitted.get("lower_bound")), *(("history", v) for v in history)):
        if not _is_number(value) or not -math.inf <= value < math.inf:
            raise ModelContentError(f"fitted.{name} must hold numbers below +inf, got {value!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
