"""Initial parameters from a sample of the stream, as scikit-learn's ``GaussianMixture`` does.

Each of ``n_init`` candidates starts from responsibilities chosen by ``init_params`` (the four
methods of scikit-learn, computed on the sample) and is refined by EM on the sample until its
mean log-likelihood moves by less than ``tol``; the one with the highest sample log-likelihood is
kept. Candidates may race by successive halving (:func:`race`), so that only the leader runs to
the end. When the sample is the whole data (a source no larger than ``init_size``) this is
scikit-learn's fit, repeated ``n_init`` times; otherwise it is that fit on a uniform sample, a
start that passes over the data refine. Local optima are the main
risk to a fit's quality, and candidates cost only work on the sample.

Examples
--------
>>> import numpy as np
>>> from streamgmm.mixture.initialization import initialize
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

from streamgmm.em.batch import BatchEMResult, EMIterations, full_pass_statistics
from streamgmm.io.sources import ArraySource
from streamgmm.mixture.params import MixtureParams
from streamgmm.mixture.reseeding import WorstRecords, reseed
from streamgmm.mixture.statistics import SufficientStatistics

INIT_METHODS = ("kmeans", "k-means++", "random", "random_from_data")
# scikit-learn's KMeans defaults: at most 300 Lloyd iterations, stopping once the centres move
# (in squared distance, summed) by less than 1e-4 of the data's mean variance.
KMEANS_MAX_ITER = 300
KMEANS_TOL = 1e-4
# With init_params="kmeans", the candidates that run Lloyd to convergence; the others start from
# the partition of their k-means++ seeds, which EM refines: diversity for the race at a fraction of
# k-means' cost (see docs/performance.md, "Tuning constants").
KMEANS_CANDIDATES = 2
# EM iterations every candidate gets before the first halving of the race.
RACE_FIRST_ITERATIONS = 2


def check_init_params(init_params: str) -> None:
    if init_params not in INIT_METHODS:
        raise ValueError(f"Invalid value for 'init_params': {init_params!r}; expected one of {', '.join(INIT_METHODS)}")


def _squared_distances(X: np.ndarray, centers: np.ndarray, x_sq: np.ndarray) -> np.ndarray:
    d2 = x_sq[:, None] - 2.0 * X @ centers.T + (centers**2).sum(axis=1)[None, :]
    return np.maximum(d2, 0.0)


def kmeans_plusplus(
    X: np.ndarray, n_clusters: int, rng: np.random.Generator, n_local_trials: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy k-means++ seeding: each new centre is the best of several D^2-sampled trials.

    Returns the centres, shape (n_clusters, d), and the indices of the records chosen."""
    n = X.shape[0]
    if n_local_trials is None:
        n_local_trials = 2 + int(np.log(n_clusters))
    x_sq = (X**2).sum(axis=1)
    indices = np.empty(n_clusters, dtype=np.intp)
    indices[0] = rng.integers(n)
    closest = _squared_distances(X, X[indices[:1]], x_sq)[:, 0]
    for c in range(1, n_clusters):
        potential = closest.sum()
        if potential <= 0:  # every record coincides with a centre already chosen
            candidates = rng.integers(n, size=n_local_trials)
        else:
            cumulative = np.cumsum(closest)
            candidates = np.searchsorted(cumulative, rng.uniform(size=n_local_trials) * potential)
            candidates = np.minimum(candidates, n - 1)
        trial = np.minimum(closest[:, None], _squared_distances(X, X[candidates], x_sq))
        best = int(np.argmin(trial.sum(axis=0)))
        indices[c] = candidates[best]
        closest = trial[:, best]
    return X[indices].copy(), indices


def lloyd(
    X: np.ndarray, centers: np.ndarray, max_iter: int = KMEANS_MAX_ITER, tol: float = KMEANS_TOL
) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means iterations until the labels settle, the centres move less than ``tol``
    times the mean feature variance, or ``max_iter``; an empty cluster keeps its centre.
    Returns the centres and the label of each record (its nearest centre)."""
    threshold = tol * float(X.var(axis=0).mean()) if X.shape[0] else 0.0
    labels = nearest(X, centers)
    rows = np.arange(X.shape[0])
    for _ in range(max_iter):
        counts = np.bincount(labels, minlength=centers.shape[0])
        # The cluster sums as one product with the one-hot labels: a BLAS call, not a loop.
        onehot = np.zeros((X.shape[0], centers.shape[0]))
        onehot[rows, labels] = 1.0
        new = np.where(counts[:, None] > 0, (onehot.T @ X) / np.maximum(counts, 1)[:, None], centers)
        shift = float(((new - centers) ** 2).sum())
        centers = new
        new_labels = nearest(X, centers)
        settled = np.array_equal(new_labels, labels)
        labels = new_labels
        if settled or shift <= threshold:
            break
    return centers, labels


def nearest(X: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """The index of each record's nearest centre: argmin of |c|^2 - 2 x.c (|x|^2 is the same
    for every centre)."""
    scores = X @ centers.T
    scores *= -2.0
    scores += (centers**2).sum(axis=1)
    return np.argmin(scores, axis=1)


def initial_responsibilities(
    centred: np.ndarray, n_components: int, init_params: str, rng: np.random.Generator, lloyd_iterations: bool = True
) -> np.ndarray:
    """The starting responsibilities of scikit-learn's ``init_params``, shape (n, K).

    ``"kmeans"``: the labels of k-means (k-means++ seeding, then Lloyd to convergence; with
    ``lloyd_iterations=False`` the seeds' own partition);
    ``"k-means++"``: the k-means++ seeds alone, one record each; ``"random"``: random soft
    responsibilities; ``"random_from_data"``: K records drawn at random, one each."""
    check_init_params(init_params)
    n = centred.shape[0]
    if init_params == "random":
        resp = rng.uniform(size=(n, n_components))
        return resp / resp.sum(axis=1)[:, None]
    resp = np.zeros((n, n_components))
    if init_params == "kmeans":
        centers, _ = kmeans_plusplus(centred, n_components, rng)
        _, labels = lloyd(centred, centers, KMEANS_MAX_ITER if lloyd_iterations else 0)
        resp[np.arange(n), labels] = 1.0
    elif init_params == "k-means++":
        _, indices = kmeans_plusplus(centred, n_components, rng)
        resp[indices, np.arange(n_components)] = 1.0
    else:
        indices = rng.choice(n, n_components, replace=False)
        resp[indices, np.arange(n_components)] = 1.0
    return resp


def params_from_labels(
    X: np.ndarray, labels: np.ndarray, n_components: int, covariance_type: str, reg_covar: float, shift: np.ndarray
) -> tuple[MixtureParams, SufficientStatistics]:
    """The M-step of hard assignments (an empty cluster gets a weight of about zero)."""
    resp = np.zeros((X.shape[0], n_components))
    resp[np.arange(X.shape[0]), labels] = 1.0
    stats = SufficientStatistics.from_responsibilities(X, resp, shift, covariance_type)
    return stats.to_params(reg_covar), stats


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
        scores = [
            float(SufficientStatistics.of_chunk(sample, p, shift)[0].log_likelihood) / sample.shape[0] for p in starts
        ]
        best = int(np.argmax(scores))
        return Initialization(starts[best], scores[best], scores)
    runs = [EMIterations(p, reg_covar=reg_covar, tol=tol, max_iter=max_iter, lower_bound=-np.inf) for p in starts]
    winner = race(runs, lambda run, n: _iterate(run, ArraySource(sample), shift, batch_size, n), race_first)
    em = runs[winner].result()
    # As scikit-learn: a candidate's score is the mean log-likelihood of its last E-step (the
    # winner's is within tol of its end).
    scores = [run.lower_bound for run in runs]
    return Initialization(em.params, em.lower_bound, scores, em)


def distinct(starts: list[MixtureParams]) -> list[MixtureParams]:
    """``starts`` without repeats: candidates whose first M-step gave the same components (the
    same partition, in any order) would run the same EM, so only the first of them is kept."""
    seen: set[bytes] = set()
    kept = []
    for params in starts:
        key = np.ascontiguousarray(params.means[np.lexsort(params.means.T[::-1])]).tobytes()
        if key not in seen:
            seen.add(key)
            kept.append(params)
    return kept


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
        worst = WorstRecords(run.params.n_components, run.params.n_features)
        stats = full_pass_statistics(source, run.params, shift, batch_size, worst)
        run.step(stats, worst.records)


def with_given(params: MixtureParams, given: dict[str, np.ndarray]) -> MixtureParams:
    """``params`` with the user's weights, means and precisions put in their place."""
    if not given:
        return params
    weights = given.get("weights", params.weights)
    means = given.get("means", params.means)
    if "precisions" in given:
        return MixtureParams.from_precisions(weights, means, given["precisions"], params.covariance_type)
    return MixtureParams(weights, means, params.covariances, params.precisions_cholesky, params.covariance_type)


def place_empty_components(
    params: MixtureParams, stats: SufficientStatistics, centred: np.ndarray, shift: np.ndarray, reg_covar: float
) -> MixtureParams:
    """An empty cluster gets a real place before EM sees it: the records farthest from any centre."""
    k = params.n_components
    nearest = _squared_distances(centred, params.means - shift, (centred**2).sum(axis=1)).min(axis=1)
    return reseed(params, stats, centred[np.argsort(nearest)[::-1][:k]] + shift, reg_covar)[0]
