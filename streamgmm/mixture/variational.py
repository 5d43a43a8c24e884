"""Variational Bayesian Gaussian mixtures from sufficient statistics: priors, posterior, E-step, bound.

The mathematics of scikit-learn's ``BayesianGaussianMixture`` (``sklearn/mixture/_bayesian_mixture.py``)
written as pure functions of a mixture's :class:`~streamgmm.mixture.statistics.SufficientStatistics`,
so that they work on statistics summed over a stream: the variational posterior (the M-step,
:func:`posterior_from_statistics`), the expected log-density of each record under each
component (the E-step, :func:`weighted_log_prob`) and the evidence lower bound
(:func:`streamgmm.mixture.variational_bound.lower_bound`), with the priors' defaults computed from the data's moments
(:func:`default_priors`). Covariances are normalised as scikit-learn's: ``covariances`` is the
inverse of the expected precision, so ``precisions_cholesky`` is the factor of E[Lambda_k].

The VB E-step's log-density is a Gaussian log-density under the expected precision plus one
constant per component (E[log pi_k], 1/2 E[log |Lambda_k|] and -d / (2 beta_k), less the
Gaussian's own normaliser): :func:`effective_params` packs both into a
:class:`~streamgmm.mixture.params.MixtureParams`, whose E-step then serves as the VB E-step.

References
----------
C. M. Bishop, *Pattern Recognition and Machine Learning*, Springer 2006, chapter 10.2.
D. M. Blei and M. I. Jordan, "Variational inference for Dirichlet process mixtures",
*Bayesian Analysis* 1(1), 2006.

Examples
--------
>>> import numpy as np
>>> from streamgmm.mixture.statistics import SufficientStatistics
>>> X = np.array([[-1.0, 0.0], [1.0, 0.2], [3.0, 4.0], [5.0, 4.2]])
>>> resp = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
>>> stats = SufficientStatistics.from_responsibilities(X, resp, X.mean(axis=0), "diag")
>>> priors = default_priors(stats, 2, "diag")
>>> posterior = posterior_from_statistics(stats, priors, reg_covar=1e-6)
>>> posterior.mean_precision, posterior.degrees_of_freedom
(array([3., 3.]), array([4., 4.]))
>>> log_norm, resp = e_step(X, posterior)
>>> resp.round(2)
array([[1.  , 0.  ],
       [0.98, 0.02],
       [0.04, 0.96],
       [0.01, 0.99]])
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from streamgmm.mixture import covariance as cov
from streamgmm.mixture.params import MixtureParams
from streamgmm.mixture.statistics import COUNT_EPSILON, SufficientStatistics

PRIOR_TYPES = ("dirichlet_process", "dirichlet_distribution")


@dataclass(frozen=True)
class VariationalPriors:
    """The priors of a variational Bayesian Gaussian mixture, as scikit-learn's fitted ``*_prior_``.

    Parameters
    ----------
    weight_concentration_prior_type : {'dirichlet_process', 'dirichlet_distribution'}
        A stick-breaking (truncated Dirichlet process) or a Dirichlet prior on the weights.
    weight_concentration_prior : float
        The concentration gamma_0 (alpha_0 for a Dirichlet distribution).
    mean_precision_prior : float
        beta_0, the prior's precision of the means relative to the covariances.
    mean_prior : ndarray of shape (n_features,)
        m_0, the prior mean of the means.
    degrees_of_freedom_prior : float
        nu_0, the Wishart prior's degrees of freedom, above n_features - 1.
    covariance_prior : ndarray or float
        The prior covariance: (n_features, n_features) for 'full' and 'tied', (n_features,)
        for 'diag', a float for 'spherical'.
    """

    weight_concentration_prior_type: str
    weight_concentration_prior: float
    mean_precision_prior: float
    mean_prior: np.ndarray
    degrees_of_freedom_prior: float
    covariance_prior: np.ndarray | float


@dataclass(frozen=True)
class VariationalPosterior:
    """The variational posterior, with scikit-learn's fitted attributes (without the trailing ``_``).

    Parameters
    ----------
    covariance_type : {'full', 'tied', 'diag', 'spherical'}
        The form of the covariances.
    weight_concentration : ndarray of shape (n_components,), or a pair of them
        The Dirichlet's parameters, or for a Dirichlet process the Beta parameters of each stick.
    mean_precision : ndarray of shape (n_components,)
        beta_k.
    means : ndarray of shape (n_components, n_features)
        m_k, the posterior means of the means.
    degrees_of_freedom : ndarray of shape (n_components,), or float for 'tied'
        nu_k.
    covariances : ndarray
        The inverses of the expected precisions (scikit-learn's normalised ``covariances_``).
    precisions_cholesky : ndarray
        Their Cholesky factors, as :mod:`streamgmm.mixture.covariance` keeps them.
    """

    covariance_type: str
    weight_concentration: np.ndarray | tuple[np.ndarray, np.ndarray]
    mean_precision: np.ndarray
    means: np.ndarray
    degrees_of_freedom: np.ndarray | float
    covariances: np.ndarray
    precisions_cholesky: np.ndarray

    @property
    def n_features(self) -> int:
        """The number of features d."""
        return self.means.shape[1]


# --------------------------------------------------------------------------- priors


def data_moments(stats: SufficientStatistics) -> tuple[float, np.ndarray, np.ndarray]:
    """The weight, mean and unbiased covariance of the records behind statistics.

    The responsibilities of each record must sum to one (any number of components). For 'diag'
    and 'spherical' statistics only the diagonal of the covariance is known: it is returned as
    a vector of variances.

    Parameters
    ----------
    stats : SufficientStatistics
        Statistics of the records.

    Returns
    -------
    n : float
        The records' total weight (the counts' sum).
    mean : ndarray of shape (n_features,)
        Their mean.
    covariance : ndarray of shape (n_features, n_features), or (n_features,) of variances
        Their covariance with ``n - 1`` in the denominator, as ``np.cov`` (record weights are
        counted as repetitions).

    Examples
    --------
    >>> X = np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 8.0]])
    >>> stats = SufficientStatistics.from_responsibilities(X, np.ones((3, 1)), np.zeros(2), "full")
    >>> n, mean, covariance = data_moments(stats)
    >>> bool(np.allclose(covariance, np.cov(X.T))), mean
    (True, array([2., 4.]))
    """
    n = float(stats.counts.sum())  # the records' weight, however the statistics were summed
    centred_mean = stats.sums.sum(axis=0) / n
    if stats.covariance_type in ("full", "diag", "spherical"):
        second = stats.second.sum(axis=0)
    else:
        second = stats.second
    if stats.covariance_type in ("full", "tied"):
        scatter = second - n * np.outer(centred_mean, centred_mean)
        scatter = 0.5 * (scatter + scatter.T)
    else:
        scatter = second - n * centred_mean**2
    return n, stats.shift + centred_mean, scatter / (n - 1.0)


def default_priors(
    stats: SufficientStatistics,
    n_components: int,
    covariance_type: str,
    weight_concentration_prior_type: str = "dirichlet_process",
    weight_concentration_prior: float | None = None,
    mean_precision_prior: float | None = None,
    mean_prior: np.ndarray | None = None,
    degrees_of_freedom_prior: float | None = None,
    covariance_prior: np.ndarray | float | None = None,
) -> VariationalPriors:
    """Fill the priors left as None with scikit-learn's defaults, computed from data's statistics.

    1 / n_components for the concentration, 1 for the mean precision, the data's mean, n_features
    degrees of freedom and the data's covariance (its variances for 'diag', their mean for
    'spherical'), as ``BayesianGaussianMixture._check_parameters``.

    Parameters
    ----------
    stats : SufficientStatistics
        Statistics of the data (see :func:`data_moments`); for 'full' and 'tied' priors they
        must hold full second moments ('full' or 'tied' statistics).
    n_components : int
        The number of components K.
    covariance_type : {'full', 'tied', 'diag', 'spherical'}
        The form of the covariances.
    weight_concentration_prior_type, weight_concentration_prior, mean_precision_prior, mean_prior, \
degrees_of_freedom_prior, covariance_prior
        As :class:`VariationalPriors`; None takes the default.

    Returns
    -------
    priors : VariationalPriors

    Raises
    ------
    ValueError
        For an unknown prior type, ``degrees_of_freedom_prior`` not above n_features - 1, or
        statistics without the full second moments a 'full' or 'tied' prior needs.
    """
    if weight_concentration_prior_type not in PRIOR_TYPES:
        raise ValueError(
            f"Invalid value for 'weight_concentration_prior_type': {weight_concentration_prior_type!r}; "
            f"expected one of {', '.join(PRIOR_TYPES)}"
        )
    d = stats.n_features
    if degrees_of_freedom_prior is not None and not degrees_of_freedom_prior > d - 1.0:
        raise ValueError(
            f"The parameter 'degrees_of_freedom_prior' should be greater than {d - 1}, "
            f"but got {degrees_of_freedom_prior:.3f}."
        )
    _, mean, covariance = data_moments(stats)
    if covariance_prior is None:
        if covariance_type in ("full", "tied"):
            if covariance.ndim != 2:
                raise ValueError(f"a {covariance_type} covariance prior needs full second moments of the data")
            covariance_prior = covariance
        else:
            variances = np.diagonal(covariance).copy() if covariance.ndim == 2 else covariance
            covariance_prior = variances if covariance_type == "diag" else float(variances.mean())
    return VariationalPriors(
        weight_concentration_prior_type,
        1.0 / n_components if weight_concentration_prior is None else float(weight_concentration_prior),
        1.0 if mean_precision_prior is None else float(mean_precision_prior),
        mean if mean_prior is None else np.asarray(mean_prior, dtype=np.float64),
        float(d) if degrees_of_freedom_prior is None else float(degrees_of_freedom_prior),
        covariance_prior,
    )


# --------------------------------------------------------------------------- the M-step


def _weight_concentration(nk: np.ndarray, priors: VariationalPriors) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    if priors.weight_concentration_prior_type == "dirichlet_process":
        # Each stick's Beta: its own count, and the concentration plus the counts after it.
        after = np.hstack((np.cumsum(nk[::-1])[-2::-1], 0))
        return 1.0 + nk, priors.weight_concentration_prior + after
    return priors.weight_concentration_prior + nk


# Each Wishart posterior takes the counts N_k, x_k - m_0, the covariances S_k, the priors and
# beta_k, and gives nu_k and scikit-learn's covariances (W_k^-1 / nu_k, Bishop eq. 10.62).


def _wishart_full(nk, diff, sk, priors, beta):
    dof = priors.degrees_of_freedom_prior + nk
    scale = nk * priors.mean_precision_prior / beta
    covariances = (
        priors.covariance_prior + nk[:, None, None] * sk + scale[:, None, None] * np.einsum("ki,kj->kij", diff, diff)
    )
    return dof, covariances / dof[:, None, None]


def _wishart_tied(nk, diff, sk, priors, beta):
    k = nk.shape[0]
    dof = priors.degrees_of_freedom_prior + nk.sum() / k
    spread = priors.mean_precision_prior / k * np.dot((nk / beta) * diff.T, diff)
    return dof, (priors.covariance_prior + sk * nk.sum() / k + spread) / dof


def _wishart_diag(nk, diff, sk, priors, beta):
    dof = priors.degrees_of_freedom_prior + nk
    covariances = priors.covariance_prior + nk[:, None] * (sk + (priors.mean_precision_prior / beta)[:, None] * diff**2)
    return dof, covariances / dof[:, None]


def _wishart_spherical(nk, diff, sk, priors, beta):
    dof = priors.degrees_of_freedom_prior + nk
    spread = priors.mean_precision_prior / beta * np.mean(diff**2, axis=1)
    return dof, (priors.covariance_prior + nk * (sk + spread)) / dof


WISHART: dict[str, Callable[..., tuple[np.ndarray | float, np.ndarray]]] = {
    "full": _wishart_full,
    "tied": _wishart_tied,
    "diag": _wishart_diag,
    "spherical": _wishart_spherical,
}


def posterior_from_statistics(
    stats: SufficientStatistics, priors: VariationalPriors, reg_covar: float
) -> VariationalPosterior:
    """Run the variational M-step: the posterior that statistics of responsibilities give.

    As scikit-learn's ``BayesianGaussianMixture._m_step`` (Bishop 2006, eqs. 10.58-10.63, with
    its normalised covariances): the counts N_k (plus scikit-learn's 10 eps), the means x_k and
    the covariances S_k (plus ``reg_covar``) of the records under the responsibilities, then
    the Dirichlet (or stick-breaking Beta), Gaussian and Wishart posteriors.

    Parameters
    ----------
    stats : SufficientStatistics
        The summed statistics of every record under the responsibilities.
    priors : VariationalPriors
    reg_covar : float
        Non-negative regularisation added to the diagonals of S_k.

    Returns
    -------
    posterior : VariationalPosterior

    Raises
    ------
    numpy.linalg.LinAlgError
        If a posterior covariance is not positive definite.

    Examples
    --------
    >>> X = np.array([[0.0], [1.0], [10.0], [11.0]])
    >>> stats = SufficientStatistics.from_responsibilities(X, np.repeat(np.eye(2), 2, axis=0), np.zeros(1), "spherical")
    >>> priors = default_priors(stats, 2, "spherical", "dirichlet_distribution")
    >>> posterior = posterior_from_statistics(stats, priors, 1e-6)
    >>> posterior.weight_concentration, posterior.means.round(3)
    (array([2.5, 2.5]), array([[2.167],
           [8.833]]))
    """
    nk = stats.counts + COUNT_EPSILON
    centred = stats.sums / nk[:, None]
    sk = cov.covariances_from_moments(nk, centred, stats.second, reg_covar, stats.covariance_type)
    xk = centred + stats.shift
    beta = priors.mean_precision_prior + nk
    means = (priors.mean_precision_prior * priors.mean_prior + nk[:, None] * xk) / beta[:, None]
    dof, covariances = WISHART[stats.covariance_type](nk, xk - priors.mean_prior, sk, priors, beta)
    return VariationalPosterior(
        stats.covariance_type,
        _weight_concentration(nk, priors),
        beta,
        means,
        dof,
        covariances,
        cov.precisions_cholesky(covariances, stats.covariance_type),
    )


# --------------------------------------------------------------------------- the E-step


def expected_log_weights(posterior: VariationalPosterior) -> np.ndarray:
    """E[log pi_k] under the posterior of the weights (scikit-learn's ``_estimate_log_weights``).

    Parameters
    ----------
    posterior : VariationalPosterior

    Returns
    -------
    log_weights : ndarray of shape (n_components,)
    """
    from scipy.special import digamma  # here, not at the top: scipy is slow to import

    concentration = posterior.weight_concentration
    if isinstance(concentration, tuple):  # stick-breaking: E[log v_k] + sum_{j<k} E[log(1 - v_j)]
        digamma_sum = digamma(concentration[0] + concentration[1])
        digamma_b = digamma(concentration[1])
        return digamma(concentration[0]) - digamma_sum + np.hstack((0, np.cumsum(digamma_b - digamma_sum)[:-1]))
    return digamma(concentration) - digamma(np.sum(concentration))


def log_density_constants(posterior: VariationalPosterior) -> np.ndarray:
    """What the VB log-density adds to the Gaussian one under the expected precision, per component.

    1/2 E[log |Lambda_k|] - d/2 log nu_k - d / (2 beta_k), the first two less the Gaussian's own
    log-determinant (scikit-learn's ``_estimate_log_prob`` less ``_estimate_log_gaussian_prob``).

    Parameters
    ----------
    posterior : VariationalPosterior

    Returns
    -------
    constants : ndarray of shape (n_components,)
    """
    from scipy.special import digamma

    d = posterior.n_features
    dof = np.asarray(posterior.degrees_of_freedom, dtype=np.float64)
    log_lambda = d * np.log(2.0) + np.sum(digamma(0.5 * (dof - np.arange(d)[:, None])), axis=0)
    return -0.5 * d * np.log(dof) + 0.5 * (log_lambda - d / posterior.mean_precision)


def weighted_log_prob(X: np.ndarray, posterior: VariationalPosterior) -> np.ndarray:
    """E[log pi_k] + E[log N(x_i | mu_k, Lambda_k^-1)] up to scikit-learn's constant, (n_records, K).

    Parameters
    ----------
    X : ndarray of shape (n_records, n_features)
        The records.
    posterior : VariationalPosterior

    Returns
    -------
    weighted_log_prob : ndarray of shape (n_records, n_components)
        scikit-learn's ``_estimate_weighted_log_prob``.
    """
    log_gauss = cov.log_gaussian_prob(X, posterior.means, posterior.precisions_cholesky, posterior.covariance_type)
    return log_gauss + (log_density_constants(posterior) + expected_log_weights(posterior))


def effective_params(posterior: VariationalPosterior) -> tuple[MixtureParams, float]:
    """A Gaussian mixture whose E-step is the VB E-step: its weighted log-densities are
    :func:`weighted_log_prob` less a constant.

    The means and expected precisions of the posterior, with weights exp(c_k - max c) for the
    per-component constants c_k (E[log pi_k] and :func:`log_density_constants`): the weights
    need not sum to one, and taken relative to the largest they cannot overflow. A component
    whose weight underflows (c_k more than 745 below the largest) has responsibility 0.

    Parameters
    ----------
    posterior : VariationalPosterior

    Returns
    -------
    params : MixtureParams
        The mixture; its responsibilities are the VB responsibilities.
    offset : float
        max c: what to add to its log-likelihoods to give the VB log-normalisers.

    Examples
    --------
    >>> X = np.array([[0.0], [1.0], [10.0], [11.0]])
    >>> stats = SufficientStatistics.from_responsibilities(X, np.repeat(np.eye(2), 2, axis=0), np.zeros(1), "full")
    >>> posterior = posterior_from_statistics(stats, default_priors(stats, 2, "full"), 1e-6)
    >>> params, offset = effective_params(posterior)
    >>> bool(np.allclose(params.log_likelihood(X) + offset, e_step(X, posterior)[0]))
    True
    """
    constants = log_density_constants(posterior) + expected_log_weights(posterior)
    offset = float(constants.max())
    with np.errstate(under="ignore"):
        weights = np.exp(constants - offset)
    params = MixtureParams(
        weights, posterior.means, posterior.covariances, posterior.precisions_cholesky, posterior.covariance_type
    )
    return params, offset


def e_step(X: np.ndarray, posterior: VariationalPosterior) -> tuple[np.ndarray, np.ndarray]:
    """Run the VB E-step: each record's log-normaliser and its responsibilities.

    :func:`log_responsibilities`, with the responsibilities out of their logs.
    """
    log_norm, log_resp = log_responsibilities(X, posterior)
    return log_norm, np.exp(log_resp)


def log_responsibilities(X: np.ndarray, posterior: VariationalPosterior) -> tuple[np.ndarray, np.ndarray]:
    """The VB E-step in logs: each record's log-normaliser and its log-responsibilities.

    Parameters
    ----------
    X : ndarray of shape (n_records, n_features)
        The records.
    posterior : VariationalPosterior

    Returns
    -------
    log_norm : ndarray of shape (n_records,)
    log_resp : ndarray of shape (n_records, n_components)
    """
    from scipy.special import logsumexp

    weighted = weighted_log_prob(X, posterior)
    log_norm = logsumexp(weighted, axis=1)
    with np.errstate(under="ignore"):
        return log_norm, weighted - log_norm[:, None]


def posterior_weights(posterior: VariationalPosterior) -> np.ndarray:
    """The expected weights, scikit-learn's ``weights_``.

    Parameters
    ----------
    posterior : VariationalPosterior

    Returns
    -------
    weights : ndarray of shape (n_components,)
        Summing to one.
    """
    concentration = posterior.weight_concentration
    if isinstance(concentration, tuple):
        total = concentration[0] + concentration[1]
        weights = concentration[0] / total * np.hstack((1, np.cumprod((concentration[1] / total)[:-1])))
        return weights / np.sum(weights)
    return concentration / np.sum(concentration)
