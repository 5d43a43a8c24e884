"""The fitting procedure: the start on a sample, the plan, the passes and the fitted state.

A fit starts from the best of ``n_init`` candidates refined by EM on the initialisation sample
(:func:`~streamgmm.em.start.converged_start`), then follows a plan (:func:`fit_plan`):

- ``"start"``: the sample was all the data, and its EM is the fit (as scikit-learn's);
- ``"online"``: stepwise EM passes (a stream read once ends with a refit on the moves' sample);
- ``"batch"``: exact EM, one pass per iteration, until ``tol``;
- ``"online+batch"``: an online pass, then exact EM from where it ended.

:func:`fit` and :func:`partial_fit` run it for one model, in this process or as waves on Dask
(the :class:`Runners` say which); :func:`~streamgmm.em.shared_reads.fit_on_shared_reads` runs
the same plan for many models on one read of the data. Each returns a
:class:`~streamgmm.em.settings.Fitted`.

Examples
--------
>>> import numpy as np
>>> from streamgmm.em.settings import FitSettings
>>> from streamgmm.io.sources.chunk_source import ArraySource
>>> X = np.array([[1, 2], [1, 4], [1, 0], [10, 2], [10, 4], [10, 0]], dtype=float)
>>> fitted = fit(ArraySource(X), FitSettings(n_components=2, random_state=0))
>>> fitted.params.means.round(2), fitted.converged
(array([[10.,  2.],
       [ 1.,  2.]]), True)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from streamgmm.em.batch import BatchEMResult, run_batch_em
from streamgmm.em.fit_history import FitHistory
from streamgmm.em.fitted import (
    Fitted,
    check_enough_records,
    described,
    exact_result,
    fitted_state,
    online_result,
    start_result,
)
from streamgmm.em.moves import MoveState
from streamgmm.em.online import OnlineState, refit_at_end, run_online_em
from streamgmm.em.random_state import make_rng
from streamgmm.em.settings import FitSettings, WeightUnit
from streamgmm.em.start import Start, converged_start, draw_sample
from streamgmm.io.sources.chunk_source import (
    ArraySource,
    Batch,
    ChunkSource,
    ScaledWeights,
    scaled_weights,
    weight_scale,
)
from streamgmm.mixture.initialization import user_start
from streamgmm.mixture.params import MixtureParams


@dataclass(frozen=True)
class Runners:
    """The EM loops a fit runs: in this process, or as waves of partitions on Dask workers.

    ``on_step`` names the online loop's per-step callback; ``weights_as_given`` is true where
    the loops read record weights as given (Dask's workers), so no scale is applied.
    """

    run_batch: Callable[..., BatchEMResult] = run_batch_em
    run_online: Callable[..., Any] = run_online_em
    options: dict[str, Any] = field(default_factory=dict)
    on_step: str = "on_batch"
    weights_as_given: bool = False


LOCAL = Runners()


# ---------------------------------------------------------------------- checks


def check_same_model(fitted: Fitted, settings: FitSettings) -> None:
    """Continuing a fit (partial_fit, warm_start) needs the shape the running state has:
    otherwise the new parameters would silently keep the old K and covariance type."""
    params = fitted.params
    if (params.n_components, params.covariance_type) != (settings.n_components, settings.covariance_type):
        raise ValueError(
            f"cannot continue a model fitted with n_components={params.n_components}, "
            f"covariance_type={params.covariance_type!r} as n_components={settings.n_components}, "
            f"covariance_type={settings.covariance_type!r}; call fit (without warm_start) to start again"
        )


# ---------------------------------------------------------------------- the plan


def shuffle_generator(settings: FitSettings, source: ChunkSource, rng: np.random.Generator) -> Any:
    """The generator that shuffles online EM's visit of ``source``, or None to keep its order."""
    modes = source.shuffle_modes
    if settings.shuffle is False:
        return None
    if settings.shuffle is True:
        return rng if modes else None
    if settings.shuffle not in modes:
        raise ValueError(
            f"shuffle={settings.shuffle!r} is not possible for this input ({type(source).__name__} can shuffle "
            f"{' or '.join(map(repr, modes)) if modes else 'nothing'}); use shuffle=True or False"
        )
    return rng


def fit_plan(settings: FitSettings, source: ChunkSource, start: Start | None) -> str:
    """What a fit runs: ``"start"``, ``"online"``, ``"batch"`` or ``"online+batch"`` (see the
    module's docstring). ``start`` is None for a warm start."""
    if settings.algorithm != "auto":
        return settings.algorithm
    if start is not None and start.whole:
        return "start"
    if not source.reiterable:
        return "online"
    return "batch" if start is None else "online+batch"


def new_state(settings: FitSettings, start: Start, rng: np.random.Generator) -> OnlineState:
    """The state a new online recursion starts from ``start``, with births and merges unless
    ``moves="off"`` (their seed drawn from ``rng``)."""
    state = OnlineState.start(start.params, start.shift)
    if settings.moves == "off":
        return state
    em = start.em
    started_on = em.statistics.n_records if em is not None and em.statistics is not None else settings.init_size
    return replace(state, moves=_move_state(settings, int(rng.integers(2**63)), state.statistics, started_on))


def _move_state(settings: FitSettings, seed: int, statistics: Any, started_on: float) -> MoveState:
    # The sample for refits holds as many records as the start's may; the first refit is
    # due once the stream has twice the records the start was fitted on.
    return MoveState.start(seed, statistics, settings.init_size, 2.0 * started_on / settings.batch_size)


def with_moves(settings: FitSettings, state: OnlineState, rng: np.random.Generator) -> OnlineState:
    """``state`` made to carry (or not) the moves ``settings.moves`` asks for: a model fitted by
    exact EM, or with other settings, continues online with them."""
    if settings.moves == "off":
        return replace(state, moves=None) if state.moves is not None else state
    if state.moves is None:
        started_on = max(float(state.records_seen), 1.0)
        return replace(state, moves=_move_state(settings, int(rng.integers(2**63)), state.statistics, started_on))
    return state


# ---------------------------------------------------------------------- the start


def start_on_sample(
    settings: FitSettings,
    sample: Batch,
    shuffle_rng: np.random.Generator,
    whole: bool,
    rng: np.random.Generator,
    shift: np.ndarray | None = None,
    *,
    names: list[str] | None = None,
    progress: Any = None,
) -> Start:
    """The start from a drawn sample (with the weights of a weighted source's); ``names``
    name a feature the sample never observes; ``progress`` is a source's ``start_progress``."""
    check_enough_records(sample.n_records, settings.n_components)
    given = _given(settings, sample.features.shape[1])
    return converged_start(
        sample,
        shuffle_rng,
        whole,
        n_components=settings.n_components,
        covariance_type=settings.covariance_type,
        reg_covar=settings.reg_covar,
        n_init=settings.n_init,
        rng=rng,
        init_params=settings.init_params,
        tol=settings.tol,
        # Batch EM refines a user's start on all the data itself, as scikit-learn does.
        max_iter=0 if settings.algorithm == "batch" and given else settings.max_iter,
        batch_size=settings.batch_size,
        given=given,
        shift=shift,
        feature_names=names,
        progress=progress,
    )


def _given(settings: FitSettings, n_features: int) -> dict[str, np.ndarray]:
    s = settings
    return user_start(s.weights_init, s.means_init, s.precisions_init, s.n_components, n_features, s.covariance_type)


def normalised_sample(source: ChunkSource, sample: Batch, unit: WeightUnit, runners: Runners) -> Batch:
    """The initialisation sample with its weights in the fit's unit, which it fixes: the
    sample's mean positive weight (all zero: ``ValueError``)."""
    if not source.weighted or runners.weights_as_given or sample.n_records == 0:
        unit.fix(1.0)
        return sample
    scale = weight_scale(sample.weights)
    unit.fix(scale)
    return scaled_weights(sample, scale)


def scaled_source(source: ChunkSource, unit: WeightUnit, runners: Runners) -> ChunkSource:
    """``source`` with its weights in the fit's unit (itself when there is nothing to scale)."""
    weighted = source.weighted
    if weighted and runners.weights_as_given and unit.scale not in (None, 1.0):
        # The workers read the weights as given: mixed with statistics in another unit, they
        # would weigh the new records wrongly.
        raise ValueError(
            f"this model measures record weights in units of {unit.scale:g} (the mean weight of the sample it "
            "started on), and Dask fits take the weights as given: continue it in this process, or start "
            "a new model on Dask"
        )
    if not weighted or runners.weights_as_given or unit.scale == 1.0:
        return source
    return ScaledWeights(source, unit.scale, unit.fix)


def start_fit(
    source: ChunkSource, settings: FitSettings, rng: np.random.Generator, unit: WeightUnit, runners: Runners = LOCAL
) -> Start:
    """Where a new fit starts: the best candidate refined by EM on the initialisation sample
    (the whole data, when it fits in ``init_size``), or the user's complete start."""
    n_features = source.n_features
    given = _given(settings, n_features) if n_features is not None else {}
    shift = None
    if {"weights", "means", "precisions"} <= given.keys():
        # A complete user start fixes the statistics' origin too, whatever data it meets:
        # a fit and a stream of partial fits from it then sum the same numbers.
        shift = given["weights"] @ given["means"]
        if settings.algorithm == "batch" or not source.reiterable:
            # No sample needed: batch EM refines the start on all the data, and a one-shot
            # stream would otherwise be read for a sample only to be replayed.
            params = MixtureParams.from_precisions(
                given["weights"], given["means"], given["precisions"], settings.covariance_type
            )
            # No sample to fix the weights' unit: the first weighted batch fixes it.
            unit.scale = None if source.weighted and not runners.weights_as_given else 1.0
            return Start(params, shift, rng)
    sample, shuffle_rng, whole = draw_sample(source, settings.init_size, rng)
    sample = normalised_sample(source, sample, unit, runners)
    return start_on_sample(
        settings,
        sample,
        shuffle_rng,
        whole,
        rng,
        shift,
        names=source.feature_names,
        progress=source.start_progress,
    )


# ---------------------------------------------------------------------- the passes


def record_step(trace: FitHistory, unit: WeightUnit, update: Any) -> None:
    """Record one online step (a mini-batch, or a wave) in ``trace``, its records in the user's unit."""
    n = unit.in_user_unit(update.n_records)
    trace.record(update.mean_log_likelihood, n, update.step_size, update.reseeded, update.moves)


def run_online(
    source: ChunkSource,
    state: OnlineState,
    settings: FitSettings,
    runners: Runners,
    trace: FitHistory,
    unit: WeightUnit,
    *,
    max_passes: int = 1,
    tol: float = 0.0,
    rng: np.random.Generator | None = None,
) -> Any:
    """Online EM from ``state`` with the settings' schedule and batching (one process or Dask
    waves, as ``runners`` say), recording every step (a mini-batch, or a wave) in ``trace``."""

    def record(state: OnlineState, update: Any) -> None:
        record_step(trace, unit, update)

    return runners.run_online(
        source,
        state,
        schedule=settings.schedule,
        burn_in=settings.burn_in,
        reg_covar=settings.reg_covar,
        batch_size=settings.batch_size,
        max_passes=max_passes,
        tol=tol,
        rng=rng,
        dtype=settings.dtype,
        **runners.options,
        **{runners.on_step: record},
    )


def _exact(
    source: ChunkSource,
    start: Start | OnlineState,
    settings: FitSettings,
    runners: Runners,
    unit: WeightUnit,
    weighted: bool,
    warm: Fitted | None = None,
    online: Any = None,
    trace: FitHistory | None = None,
) -> Fitted:
    """Exact EM from ``start``'s parameters (a warm start's from ``warm``, after ``online``'s passes)."""
    params = start.params
    shift = start.shift if isinstance(start, Start) else start.statistics.shift
    result = runners.run_batch(
        source,
        params,
        shift=shift,
        reg_covar=settings.reg_covar,
        tol=settings.tol,
        max_iter=settings.max_iter,
        batch_size=settings.batch_size,
        dtype=settings.dtype,
        lower_bound=warm.lower_bound if warm is not None else -np.inf,
    )
    earlier = online.pass_log_likelihoods if online is not None else None
    passes = online.n_passes if online is not None else 0
    return exact_result(
        result, shift, settings, unit, weighted=weighted, warm=warm, earlier=earlier, earlier_passes=passes, trace=trace
    )


def _online(
    source: ChunkSource,
    start: Start,
    settings: FitSettings,
    runners: Runners,
    unit: WeightUnit,
    weighted: bool,
    warm: Fitted | None,
    final_refit: bool,
) -> tuple[Any, Fitted]:
    """``max_passes`` online passes from ``start`` (or from ``warm``'s state); with
    ``final_refit``, a last refit on the moves' sample."""
    trace = warm.fit_history.copy() if warm is not None else FitHistory()
    if warm is not None:
        state = with_moves(settings, warm.state, make_rng(settings.random_state))
    else:
        state = new_state(settings, start, make_rng(settings.random_state))
    rng = shuffle_generator(settings, source, start.shuffle_rng)
    online = run_online(
        source, state, settings, runners, trace, unit, max_passes=settings.max_passes, tol=settings.tol, rng=rng
    )
    if final_refit:
        online.state, moves = refit_at_end(online.state, settings.reg_covar)
        trace.add_moves(moves)
    fitted = online_result(online.state, online.converged, online.pass_log_likelihoods, trace, settings, unit, weighted)
    return online, fitted


def fit(source: ChunkSource, settings: FitSettings, *, runners: Runners = LOCAL, warm: Fitted | None = None) -> Fitted:
    """What ``StreamingGaussianMixture.fit`` computes on ``source``: the start and the plan
    (module docstring); ``warm``, the model a warm start continues."""
    if warm is not None:
        check_same_model(warm, settings)
    unit = WeightUnit(warm.weight_scale if warm is not None else 1.0)
    weighted = source.weighted
    if isinstance(source, ArraySource):
        check_enough_records(len(source), settings.n_components)
    rng = make_rng(settings.random_state)
    shuffle_generator(settings, source, rng)  # a shuffle the source cannot do is refused before any work
    start = start_fit(source, settings, rng, unit, runners) if warm is None else None
    plan = fit_plan(settings, source, start)
    if start is None:
        start = Start(warm.state.params, warm.state.statistics.shift, rng)
    scaled = scaled_source(source, unit, runners)
    if plan == "start":
        fitted = start_result(start, settings, unit)
    elif plan == "batch":
        fitted = _exact(scaled, start, settings, runners, unit, weighted, warm)
    else:
        # The default plan on a stream read once ends with a refit on its sample;
        # algorithm="online" stays the recursion a stream of partial fits makes.
        final_refit = plan == "online" and settings.algorithm == "auto"
        online, fitted = _online(scaled, start, settings, runners, unit, weighted, warm, final_refit)
        if plan == "online+batch":
            fitted = _exact(scaled, online.state, settings, runners, unit, weighted, None, online, fitted.fit_history)
    return described(fitted, source)


def partial_fit(
    source: ChunkSource, settings: FitSettings, *, runners: Runners = LOCAL, fitted: Fitted | None = None
) -> Fitted:
    """What ``StreamingGaussianMixture.partial_fit`` computes: one online pass over ``source``
    continuing ``fitted`` (the first call starts from its own chunk)."""
    if fitted is not None:
        check_same_model(fitted, settings)
    unit = WeightUnit(fitted.weight_scale if fitted is not None else 1.0)
    if fitted is None:
        if isinstance(source, ArraySource):
            check_enough_records(len(source), settings.n_components)
        rng = make_rng(settings.random_state)
        state = new_state(settings, start_fit(source, settings, rng, unit, runners), rng)
        history: list[float] = []
        trace = FitHistory()
    else:
        state = with_moves(settings, fitted.state, make_rng(settings.random_state))
        history = list(fitted.lower_bounds)
        trace = fitted.fit_history.copy()
    online = run_online(scaled_source(source, unit, runners), state, settings, runners, trace, unit)
    lower_bound = online.pass_log_likelihoods[-1]
    history.append(lower_bound)
    n_iter = fitted.n_iter + 1 if fitted is not None else 1
    result = fitted_state(online.state, False, n_iter, lower_bound, history, trace, unit)
    names = source.feature_names if fitted is None else fitted.feature_names
    return replace(result, feature_names=names, n_skipped=int(source.skipped_records))
