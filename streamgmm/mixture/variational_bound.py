"""The evidence lower bound of a variational Bayesian Gaussian mixture, and the entropy it adds.

scikit-learn's ``BayesianGaussianMixture._compute_lower_bound``: the responsibilities' entropy,
less the log-normalisers of the Wishart, Dirichlet (or stick-breaking Beta) and Gaussian
posteriors, up to scikit-learn's constant. The entropy is summed over records as they stream,
either from their log-responsibilities (:func:`responsibility_entropy`) or, where only the
statistics and log-normalisers of a chunk are known (the fused E-step kernels), from those
(:func:`entropy_from_statistics`).

References
----------
C. M. Bishop, *Pattern Recognition and Machine Learning*, Springer 2006, eq. 10.70-10.77.
D. M. Blei and M. I. Jordan, "Variational inference for Dirichlet process mixtures",
*Bayesian Analysis* 1(1), 2006.

Examples
--------
>>> import numpy as np
>>> from streamgmm.mixture.statistics import SufficientStatistics
>>> from streamgmm.mixture.variational import default_priors, log_responsibilities, posterior_from_statistics
>>> X = np.array([[0.0], [1.0], [10.0], [11.0]])
>>> stats = SufficientStatistics.from_responsibilities(X, np.repeat(np.eye(2), 2, axis=0), np.zeros(1), "diag")
>>> priors = default_priors(stats, 2, "diag")
>>> posterior = posterior_from_statistics(stats, priors, 1e-6)
>>> log_norm, log_resp = log_responsibilities(X, posterior)
>>> after = SufficientStatistics.from_responsibilities(X, np.exp(log_resp), np.zeros(1), "diag")
>>> entropy = responsibility_entropy(log_resp)
>>> bool(np.isclose(entropy, entropy_from_statistics(after, posterior, log_norm.sum())))
True
>>> round(lower_bound(posterior_from_statistics(after, priors, 1e-6), entropy), 3)
-13.134
"""

from __future__ import annotations

import math

import numpy as np

from streamgmm.mixture import covariance as cov
from streamgmm.mixture.statistics import SufficientStatistics
from streamgmm.mixture.variational import VariationalPosterior, expected_log_weights, log_density_constants


def responsibility_entropy(log_resp: np.ndarray, weights: np.ndarray | None = None) -> float:
    """-sum_i w_i sum_k r_ik log r_ik, the responsibilities' entropy the lower bound adds.

    Parameters
    ----------
    log_resp : ndarray of shape (n_records, n_components)
        The log-responsibilities.
    weights : ndarray of shape (n_records,), optional
        Record weights (None: each record once).

    Returns
    -------
    entropy : float
    """
    with np.errstate(under="ignore"):
        resp = np.exp(log_resp)
    # A responsibility of 0 (log -inf) adds nothing: 0 log 0 = 0.
    per_record = -np.where(resp > 0, resp * log_resp, 0.0).sum(axis=1)
    return float(per_record.sum() if weights is None else per_record @ weights)


def _log_wishart_norm(dof: np.ndarray, log_det_precisions_chol: np.ndarray, d: int) -> np.ndarray:
    from scipy.special import gammaln

    # The log pi term is left out, as scikit-learn's: a constant of the bound.
    return -(
        dof * log_det_precisions_chol
        + dof * d * 0.5 * math.log(2.0)
        + np.sum(gammaln(0.5 * (dof - np.arange(d)[:, None])), axis=0)
    )


def lower_bound(posterior: VariationalPosterior, entropy: float) -> float:
    """The evidence lower bound up to scikit-learn's constant (its ``_compute_lower_bound``).

    Parameters
    ----------
    posterior : VariationalPosterior
        The posterior after the M-step.
    entropy : float
        The entropy of the responsibilities that M-step was made from
        (:func:`responsibility_entropy`, summed over every record).

    Returns
    -------
    lower_bound : float
        A sum over the records, not a mean (as scikit-learn's for ``BayesianGaussianMixture``).
    """
    from scipy.special import betaln, gammaln

    d = posterior.n_features
    dof = np.asarray(posterior.degrees_of_freedom, dtype=np.float64)
    k = posterior.mean_precision.shape[0]
    log_det = cov.log_det_cholesky(posterior.precisions_cholesky, posterior.covariance_type, d) - 0.5 * d * np.log(dof)
    log_wishart = float(np.sum(_log_wishart_norm(dof, log_det, d)))
    if posterior.covariance_type == "tied":  # one Wishart shared by the K components
        log_wishart *= k
    concentration = posterior.weight_concentration
    if isinstance(concentration, tuple):
        log_norm_weight = -float(np.sum(betaln(concentration[0], concentration[1])))
    else:
        log_norm_weight = float(gammaln(np.sum(concentration)) - np.sum(gammaln(concentration)))
    return entropy - log_wishart - log_norm_weight - 0.5 * d * float(np.sum(np.log(posterior.mean_precision)))


def _scatter_about_means(stats: SufficientStatistics, means: np.ndarray) -> np.ndarray:
    """sum_i r_ik (x_i - m_k)(x_i - m_k)^T from statistics about their shift (its diagonal for
    'diag' and 'spherical', the sum over components for 'tied')."""
    delta = means - stats.shift
    s, n = stats.sums, stats.counts
    if stats.covariance_type == "full":
        cross = s[:, :, None] * delta[:, None, :]
        return (
            stats.second - cross - cross.transpose(0, 2, 1) + n[:, None, None] * np.einsum("ki,kj->kij", delta, delta)
        )
    if stats.covariance_type == "tied":
        cross = s.T @ delta
        return stats.second - cross - cross.T + (n[:, None] * delta).T @ delta
    return stats.second - 2.0 * s * delta + n[:, None] * delta**2


def expected_log_prob_sum(stats: SufficientStatistics, posterior: VariationalPosterior) -> float:
    """sum_i sum_k r_ik log rho_ik from the statistics of the responsibilities r, where log rho is
    :func:`~streamgmm.mixture.variational.weighted_log_prob`: no record is needed.

    Parameters
    ----------
    stats : SufficientStatistics
        The statistics of the records under the responsibilities (with record weights, if any).
    posterior : VariationalPosterior
        The posterior whose E-step gave the responsibilities.

    Returns
    -------
    total : float
    """
    d = posterior.n_features
    kind = posterior.covariance_type
    precisions = cov.precisions_from_cholesky(posterior.precisions_cholesky, kind)
    scatter = _scatter_about_means(stats, posterior.means)
    if kind == "full":
        mahalanobis = np.einsum("kij,kij->k", precisions, scatter)
    elif kind == "tied":
        mahalanobis = np.array([np.sum(precisions * scatter)])
    elif kind == "diag":
        mahalanobis = np.einsum("kj,kj->k", precisions, scatter)
    else:
        mahalanobis = precisions * scatter.sum(axis=1)
    log_det = cov.log_det_cholesky(posterior.precisions_cholesky, kind, d)
    constants = expected_log_weights(posterior) + log_density_constants(posterior) + log_det - 0.5 * d * cov.LOG_2PI
    return float(stats.counts @ constants - 0.5 * mahalanobis.sum())


def entropy_from_statistics(stats: SufficientStatistics, posterior: VariationalPosterior, log_norm_sum: float) -> float:
    """:func:`responsibility_entropy` from the records' statistics and summed log-normalisers.

    -sum r log r = sum_i log_norm_i - sum_ik r_ik log rho_ik, as rows of r sum to one: what the
    fused E-step kernels give (they sum statistics and return log-normalisers, not
    responsibilities). A difference of two sums over the records, so its absolute error grows
    with their number (about 1e-16 of the log-normalisers' sum).

    Parameters
    ----------
    stats : SufficientStatistics
        The statistics of the records under the responsibilities of ``posterior``.
    posterior : VariationalPosterior
        The posterior whose E-step gave them.
    log_norm_sum : float
        sum_i w_i log_norm_i, the records' weighted log-normalisers.

    Returns
    -------
    entropy : float
    """
    return float(log_norm_sum - expected_log_prob_sum(stats, posterior))
