"""Initial parameters from a sample of the stream, never from the whole data.

Several candidates are tried on the sample: each is seeded by greedy k-means++ (several local
trials per centre, as in scikit-learn), refined by a few Lloyd iterations, then by a few EM
iterations on the sample alone. The candidate with the highest sample log-likelihood is kept.
Local optima are the main risk to a one-pass fit's quality; candidates are cheap because the
sample is small, so trying several costs little next to one pass over the data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .batch_em import run_batch_em
from .params import MixtureParams
from .reseeding import reseed
from .sources import ArraySource
from .statistics import SufficientStatistics

INIT_METHODS = ("k-means++", "random_from_data")


def _squared_distances(X: np.ndarray, centers: np.ndarray, x_sq: np.ndarray) -> np.ndarray:
    d2 = x_sq[:, None] - 2.0 * X @ centers.T + (centers**2).sum(axis=1)[None, :]
    return np.maximum(d2, 0.0)


def kmeans_plusplus(
    X: np.ndarray, n_clusters: int, rng: np.random.Generator, n_local_trials: int | None = None
) -> np.ndarray:
    """Greedy k-means++ seeding: each new centre is the best of several D^2-sampled trials."""
    n = X.shape[0]
    if n_local_trials is None:
        n_local_trials = 2 + int(np.log(n_clusters))
    x_sq = (X**2).sum(axis=1)
    centers = np.empty((n_clusters, X.shape[1]))
    centers[0] = X[rng.integers(n)]
    closest = _squared_distances(X, centers[:1], x_sq)[:, 0]
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
        centers[c] = X[candidates[best]]
        closest = trial[:, best]
    return centers


def lloyd(X: np.ndarray, centers: np.ndarray, n_iter: int) -> tuple[np.ndarray, np.ndarray]:
    """A few k-means iterations; an empty cluster keeps its centre."""
    x_sq = (X**2).sum(axis=1)
    labels = np.zeros(X.shape[0], dtype=np.intp)
    for _ in range(n_iter):
        labels = np.argmin(_squared_distances(X, centers, x_sq), axis=1)
        counts = np.bincount(labels, minlength=centers.shape[0])
        # One weighted bincount per feature: the same sums in the same order as np.add.at
        # (bit for bit), about 3x faster (20k x 16, K=8).
        sums = np.column_stack([np.bincount(labels, weights=X[:, j], minlength=centers.shape[0]) for j in range(X.shape[1])])
        new = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], centers)
        if np.allclose(new, centers, rtol=0, atol=1e-12 * (1 + np.abs(centers).max())):
            centers = new
            break
        centers = new
    labels = np.argmin(_squared_distances(X, centers, x_sq), axis=1)
    return centers, labels


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
    params: MixtureParams
    sample_log_likelihood: float
    candidate_log_likelihoods: list[float]


def initialize(
    sample: np.ndarray,
    n_components: int,
    covariance_type: str,
    *,
    reg_covar: float,
    n_init: int,
    rng: np.random.Generator,
    init_params: str = "k-means++",
    lloyd_iter: int = 10,
    em_iter: int = 10,
    shift: np.ndarray | None = None,
) -> Initialization:
    """The best of ``n_init`` candidates by sample log-likelihood."""
    if init_params not in INIT_METHODS:
        raise ValueError(f"Invalid value for 'init_params': {init_params!r}; expected one of {', '.join(INIT_METHODS)}")
    if shift is None:
        shift = sample.mean(axis=0)
    # Centring the sample keeps the squared distances of k-means exact far from the origin.
    centred = sample - shift
    source = ArraySource(sample)
    best: Initialization | None = None
    scores: list[float] = []
    for _ in range(n_init):
        if init_params == "k-means++":
            centers = kmeans_plusplus(centred, n_components, rng)
            _, labels = lloyd(centred, centers, lloyd_iter)
        else:
            picks = rng.choice(sample.shape[0], n_components, replace=False)
            _, labels = lloyd(centred, centred[picks], 1)
        params, stats = params_from_labels(sample, labels, n_components, covariance_type, reg_covar, shift)
        # An empty cluster gets a real place before EM sees it: the records farthest from any centre.
        nearest = _squared_distances(centred, params.means - shift, (centred**2).sum(axis=1)).min(axis=1)
        params = reseed(params, stats, sample[np.argsort(nearest)[::-1][:n_components]], reg_covar)[0]
        result = run_batch_em(
            source, params, shift=shift, reg_covar=reg_covar, tol=1e-4, max_iter=em_iter, batch_size=sample.shape[0]
        )
        # Score the parameters EM ended with, not those it started the last iteration from.
        score = float(result.params.log_likelihood(sample).mean())
        scores.append(score)
        if best is None or score > best.sample_log_likelihood:
            best = Initialization(result.params, score, scores)
    assert best is not None
    best.candidate_log_likelihoods = scores
    return best
