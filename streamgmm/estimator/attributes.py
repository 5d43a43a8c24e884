"""The fitted attributes scikit-learn users read (``weights_``, ``means_``, ``converged_``, ...),
each a view of the one fitted state, ``fitted_state_``
(:class:`~streamgmm.em.fitted.Fitted`), which ``fit``, ``partial_fit``, ``load`` and ``select``
set. Before a fit every one of them is absent (``hasattr`` is False), as scikit-learn's."""

from __future__ import annotations

import numpy as np

from streamgmm.em.fit_history import FitHistory
from streamgmm.em.online import OnlineState
from streamgmm.estimator.base import check_fitted
from streamgmm.mixture.params import MixtureParams


class FittedAttributes:
    """Read-only views of ``fitted_state_`` under scikit-learn's names (documented in
    :class:`~streamgmm.StreamingGaussianMixture`'s Attributes)."""

    @property
    def params_(self) -> MixtureParams:
        """The fitted mixture (weights, means, covariances and their precisions' factors)."""
        return check_fitted(self).params

    @property
    def weights_(self) -> np.ndarray:
        return check_fitted(self).params.weights

    @property
    def means_(self) -> np.ndarray:
        return check_fitted(self).params.means

    @property
    def covariances_(self) -> np.ndarray:
        return check_fitted(self).params.covariances

    @property
    def precisions_cholesky_(self) -> np.ndarray:
        return check_fitted(self).params.precisions_cholesky

    @property
    def precisions_(self) -> np.ndarray:
        return check_fitted(self).params.precisions

    @property
    def converged_(self) -> bool:
        return check_fitted(self).converged

    @property
    def n_iter_(self) -> int:
        return check_fitted(self).n_iter

    @property
    def lower_bound_(self) -> float:
        return check_fitted(self).lower_bound

    @property
    def lower_bounds_(self) -> list[float]:
        return check_fitted(self).lower_bounds

    @property
    def n_features_in_(self) -> int:
        return check_fitted(self).params.n_features

    @property
    def feature_names_in_(self) -> np.ndarray:
        names = check_fitted(self).feature_names
        if names is None:
            # As scikit-learn: a model fitted on unnamed data has no feature_names_in_.
            raise AttributeError(f"{type(self).__name__} was fitted on data without column names")
        return np.asarray(names, dtype=object)

    @property
    def n_skipped_(self) -> int:
        return check_fitted(self).n_skipped

    @property
    def n_steps_(self) -> int:
        return check_fitted(self).state.step

    @property
    def records_seen_(self) -> int | float:
        return check_fitted(self).records_seen

    @property
    def fit_history_(self) -> FitHistory:
        return check_fitted(self).fit_history

    @property
    def classes_(self) -> np.ndarray:
        """The component indices, ``np.arange(n_components)`` of the fitted model."""
        return np.arange(check_fitted(self).params.n_components)

    @property
    def online_state_(self) -> OnlineState:
        """The online state the next ``partial_fit`` resumes from (read-only; do not change its arrays).

        Returns
        -------
        OnlineState
            The fitted parameters, the running statistics, the step and record counters (the
            records' weight measured in the fit's own unit; ``records_seen_`` is in the
            weights' unit) and the births' and merges' state, as saved with the model.

        Raises
        ------
        NotFittedError
            Before the first fit.
        """
        return check_fitted(self).state
