"""The error a method needing a fitted model raises: scikit-learn's, when scikit-learn is in use."""

from __future__ import annotations

import functools
import sys


class NotFittedError(ValueError, AttributeError):
    """Exception raised when a method needs a fitted model.

    It has the bases of scikit-learn's (``ValueError`` and ``AttributeError``), and, when
    scikit-learn is imported, the error raised also subclasses
    ``sklearn.exceptions.NotFittedError``.

    Examples
    --------
    >>> from streamgmm import NotFittedError, StreamingGaussianMixture
    >>> try:
    ...     StreamingGaussianMixture().predict([[0.0, 0.0]])
    ... except NotFittedError as error:
    ...     print(type(error).__name__)
    NotFittedError
    """


def not_fitted_error(message: str) -> NotFittedError:
    """A ``NotFittedError`` that is also scikit-learn's when scikit-learn is in use.

    streamgmm does not import scikit-learn; but code that already has (model selection, the
    estimator checks) catches ``sklearn.exceptions.NotFittedError``, so the error subclasses it
    then."""
    sklearn_exceptions = sys.modules.get("sklearn.exceptions")
    if sklearn_exceptions is None:
        return NotFittedError(message)
    return _with_sklearn_base(sklearn_exceptions.NotFittedError)(message)


@functools.cache
def _with_sklearn_base(sklearn_not_fitted: type) -> type:
    return type("NotFittedError", (NotFittedError, sklearn_not_fitted), {"__module__": __name__})
