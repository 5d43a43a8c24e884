"""The estimator's parameters (scikit-learn's protocol), their checks, and the check of a fitted model."""

from __future__ import annotations

import inspect
from typing import Any, Self

import numpy as np

from streamgmm.em.fitted import Fitted
from streamgmm.em.settings import FitSettings
from streamgmm.estimator.constraints import check_params
from streamgmm.estimator.not_fitted import not_fitted_error


class EstimatorBase:
    """The scikit-learn protocol of :class:`~streamgmm.StreamingGaussianMixture`: its
    parameters, as given to the constructor, read and changed by ``get_params`` and ``set_params``."""

    def __init__(
        self,
        n_components: int = 1,
        *,
        covariance_type: str = "full",
        algorithm: str = "auto",
        tol: float = 1e-3,
        reg_covar: float = 1e-6,
        max_iter: int = 100,
        n_init: int = 8,
        init_params: str = "kmeans",
        weights_init: Any = None,
        means_init: Any = None,
        precisions_init: Any = None,
        random_state: Any = None,
        warm_start: bool = False,
        batch_size: int = 8192,
        max_passes: int = 1,
        step_exponent: float = 1.0,
        step_offset: float = 2.0,
        step_floor: float = 0.0,
        burn_in: int = 0,
        init_size: int = 20000,
        shuffle: bool | str = True,
        compute_dtype: str = "float64",
        nan_policy: str = "raise",
        moves: str = "auto",
    ):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.algorithm = algorithm
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.random_state = random_state
        self.warm_start = warm_start
        self.batch_size = batch_size
        self.max_passes = max_passes
        self.step_exponent = step_exponent
        self.step_offset = step_offset
        self.step_floor = step_floor
        self.burn_in = burn_in
        self.init_size = init_size
        self.shuffle = shuffle
        self.compute_dtype = compute_dtype
        self.nan_policy = nan_policy
        self.moves = moves

    # ------------------------------------------------------------------ scikit-learn protocol

    @classmethod
    def _param_names(cls) -> list[str]:
        signature = inspect.signature(cls.__init__)
        return [p.name for p in signature.parameters.values() if p.name != "self"]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Get the parameters of this estimator.

        Parameters
        ----------
        deep : bool, default=True
            Accepted for scikit-learn's protocol; no parameter is itself an estimator, so it
            changes nothing.

        Returns
        -------
        params : dict
            Each constructor parameter's name mapped to its current value.

        Examples
        --------
        >>> from streamgmm import StreamingGaussianMixture
        >>> params = StreamingGaussianMixture(n_components=3).get_params()
        >>> params["n_components"], params["covariance_type"]
        (3, 'full')
        """
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> Self:
        """Set the parameters of this estimator.

        Values are stored as given; they are checked when the next ``fit`` or ``partial_fit``
        starts.

        Parameters
        ----------
        **params : dict
            Constructor parameters by name.

        Returns
        -------
        self : StreamingGaussianMixture
            This estimator.

        Raises
        ------
        ValueError
            If a name is not a constructor parameter.

        Examples
        --------
        >>> from streamgmm import StreamingGaussianMixture
        >>> StreamingGaussianMixture().set_params(n_components=4, covariance_type="diag")
        StreamingGaussianMixture(n_components=4, covariance_type='diag')
        """
        valid = self._param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(f"Invalid parameter {name!r} for estimator {type(self).__name__}; valid: {valid}")
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        defaults = {p.name: p.default for p in inspect.signature(type(self).__init__).parameters.values()}
        changed = []
        for name, value in self.get_params().items():
            default = defaults.get(name)
            same = value is default or (
                not isinstance(value, np.ndarray) and not isinstance(default, np.ndarray) and value == default
            )
            if not same:
                changed.append(f"{name}={'array' if isinstance(value, np.ndarray) else repr(value)}")
        return f"{type(self).__name__}({', '.join(changed)})"

    def __sklearn_tags__(self) -> Any:
        # Imported here: scikit-learn is only needed by scikit-learn itself.
        from sklearn.utils import InputTags, Tags, TargetTags

        return Tags(
            # As GaussianMixture (scikit-learn's DensityMixin): a density model with predict, not
            # a clusterer, which would promise ``labels_``.
            estimator_type="density_estimator",
            target_tags=TargetTags(required=False),
            input_tags=InputTags(two_d_array=True, allow_nan=self.nan_policy != "raise"),
        )

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "fitted_state_")


def settings_of(model: EstimatorBase) -> FitSettings:
    """What ``model``'s parameters ask a fit to run, after checking them: ``ValueError`` naming
    the first that is out of range (see
    :data:`~streamgmm.estimator.constraints.PARAMETER_CONSTRAINTS`)."""
    params = model.get_params()
    check_params(params)
    return FitSettings.from_params(params)


def check_fitted(model: Any) -> Fitted:
    """``model``'s fitted state; scikit-learn's ``NotFittedError`` (with its wording) before a fit."""
    fitted = getattr(model, "fitted_state_", None)
    if fitted is None:
        raise not_fitted_error(
            f"This {type(model).__name__} instance is not fitted yet. Call 'fit' with appropriate "
            "arguments before using this estimator."
        )
    return fitted
