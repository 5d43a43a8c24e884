"""Synthetic mixtures with known generating parameters, for demos, tests and benchmarks."""

from __future__ import annotations

import numpy as np

from streamgmm.mixture import covariance as cov
from streamgmm.mixture.params import MixtureParams


def random_mixture(
    n_components: int,
    n_features: int,
    *,
    covariance_type: str = "full",
    separation: float = 9.0,
    condition: float = 10.0,
    random_state: int | None = None,
) -> MixtureParams:
    """Draw the parameters of a random, well-separated Gaussian mixture.

    No two means are closer than ``separation``, packed as tightly as that allows; each
    covariance has eigenvalues spread log-uniformly over ``condition`` (largest / smallest)
    around a geometric mean of 1, so ``separation`` is in units of the typical standard
    deviation. The weights are drawn from a Dirichlet distribution.

    Parameters
    ----------
    n_components : int
        The number of components K.

    n_features : int
        The number of features d.

    covariance_type : {'full', 'tied', 'diag', 'spherical'}, default='full'
        The form of the covariances.

    separation : float, default=9.0
        The smallest distance between two means.

    condition : float, default=10.0
        The ratio of each covariance's largest eigenvalue to its smallest.

    random_state : int or None, default=None
        Seed of the draw.

    Returns
    -------
    params : MixtureParams
        Weights of shape (n_components,), means of shape (n_components, n_features), and
        covariances shaped as ``covariance_type`` says.

    Examples
    --------
    >>> from streamgmm import random_mixture
    >>> params = random_mixture(3, 2, random_state=0)
    >>> params.means.shape, params.covariances.shape
    ((3, 2), (3, 2, 2))
    """
    cov.check_covariance_type(covariance_type)
    rng = np.random.default_rng(random_state)
    k, d = n_components, n_features
    means = np.empty((k, d))
    radius = separation / 2
    placed = 0
    for _ in range(100000):
        candidate = rng.uniform(-radius, radius, size=d)
        if placed == 0 or np.min(np.linalg.norm(means[:placed] - candidate, axis=1)) >= separation:
            means[placed] = candidate
            placed += 1
            if placed == k:
                break
        else:
            radius *= 1.002
    weights = rng.dirichlet(np.full(k, 5.0))

    def spectrum() -> np.ndarray:
        half = 0.5 * np.log(condition)
        return np.exp(rng.uniform(-half, half, size=d)) if d > 1 else np.ones(1)

    from scipy.stats import ortho_group  # scipy.stats is slow to import: only when data is made

    def rotated(eigs: np.ndarray) -> np.ndarray:
        q = ortho_group.rvs(d, random_state=rng) if d > 1 else np.ones((1, 1))
        c = (q * eigs) @ q.T
        return 0.5 * (c + c.T)

    if covariance_type == "full":
        covariances = np.stack([rotated(spectrum()) for _ in range(k)])
    elif covariance_type == "tied":
        covariances = rotated(spectrum())
    elif covariance_type == "diag":
        covariances = np.stack([spectrum() for _ in range(k)])
    else:
        covariances = np.exp(rng.uniform(-0.5 * np.log(condition), 0.5 * np.log(condition), size=k))
    return MixtureParams.from_covariances(weights, means, covariances, covariance_type)


def sample_mixture(
    params: MixtureParams, n_records: int, *, random_state: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Draw records from a mixture, in random order.

    Parameters
    ----------
    params : MixtureParams
        The mixture to draw from.

    n_records : int
        The number of records.

    random_state : int or None, default=None
        Seed of the draw.

    Returns
    -------
    X : ndarray of shape (n_records, n_features)
        The records.

    labels : ndarray of shape (n_records,)
        The component each record was drawn from.

    Examples
    --------
    >>> from streamgmm import random_mixture, sample_mixture
    >>> X, labels = sample_mixture(random_mixture(3, 2, random_state=0), 5, random_state=0)
    >>> X.shape, labels.shape
    ((5, 2), (5,))
    """
    rng = np.random.default_rng(random_state)
    labels = rng.choice(params.n_components, size=n_records, p=params.weights / params.weights.sum())
    d = params.n_features
    X = rng.standard_normal((n_records, d))
    for k in range(params.n_components):
        rows = labels == k
        if params.covariance_type == "full":
            factor = np.linalg.cholesky(params.covariances[k])
        elif params.covariance_type == "tied":
            factor = np.linalg.cholesky(params.covariances)
        elif params.covariance_type == "diag":
            factor = np.diag(np.sqrt(params.covariances[k]))
        else:
            factor = np.eye(d) * np.sqrt(params.covariances[k])
        X[rows] = X[rows] @ factor.T + params.means[k]
    return X, labels


def make_mixture(
    n_records: int,
    n_components: int,
    n_features: int,
    *,
    covariance_type: str = "full",
    separation: float = 9.0,
    condition: float = 10.0,
    random_state: int | None = None,
) -> tuple[np.ndarray, np.ndarray, MixtureParams]:
    """Draw records from a random, well-separated mixture.

    :func:`random_mixture` then :func:`sample_mixture`, each seeded from ``random_state``.

    Parameters
    ----------
    n_records : int
        The number of records.

    n_components : int
        The number of components K.

    n_features : int
        The number of features d.

    covariance_type : {'full', 'tied', 'diag', 'spherical'}, default='full'
        The form of the covariances.

    separation : float, default=9.0
        The smallest distance between two means (see :func:`random_mixture`).

    condition : float, default=10.0
        The ratio of each covariance's largest eigenvalue to its smallest.

    random_state : int or None, default=None
        Seed of the parameters and of the records.

    Returns
    -------
    X : ndarray of shape (n_records, n_features)
        The records, in random order.

    labels : ndarray of shape (n_records,)
        The component each record was drawn from.

    true_params : MixtureParams
        The generating parameters.

    Examples
    --------
    >>> from streamgmm import make_mixture
    >>> X, labels, true_params = make_mixture(100, n_components=3, n_features=2, random_state=0)
    >>> X.shape, labels.shape, true_params.n_components
    ((100, 2), (100,), 3)
    """
    seeds = np.random.SeedSequence(random_state).spawn(2)
    params = random_mixture(
        n_components,
        n_features,
        covariance_type=covariance_type,
        separation=separation,
        condition=condition,
        random_state=int(seeds[0].generate_state(1)[0]),
    )
    X, labels = sample_mixture(params, n_records, random_state=int(seeds[1].generate_state(1)[0]))
    return X, labels, params


def match_components(true_means: np.ndarray, fitted_means: np.ndarray) -> np.ndarray:
    """For each true component, the fitted one that corresponds to it: the assignment with the
    smallest total squared distance between means (fitted components come in any order)."""
    from scipy.optimize import linear_sum_assignment  # only here: slow to import

    cost = ((true_means[:, None, :] - fitted_means[None, :, :]) ** 2).sum(-1)
    return linear_sum_assignment(cost)[1]
