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

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from streamgmm.em.batch import BatchEMResult, EMIterations, exact_e_step
from streamgmm.io.sources import ArraySource
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
) -> Initialization:
    """The best of ``n_init`` candidates raced by EM on ``sample``; the winner runs until ``tol``.

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

    Returns
    -------
    Initialization
    """
    check_init_params(init_params)
    if shift is None:
        shift = sample.mean(axis=0)
    # Centring the sample keeps the squared distances of k-means exact far from the origin.
    centred = sample - shift
    given = given or {}
    starts = []
    for candidate in range(1 if "means" in given else n_init):
        if "means" in given:
            # The user's means stay where they are, even one no record is closest to: its weight
            # starts near zero and the re-seeding rule deals with it like any collapse.
            _, labels = lloyd(centred, given["means"] - shift, 0)
            params, _ = params_from_labels(sample, labels, n_components, covariance_type, reg_covar, shift)
        else:
            resp = initial_responsibilities(
                centred, n_components, init_params, rng, lloyd_iterations=candidate < KMEANS_CANDIDATES
            )
            stats = SufficientStatistics.from_responsibilities(sample, resp, shift, covariance_type)
            params = place_empty_components(stats.to_params(reg_covar), stats, centred, shift, reg_covar)
        starts.append(with_given(params, given))
    starts = distinct(starts)
    if max_iter == 0:
        scores = [float(chunk_statistics(sample, p, shift)[0].log_likelihood) / sample.shape[0] for p in starts]
        best = int(np.argmax(scores))
        return Initialization(starts[best], scores[best], scores)
    runs = [EMIterations(p, reg_covar=reg_covar, tol=tol, max_iter=max_iter, lower_bound=-np.inf) for p in starts]
    winner = race(runs, lambda run, n: _iterate(run, ArraySource(sample), shift, batch_size, n), race_first)
    em = runs[winner].result()
    # As scikit-learn: a candidate's score is the mean log-likelihood of its last E-step (the
    # winner's is within tol of its end).
    scores = [run.lower_bound for run in runs]
    return Initialization(em.params, em.lower_bound, scores, em)


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


def _iterate(run: EMIterations, source: ArraySource, shift: np.ndarray, batch_size: int, n: int) -> None:
    """Up to ``n`` more EM iterations of ``run`` on ``source``."""
    for _ in range(n):
        if run.done:
            return
        run.step(*exact_e_step(source, run.params, shift, batch_size))
