"""Starting points of a mixture from a sample, as scikit-learn's ``GaussianMixture`` makes them.

scikit-learn's four ``init_params`` as responsibilities on the sample (:func:`initial_responsibilities`:
k-means++ seeding and Lloyd's iterations, or random ones), their first M-step, the user's
``*_init`` put in their place (:func:`with_given`), empty clusters placed on the farthest records,
and repeated starts dropped (:func:`distinct`). The candidates' EM on the sample, and the choice
among them, is :mod:`streamgmm.em.candidates`.

Examples
--------
>>> import numpy as np
>>> from streamgmm.mixture.initialization import kmeans_plusplus, lloyd
>>> rng = np.random.default_rng(0)
>>> X = np.concatenate([rng.normal(-4, 1, (500, 2)), rng.normal(4, 1, (500, 2))])
>>> centers, labels = lloyd(X, kmeans_plusplus(X, 2, rng)[0])
>>> np.round(np.sort(centers[:, 0]))
array([-4.,  4.])
"""

from __future__ import annotations

from typing import Any

import numpy as np

from streamgmm.mixture import covariance as cov
from streamgmm.mixture.params import MixtureParams
from streamgmm.mixture.reseeding import collapsed_components, reseed
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


def check_init_params(init_params: str) -> None:
    if init_params not in INIT_METHODS:
        raise ValueError(f"Invalid value for 'init_params': {init_params!r}; expected one of {', '.join(INIT_METHODS)}")


# Records per block of the (records x centres) distance products: a block of K=64 float64
# distances stays in cache, where the whole sample's would not.
DISTANCE_BLOCK = 1024


def _squared_distances(X: np.ndarray, centers: np.ndarray, x_sq: np.ndarray) -> np.ndarray:
    d2 = x_sq[:, None] - 2.0 * X @ centers.T + (centers**2).sum(axis=1)[None, :]
    return np.maximum(d2, 0.0)


def _trial_distances(trials: np.ndarray, XT: np.ndarray, x_sq: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Squared distances from each trial centre to every record, shape (n_trials, n), in ``out``:
    one product |x|^2 - 2 c.x + |c|^2 and in-place updates (no temporaries of the sample's size)."""
    # Scaling by -2 (a power of two) before the product is exact: the same numbers, one pass less.
    np.matmul(-2.0 * trials, XT, out=out)
    out += x_sq
    out += np.einsum("ij,ij->i", trials, trials)[:, None]
    return np.maximum(out, 0.0, out=out)


def kmeans_plusplus(
    X: np.ndarray, n_clusters: int, rng: np.random.Generator, n_local_trials: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy k-means++ seeding: each new centre is the best of several D^2-sampled trials.

    Each of the ``n_clusters`` rounds costs one (trials x records) product over the sample:
    O(n K log(K) d) in all, as scikit-learn's.

    Parameters
    ----------
    X : ndarray of shape (n, d)
        The records.
    n_clusters : int
        The number of centres K.
    rng : numpy.random.Generator
    n_local_trials : int, optional
        Trials per round (default ``2 + int(log(K))``, as scikit-learn).

    Returns
    -------
    centers : ndarray of shape (n_clusters, d)
    indices : ndarray of shape (n_clusters,)
        The records chosen.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[0.0], [0.1], [10.0], [10.1]])
    >>> centers, indices = kmeans_plusplus(X, 2, np.random.default_rng(0))
    >>> sorted(centers[:, 0].round().tolist())
    [0.0, 10.0]
    """
    n = X.shape[0]
    if n_local_trials is None:
        n_local_trials = 2 + int(np.log(n_clusters))
    XT = np.ascontiguousarray(X.T)
    x_sq = np.einsum("ij,ij->i", X, X)
    indices = np.empty(n_clusters, dtype=np.intp)
    indices[0] = rng.integers(n)
    closest = _trial_distances(X[indices[:1]], XT, x_sq, np.empty((1, n)))[0]
    trial = np.empty((n_local_trials, n))
    for c in range(1, n_clusters):
        potential = closest.sum()
        if potential <= 0:  # every record coincides with a centre already chosen
            candidates = rng.integers(n, size=n_local_trials)
        else:
            cumulative = np.cumsum(closest)
            candidates = np.searchsorted(cumulative, rng.uniform(size=n_local_trials) * potential)
            candidates = np.minimum(candidates, n - 1)
        _trial_distances(X[candidates], XT, x_sq, trial)
        np.minimum(trial, closest, out=trial)
        best = int(np.argmin(trial.sum(axis=1)))
        indices[c] = candidates[best]
        closest = trial[best].copy()
    return X[indices].copy(), indices


def lloyd(
    X: np.ndarray, centers: np.ndarray, max_iter: int = KMEANS_MAX_ITER, tol: float = KMEANS_TOL
) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means iterations until the labels settle, the centres move less than ``tol``
    times the mean feature variance, or ``max_iter``; an empty cluster keeps its centre.

    Each iteration is O(n K d): the nearest centres by blocked products, the cluster sums by
    counting (``bincount`` per feature).

    Parameters
    ----------
    X : ndarray of shape (n, d)
    centers : ndarray of shape (K, d)
        The starting centres.
    max_iter : int, default=300
        0: only the labels of ``centers``.
    tol : float, default=1e-4

    Returns
    -------
    centers : ndarray of shape (K, d)
    labels : ndarray of shape (n,)
        Each record's nearest centre.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[0.0], [1.0], [10.0], [11.0]])
    >>> centers, labels = lloyd(X, np.array([[0.0], [1.0]]))
    >>> centers[:, 0], labels
    (array([ 0.5, 10.5]), array([0, 0, 1, 1]))
    """
    threshold = tol * float(X.var(axis=0).mean()) if X.shape[0] else 0.0
    k = centers.shape[0]
    columns = np.ascontiguousarray(X.T)
    labels = nearest(X, centers)
    for _ in range(max_iter):
        counts = np.bincount(labels, minlength=k)
        sums = np.column_stack([np.bincount(labels, weights=column, minlength=k) for column in columns])
        new = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], centers)
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
    for every centre), by blocks of records.

    Examples
    --------
    >>> import numpy as np
    >>> nearest(np.array([[0.0], [4.0], [9.0]]), np.array([[10.0], [0.0]]))
    array([1, 1, 0])
    """
    # |c|^2/2 - x.c is (|c|^2 - 2 x.c)/2 exactly (halving is exact): the same argmin, one pass less.
    half_sq = 0.5 * np.einsum("ij,ij->i", centers, centers)
    negated = np.ascontiguousarray(-centers.T)
    labels = np.empty(X.shape[0], dtype=np.intp)
    scores = np.empty((min(DISTANCE_BLOCK, X.shape[0]), centers.shape[0]))
    for start in range(0, X.shape[0], DISTANCE_BLOCK):
        block = X[start : start + DISTANCE_BLOCK]
        part = scores[: block.shape[0]]
        np.matmul(block, negated, out=part)
        part += half_sq
        labels[start : start + DISTANCE_BLOCK] = np.argmin(part, axis=1)
    return labels


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
    empty = collapsed_components(params).size
    if empty == 0:
        return params
    nearest = _squared_distances(centred, params.means - shift, (centred**2).sum(axis=1)).min(axis=1)
    return reseed(params, stats, centred[np.argsort(nearest)[::-1][:empty]] + shift, reg_covar)[0]


def user_start(
    weights_init: Any,
    means_init: Any,
    precisions_init: Any,
    n_components: int,
    n_features: int,
    covariance_type: str,
) -> dict[str, np.ndarray]:
    """The user's ``*_init`` arrays that are given, checked against K and d, by name
    (``weights``, ``means``, ``precisions``); ``ValueError`` naming the first that is wrong.

    >>> sorted(user_start([0.5, 0.5], [[0.0], [1.0]], None, 2, 1, "full"))
    ['means', 'weights']
    """
    k, t = n_components, covariance_type
    given: dict[str, np.ndarray] = {}
    if weights_init is not None:
        w = np.asarray(weights_init, dtype=np.float64)
        if w.shape != (k,) or np.any(w < 0) or not np.isclose(w.sum(), 1.0):
            raise ValueError(f"weights_init must be {k} non-negative numbers summing to 1, got {w!r}")
        given["weights"] = w
    if means_init is not None:
        m = np.asarray(means_init, dtype=np.float64)
        if m.shape != (k, n_features) or not np.all(np.isfinite(m)):
            raise ValueError(f"means_init must be a finite array of shape {(k, n_features)}, got shape {m.shape}")
        given["means"] = m
    if precisions_init is not None:
        given["precisions"] = _user_precisions(precisions_init, k, n_features, t)
    return given


def _user_precisions(precisions_init: Any, k: int, n_features: int, t: str) -> np.ndarray:
    p = np.asarray(precisions_init, dtype=np.float64)
    shape = cov.covariance_shape(k, n_features, t)
    if p.shape != shape:
        raise ValueError(f"precisions_init for covariance_type={t!r} must have shape {shape}, got {p.shape}")
    if t in ("full", "tied") and np.all(np.isfinite(p)):
        if not np.allclose(p, np.swapaxes(p, -1, -2)):
            # A Cholesky factorisation reads one triangle and the covariance another, so an
            # asymmetric matrix would start from two different models (scikit-learn refuses it too).
            raise ValueError(f"precisions_init must be symmetric for covariance_type={t!r}")
        # Symmetric to rounding: make it exactly so (a no-op on symmetric input).
        p = 0.5 * (p + np.swapaxes(p, -1, -2))
    if not cov.is_positive_definite(p, t):
        raise ValueError(f"precisions_init must be positive definite (positive for {t!r}) and finite")
    return p


def user_start_width(weights_init: Any, means_init: Any, precisions_init: Any) -> int | None:
    """The number of features the user's ``*_init`` implies when all three are given (then
    they are the whole start, and no sample of the data is needed to find it).

    >>> user_start_width([1.0], [[0.0, 0.0]], [[[1.0, 0.0], [0.0, 1.0]]]), user_start_width(None, [[0.0]], None)
    (2, None)
    """
    if weights_init is None or means_init is None or precisions_init is None:
        return None
    shape = np.shape(means_init)
    return int(shape[1]) if len(shape) == 2 and shape[1] > 0 else None
