"""The candidates' race: each start refined by EM on the initialisation sample, the best kept.

Each of ``n_init`` candidates starts from :mod:`streamgmm.mixture.initialization`'s
responsibilities and is refined by EM on the sample until its mean log-likelihood moves by less
than ``tol``; the one with the highest sample log-likelihood is kept. Candidates may race by
successive halving (:func:`race`), so that only the leader runs to the end. When the sample is
the whole data (a source no larger than ``init_size``) this is scikit-learn's fit, repeated
``n_init`` times; otherwise it is that fit on a uniform sample, a start that passes over the data
refine. Local optima are the main risk to a fit's quality, and candidates cost only work on the
sample.

Examples
--------
>>> import numpy as np
>>> from streamgmm.em.candidates import initialize
>>> rng = np.random.default_rng(0)
>>> X = np.concatenate([rng.normal(-4, 1, (500, 2)), rng.normal(4, 1, (500, 2))])
>>> start = initialize(X, 2, "full", reg_covar=1e-6, n_init=2, rng=rng)
>>> np.round(np.sort(start.params.means[:, 0]))
array([-4.,  4.])
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from streamgmm.em.batch import BatchEMResult, EMIterations, exact_e_step
from streamgmm.io.sources.chunk_source import ArraySource, Batch
from streamgmm.kernels.chunk import chunk_statistics
from streamgmm.mixture.initialization import (
    KMEANS_CANDIDATES,
    check_init_params,
    distinct,
    initial_responsibilities,
    lloyd,
    params_from_labels,
    place_empty_components,
    with_given,
)
from streamgmm.mixture.params import MixtureParams
from streamgmm.mixture.statistics import SufficientStatistics

# EM iterations every candidate gets before the first halving of the race.
RACE_FIRST_ITERATIONS = 2


@dataclass
class Initialization:
    """The chosen start: its parameters, its sample log-likelihood, every candidate's score, and
    the sample EM that produced it (None with ``max_iter=0``)."""

    params: MixtureParams
    sample_log_likelihood: float
    candidate_log_likelihoods: list[float]
    em: BatchEMResult | None = None


def initialize(
    sample: np.ndarray,
    n_components: int,
    covariance_type: str,
    *,
    reg_covar: float,
    n_init: int,
    rng: np.random.Generator,
    init_params: str = "kmeans",
    tol: float = 1e-3,
    max_iter: int = 100,
    batch_size: int = 8192,
    shift: np.ndarray | None = None,
    given: dict[str, np.ndarray] | None = None,
    race_first: int | None = None,
    weights: np.ndarray | None = None,
    progress: Callable[[int], None] | None = None,
) -> Initialization:
    """The best of ``n_init`` candidates raced by EM on ``sample``; the winner runs until ``tol``.

    Record weights and missing values (NaN) are handled as EM handles them: EM on the sample
    weighs each record and marginalises its missing features. The candidates' first
    responsibilities (k-means and friends know neither) come from :func:`seed_rows`: the
    sample resampled in proportion to the weights, and its complete rows.

    Parameters
    ----------
    sample : ndarray of shape (n, d)
        The records to initialise on.
    n_components : int
        K.
    covariance_type : {"full", "tied", "diag", "spherical"}
    reg_covar : float
        Added to covariance diagonals, as scikit-learn.
    n_init : int
        Candidates; the highest sample log-likelihood wins.
    rng : numpy.random.Generator
    init_params : {"kmeans", "k-means++", "random", "random_from_data"}, default="kmeans"
        How each candidate's first responsibilities are chosen (scikit-learn's methods).
    tol, max_iter : float, int
        EM on the sample stops once the mean log-likelihood moves by less than ``tol``, or
        after ``max_iter`` iterations (0: the candidates are their first M-step).
    batch_size : int
        Records per E-step block (memory only; the result does not depend on it).
    shift : ndarray of shape (d,), optional
        The origin of the statistics (default: the sample mean).
    given : dict, optional
        The user's ``"weights"``, ``"means"`` and/or ``"precisions"``: they replace the first
        M-step's values before EM, as scikit-learn's ``*_init``. Given means label each record
        by its nearest mean (one candidate: nothing random is left).
    race_first : int, optional
        EM iterations every candidate gets before the race's first halving (default
        ``RACE_FIRST_ITERATIONS``; ``max_iter``: every candidate runs to convergence).
    weights : ndarray of shape (n,), optional
        Record weights (finite, >= 0, with a positive total).
    progress : callable, optional
        Called with the records of each mini-batch of the sample an E-step has processed (a
        progress bar: on wide incomplete records the candidates' EM can take minutes).

    Returns
    -------
    Initialization
    """
    check_init_params(init_params)
    seeds = seed_rows(sample, weights, n_components, rng)
    if shift is None:
        shift = sample_mean(sample, weights)
    # Centring the sample keeps the squared distances of k-means exact far from the origin.
    centred = seeds - shift
    given = given or {}
    starts = []
    for candidate in range(1 if "means" in given else n_init):
        if "means" in given:
            # The user's means stay where they are, even one no record is closest to: its weight
            # starts near zero and the re-seeding rule deals with it like any collapse.
            _, labels = lloyd(centred, given["means"] - shift, 0)
            params, _ = params_from_labels(seeds, labels, n_components, covariance_type, reg_covar, shift)
        else:
            resp = initial_responsibilities(
                centred, n_components, init_params, rng, lloyd_iterations=candidate < KMEANS_CANDIDATES
            )
            stats = SufficientStatistics.from_responsibilities(seeds, resp, shift, covariance_type)
            params = place_empty_components(stats.to_params(reg_covar), stats, centred, shift, reg_covar)
        starts.append(with_given(params, given))
    starts = distinct(starts)
    if max_iter == 0:
        scores = []
        for p in starts:
            stats = chunk_statistics(sample, p, shift, weights=weights)[0]
            scores.append(float(stats.log_likelihood) / stats.n_records)
        best = int(np.argmax(scores))
        return Initialization(starts[best], scores[best], scores)
    runs = [EMIterations(p, reg_covar=reg_covar, tol=tol, max_iter=max_iter, lower_bound=-np.inf) for p in starts]
    source = ArraySource(sample, weights=weights) if progress is None else _Reported(sample, weights, progress)
    winner = race(runs, lambda run, n: _iterate(run, source, shift, batch_size, n), race_first)
    em = runs[winner].result()
    # As scikit-learn: a candidate's score is the mean log-likelihood of its last E-step (the
    # winner's is within tol of its end).
    scores = [run.lower_bound for run in runs]
    return Initialization(em.params, em.lower_bound, scores, em)


def seed_rows(
    sample: np.ndarray, weights: np.ndarray | None, n_components: int, rng: np.random.Generator
) -> np.ndarray:
    """The rows the candidates' first responsibilities are computed on (k-means and the other
    ``init_params`` know neither weights nor missing values).

    A weighted sample is first resampled with probability proportional to the weights (with
    replacement, as many rows, drawn from ``rng``), so that a record of weight w seeds like w
    records. Then rows with missing features (NaN) are left out; if fewer than
    ``n_components`` complete rows remain, every row is kept with its gaps filled by the column
    means instead. An unweighted complete sample is returned as it is (``rng`` untouched).

    >>> X = np.array([[0.0, 1.0], [np.nan, 2.0], [4.0, 3.0]])
    >>> seed_rows(X, None, 2, np.random.default_rng(0)).tolist()
    [[0.0, 1.0], [4.0, 3.0]]
    >>> seed_rows(X, None, 3, np.random.default_rng(0)).tolist()
    [[0.0, 1.0], [2.0, 2.0], [4.0, 3.0]]
    >>> seed_rows(X[[0, 2]], np.array([0.0, 1.0]), 1, np.random.default_rng(0)).tolist()
    [[4.0, 3.0], [4.0, 3.0]]
    """
    if weights is not None:
        total = float(weights.sum())
        if not total > 0:
            raise ValueError("every record has weight zero (the weights sum to 0): there is nothing to fit")
        n = sample.shape[0]
        sample = sample[np.sort(rng.choice(n, n, replace=True, p=weights / total))]
    missing = np.isnan(sample)
    if not missing.any():
        return sample
    complete = ~missing.any(axis=1)
    if np.count_nonzero(complete) >= n_components:
        return sample[complete]
    # sample_mean, not nanmean: a feature the sample never observes gets 0, not NaN.
    return np.where(missing, sample_mean(sample), sample)


def sample_mean(sample: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """The (weighted) mean of each feature over the records where it is observed: the origin
    of the statistics (any point near the data will do; this one keeps the sums small).

    >>> sample_mean(np.array([[0.0, np.nan], [2.0, 4.0]]), np.array([1.0, 3.0])).tolist()
    [1.5, 4.0]
    """
    observed = ~np.isnan(sample)
    w = np.ones(sample.shape[0]) if weights is None else weights
    if weights is None and observed.all():
        return sample.mean(axis=0)
    totals = w @ observed
    sums = w @ np.where(observed, sample, 0.0)
    return np.divide(sums, totals, out=np.zeros(sample.shape[1]), where=totals > 0)


def unobserved_features(sample: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """The indices of the features no record of ``sample`` observes (every value NaN, or observed
    only in records of weight zero): EM has nothing to estimate their means and variances from.

    >>> unobserved_features(np.array([[0.0, np.nan, 1.0], [2.0, np.nan, np.nan]])).tolist()
    [1]
    >>> unobserved_features(np.array([[0.0, 1.0], [2.0, np.nan]]), np.array([1.0, 0.0])).tolist()
    []
    >>> unobserved_features(np.array([[0.0, np.nan], [2.0, 5.0]]), np.array([1.0, 0.0])).tolist()
    [1]
    """
    observed = ~np.isnan(sample)
    if weights is None:
        return np.flatnonzero(~observed.any(axis=0))
    return np.flatnonzero(~(observed & (weights > 0)[:, None]).any(axis=0))


def race(runs: list[EMIterations], advance: Callable[[EMIterations, int], None], first: int | None = None) -> int:
    """Successive halving: every candidate gets ``first`` EM iterations, the better half (by
    log-likelihood) twice as many more, and so on until one is left, which runs until it
    converges. Returns its index. EM paths from different starts seldom cross once a few
    iterations have sorted them, and the race costs about a third of running every candidate
    to convergence."""
    alive = list(range(len(runs)))
    budget = RACE_FIRST_ITERATIONS if first is None else first
    while len(alive) > 1:
        for i in alive:
            advance(runs[i], budget)
        alive = sorted(alive, key=lambda i: -runs[i].lower_bound)[: (len(alive) + 1) // 2]
        budget *= 2
    advance(runs[alive[0]], runs[alive[0]].max_iter)
    return alive[0]


class _Reported(ArraySource):
    """The sample as an array source (so read without a thread, as any array) that reports each
    mini-batch's records once the E-step has taken them."""

    def __init__(self, sample: np.ndarray, weights: np.ndarray | None, progress: Callable[[int], None]):
        super().__init__(sample, weights=weights)
        self.progress = progress

    def batches(self, batch_size: int, rng: np.random.Generator | None = None) -> Iterator[Batch]:
        for batch in super().batches(batch_size, rng):
            yield batch
            self.progress(batch.n_records)


def _iterate(run: EMIterations, source: ArraySource, shift: np.ndarray, batch_size: int, n: int) -> None:
    """Up to ``n`` more EM iterations of ``run`` on ``source``."""
    for _ in range(n):
        if run.done:
            return
        run.step(*exact_e_step(source, run.params, shift, batch_size))
