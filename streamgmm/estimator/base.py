"""The estimator's parameters and checks (scikit-learn's protocol)."""

from __future__ import annotations

import inspect
from dataclasses import replace
from typing import Any, Self

import numpy as np

from streamgmm.em.moves import MoveState
from streamgmm.em.online import OnlineState, StepSchedule
from streamgmm.estimator.constraints import check_params
from streamgmm.estimator.not_fitted import not_fitted_error
from streamgmm.io.sources.chunk_source import ChunkSource
from streamgmm.mixture import covariance as cov


class EstimatorBase:
    """The scikit-learn protocol of :class:`~streamgmm.StreamingGaussianMixture`: its parameters,
    their checks, and the checks of its fitted state."""

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

    # ------------------------------------------------------------------ checks

    def validate_params(self) -> None:
        """Raise ``ValueError`` naming the first parameter that is out of range (see
        :data:`~streamgmm.estimator.constraints.PARAMETER_CONSTRAINTS`)."""
        check_params(self.get_params())
        self.step_schedule()

    def shuffle_generator(self, source: ChunkSource, rng: np.random.Generator) -> np.random.Generator | None:
        """The generator that shuffles online EM's visit of ``source``, or None to keep its order."""
        modes = source.shuffle_modes
        if self.shuffle is False:
            return None
        if self.shuffle is True:
            return rng if modes else None
        if self.shuffle not in modes:
            raise ValueError(
                f"shuffle={self.shuffle!r} is not possible for this input ({type(source).__name__} can shuffle "
                f"{' or '.join(map(repr, modes)) if modes else 'nothing'}); use shuffle=True or False"
            )
        return rng

    def online_state(self, start: Any, rng: np.random.Generator) -> OnlineState:
        """The state a new online recursion starts from ``start`` (:class:`~streamgmm.em.start.Start`),
        with births and merges unless ``moves="off"`` (their seed drawn from ``rng``)."""
        state = OnlineState.start(start.params, start.shift)
        if self.moves == "off":
            return state
        em = start.em
        started_on = em.statistics.n_records if em is not None and em.statistics is not None else self.init_size
        return replace(state, moves=self._move_state(int(rng.integers(2**63)), state.statistics, started_on))

    def _move_state(self, seed: int, statistics: Any, started_on: float) -> MoveState:
        # The sample for refits holds as many records as the start's may; the first refit is
        # due once the stream has twice the records the start was fitted on.
        return MoveState.start(seed, statistics, self.init_size, 2.0 * started_on / self.batch_size)

    def with_moves(self, state: OnlineState, rng: np.random.Generator) -> OnlineState:
        """``state`` made to carry (or not) the moves ``self.moves`` asks for: a model fitted
        by exact EM, or with other settings, continues online with them."""
        if self.moves == "off":
            return replace(state, moves=None) if state.moves is not None else state
        if state.moves is None:
            moves = self._move_state(int(rng.integers(2**63)), state.statistics, max(float(state.records_seen), 1.0))
            return replace(state, moves=moves)
        return state

    def step_schedule(self) -> StepSchedule:
        """Online EM's step sizes from ``step_exponent``, ``step_offset`` and ``step_floor``."""
        return StepSchedule(float(self.step_exponent), float(self.step_offset), float(self.step_floor))

    def check_fitted(self) -> None:
        """Raise scikit-learn's ``NotFittedError`` (with its wording) unless fitted."""
        if not hasattr(self, "means_"):
            raise not_fitted_error(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with appropriate "
                "arguments before using this estimator."
            )

    def feature_names(self) -> list[str] | None:
        """The column names a fitted model reads its features by (``feature_names_in_`` as
        strings), or None when it was fitted on unnamed data."""
        names = getattr(self, "feature_names_in_", None)
        return None if names is None else [str(name) for name in names]

    def describe_input(self, source: ChunkSource) -> None:
        """Record what was fitted on: ``feature_names_in_`` (when ``source`` has column names)
        and ``n_skipped_`` (records its last pass left out)."""
        names = source.feature_names
        if names is not None:
            self.feature_names_in_ = np.asarray(names, dtype=object)
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        self.n_skipped_ = int(source.skipped_records)

    def _user_init(self, n_features: int) -> dict[str, np.ndarray]:
        """The user's ``*_init`` arrays, checked against K and d."""
        k, t = self.n_components, self.covariance_type
        given: dict[str, np.ndarray] = {}
        if self.weights_init is not None:
            w = np.asarray(self.weights_init, dtype=np.float64)
            if w.shape != (k,) or np.any(w < 0) or not np.isclose(w.sum(), 1.0):
                raise ValueError(f"weights_init must be {k} non-negative numbers summing to 1, got {w!r}")
            given["weights"] = w
        if self.means_init is not None:
            m = np.asarray(self.means_init, dtype=np.float64)
            if m.shape != (k, n_features) or not np.all(np.isfinite(m)):
                raise ValueError(f"means_init must be a finite array of shape {(k, n_features)}, got shape {m.shape}")
            given["means"] = m
        if self.precisions_init is not None:
            p = np.asarray(self.precisions_init, dtype=np.float64)
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
            given["precisions"] = p
        return given

    def _user_init_n_features(self) -> int | None:
        """The number of features the user's ``*_init`` implies, when all three are given (then
        they are the whole start and no sample of the data is needed to find it)."""
        if self.weights_init is None or self.means_init is None or self.precisions_init is None:
            return None
        shape = np.shape(self.means_init)
        return int(shape[1]) if len(shape) == 2 and shape[1] > 0 else None

    def _check_same_model(self) -> None:
        """Continuing a fit (partial_fit, warm_start) needs the shape the running state has:
        otherwise the new parameters would silently keep the old K and covariance type while
        ``sample`` and ``save`` trust the estimator's parameters."""
        fitted = self._state.params
        if (fitted.n_components, fitted.covariance_type) != (self.n_components, self.covariance_type):
            raise ValueError(
                f"cannot continue a model fitted with n_components={fitted.n_components}, "
                f"covariance_type={fitted.covariance_type!r} as n_components={self.n_components}, "
                f"covariance_type={self.covariance_type!r}; call fit (without warm_start) to start again"
            )

    def _check_enough_records(self, n_records: int) -> None:
        if n_records < self.n_components:
            raise ValueError(
                f"Expected n_samples >= n_components but got n_components = {self.n_components}, "
                f"n_samples = {n_records}: fewer records than components"
            )

    def _check_enough_weight(self, n_records: float) -> None:
        """:meth:`_check_enough_records` on a pass's count of records; with record weights the
        count is their total weight, which says nothing about the number of records (weights
        may well sum to 1), so it is not checked."""
        if not getattr(self, "_weighted_input", False):
            self._check_enough_records(int(n_records))
