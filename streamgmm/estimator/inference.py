"""Inference on a fitted model: scores, responsibilities, predictions, BIC/AIC, sampling."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from streamgmm.inputs import resolve_input
from streamgmm.io.sources import ChunkSource
from streamgmm.io.validation import make_rng
from streamgmm.kernels.quadratic import one_blas_thread
from streamgmm.mixture.params import MixtureParams


class InferenceMixin:
    """Scores, responsibilities, predictions, information criteria and sampling of a fitted model."""

    # ------------------------------------------------------------------ inference

    @property
    def params_(self) -> MixtureParams:
        self.check_fitted()
        return self._state.params

    def _batches(self, X: Any) -> Iterator[np.ndarray]:
        self.check_fitted()
        return self.input_source(X).batches(self.batch_size)

    def input_source(self, X: Any, *, client: Any = None, engine: str | None = None, local: bool = True) -> ChunkSource:
        """``X`` as a source for a fitted model (see :func:`~streamgmm.inputs.resolve_input`):
        tabular input read by ``feature_names_in_``, anything else checked against
        ``n_features_in_``; with ``local`` (scoring here) a Dask collection is refused."""
        source = resolve_input(
            X,
            client=client,
            engine=engine,
            n_features=self.n_features_in_,
            feature_names=self.feature_names(),
            local=local,
        )
        if source.n_features is not None and source.n_features != self.n_features_in_:
            raise ValueError(
                f"X has {source.n_features} features, but {type(self).__name__} is expecting "
                f"{self.n_features_in_} features as input"
            )
        return source

    def _per_batch(self, compute: Callable[[np.ndarray], np.ndarray], X: Any) -> np.ndarray:
        # One BLAS thread, as fitting's E-steps: a mini-batch's products are too small to gain
        # from a second thread, which only competes with other work for the cores.
        with one_blas_thread():
            return np.concatenate([compute(b) for b in self._batches(X)])

    def score_samples(self, X: Any) -> np.ndarray:
        """Log-likelihood of each record, shape (n,)."""
        return self._per_batch(self.params_.log_likelihood, X)

    def score(self, X: Any, y: Any = None) -> float:
        """Mean log-likelihood per record."""
        return float(self.score_samples(X).mean())

    def predict_proba(self, X: Any) -> np.ndarray:
        """Responsibilities, shape (n, K); rows sum to one."""
        return self._per_batch(lambda b: self.params_.e_step(b)[1], X)

    def predict(self, X: Any) -> np.ndarray:
        """The most responsible component of each record."""
        return self._per_batch(lambda b: self.params_.weighted_log_prob(b).argmax(axis=1), X)

    def fit_predict(self, X: Any, y: Any = None) -> np.ndarray:
        return self.fit(X).predict(X)

    def _information_criterion(self, X: Any, penalty_per_parameter: Callable[[int], float]) -> float:
        # One E-step pass gives both the likelihood and the number of records.
        scores = self.score_samples(X)
        n = scores.shape[0]
        return -2 * scores.mean() * n + self.params_.n_parameters() * penalty_per_parameter(n)

    def bic(self, X: Any) -> float:
        """Bayesian information criterion on X (lower is better), as scikit-learn's."""
        return self._information_criterion(X, math.log)

    def aic(self, X: Any) -> float:
        """Akaike information criterion on X (lower is better), as scikit-learn's."""
        return self._information_criterion(X, lambda n: 2.0)

    def sample(self, n_samples: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Draw records from the fitted mixture: (X, component labels), as scikit-learn."""
        self.check_fitted()
        if n_samples < 1:
            raise ValueError(f"Invalid value for 'n_samples': {n_samples}; expected an integer >= 1")
        rng = make_rng(self.random_state)
        counts = rng.multinomial(n_samples, self.weights_)
        k, d = self.means_.shape
        covariances = {
            "full": lambda j: self.covariances_[j],
            "tied": lambda j: self.covariances_,
            "diag": lambda j: np.diag(self.covariances_[j]),
            "spherical": lambda j: np.eye(d) * self.covariances_[j],
        }[self.covariance_type]
        X = np.vstack([rng.multivariate_normal(self.means_[j], covariances(j), int(c)) for j, c in enumerate(counts)])
        y = np.concatenate([np.full(int(c), j, dtype=int) for j, c in enumerate(counts)])
        return X, y
