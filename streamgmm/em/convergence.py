"""Convergence of exact EM: scikit-learn's warning when EM stops at ``max_iter``."""

from __future__ import annotations

import functools
import sys
import warnings

# scikit-learn's words for EM stopped at max_iter: code written for GaussianMixture matches them.
UNCONVERGED = (
    "Best performing initialization did not converge. Try different init parameters, or increase max_iter, "
    "tol, or check for degenerate data."
)


class ConvergenceWarning(UserWarning):
    """Warning that exact EM stopped at ``max_iter`` before the log-likelihood settled within ``tol``.

    When scikit-learn is imported, the warning issued also subclasses
    ``sklearn.exceptions.ConvergenceWarning``, so filters written for scikit-learn apply.

    Examples
    --------
    >>> import warnings
    >>> import numpy as np
    >>> from streamgmm import ConvergenceWarning, StreamingGaussianMixture
    >>> X = np.random.default_rng(0).normal(size=(200, 2))
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     _ = StreamingGaussianMixture(3, max_iter=1, tol=0.0, random_state=0).fit(X)
    >>> any(issubclass(w.category, ConvergenceWarning) for w in caught)
    True
    """


def convergence_warning_class() -> type[UserWarning]:
    """streamgmm's ``ConvergenceWarning``, and scikit-learn's too when scikit-learn is in use:
    code that already imported it filters or catches ``sklearn.exceptions.ConvergenceWarning``."""
    sklearn_exceptions = sys.modules.get("sklearn.exceptions")
    if sklearn_exceptions is None:
        return ConvergenceWarning
    return _with_sklearn_warning(sklearn_exceptions.ConvergenceWarning)


@functools.cache
def _with_sklearn_warning(sklearn_warning: type) -> type[UserWarning]:
    return type("ConvergenceWarning", (ConvergenceWarning, sklearn_warning), {"__module__": __name__})


def warn_unconverged(converged: bool, max_iter: int, stacklevel: int = 2) -> None:
    """Warn (:func:`convergence_warning_class`) unless EM converged; as scikit-learn, not with
    ``max_iter=0``, where the start is all that was asked for."""
    if not converged and max_iter > 0:
        warnings.warn(UNCONVERGED, convergence_warning_class(), stacklevel=stacklevel + 1)
