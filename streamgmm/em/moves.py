"""Births and merges on the stepwise statistics: components go where new data appear.

A stream read in the order it is stored (sorted by time, key or partition) shows regions late
that its first sample never showed; stepwise EM alone only refines the components it started
with, so such a region is never given one of its own. Moves fix that in the same pass, with K
fixed:

- **Novelty.** Each mini-batch's records outside every component's ellipsoid
  (:mod:`streamgmm.em.novelty`) are offered to a bounded weighted reservoir, and their share of
  the running statistics is tracked apart (``MoveState.novel``), blended with the same steps.
- **Birth.** Once the reservoir holds enough records for a component
  (:func:`~streamgmm.mixture.component_size.birth_records`: a few times its parameter count),
  mixtures of 1 to ``MAX_BIRTHS`` components are fitted to it (k-means then EM, record weights
  respected), one more while it gains more (below).
- **Room, K fixed.** For each newborn, the two components whose merge loses least are merged
  (:mod:`streamgmm.mixture.merges`: the change of the expected complete-data log-likelihood in
  closed form from their statistics, without the novel records' share, plus the estimated
  entropy of their shared responsibilities), freeing a slot.
- **Acceptance.** The novel records' share leaves the components it was blended into, and the
  newborns' statistics, fitted on the reservoir, enter with exactly that share of the mass seen
  so far, so the running statistics stay those of one mixture. The move is taken when the
  log-likelihood it gains on the reservoir (weighted by that share, less a BIC penalty), plus
  what the components that took the novel records in give back, exceeds the merges' loss;
  otherwise the reservoir is kept and the move is proposed again once half as much novel weight
  again has been offered.

Every draw comes from a generator seeded by ``(seed, step, purpose)``, so a stream of
``partial_fit`` calls, a saved and resumed model and an uninterrupted run take the same moves.

Examples
--------
A stream sorted by component: the first sample shows only the first cluster, yet each later
cluster gets a component of its own.

>>> import numpy as np
>>> from streamgmm import StreamingGaussianMixture
>>> rng = np.random.default_rng(0)
>>> chunks = [rng.normal(centre, 1.0, (4000, 2)) for centre in (0.0, 12.0, 24.0)]
>>> gmm = StreamingGaussianMixture(3, random_state=0, batch_size=1000, init_size=1000)
>>> gmm = gmm.fit(iter(chunks))
>>> np.sort(gmm.means_[:, 0]).round() + 0.0
array([ 0., 12., 24.])
>>> sum(move["kind"] == "birth" for move in gmm.fit_history_.moves)
2

References
----------
Cappe, O. and Moulines, E. (2009). On-line expectation-maximization algorithm for latent data
models. Journal of the Royal Statistical Society B, 71(3), 593-613.

Hughes, M. C. and Sudderth, E. B. (2013). Memoized online variational inference for Dirichlet
process mixture models. Advances in Neural Information Processing Systems 26.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from streamgmm.em.candidates import initialize
from streamgmm.em.novelty import Reservoir
from streamgmm.kernels.chunk import chunk_statistics
from streamgmm.kernels.quadratic import one_blas_thread
from streamgmm.mixture.component_size import birth_records, component_parameters, reservoir_capacity
from streamgmm.mixture.merges import (
    cheapest_pair,
    expected_log_likelihood,
    merge_components,
    merge_costs,
    shared_entropy,
)
from streamgmm.mixture.params import MixtureParams
from streamgmm.mixture.statistics import SufficientStatistics

MOVES = ("auto", "off")
MAX_BIRTHS = 3
# A refused birth is proposed again once the novel weight offered has grown by this factor.
RETRY_GROWTH = 1.5
BIRTH_EM_ITERATIONS = 100
# Up to this many novel rows in a mini-batch, their statistics come from the direct E-step.
DIRECT_ROWS = 256


@dataclass(frozen=True)
class NovelBatch:
    """A mini-batch's novel records, their record weights and their statistics under the
    parameters that scored the batch (their share of the batch's statistics)."""

    records: np.ndarray
    weights: np.ndarray
    statistics: SufficientStatistics


@dataclass(frozen=True)
class MoveState:
    """What the moves carry between mini-batches (and in a saved model).

    ``seed`` seeds every draw with the step; ``reservoir`` holds novel records; ``novel`` is
    their share of the running statistics (about the same shift); ``log_scale`` is
    ``-sum_s log(1 - eta_s)``, which turns a step into the weight its records keep; ``clock``
    counts mini-batches by their share of a full one (the step size's counter with moves).
    ``sample`` is a sample of every record (of at most ``sample_size``), drawn like the
    reservoir, for the refits of :mod:`streamgmm.em.reallocation`, the next due when ``clock``
    reaches ``next_refit`` if the stream has ``changed`` since the last (with fresh candidates
    when ``restart``: a birth was taken); ``level`` is the stream's mean log-likelihood per
    record, each batch scored before it was learned, blended over ``level_weight``; after a change
    of course (:func:`~streamgmm.em.reallocation.changed_course`) refits take fresh candidates
    until ``clock`` reaches ``fresh_until``."""

    seed: int
    reservoir: Reservoir
    novel: SufficientStatistics
    log_scale: float = 0.0
    clock: float = 0.0
    sample: Reservoir | None = None
    sample_size: int = 0
    next_refit: float = 0.0
    restart: bool = False
    changed: bool = False
    level: float = 0.0
    level_weight: float = 0.0
    fresh_until: float = 0.0

    @classmethod
    def start(
        cls, seed: int, statistics: SufficientStatistics, sample_size: int = 0, next_refit: float = 0.0
    ) -> MoveState:
        """No novel records yet; ``sample_size`` records (0: none) kept for refits, the first
        due at ``next_refit`` on the clock."""
        d = statistics.n_features
        sample = Reservoir.empty(d) if sample_size > 0 else None
        # The running statistics give the novel share its shape and shift; cleared() zeroes it.
        return cls(
            int(seed), Reservoir.empty(d), statistics, sample=sample, sample_size=sample_size, next_refit=next_refit
        ).cleared()

    def cleared(self) -> MoveState:
        """The state with no novel records (after a move that accounts for them); the novel
        share keeps only its shape and shift."""
        n = self.novel
        novel = SufficientStatistics.zeros(n.n_components, n.n_features, n.covariance_type, n.shift)
        return replace(self, reservoir=Reservoir.empty(n.n_features), novel=novel)

    def capacity(self) -> int:
        return reservoir_capacity(self.novel.n_features, self.novel.covariance_type)

    def rng(self, step: int, purpose: int = 0) -> np.random.Generator:
        return np.random.default_rng([self.seed, step, purpose])


@dataclass
class Move:
    """One move taken: at mini-batch ``step``, newborns in slots ``born``, each made room for by
    merging the pair in ``merged`` (kept, freed); ``gain`` is the log-likelihood per record of
    the stream it was judged to gain, net of the merges' cost; ``records`` the reservoir's
    effective size (for a refit: the sample's)."""

    step: int
    born: list[int]
    merged: list[tuple[int, int]]
    gain: float
    records: float
    kind: str = "birth"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "step": self.step,
            "born": list(self.born),
            "merged": [list(pair) for pair in self.merged],
            "gain": self.gain,
            "records": self.records,
        }


@dataclass
class MoveResult:
    statistics: SufficientStatistics
    params: MixtureParams
    state: MoveState
    moves: list[Move] = field(default_factory=list)


def novel_batch(
    X: np.ndarray,
    novel: np.ndarray,
    weights: np.ndarray | None,
    params: MixtureParams,
    shift: np.ndarray,
    dtype: np.dtype | type,
) -> NovelBatch | None:
    """The novel records of a mini-batch (mask ``novel``) with their statistics, or None."""
    if weights is not None:
        novel = novel & (weights > 0)
    if not novel.any():
        return None
    rows = X[novel]
    w = np.ones(rows.shape[0]) if weights is None else weights[novel]
    if rows.shape[0] <= DIRECT_ROWS and params.covariance_type != "tied":
        # A few rows (the usual case): the direct E-step, without the kernels' set-up.
        log_norm, resp = params.e_step(rows)
        stats = SufficientStatistics.from_responsibilities(rows, resp * w[:, None], shift, params.covariance_type)
        stats = replace(stats, n_records=float(w.sum()), log_likelihood=float(w @ log_norm))
    else:
        stats, _ = chunk_statistics(rows, params, shift, dtype, weights=None if weights is None else w)
    return NovelBatch(rows, w, stats)


def tracked(
    state: MoveState,
    novel: NovelBatch | None,
    eta: float,
    running_records: float,
    batch_records: float,
    step: int,
    reseeded: list[int],
    records: tuple[np.ndarray, np.ndarray | None] | None = None,
) -> MoveState:
    """The move state after one blend ``s <- (1 - eta) s / running_records + eta s_b /
    batch_records``: the novel share blended alike, the novel records offered to the reservoir,
    every record of the batch (``records``: rows and weights, None where they are elsewhere) to
    the sample, and the share of re-seeded components dropped (their statistics were replaced)."""
    if eta >= 1.0:  # a full step forgets everything before it
        sample = None if state.sample is None else Reservoir.empty(state.novel.n_features)
        state = replace(state.cleared(), sample=sample)
        log_scale = 0.0
    else:
        log_scale = state.log_scale - float(np.log1p(-eta))
    a, b = (1.0 - eta) / running_records, eta / batch_records
    T = state.novel
    counts, sums, second = a * T.counts, a * T.sums, a * T.second
    reservoir, sample = state.reservoir, state.sample
    log_weight = float(np.log(eta) - np.log(batch_records)) + log_scale
    if novel is not None:
        t = novel.statistics.recentred(T.shift)
        counts, sums, second = counts + b * t.counts, sums + b * t.sums, second + b * t.second
        reservoir = reservoir.offered(novel.records, novel.weights, log_weight, state.rng(step), state.capacity())
    if sample is not None and records is None:
        # Records learned elsewhere (a Dask wave's stay on the workers) are not in the sample,
        # which no longer stands for the stream: it starts again empty, and no refit uses it.
        sample = Reservoir.empty(T.n_features)
    elif sample is not None:
        X, w = records
        w = np.ones(X.shape[0]) if w is None else w
        sample = sample.offered(X, w, log_weight, state.rng(step, 3), state.sample_size)
    if reseeded:
        counts[reseeded] = 0.0
        sums[reseeded] = 0.0
        if T.covariance_type != "tied":
            second[reseeded] = 0.0
    novel_stats = replace(T, counts=counts, sums=sums, second=second, n_records=float(counts.sum()))
    return replace(state, reservoir=reservoir, novel=novel_stats, log_scale=log_scale, sample=sample)


def without_novel(stats: SufficientStatistics, novel: SufficientStatistics) -> SufficientStatistics:
    """The running statistics less the novel records' share."""
    return replace(
        stats,
        counts=np.maximum(stats.counts - novel.counts, 0.0),
        sums=stats.sums - novel.sums,
        second=stats.second - novel.second,
    )


@dataclass
class _Proposal:
    born: SufficientStatistics  # the newborns' statistics, of total count 1
    merged: list[tuple[int, int]]
    statistics: SufficientStatistics
    params: MixtureParams
    net_gain: float


@dataclass(frozen=True)
class BatchRedo:
    """What a birth needs to learn its mini-batch again under the new components: the
    statistics and novel share before the batch, the batch's step and weight, and the batch's
    E-step under other parameters."""

    statistics: SufficientStatistics
    novel: SufficientStatistics
    eta: float
    batch_records: float
    rescore: Callable[[MixtureParams], SufficientStatistics]


def _with_births(
    clean: SufficientStatistics, born: SufficientStatistics, mass: float, merged: list[tuple[int, int]]
) -> SufficientStatistics:
    """``clean`` with each pair of ``merged`` merged and the newborns, of total count ``mass``,
    in the freed slots."""
    for a, b in merged:
        clean = merge_components(clean, a, b)
    born = born.scaled(mass).recentred(clean.shift)
    slots = [b for _, b in merged]
    counts, sums, second = clean.counts.copy(), clean.sums.copy(), clean.second.copy()
    counts[slots], sums[slots] = born.counts, born.sums
    if clean.covariance_type == "tied":
        second = second + born.second
    else:
        second[slots] = born.second
    return replace(clean, counts=counts, sums=sums, second=second)


def _given_back(params: MixtureParams, clean: SufficientStatistics, mass: float, reg_covar: float) -> float:
    """What the records that are not novel gain when the components that took the novel records
    in (and were stretched towards them) give them back: the expected complete-data
    log-likelihood of ``clean`` under its own M-step (weights over the whole mass) less under
    ``params``."""
    with np.errstate(divide="ignore"):
        clean_log_weights = np.log(clean.counts / (float(clean.counts.sum()) + mass))
    gain = expected_log_likelihood(clean, clean.to_params(reg_covar), clean_log_weights)
    return max(gain - expected_log_likelihood(clean, params), 0.0)


def _proposal(
    newborn: MixtureParams,
    params: MixtureParams,
    clean: SufficientStatistics,
    state: MoveState,
    reg_covar: float,
    rng: np.random.Generator,
    given_back: float,
) -> _Proposal:
    """Newborns ``newborn`` (fitted on the reservoir) in the slots the cheapest merges of
    ``clean`` free, and the log-likelihood per record of the stream the change is judged to
    gain: on the reservoir, weighted by the novel mass, less the newborns' BIC penalty, plus
    ``given_back`` (:func:`_given_back`), less the merges' loss."""
    reservoir, mass = state.reservoir, float(state.novel.counts.sum())
    born, _ = chunk_statistics(reservoir.records, newborn, clean.shift, weights=reservoir.estimation_weights())
    born = born.scaled(1.0 / born.n_records)
    merged: list[tuple[int, int]] = []
    loss = 0.0
    merging = clean
    free = np.zeros(clean.n_components, dtype=bool)
    for _ in range(newborn.n_components):
        costs = merge_costs(merging, reg_covar) + shared_entropy(merging.to_params(reg_covar), merging.counts, rng)
        costs[free, :] = np.inf
        costs[:, free] = np.inf
        a, b = cheapest_pair(costs)
        loss += float(costs[a, b])
        merging = merge_components(merging, a, b)
        free[b] = True
        merged.append((a, b))
    statistics = _with_births(clean, born, mass, merged)
    proposed = statistics.to_params(reg_covar)
    X, w = reservoir.records, reservoir.estimation_weights()
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        gained = proposed.log_likelihood(X) - params.log_likelihood(X)
    gained = np.nan_to_num(gained, nan=0.0, posinf=1e300, neginf=-1e300)
    n_eff = reservoir.effective_size()
    penalty = 0.5 * newborn.n_components * component_parameters(clean.n_features, clean.covariance_type)
    penalty *= np.log(n_eff) / n_eff
    net = mass * (float(np.average(gained, weights=w)) - penalty) + given_back - loss
    return _Proposal(born, merged, statistics, proposed, net)


def proposed_birth(
    params: MixtureParams,
    statistics: SufficientStatistics,
    state: MoveState,
    reg_covar: float,
    step: int,
    redo: BatchRedo | None = None,
) -> MoveResult:
    """Propose births from the reservoir when it holds enough, and take the best if it gains
    (module docstring); otherwise the parameters and statistics come back as they were.

    ``params`` and ``statistics`` are those after mini-batch ``step`` was blended, ``state``
    the moves tracked through it. With ``redo``, a birth taken learns the mini-batch again
    under the new components, so the batch's records of a new region go to its newborn rather
    than to the old components near it."""
    reservoir = state.reservoir
    k, d = statistics.n_components, statistics.n_features
    needed = birth_records(d, statistics.covariance_type)
    unchanged = MoveResult(statistics, params, state)
    # The cheap tests first: most mini-batches stop here.
    if k < 2 or len(reservoir) < needed or reservoir.offered_weight < RETRY_GROWTH * reservoir.tried_at:
        return unchanged
    if reservoir.effective_size() < needed:
        return unchanged
    if float(state.novel.counts.sum()) <= 0:
        return unchanged
    state = replace(state, reservoir=reservoir.merged())
    # The reservoir's products are small: a second BLAS thread only waits.
    with one_blas_thread():
        return _birth(params, statistics, state, reg_covar, step, redo)


def _birth(
    params: MixtureParams,
    statistics: SufficientStatistics,
    state: MoveState,
    reg_covar: float,
    step: int,
    redo: BatchRedo | None,
) -> MoveResult:
    reservoir = state.reservoir
    k, d = statistics.n_components, statistics.n_features
    needed = birth_records(d, statistics.covariance_type)
    n_eff = reservoir.effective_size()
    clean = without_novel(statistics, state.novel)
    fit_rng, merge_rng = state.rng(step, 1), state.rng(step, 2)
    given_back = _given_back(params, clean, float(state.novel.counts.sum()), reg_covar)
    best: _Proposal | None = None
    for n_born in range(1, int(min(MAX_BIRTHS, k - 1, n_eff // needed)) + 1):
        newborn = initialize(
            reservoir.records,
            n_born,
            statistics.covariance_type,
            reg_covar=reg_covar,
            n_init=1,
            rng=fit_rng,
            max_iter=BIRTH_EM_ITERATIONS,
            shift=statistics.shift,
            weights=reservoir.estimation_weights(),
        ).params
        if newborn.weights.min() * n_eff < needed:
            break  # a newborn the reservoir holds too few records for: as little as a birth needs
        proposal = _proposal(newborn, params, clean, state, reg_covar, merge_rng, given_back)
        if best is not None and proposal.net_gain <= best.net_gain:
            break  # one more newborn (and one more merge) no longer pays
        best = proposal
    if best is None or not best.net_gain > 0:
        refused = replace(reservoir, tried_at=reservoir.offered_weight)
        return MoveResult(statistics, params, replace(state, reservoir=refused))
    new_statistics, new_params = best.statistics, best.params
    if redo is not None:
        before = redo.statistics
        keep = (1.0 - redo.eta) / before.n_records
        past = without_novel(before, redo.novel).scaled(keep)
        past_mass = keep * float(redo.novel.counts.sum())
        batch = redo.rescore(best.params).scaled(redo.eta / redo.batch_records)
        new_statistics = _with_births(past, best.born, past_mass, best.merged) + batch
        new_statistics = replace(new_statistics, n_records=1.0)
        new_params = new_statistics.to_params(reg_covar)
    born = [b for _, b in best.merged]
    taken = Move(step, born, best.merged, best.net_gain, n_eff)
    return MoveResult(new_statistics, new_params, replace(state.cleared(), restart=True, changed=True), [taken])
