"""Re-allocation: EM on a sample of the stream seen so far, when the components sit in the wrong
places though no record is far from all of them.

Births (:mod:`streamgmm.em.moves`) give far-away regions components of their own. A stream
sorted by a key whose later regions overlap the early components, or drifting month by month,
leaves no record novel: the components stretch and shift, and the running statistics keep the
allocation they were summed under. EM on a uniform sample of every record seen so far (kept by
the moves as the stream goes, of ``init_size`` records) re-allocates them: from the current
parameters, EM runs on the sample; when it gains more than twice the optimism of a fit to its
own sample (p / n per record, p the parameters, n the sample's effective size), the running
statistics become the sample's under the new parameters, per record. A few iterations decide
whether the refit is worth running to convergence; at the first refit after a birth (the
stream has changed), a fresh candidate on the sample (k-means, then EM) competes too. The refit is
tried each time the stream has doubled since the last try, and once more at the end of a
one-pass fit, but only when a mini-batch since the last try was explained clearly worse than
the stream before it (:func:`watched`) or a birth was taken: a shuffled stream takes none, and a
sorted one a few EM runs on the sample.

Examples
--------
>>> import numpy as np
>>> from streamgmm import StreamingGaussianMixture
>>> rng = np.random.default_rng(0)
>>> X = np.concatenate([rng.normal(0, 1, (8000, 1)), rng.normal(3, 1, (8000, 1))])
>>> X = X[np.argsort(X[:, 0])]  # sorted by the one feature: no record is ever novel
>>> gmm = StreamingGaussianMixture(2, random_state=0, batch_size=500, init_size=2000)
>>> gmm = gmm.fit(iter(np.array_split(X, 32)))
>>> np.sort(gmm.means_[:, 0]).round() + 0.0
array([0., 3.])
>>> "refit" in [move["kind"] for move in gmm.fit_history_.moves]
True
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from streamgmm.em.batch import BatchEMResult, run_batch_em
from streamgmm.em.candidates import initialize
from streamgmm.em.moves import Move, MoveResult, MoveState
from streamgmm.em.novelty import Reservoir
from streamgmm.io.sources.chunk_source import ArraySource
from streamgmm.kernels.quadratic import one_blas_thread
from streamgmm.mixture.params import MixtureParams
from streamgmm.mixture.statistics import SufficientStatistics

# A refit is tried each time the stream has grown by this factor since the last try.
REFIT_GROWTH = 2.0
REFIT_ITERATIONS = 200
# Iterations that decide whether a refit is worth running to convergence.
PROBE_ITERATIONS = 4
# Fresh candidates on the sample at the first refit after a birth.
RESTART_CANDIDATES = 1
# A mini-batch this many standard errors (and at least this many nats per record) below the
# stream's level is a sign that the stream has changed: refits are only tried after one.
DRIFT_Z = 4.0
DRIFT_MIN = 0.01
REFIT_TOL = 1e-4
# After a change of regime the first refit is due this many mini-batches later.
CHANGE_REFIT = 2.0


def watched(state: MoveState, log_norm: np.ndarray, weights: np.ndarray | None, eta: float) -> MoveState:
    """The moves' state after a mini-batch whose records scored ``log_norm`` before it was
    learned: ``changed`` once the batch's mean log-likelihood falls more than ``DRIFT_Z``
    standard errors (and ``DRIFT_MIN`` nats) below the stream's ``level``, the mean of earlier
    batches blended with the same steps. Shuffled streams, explained better and better as the
    model learns, stay above it."""
    present = np.isfinite(log_norm) if weights is None else np.isfinite(log_norm) & (weights > 0)
    if not present.any():
        return state
    values = log_norm[present]
    w = None if weights is None else weights[present]
    mean = float(np.average(values, weights=w))
    changed = state.changed
    if state.level_weight > 0 and not changed:
        spread = float(np.sqrt(np.average((values - mean) ** 2, weights=w)))
        changed = state.level - mean > max(DRIFT_Z * spread / np.sqrt(values.shape[0]), DRIFT_MIN)
    weight = (1.0 - eta) * state.level_weight + eta
    level = ((1.0 - eta) * state.level_weight * state.level + eta * mean) / weight
    return replace(state, level=level, level_weight=weight, changed=bool(changed))


def changed_course(state: MoveState, horizon: float) -> MoveState:
    """The moves' state after a mini-batch the model no longer describes, in a stream that
    forgets (a step floor, whose memory is ``horizon`` mini-batches): the step schedule starts
    again, so the new regime is learned as a fresh stream would be and the old one forgotten at
    the schedule's pace rather than the floor's, and until the clock reaches ``horizon`` every
    due refit is tried with fresh candidates, the first soon."""
    return replace(
        state, clock=0.0, next_refit=CHANGE_REFIT, changed=True, restart=True, level_weight=0.0, fresh_until=horizon
    )


def refit_due(state: MoveState) -> bool:
    """Whether the sample is due for a refit on the moves' clock."""
    return state.sample is not None and state.sample_size > 0 and state.clock >= state.next_refit


def refitted(
    params: MixtureParams,
    statistics: SufficientStatistics,
    state: MoveState,
    reg_covar: float,
    step: int,
) -> MoveResult:
    """Try a refit on the moves' sample (module docstring); the next is due when the clock has
    grown by ``REFIT_GROWTH``. Without a gain, parameters and statistics come back as they were."""
    # Until the old regime has faded after a change of course, every due refit is tried, with
    # fresh candidates: EM from the current places keeps components on the fading regime.
    fading = state.clock < state.fresh_until
    changed = state.changed or fading
    state = replace(state, next_refit=max(state.clock, 1.0) * REFIT_GROWTH, changed=False)
    sample = None if state.sample is None else state.sample.merged()
    state = replace(state, sample=sample)
    unchanged = MoveResult(statistics, params, state)
    # A stream that has shown no change since the last try (a shuffled one) is not refitted.
    if not changed or sample is None or len(sample) < 2 * params.n_components:
        return unchanged
    n_eff = sample.effective_size()
    # EM fits its sample better than the stream by about p / (2 n) per record (AIC's
    # correction): ask for twice that.
    needed = params.n_parameters() / n_eff
    restart, state = state.restart or fading, replace(state, restart=False)
    unchanged = MoveResult(statistics, params, state)
    fresh_rng = state.rng(step, 4) if restart else None
    with one_blas_thread():
        outcome = _sample_em(params, statistics.shift, sample, reg_covar, needed, fresh_rng)
    if outcome is None:
        return unchanged
    result, current = outcome
    if not result.lower_bound - current > needed:
        return unchanged
    gain = result.lower_bound - current
    # The new allocation accounts for the novel records too: they start afresh.
    new_state = state.cleared()
    new_statistics = result.statistics.per_record()
    move = Move(step, [], [], float(gain), float(n_eff), kind="refit")
    return MoveResult(new_statistics, result.params, new_state, [move])


def _sample_em(
    params: MixtureParams,
    shift: np.ndarray,
    sample: Reservoir,
    reg_covar: float,
    needed: float,
    fresh_rng: np.random.Generator | None,
) -> tuple[BatchEMResult, float] | None:
    """EM on the sample from ``params``, continued to convergence when its first iterations
    gain more than ``needed`` per record; with ``fresh_rng``, a fresh candidate competes, and
    the better of the two after those iterations is the one continued. The result and the
    sample's mean log-likelihood under ``params``, or None when nothing is worth continuing."""
    weights = sample.estimation_weights()
    source = ArraySource(sample.records, weights=weights)

    def em(start: MixtureParams, max_iter: int, lower_bound: float = -np.inf) -> BatchEMResult:
        return run_batch_em(
            source,
            start,
            shift=shift,
            reg_covar=reg_covar,
            tol=REFIT_TOL,
            max_iter=max_iter,
            batch_size=len(sample),
            lower_bound=lower_bound,
        )

    # A few iterations tell whether the allocation is wrong; most tries stop there.
    first = em(params, PROBE_ITERATIONS)
    if first.statistics is None or len(first.history) < 2:
        return None
    current = first.history[0]
    probes = [first] if first.lower_bound - current > needed else []
    if fresh_rng is not None:
        # After a birth the stream has shown a change: EM from the current places may be stuck
        # where they were, so a fresh candidate on the sample competes too.
        fresh = initialize(
            sample.records,
            params.n_components,
            params.covariance_type,
            reg_covar=reg_covar,
            n_init=RESTART_CANDIDATES,
            rng=fresh_rng,
            tol=REFIT_TOL,
            max_iter=PROBE_ITERATIONS,
            batch_size=len(sample),
            shift=shift,
            weights=weights,
        ).em
        if fresh is not None and fresh.statistics is not None:
            probes.append(fresh)
    if not probes:
        return None
    best = max(probes, key=lambda probe: probe.lower_bound)
    return (best if best.converged else em(best.params, REFIT_ITERATIONS, best.lower_bound)), current
