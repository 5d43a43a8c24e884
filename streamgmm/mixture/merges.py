"""Merging two components of a mixture, and what a merge costs, from their statistics.

Counts, sums and second moments add, so the statistics of two components merged into one are
exact: they are the statistics that component would have had if every record of either had been
given to it. With N_a, N_b the components' counts, Sigma_a, Sigma_b their covariances, Sigma_ab
the merged one and H the binary entropy, a merge changes the expected complete-data
log-likelihood by -q_ab, in closed form (:func:`merge_costs`):

    q_ab = 1/2 [N_ab log|Sigma_ab| - N_a log|Sigma_a| - N_b log|Sigma_b|] - N_ab H(N_a / N_ab)

and the log-likelihood itself by -(q_ab + h_ab), where h_ab is the entropy of the two
components' shared responsibilities (the posterior uncertainty between a and b, which the merge
removes): 0 for components far apart, N_ab H(N_a / N_ab) for identical ones. The data behind the
statistics are gone, so :func:`shared_entropy` estimates h_ab under the mixture itself, from
records drawn from each component (seeded). For tied covariances the shared covariance grows by
the pair's between-component scatter, and every record pays for it.

Examples
--------
>>> import numpy as np
>>> from streamgmm import MixtureParams, SufficientStatistics
>>> params = MixtureParams.from_covariances(
...     np.array([0.25, 0.25, 0.5]), np.array([[0.0], [0.0], [10.0]]), np.ones((3, 1)), "diag"
... )
>>> stats = SufficientStatistics.from_params(params, np.zeros(1))
>>> loss = merge_costs(stats, 0.0) + shared_entropy(params, stats.counts, np.random.default_rng(0))
>>> round(float(loss[0, 1]), 6), round(float(loss[0, 2]), 2)
(0.0, 0.7)
>>> cheapest_pair(loss)
(0, 1)
>>> merge_components(stats, 0, 1).counts
array([0.5, 0. , 0.5])
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from streamgmm.mixture import covariance as cov
from streamgmm.mixture.params import MixtureParams
from streamgmm.mixture.statistics import COUNT_EPSILON, SufficientStatistics


def _log_dets(covariances: np.ndarray, covariance_type: str, n_features: int) -> np.ndarray:
    """log |Sigma| of each covariance in a stack (a single one for 'tied')."""
    if covariance_type in ("full", "tied"):
        sign, logdet = np.linalg.slogdet(covariances)
        return np.where(sign > 0, logdet, -np.inf)
    if covariance_type == "diag":
        return np.log(covariances).sum(axis=-1)
    return n_features * np.log(covariances)


def _covariances(counts: np.ndarray, sums: np.ndarray, second: np.ndarray, reg_covar: float, kind: str) -> np.ndarray:
    nk = counts + COUNT_EPSILON
    return cov.covariances_from_moments(nk, sums / nk[:, None], second, reg_covar, kind)


def merge_costs(stats: SufficientStatistics, reg_covar: float) -> np.ndarray:
    """The expected complete-data log-likelihood each merge of two components loses, q_ab of
    the module docstring.

    Parameters
    ----------
    stats : SufficientStatistics
        The mixture's statistics.

    reg_covar : float
        The regularisation the M-step adds to covariance diagonals.

    Returns
    -------
    costs : ndarray of shape (n_components, n_components)
        ``costs[a, b]`` for a != b, in the units of ``stats.counts`` (negative where the merge
        gains); the diagonal is +inf.
    """
    k, d, kind = stats.n_components, stats.n_features, stats.covariance_type
    a, b = np.triu_indices(k, 1)
    costs = np.full((k, k), np.inf)
    if a.size == 0:
        return costs
    n_pair = stats.counts[a] + stats.counts[b]
    sums_pair = stats.sums[a] + stats.sums[b]
    if kind == "tied":
        nk = stats.counts + COUNT_EPSILON
        means = stats.sums / nk[:, None]
        total = nk.sum()
        tied = cov.covariances_from_moments(nk, means, stats.second, reg_covar, kind)
        diff = means[a] - means[b]
        between = (nk[a] * nk[b] / (nk[a] + nk[b]))[:, None, None] * diff[:, :, None] * diff[:, None, :]
        grown = tied[None] + between / total
        upper = 0.5 * total * (_log_dets(grown, kind, d) - _log_dets(tied, kind, d))
    else:
        own = _log_dets(_covariances(stats.counts, stats.sums, stats.second, reg_covar, kind), kind, d)
        merged = _log_dets(_covariances(n_pair, sums_pair, stats.second[a] + stats.second[b], reg_covar, kind), kind, d)
        upper = 0.5 * (n_pair * merged - stats.counts[a] * own[a] - stats.counts[b] * own[b])
    # Rounding can make the log-determinant term of near-identical components a hair negative.
    costs[a, b] = costs[b, a] = np.maximum(upper, 0.0) - n_pair * _binary_entropy(stats.counts[a], n_pair)
    return costs


def _binary_entropy(part: np.ndarray, whole: np.ndarray) -> np.ndarray:
    p = np.clip(np.divide(part, whole, out=np.zeros_like(part), where=whole > 0), 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.nan_to_num(p * np.log(p)) - np.nan_to_num((1 - p) * np.log1p(-p))


def shared_entropy(params: MixtureParams, counts: np.ndarray, rng: np.random.Generator, draws: int = 64) -> np.ndarray:
    """Estimate the entropy of each pair's shared responsibilities, h_ab of the module docstring.

    ``draws`` records are drawn from each component; for a record x of component a,
    r = pi_a N_a(x) / (pi_a N_a(x) + pi_b N_b(x)) is the share of a within the pair, and
    h_ab = N_a E_a[H(r)] + N_b E_b[H(r)].

    Parameters
    ----------
    params : MixtureParams
        The mixture.

    counts : ndarray of shape (n_components,)
        Each component's count N_k.

    rng : numpy.random.Generator
        The draws' generator.

    draws : int, default=64
        Records drawn from each component.

    Returns
    -------
    entropy : ndarray of shape (n_components, n_components)
        Symmetric, in the units of ``counts``, with a zero diagonal.
    """
    k, d = params.n_components, params.n_features
    z = rng.standard_normal((k, draws, d))
    covariances = params.covariances
    if params.covariance_type == "full":
        points = params.means[:, None, :] + np.einsum("kij,knj->kni", np.linalg.cholesky(covariances), z)
    elif params.covariance_type == "tied":
        points = params.means[:, None, :] + z @ np.linalg.cholesky(covariances).T
    elif params.covariance_type == "diag":
        points = params.means[:, None, :] + z * np.sqrt(covariances)[:, None, :]
    else:
        points = params.means[:, None, :] + z * np.sqrt(covariances)[:, None, None]
    log_prob = params.weighted_log_prob(points.reshape(k * draws, d)).reshape(k, draws, k)
    # share[a, n, b]: the share of a, within the pair (a, b), of the n-th draw from a.
    own = np.take_along_axis(log_prob, np.arange(k)[:, None, None], axis=2)
    with np.errstate(invalid="ignore"):
        share = np.exp(own - np.logaddexp(own, log_prob))
    share = np.nan_to_num(share, nan=1.0)
    expected = _binary_entropy(share, np.ones_like(share)).mean(axis=1)  # (a, b): E_a[H(r_ab)]
    entropy = counts[:, None] * expected
    entropy = entropy + entropy.T
    np.fill_diagonal(entropy, 0.0)
    return entropy


def expected_log_likelihood(
    stats: SufficientStatistics, params: MixtureParams, log_weights: np.ndarray | None = None
) -> float:
    """The expected complete-data log-likelihood of the records behind ``stats`` under
    ``params``, in closed form from the statistics:

        Q = sum_k N_k [log pi_k - 1/2 (d log 2 pi + log|Sigma_k|)] - 1/2 sum_k tr(Sigma_k^-1 S_k)

    with S_k the second moment of component k's records about mu_k (for 'tied', their sum).

    Parameters
    ----------
    stats : SufficientStatistics
        The records' statistics (their responsibilities fixed).

    params : MixtureParams
        The parameters to score them under.

    log_weights : ndarray of shape (n_components,), optional
        log pi_k to use instead of the log of ``params.weights``.

    Returns
    -------
    Q : float
        In the units of ``stats.counts``.
    """
    kind, d = stats.covariance_type, stats.n_features
    nk, s = stats.counts, stats.sums
    diff = params.means - stats.shift
    precisions = params.precisions
    if kind == "full":
        outer = s[:, :, None] * diff[:, None, :]
        centred = (
            stats.second - outer - outer.transpose(0, 2, 1) + nk[:, None, None] * diff[:, :, None] * diff[:, None, :]
        )
        trace = np.einsum("kij,kji->k", precisions, centred)
    elif kind == "tied":
        outer = s.T @ diff
        centred = stats.second - outer - outer.T + (nk[:, None] * diff).T @ diff
        trace = np.trace(precisions @ centred)
    else:
        centred = stats.second - 2.0 * s * diff + nk[:, None] * diff**2
        trace = (precisions * centred).sum(axis=1) if kind == "diag" else precisions * centred.sum(axis=1)
    if log_weights is None:
        with np.errstate(divide="ignore"):
            log_weights = np.log(params.weights)
    half_log_det = cov.log_det_cholesky(params.precisions_cholesky, kind, d)  # -1/2 log|Sigma_k|
    per_component = nk * (log_weights + half_log_det - 0.5 * d * np.log(2 * np.pi))
    # A component no record weighs on adds nothing, whatever its weight.
    return float(np.sum(np.where(nk > 0, per_component, 0.0)) - 0.5 * np.sum(trace))


def cheapest_pair(costs: np.ndarray) -> tuple[int, int]:
    """The pair ``(a, b)``, a < b, of least cost (the first in row order on ties)."""
    flat = int(np.argmin(np.where(np.isnan(costs), np.inf, costs)))
    a, b = divmod(flat, costs.shape[1])
    return (a, b) if a < b else (b, a)


def merge_components(stats: SufficientStatistics, a: int, b: int) -> SufficientStatistics:
    """The statistics with component ``b`` merged into ``a``: ``a`` holds both, ``b`` none.

    For 'tied' the second moment is a total over all records and does not change.
    """
    counts, sums, second = stats.counts.copy(), stats.sums.copy(), stats.second.copy()
    counts[a] += counts[b]
    sums[a] += sums[b]
    counts[b] = 0.0
    sums[b] = 0.0
    if stats.covariance_type != "tied":
        second[a] += second[b]
        second[b] = 0.0
    return replace(stats, counts=counts, sums=sums, second=second)
