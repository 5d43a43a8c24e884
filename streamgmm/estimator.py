"""``StreamingGaussianMixture``: a Gaussian mixture fitted by streaming, scikit-learn style.

It fits weights, means and covariances of K Gaussians to an array or to any iterable of chunks,
holding only one mini-batch (plus a small initialisation sample) in memory. ``algorithm="auto"``
(default) fits candidates to convergence on the initialisation sample (all the data, when it
fits), then makes one stepwise-EM pass and exact EM passes until ``tol``; ``"online"`` is
stepwise EM alone; ``"batch"`` is exact EM, one pass per iteration, identical to scikit-learn's
``GaussianMixture`` from the same starting point.
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from streamgmm.dask.em import default_partitions_per_step, run_dask_batch_em, run_dask_online_em
from streamgmm.dask.source import DaskSource, dask_source, is_dask_collection
from streamgmm.em.batch import BatchEMResult, run_batch_em
from streamgmm.em.fit_history import FitHistory
from streamgmm.em.online import OnlineState, StepSchedule, run_online_em
from streamgmm.em.start import Start, converged_start, draw_sample
from streamgmm.inputs import as_source
from streamgmm.io.model_check import check_mixture_arrays
from streamgmm.io.model_file import ModelFileError, read_model, write_model
from streamgmm.io.sources import ArraySource, ChunkSource
from streamgmm.io.validation import make_rng, not_fitted_error
from streamgmm.kernels.quadratic import check_compute_dtype, one_blas_thread
from streamgmm.mixture import covariance as cov
from streamgmm.mixture.initialization import check_init_params
from streamgmm.mixture.params import MixtureParams
from streamgmm.mixture.statistics import SufficientStatistics

ALGORITHMS = ("auto", "online", "batch")
SHUFFLE_MODES = (True, False, "records", "row_groups")


class ConvergenceWarning(UserWarning):
    """Exact EM stopped at ``max_iter`` before the log-likelihood settled within ``tol``."""


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


class StreamingGaussianMixture:
    """Gaussian mixture fitted by streaming EM over data larger than memory.

    Parameters
    ----------
    n_components : number of mixture components K.
    covariance_type : ``"full"``, ``"tied"``, ``"diag"`` or ``"spherical"`` (as scikit-learn).
    algorithm : ``"auto"`` (default), ``"online"`` or ``"batch"``. ``"auto"``: when the
        initialisation sample holds all the data, its EM (run to ``tol``) is the fit, as
        scikit-learn's; otherwise ``max_passes`` stepwise-EM passes, then exact EM passes until
        ``tol`` (at most ``max_iter``); on a stream that can be read only once, stepwise EM
        alone. ``"online"``: stepwise EM, ``max_passes`` passes. ``"batch"``: exact EM, one pass
        per iteration until ``tol`` or ``max_iter``. A warm start continues with exact EM
        (``"auto"`` on a source that can be read again, ``"batch"``) or stepwise EM.
    tol : convergence threshold on the change of the mean log-likelihood per record, between
        iterations (EM on the sample, exact EM) or passes (online).
    reg_covar : added to the covariance diagonals, exactly as scikit-learn does; 0 raises
        scikit-learn's ``ValueError`` on a singular covariance.
    max_iter : iterations of EM on the sample, and of exact EM over the data (0: the model is
        its start).
    n_init : initialisation candidates tried on the sample, raced by EM; the best by sample
        log-likelihood is kept. (scikit-learn's ``n_init`` repeats whole fits; here candidates
        only cost work on the sample, so the default tries several.)
    init_params : how candidates start, as scikit-learn: ``"kmeans"`` (default),
        ``"k-means++"``, ``"random"`` or ``"random_from_data"``, computed on the sample.
    weights_init, means_init, precisions_init : user starting values (as scikit-learn), refined
        by EM on the sample (batch EM refines them on all the data instead).
    random_state : seed (None, int or numpy generator) for sampling, seeding and shuffling.
    warm_start : if True, ``fit`` starts from the current parameters instead of initialising.
    batch_size : records per mini-batch (online step, and the unit of reading).
    max_passes : passes of online EM over a source that can be read again.
    step_exponent, step_offset, step_floor : the step size of mini-batch t is
        ``max((t + step_offset) ** -step_exponent, step_floor)``, scaled down for a short batch.
        The default exponent 1 averages all batches equally (lowest variance, robust to sorted
        streams) because the start is already an EM fit on a uniform sample; see the README.
    burn_in : mini-batches blended before the first online M-step. The running statistics
        start as those implied by the initial fit on the sample, so none is needed by default.
    init_size : records in the initialisation sample.
    shuffle : order of online EM's visit, because sorted data biases a single pass. True (default):
        the finest order the source can shuffle: records of an in-memory array or table,
        ``"row_groups"`` of a Parquet lake (row groups of all files in a random order, records
        within each permuted), nothing for a stream of chunks. ``"records"`` or ``"row_groups"``
        ask for one (an error where the source cannot); False keeps the source's order.
        ``partial_fit`` never shuffles.
    compute_dtype : ``"float64"`` (default) or ``"float32"``: the precision of the E-step of full
        covariances (other types always use float64). float32 is faster and fits as well; the
        statistics are summed in float64 either way.

    Fitted attributes mirror scikit-learn: ``weights_``, ``means_``, ``covariances_``,
    ``precisions_``, ``precisions_cholesky_``, ``converged_``, ``n_iter_`` (batch iterations or
    online passes), ``lower_bound_`` (mean log-likelihood per record: of the last batch
    iteration's E-step, or of the last online pass's batches before each update),
    ``n_features_in_``, ``feature_names_in_`` (when fitted on named columns: a table, DataFrame
    or Parquet lake; later inputs with names are read by these names); plus ``n_steps_`` (online
    mini-batches so far), ``records_seen_`` and ``n_skipped_`` (records a source with
    ``nan_policy="skip"`` left out of the last pass), and ``fit_history_``, a bounded
    :class:`~streamgmm.em.fit_history.FitHistory` of the online steps (saved with the model and
    continued by ``partial_fit`` and ``warm_start``).

    ``X`` may be anything :func:`streamgmm.inputs.as_source` takes: arrays, iterables of chunks,
    Arrow tables and readers, DataFrames, Parquet paths, globs and datasets, or a
    :class:`~streamgmm.io.parquet_source.ParquetSource` for column, filter and ``nan_policy`` options.

    Example:

    >>> import numpy as np
    >>> from streamgmm import StreamingGaussianMixture
    >>> rng = np.random.default_rng(0)
    >>> X = np.concatenate([rng.normal(-5, 1, (5000, 2)), rng.normal(5, 1, (5000, 2))])
    >>> gmm = StreamingGaussianMixture(n_components=2, random_state=0).fit(X)
    >>> np.round(np.sort(gmm.means_[:, 0]))
    array([-5.,  5.])
    >>> gmm.predict([[-5.0, -5.0], [5.0, 5.0]]).tolist() == gmm.predict([[-4.0, -4.0], [4.0, 4.0]]).tolist()
    True
    """

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

    # ------------------------------------------------------------------ scikit-learn protocol

    @classmethod
    def _param_names(cls) -> list[str]:
        signature = inspect.signature(cls.__init__)
        return [p.name for p in signature.parameters.values() if p.name != "self"]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> StreamingGaussianMixture:
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
            input_tags=InputTags(two_d_array=True, allow_nan=False),
        )

    # ------------------------------------------------------------------ checks

    def _check_params(self) -> None:
        def positive_int(name: str, minimum: int = 1) -> None:
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
                raise ValueError(f"Invalid value for {name!r}: {value!r}; expected an integer >= {minimum}")

        for name in ("n_components", "n_init", "batch_size", "max_passes", "init_size"):
            positive_int(name)
        positive_int("burn_in", 0)
        positive_int("max_iter", 0)
        cov.check_covariance_type(self.covariance_type)
        if self.algorithm not in ALGORITHMS:
            raise ValueError(
                f"Invalid value for 'algorithm': {self.algorithm!r}; expected one of {', '.join(ALGORITHMS)}"
            )
        check_init_params(self.init_params)
        for name in ("tol", "reg_covar", "step_exponent", "step_offset", "step_floor"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Real) or isinstance(value, bool) or not np.isfinite(value):
                raise ValueError(f"Invalid value for {name!r}: {value!r}; expected a finite number")
        for name in ("tol", "reg_covar"):
            if getattr(self, name) < 0:
                raise ValueError(f"Invalid value for {name!r}: {getattr(self, name)!r}; expected a number >= 0")
        if self.shuffle not in SHUFFLE_MODES:
            raise ValueError(
                f'Invalid value for \'shuffle\': {self.shuffle!r}; expected True, False, "records" or "row_groups"'
            )
        self._schedule()
        check_compute_dtype(self.compute_dtype)

    def _shuffle_rng(self, source: ChunkSource, rng: np.random.Generator) -> np.random.Generator | None:
        """The generator that shuffles online EM's visit of ``source``, or None to keep its order."""
        modes = getattr(source, "shuffle_modes", ())
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

    def _schedule(self) -> StepSchedule:
        return StepSchedule(float(self.step_exponent), float(self.step_offset), float(self.step_floor))

    def _check_fitted(self) -> None:
        if not hasattr(self, "means_"):
            raise not_fitted_error(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with appropriate "
                "arguments before using this estimator."
            )

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

    # ------------------------------------------------------------------ fitting

    def _start(self, source: ChunkSource, rng: np.random.Generator) -> Start:
        """Where a new fit starts: the best candidate, refined by EM on the initialisation
        sample (the whole data, when it fits in ``init_size``)."""
        n_features = source.n_features
        given = self._user_init(n_features) if n_features is not None else {}
        shift = None
        if {"weights", "means", "precisions"} <= given.keys():
            # A complete user start fixes the statistics' origin too, whatever data it meets:
            # a fit and a stream of partial fits from it then sum the same numbers.
            shift = given["weights"] @ given["means"]
            if self.algorithm == "batch" or not source.reiterable:
                # No sample needed: batch EM refines the start on all the data, and a one-shot
                # stream would otherwise be read for a sample only to be replayed.
                params = MixtureParams.from_precisions(
                    given["weights"], given["means"], given["precisions"], self.covariance_type
                )
                return Start(params, shift, rng)
        sample, shuffle_rng, whole = draw_sample(source, self.init_size, rng)
        return self._start_on_sample(sample, shuffle_rng, whole, rng, shift)

    def _start_on_sample(
        self,
        sample: np.ndarray,
        shuffle_rng: np.random.Generator,
        whole: bool,
        rng: np.random.Generator,
        shift: np.ndarray | None = None,
    ) -> Start:
        """The start from a drawn sample (``select`` draws one for all its candidates)."""
        self._check_enough_records(sample.shape[0])
        given = self._user_init(sample.shape[1])
        return converged_start(
            sample,
            shuffle_rng,
            whole,
            n_components=self.n_components,
            covariance_type=self.covariance_type,
            reg_covar=self.reg_covar,
            n_init=self.n_init,
            rng=rng,
            init_params=self.init_params,
            tol=self.tol,
            # Batch EM refines a user's start on all the data itself, as scikit-learn does.
            max_iter=0 if self.algorithm == "batch" and given else self.max_iter,
            batch_size=self.batch_size,
            given=given,
            shift=shift,
        )

    def _initial_params(
        self, source: ChunkSource, n_features: int | None, rng: np.random.Generator
    ) -> tuple[MixtureParams, np.ndarray]:
        start = self._start(source, rng)
        return start.params, start.shift

    def _plan(self, source: ChunkSource, start: Start | None) -> str:
        """What a fit runs: ``"start"`` (the sample was all the data, and its EM the fit),
        ``"online"``, ``"batch"`` or ``"online+batch"``. ``start`` is None for a warm start."""
        if self.algorithm != "auto":
            return self.algorithm
        if start is not None and start.whole:
            return "start"
        if not source.reiterable:
            return "online"
        return "batch" if start is None else "online+batch"

    def fit(
        self,
        X: Any,
        y: Any = None,
        *,
        client: Any = None,
        engine: str | None = None,
        partitions_per_step: int | None = None,
    ) -> StreamingGaussianMixture:
        """Fit to an array (n_records, n_features), an iterable of such chunks, an Arrow table
        or reader, a DataFrame, or a Parquet lake (a path, glob, list of paths, dataset or
        :class:`~streamgmm.io.parquet_source.ParquetSource`).

        With the default ``algorithm="auto"``: candidates are fitted to convergence on the
        initialisation sample; if that sample is the whole data, the best is the fit; otherwise
        one online pass from it and exact EM passes until ``tol`` (at most ``max_iter``) follow,
        or online EM alone on a stream that can be read only once.

        On Dask: a ``dask.dataframe.DataFrame`` or ``dask.array.Array``, or a Parquet lake with
        ``engine="dask"`` or a ``client``, is fitted on the workers (partitions are never
        collected here). ``client`` is a ``distributed.Client`` (default: Dask's current
        scheduler, local threads unless a Client is active). Online EM then steps once per wave
        of ``partitions_per_step`` partitions (default: the scheduler's thread count); see
        :mod:`streamgmm.dask.em` and the README."""
        self._check_params()
        warm = self.warm_start and hasattr(self, "_state")
        if warm:
            self._check_same_model()
        if self._on_dask(X, client, engine):
            source: ChunkSource = self._dask_source(X, client, warm)
        else:
            # A stream of chunks does not know its width until read. With every *_init given the
            # start needs no sample, so the width comes from means_init (chunks are checked against
            # it) rather than from a whole read of the stream for a sample that would be thrown away.
            source = self._source(X) if warm else as_source(X, n_features=self._user_init_n_features())
        if isinstance(source, ArraySource):
            self._check_enough_records(len(source))
        runners = self._runners(source, partitions_per_step)
        rng = make_rng(self.random_state)
        self._shuffle_rng(source, rng)  # a shuffle the source cannot do is refused before any work
        start = None if warm else self._start(source, rng)
        plan = self._plan(source, start)
        if start is None:
            start = Start(self._state.params, self._state.statistics.shift, rng)
        if plan == "start":
            self._fit_from_start(start)
        elif plan == "batch":
            self._fit_batch(source, start.params, start.shift, runners[0], warm)
        else:
            online = self._fit_online(source, start, runners, warm)
            if plan == "online+batch":
                state = online.state
                self._fit_batch(
                    source,
                    state.params,
                    state.statistics.shift,
                    runners[0],
                    False,
                    online.pass_log_likelihoods,
                    online.n_passes,
                )
        self._set_input_description(source)
        return self

    def _fit_from_start(self, start: Start) -> None:
        """The sample was the whole data: its EM is exact EM on all of it."""
        em = start.em
        if em is None or em.statistics is None:  # max_iter=0: the model is its start
            statistics = SufficientStatistics.from_params(start.params, start.shift)
            self._set_fitted(OnlineState(start.params, statistics), False, 0, -np.inf, [], FitHistory())
            return
        self._warn_unconverged(em.converged)
        n = em.statistics.n_records
        state = OnlineState(em.params, em.statistics.per_record(), math.ceil(n / self.batch_size), int(n))
        self._set_fitted(state, em.converged, em.n_iter, em.lower_bound, em.history, FitHistory())

    def _fit_batch(
        self,
        source: ChunkSource,
        params: MixtureParams,
        shift: np.ndarray,
        run_batch: Any,
        warm: bool,
        earlier: list[float] | None = None,
        earlier_passes: int = 0,
    ) -> None:
        """Exact EM from ``params``; ``earlier`` are the pass means of online passes before it."""
        result = run_batch(
            source,
            params,
            shift=shift,
            reg_covar=self.reg_covar,
            tol=self.tol,
            max_iter=self.max_iter,
            batch_size=self.batch_size,
            dtype=np.dtype(self.compute_dtype),
            lower_bound=self.lower_bound_ if warm else -np.inf,
        )
        self._set_batch_result(result, shift, warm, earlier, earlier_passes)

    def _set_batch_result(
        self,
        result: BatchEMResult,
        shift: np.ndarray,
        warm: bool,
        earlier: list[float] | None = None,
        earlier_passes: int = 0,
    ) -> None:
        """The fitted state after exact EM (``earlier``: online pass means before it)."""
        trace = self.fit_history_ if earlier else FitHistory()
        history = list(earlier or []) + result.history
        if result.statistics is None:  # max_iter=0: the model is its start
            statistics = SufficientStatistics.from_params(result.params, shift)
            state = OnlineState(result.params, statistics, getattr(self, "n_steps_", 0) if warm else 0)
            lower_bound = self.lower_bound_ if warm else -np.inf
            self._set_fitted(state, False, earlier_passes, lower_bound, history, trace)
            return
        # A stream given every *_init is counted only as it is read (nothing was sampled).
        self._check_enough_records(int(result.statistics.n_records))
        self._warn_unconverged(result.converged)
        n = result.statistics.n_records
        state = OnlineState(result.params, result.statistics.per_record(), math.ceil(n / self.batch_size), int(n))
        # Batch EM takes no online steps: its trace is the per-iteration history.
        self._set_fitted(state, result.converged, earlier_passes + result.n_iter, result.lower_bound, history, trace)

    def _fit_online(
        self, source: ChunkSource, start: Start, runners: tuple[Any, Any, dict[str, Any]], warm: bool
    ) -> Any:
        _, run_online, online_options = runners
        trace = self.fit_history_.copy() if warm else FitHistory()
        state = self._state if warm else OnlineState.start(start.params, start.shift)
        online = run_online(
            source,
            state,
            schedule=self._schedule(),
            burn_in=self.burn_in,
            reg_covar=self.reg_covar,
            batch_size=self.batch_size,
            max_passes=self.max_passes,
            tol=self.tol,
            rng=self._shuffle_rng(source, start.shuffle_rng),
            dtype=np.dtype(self.compute_dtype),
            **online_options,
            **_tracing(source, trace),
        )
        self._set_online_result(online.state, online.converged, online.pass_log_likelihoods, trace)
        return online

    def _set_online_result(
        self, state: OnlineState, converged: bool, pass_means: list[float], trace: FitHistory
    ) -> None:
        """The fitted state after online passes with these pass means."""
        # As for batch EM; every pass reads the whole source, so one pass is the total over n.
        self._check_enough_records(state.records_seen // len(pass_means))
        self._set_fitted(state, converged, len(pass_means), pass_means[-1], pass_means, trace)

    def _warn_unconverged(self, converged: bool) -> None:
        # As scikit-learn: no warning with max_iter=0, where the start is all that was asked for.
        if not converged and self.max_iter > 0:
            warnings.warn(
                f"Batch EM did not converge in {self.max_iter} iterations (tol={self.tol}); raise max_iter or tol",
                convergence_warning_class(),
                stacklevel=3,
            )

    @staticmethod
    def _on_dask(X: Any, client: Any, engine: str | None) -> bool:
        if engine not in (None, "dask"):
            raise ValueError(f"Invalid value for 'engine': {engine!r}; expected None or 'dask'")
        return client is not None or engine == "dask" or is_dask_collection(X)

    def _dask_source(self, X: Any, client: Any, fitted: bool) -> DaskSource:
        if fitted:
            return dask_source(X, client=client, feature_names=self._feature_names(), n_features=self.n_features_in_)
        return dask_source(X, client=client)

    def _runners(self, source: ChunkSource, partitions_per_step: int | None) -> tuple[Any, Any, dict[str, Any]]:
        """The batch and online EM loops for ``source``: on the workers for a Dask source."""
        if not isinstance(source, DaskSource):
            if partitions_per_step is not None:
                raise ValueError("partitions_per_step applies to Dask inputs only")
            return run_batch_em, run_online_em, {}
        wave = default_partitions_per_step(source) if partitions_per_step is None else partitions_per_step
        if not isinstance(wave, (int, np.integer)) or isinstance(wave, bool) or wave < 1:
            raise ValueError(f"Invalid value for 'partitions_per_step': {wave!r}; expected an integer >= 1")
        return run_dask_batch_em, run_dask_online_em, {"partitions_per_step": int(wave)}

    def _feature_names(self) -> list[str] | None:
        names = getattr(self, "feature_names_in_", None)
        return None if names is None else [str(name) for name in names]

    def _set_input_description(self, source: ChunkSource) -> None:
        names = getattr(source, "feature_names", None)
        if names is not None:
            self.feature_names_in_ = np.asarray(names, dtype=object)
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        self.n_skipped_ = int(getattr(source, "skipped_records", 0))

    def partial_fit(
        self, X: Any, y: Any = None, *, client: Any = None, partitions_per_step: int | None = None
    ) -> StreamingGaussianMixture:
        """Continue the online recursion with one chunk, in mini-batches of ``batch_size``.

        The step counter and running statistics persist between calls (and across save/load),
        so a stream of calls equals one online ``fit`` over the concatenated chunks with the
        same batching and no shuffling. The first call initialises from its own chunk. A chunk
        is anything ``fit`` takes, e.g. an array, a DataFrame or a newly arrived Parquet file;
        a Dask collection (or ``client=``) is processed on the workers in waves, as in ``fit``."""
        self._check_params()
        fitted = hasattr(self, "_state")
        if fitted:
            self._check_same_model()
        if self._on_dask(X, client, None):
            source: ChunkSource = self._dask_source(X, client, fitted)
        else:
            source = self._source(X) if fitted else as_source(X)
        _, run_online, online_options = self._runners(source, partitions_per_step)
        if not fitted:
            if isinstance(source, ArraySource):
                self._check_enough_records(len(source))
            params, shift = self._initial_params(source, source.n_features, make_rng(self.random_state))
            state = OnlineState.start(params, shift)
            history: list[float] = []
            trace = FitHistory()
        else:
            state = self._state
            history = list(self._history)
            trace = self.fit_history_.copy()
        online = run_online(
            source,
            state,
            schedule=self._schedule(),
            burn_in=self.burn_in,
            reg_covar=self.reg_covar,
            batch_size=self.batch_size,
            dtype=np.dtype(self.compute_dtype),
            **online_options,
            **_tracing(source, trace),
        )
        state, lower_bound = online.state, online.pass_log_likelihoods[-1]
        history.append(lower_bound)
        self._set_fitted(state, False, getattr(self, "n_iter_", 0) + 1 if fitted else 1, lower_bound, history, trace)
        if not fitted:
            self._set_input_description(source)
        else:
            self.n_skipped_ = int(getattr(source, "skipped_records", 0))
        return self

    def _set_fitted(
        self,
        state: OnlineState,
        converged: bool,
        n_iter: int,
        lower_bound: float,
        history: list[float],
        fit_history: FitHistory | None = None,
    ) -> None:
        params = state.params
        # Never a fitted model that could not be used or saved (non-finite, or not a density).
        check_mixture_arrays(
            params.weights, params.means, params.covariances, params.precisions_cholesky, params.covariance_type
        )
        self._state = state
        self._history = list(history)
        self.fit_history_ = fit_history if fit_history is not None else FitHistory()
        self.weights_ = params.weights
        self.means_ = params.means
        self.covariances_ = params.covariances
        self.precisions_cholesky_ = params.precisions_cholesky
        self.precisions_ = params.precisions
        self.converged_ = bool(converged)
        self.n_iter_ = int(n_iter)
        self.lower_bound_ = float(lower_bound)
        self.n_features_in_ = params.n_features
        self.n_steps_ = state.step
        self.records_seen_ = state.records_seen

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

    # ------------------------------------------------------------------ inference

    @property
    def params_(self) -> MixtureParams:
        self._check_fitted()
        return self._state.params

    def _batches(self, X: Any) -> Iterator[np.ndarray]:
        self._check_fitted()
        return self._source(X).batches(self.batch_size)

    def _source(self, X: Any) -> ChunkSource:
        """``X`` as a source for a fitted model: tabular input read by ``feature_names_in_``,
        anything else checked against ``n_features_in_``."""
        if is_dask_collection(X):
            raise TypeError(
                "predict, score and friends run in this process and would collect the Dask collection here; "
                "use assign(model, X, out, client=...) to score it on the workers, or X.map_partitions(model.predict)"
            )
        source = as_source(X, n_features=self.n_features_in_, feature_names=self._feature_names())
        if source.n_features is not None and source.n_features != self.n_features_in_:
            raise ValueError(
                f"X has {source.n_features} features, but {type(self).__name__} is expecting "
                f"{self.n_features_in_} features as input"
            )
        return source

    def _per_batch(self, compute: Callable[[np.ndarray], np.ndarray], X: Any) -> np.ndarray:
        # One BLAS thread, as fitting's E-steps (quadratic.one_blas_thread): a mini-batch's
        # products are too small to gain from a second thread, and on cores shared with other
        # work it made a scoring pass several times slower (README, "Choosing K").
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
        self._check_fitted()
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

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the model, its running statistics and step counter (see :mod:`streamgmm.io.model_file`)."""
        write_model(path, *self._model_document())

    def _model_document(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """What :meth:`save` writes: the JSON document and the arrays."""
        self._check_fitted()
        state = self._state
        arrays: dict[str, np.ndarray] = {
            "weights": self.weights_,
            "means": self.means_,
            "covariances": self.covariances_,
            "precisions_cholesky": self.precisions_cholesky_,
        }
        arrays.update({f"statistics.{name}": value for name, value in state.statistics.arrays().items()})
        estimator_params: dict[str, Any] = {}
        for name, value in self.get_params().items():
            if value is None or isinstance(value, (bool, int, float, str)):
                estimator_params[name] = value
            elif isinstance(value, np.integer):
                estimator_params[name] = int(value)
            elif name.endswith("_init"):
                arrays[f"param.{name}"] = np.asarray(value, dtype=np.float64)
            else:
                estimator_params[name] = None  # a generator object: not reproducible from a file
        document = {
            "estimator": type(self).__name__,
            "estimator_params": estimator_params,
            "fitted": {
                "converged": self.converged_,
                "n_iter": self.n_iter_,
                "lower_bound": self.lower_bound_,
                "n_features_in": self.n_features_in_,
                "feature_names_in": self._feature_names(),
                "n_skipped": getattr(self, "n_skipped_", 0),
                "history": self._history,
            },
            "fit_history": self.fit_history_.to_dict(),
            "online": {
                "step": state.step,
                "records_seen": state.records_seen,
                "statistics_n_records": state.statistics.n_records,
                "statistics_log_likelihood": state.statistics.log_likelihood,
            },
        }
        return document, arrays

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> StreamingGaussianMixture:
        """Read a model written by :meth:`save`; ``partial_fit`` then resumes the stream."""
        document, arrays = read_model(path)
        try:
            return cls._from_document(document, arrays)
        except ModelFileError as exc:
            raise ModelFileError(f"{path}: corrupt model file ({exc})") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFileError(f"{path}: corrupt model file (missing or malformed {exc})") from None

    @classmethod
    def _from_document(cls, document: dict[str, Any], arrays: dict[str, np.ndarray]) -> StreamingGaussianMixture:
        params = dict(document["estimator_params"])
        for name in list(arrays):
            if name.startswith("param."):
                params[name[len("param.") :]] = arrays.pop(name)
        model = cls(**params)
        model._check_params()
        for name, value in arrays.items():
            if value.dtype.kind != "f":
                raise ModelFileError(f"array {name} holds {value.dtype}, not floats")
        means = arrays["means"]
        if means.ndim != 2:
            raise ModelFileError(f"array means has shape {means.shape}, expected (n_components, n_features)")
        k, d = means.shape
        t = model.covariance_type
        expected = {
            "weights": (k,),
            "covariances": cov.covariance_shape(k, d, t),
            "precisions_cholesky": cov.covariance_shape(k, d, t),
            "statistics.second": cov.second_moment_shape(k, d, t),
            "statistics.sums": (k, d),
            "statistics.counts": (k,),
            "statistics.shift": (d,),
        }
        for name, shape in expected.items():
            if arrays[name].shape != shape:
                raise ModelFileError(f"array {name} has shape {arrays[name].shape}, expected {shape}")
        fitted, online = document["fitted"], document["online"]
        mixture = MixtureParams(
            means=means,
            weights=arrays["weights"],
            covariances=arrays["covariances"],
            precisions_cholesky=arrays["precisions_cholesky"],
            covariance_type=t,
        )
        stats = SufficientStatistics(
            t,
            arrays["statistics.shift"],
            arrays["statistics.counts"],
            arrays["statistics.sums"],
            arrays["statistics.second"],
            float(online["statistics_n_records"]),
            float(online["statistics_log_likelihood"]),
        )
        state = OnlineState(mixture, stats, int(online["step"]), int(online["records_seen"]))
        model._set_fitted(
            state,
            bool(fitted["converged"]),
            int(fitted["n_iter"]),
            float(fitted["lower_bound"]),
            [float(v) for v in fitted.get("history", [])],
            # Files written before the trace existed have none: an empty one, continued from here.
            FitHistory.from_dict(document["fit_history"]) if "fit_history" in document else None,
        )
        names = fitted.get("feature_names_in")
        if names is not None:
            if len(names) != d or not all(isinstance(name, str) for name in names):
                raise ModelFileError(f"feature_names_in must be {d} column names, got {names!r}")
            model.feature_names_in_ = np.asarray(names, dtype=object)
        model.n_skipped_ = int(fitted.get("n_skipped", 0))
        return model


def _tracing(source: ChunkSource, trace: FitHistory) -> dict[str, Any]:
    """The online runner's per-step callback that records ``trace`` (a step is a mini-batch
    here, a wave of partitions on Dask)."""

    def record(state: OnlineState, update: Any) -> None:
        trace.record(update.mean_log_likelihood, update.n_records, update.step_size, update.reseeded)

    return {"on_wave" if isinstance(source, DaskSource) else "on_batch": record}
