"""What a fit leaves: :class:`Fitted`, the one state a fitted estimator publishes its
attributes from, saves and resumes, and its construction after each kind of pass (the start's
EM on the whole data, exact EM, online passes)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from streamgmm.em.batch import BatchEMResult
from streamgmm.em.convergence import warn_unconverged
from streamgmm.em.fit_history import FitHistory
from streamgmm.em.online import OnlineState, record_count
from streamgmm.em.settings import FitSettings, WeightUnit
from streamgmm.em.start import Start
from streamgmm.io.model.checks import check_mixture_arrays
from streamgmm.io.sources.chunk_source import ChunkSource
from streamgmm.mixture.params import MixtureParams
from streamgmm.mixture.statistics import SufficientStatistics


@dataclass
class Fitted:
    """Everything a fit leaves: the online state (parameters, running statistics, counters,
    the moves' state) and what the fit reports.

    Attributes
    ----------
    state : OnlineState
        What ``partial_fit`` resumes from; ``state.params`` is the fitted mixture.
    converged, n_iter, lower_bound : bool, int, float
        As scikit-learn's ``converged_``, ``n_iter_`` and ``lower_bound_``.
    lower_bounds : list of float
        The mean log-likelihood per record after each iteration or pass.
    fit_history : FitHistory
        The bounded trace of the online steps and the moves taken.
    records_seen : int or float
        The records (their total weight) the running statistics have seen, in the user's unit.
    weight_scale : float
        The unit of the record weights in the running statistics.
    feature_names : list of str or None
        The column names the model reads its features by (None: fitted on unnamed data).
    n_skipped : int
        Records the last pass left out (``nan_policy='skip'``).
    """

    state: OnlineState
    converged: bool
    n_iter: int
    lower_bound: float
    lower_bounds: list[float]
    fit_history: FitHistory
    records_seen: int | float
    weight_scale: float = 1.0
    feature_names: list[str] | None = None
    n_skipped: int = 0

    @property
    def params(self) -> MixtureParams:
        """The fitted mixture."""
        return self.state.params


def check_enough_records(n_records: int, n_components: int) -> None:
    """scikit-learn's error for fewer records than components."""
    if n_records < n_components:
        raise ValueError(
            f"Expected n_samples >= n_components but got n_components = {n_components}, "
            f"n_samples = {n_records}: fewer records than components"
        )


def check_enough_weight(n_records: float, n_components: int, weighted: bool) -> None:
    """:func:`check_enough_records` on a pass's count; with record weights the count is their
    total weight, which says nothing about the number of records (weights may well sum to 1)."""
    if not weighted:
        check_enough_records(int(n_records), n_components)


def fitted_state(
    state: OnlineState,
    converged: bool,
    n_iter: int,
    lower_bound: float,
    history: list[float],
    trace: FitHistory,
    unit: WeightUnit,
) -> Fitted:
    """The fitted state of a fit that ended in ``state``; never one that could not be used or
    saved (non-finite, or not a density)."""
    p = state.params
    check_mixture_arrays(p.weights, p.means, p.covariances, p.precisions_cholesky, p.covariance_type)
    records_seen = unit.in_user_unit(state.records_seen)
    return Fitted(
        state, bool(converged), int(n_iter), float(lower_bound), list(history), trace, records_seen, unit.value
    )


def start_result(start: Start, settings: FitSettings, unit: WeightUnit) -> Fitted:
    """The sample was the whole data: its EM is exact EM on all of it."""
    em = start.em
    if em is None or em.statistics is None:  # max_iter=0: the model is its start
        statistics = SufficientStatistics.from_params(start.params, start.shift)
        return fitted_state(OnlineState(start.params, statistics), False, 0, -np.inf, [], FitHistory(), unit)
    warn_unconverged(em.converged, settings.max_iter, stacklevel=4)
    n = em.statistics.n_records
    state = OnlineState(em.params, em.statistics.per_record(), math.ceil(n / settings.batch_size), record_count(n))
    return fitted_state(state, em.converged, em.n_iter, em.lower_bound, em.history, FitHistory(), unit)


def exact_result(
    result: BatchEMResult,
    shift: np.ndarray,
    settings: FitSettings,
    unit: WeightUnit,
    *,
    weighted: bool,
    warm: Fitted | None = None,
    earlier: list[float] | None = None,
    earlier_passes: int = 0,
    trace: FitHistory | None = None,
) -> Fitted:
    """The fitted state after exact EM; ``earlier`` are the pass means of online passes before
    it (whose ``trace`` the fit keeps), ``warm`` the model a warm start continued."""
    trace = trace if earlier and trace is not None else FitHistory()
    history = list(earlier or []) + result.history
    if result.statistics is None:  # max_iter=0: the model is its start
        statistics = SufficientStatistics.from_params(result.params, shift)
        state = OnlineState(result.params, statistics, warm.state.step if warm is not None else 0)
        lower_bound = warm.lower_bound if warm is not None else -np.inf
        return fitted_state(state, False, earlier_passes, lower_bound, history, trace, unit)
    # A stream given every *_init is counted only as it is read (nothing was sampled).
    check_enough_weight(result.statistics.n_records, settings.n_components, weighted)
    warn_unconverged(result.converged, settings.max_iter, stacklevel=4)
    n = result.statistics.n_records
    state = OnlineState(
        result.params, result.statistics.per_record(), math.ceil(n / settings.batch_size), record_count(n)
    )
    # Batch EM takes no online steps: its trace is the per-iteration history.
    return fitted_state(
        state, result.converged, earlier_passes + result.n_iter, result.lower_bound, history, trace, unit
    )


def online_result(
    state: OnlineState,
    converged: bool,
    pass_means: list[float],
    trace: FitHistory,
    settings: FitSettings,
    unit: WeightUnit,
    weighted: bool,
) -> Fitted:
    """The fitted state after online passes with these pass means."""
    # As for batch EM; every pass reads the whole source, so one pass is the total over n.
    check_enough_weight(state.records_seen / len(pass_means), settings.n_components, weighted)
    return fitted_state(state, converged, len(pass_means), pass_means[-1], pass_means, trace, unit)


def described(fitted: Fitted, source: ChunkSource) -> Fitted:
    """``fitted`` with what it was fitted on: the column names, and the records left out."""
    return replace(fitted, feature_names=source.feature_names, n_skipped=int(source.skipped_records))
