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
whether the refit is worth running to convergence. The refit is tried each time the stream has
doubled since the last try, and once more at the end of a one-pass fit, so a whole stream costs
a few EM runs on the sample.

Examples
--------
>>> import numpy as np
>>> from streamgmm import StreamingGaussianMixture
>>> rng = np.random.default_rng(0)
>>> X = np.concatenate([rng.normal(0, 1, (8000, 1)), rng.normal(3, 1, (8000, 1))])
>>> X = X[np.argsort(X[:, 0])]  # sorted by the one feature: no record is ever novel
>>> gmm = StreamingGaussianMixture(2, random_state=0, batch_size=500, init_size=2000)
>>> gmm = gmm.fit(iter(np.array_split(X, 32)))
>>> np.sort(gmm.means_[:, 0]).round(1) + 0.0
array([0., 3.])
>>> "refit" in [move["kind"] for move in gmm.fit_history_.moves]
True
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from streamgmm.em.batch import BatchEMResult, run_batch_em
from streamgmm.em.moves import Move, MoveResult, MoveState
from streamgmm.io.sources import ArraySource
from streamgmm.kernels.quadratic import one_blas_thread
from streamgmm.mixture.params import MixtureParams
from streamgmm.mixture.statistics import SufficientStatistics

# A refit is tried each time the stream has grown by this factor since the last try.
REFIT_GROWTH = 2.0
REFIT_ITERATIONS = 300
# Iterations that decide whether a refit is worth running to convergence.
PROBE_ITERATIONS = 8
REFIT_TOL = 1e-5


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
    state = replace(state, next_refit=max(state.clock, 1.0) * REFIT_GROWTH)
    sample = None if state.sample is None else state.sample.merged()
    state = replace(state, sample=sample)
    unchanged = MoveResult(statistics, params, state)
    if sample is None or len(sample) < 2 * params.n_components:
        return unchanged
    weights = sample.estimation_weights()
    n_eff = sample.effective_size()
    source = ArraySource(sample.records, weights=weights)
    # EM fits its sample better than the stream by about p / (2 n) per record (AIC's
    # correction): ask for twice that.
    needed = params.n_parameters() / n_eff

    def em(start: MixtureParams, max_iter: int, lower_bound: float = -np.inf) -> BatchEMResult:
        return run_batch_em(
            source,
            start,
            shift=statistics.shift,
            reg_covar=reg_covar,
            tol=REFIT_TOL,
            max_iter=max_iter,
            batch_size=len(sample),
            lower_bound=lower_bound,
        )

    with one_blas_thread():
        # A few iterations tell whether the allocation is wrong; most tries stop there.
        first = em(params, PROBE_ITERATIONS)
        if first.statistics is None or len(first.history) < 2 or not first.lower_bound - first.history[0] > needed:
            return unchanged
        result = first if first.converged else em(first.params, REFIT_ITERATIONS, first.lower_bound)
    gain = result.lower_bound - first.history[0]
    # The new allocation accounts for the novel records too: they start afresh.
    new_state = state.cleared()
    new_statistics = result.statistics.per_record()
    move = Move(step, [], [], float(gain), float(n_eff), kind="refit")
    return MoveResult(new_statistics, result.params, new_state, [move])
