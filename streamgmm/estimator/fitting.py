"""Fitting: the start on a sample, the plan (auto, online, batch), and the fitted state."""

from __future__ import annotations

import math
import warnings
from typing import Any, Self

import numpy as np

from streamgmm.dask.source import DaskSource
from streamgmm.em.batch import BatchEMResult
from streamgmm.em.fit_history import FitHistory
from streamgmm.em.online import OnlineState, record_count, refit_at_end
from streamgmm.em.start import Start, converged_start, draw_sample
from streamgmm.estimator.convergence import UNCONVERGED, convergence_warning_class
from streamgmm.estimator.random_state import make_rng
from streamgmm.estimator.runners import em_runners, tracing
from streamgmm.inputs import resolve_input
from streamgmm.io.model.checks import check_mixture_arrays
from streamgmm.io.sources.chunk_source import ArraySource, ChunkSource, is_weighted
from streamgmm.mixture.params import MixtureParams
from streamgmm.mixture.statistics import SufficientStatistics


class FittingMixin:
    """``fit`` and ``partial_fit``: the start, the plan (auto, online, batch) and the fitted state."""

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
                # No sample to fix the weights' unit: the first weighted batch fixes it.
                self.begin_weight_scale(None if is_weighted(source) and not isinstance(source, DaskSource) else 1.0)
                return Start(params, shift, rng)
        sample, shuffle_rng, whole = draw_sample(source, self.init_size, rng)
        sample = self.normalised_sample(source, sample)
        names, progress = source.feature_names, source.start_progress
        return self.start_on_sample(
            sample, shuffle_rng, whole, rng, shift, weighted=is_weighted(source), names=names, progress=progress
        )

    def start_on_sample(
        self,
        sample: np.ndarray,
        shuffle_rng: np.random.Generator,
        whole: bool,
        rng: np.random.Generator,
        shift: np.ndarray | None = None,
        weighted: bool = False,
        names: list[str] | None = None,
        progress: Any = None,
    ) -> Start:
        """The start from a drawn sample (``select`` draws one for all its candidates);
        ``weighted``: its last column is the record weights; ``names``: the features' column
        names, which name a feature the sample never observes; ``progress``, called with the
        sample's records as the start's EM processes them (a source's ``start_progress``)."""
        self._check_enough_records(sample.shape[0])
        given = self._user_init(sample.shape[1] - int(weighted))
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
            weighted=weighted,
            feature_names=names,
            progress=progress,
        )

    def fit_plan(self, source: ChunkSource, start: Start | None) -> str:
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
        sample_weight: Any = None,
        *,
        client: Any = None,
        engine: str | None = None,
        partitions_per_step: int | None = None,
        persist: bool | str = "auto",
    ) -> Self:
        """Fit the mixture to ``X``, streaming it.

        With the default ``algorithm='auto'``: candidates are fitted to convergence on the
        initialisation sample; if that sample is the whole data, the best is the fit; otherwise
        one online pass from it and exact EM passes until ``tol`` (at most ``max_iter``) follow,
        or online EM alone on a stream that can be read only once. With ``warm_start=True``, a
        fitted model continues from its current parameters.

        Parameters
        ----------
        X : array-like of shape (n_records, n_features), iterable of such chunks, table or path
            An array, an iterable of array chunks, an Arrow table or reader, a DataFrame, or a
            Parquet lake (a path, glob, list of paths, ``pyarrow.dataset`` dataset or
            :class:`~streamgmm.ParquetSource`). A ``dask.dataframe.DataFrame`` or
            ``dask.array.Array`` is fitted on the workers; its partitions are never collected
            here.

        y : None
            Ignored; present for scikit-learn's API.

        sample_weight : array-like of shape (n_records,), default=None
            Record weights for an array or in-memory table ``X``: a record of weight w counts
            as w records (integer weights fit exactly as duplicated rows). Finite and >= 0;
            zero removes a record. Other inputs give theirs as a ``weight_column``.

        client : distributed.Client, default=None
            Fit on this Dask cluster; a Parquet lake is then read by the workers.

        engine : {'dask'} or None, default=None
            ``'dask'`` fits on Dask without a ``client``: on Dask's current scheduler, local
            threads unless a Client is active.

        partitions_per_step : int, default=None
            Dask inputs only: online EM steps once per wave of this many partitions (default:
            the scheduler's thread count); see :mod:`streamgmm.dask.em`.

        persist : bool or 'auto', default='auto'
            On a ``distributed`` cluster: keep the decoded partitions in the workers' memory
            between passes (True), read them again each pass (False), or keep them when their
            size is known and at most a quarter of the workers' memory limits ('auto'); see
            :mod:`streamgmm.dask.on_workers`.

        Returns
        -------
        self : StreamingGaussianMixture
            The fitted estimator.

        Warns
        -----
        ConvergenceWarning
            When exact EM stops at ``max_iter`` (> 0) before ``tol``.

        Examples
        --------
        >>> import numpy as np
        >>> from streamgmm import StreamingGaussianMixture
        >>> X = np.array([[1, 2], [1, 4], [1, 0], [10, 2], [10, 4], [10, 0]])
        >>> gmm = StreamingGaussianMixture(n_components=2, random_state=0).fit(X)
        >>> gmm.means_.round(2)
        array([[10.,  2.],
               [ 1.,  2.]])
        >>> gmm.converged_
        True
        """
        self.validate_params()
        warm = self.warm_start and hasattr(self, "_state")
        if warm:
            self._check_same_model()
            self.continue_weight_scale()
        if warm:
            source = self.input_source(
                X, client=client, engine=engine, local=False, persist=persist, sample_weight=sample_weight, fitting=True
            )
        else:
            # A stream of chunks does not know its width until read. With every *_init given the
            # start needs no sample, so the width comes from means_init (chunks are checked against
            # it) rather than from a whole read of the stream for a sample that would be thrown away.
            source = resolve_input(
                X,
                client=client,
                engine=engine,
                n_features=self._user_init_n_features(),
                persist=persist,
                nan_policy=self.nan_policy,
                sample_weight=sample_weight,
            )
        self._weighted_input = is_weighted(source)
        if isinstance(source, ArraySource):
            self._check_enough_records(len(source))
        if persist != "auto" and not isinstance(source, DaskSource):
            raise ValueError("persist applies to Dask inputs only (a client, engine='dask' or a Dask collection)")
        runners = em_runners(source, partitions_per_step)
        rng = make_rng(self.random_state)
        self.shuffle_generator(source, rng)  # a shuffle the source cannot do is refused before any work
        start = None if warm else self._start(source, rng)
        plan = self.fit_plan(source, start)
        if start is None:
            start = Start(self._state.params, self._state.statistics.shift, rng)
        source, unscaled = self.scaled_source(source), source
        if plan == "start":
            self.fit_from_start(start)
        elif plan == "batch":
            self._fit_batch(source, start.params, start.shift, runners[0], warm)
        else:
            # The default plan on a stream read once ends with a refit on its sample;
            # algorithm="online" stays the recursion a stream of partial fits makes.
            final_refit = plan == "online" and self.algorithm == "auto"
            online = self._fit_online(source, start, runners, warm, final_refit=final_refit)
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
        self.describe_input(unscaled)
        return self

    def fit_from_start(self, start: Start) -> None:
        """The sample was the whole data: its EM is exact EM on all of it."""
        em = start.em
        if em is None or em.statistics is None:  # max_iter=0: the model is its start
            statistics = SufficientStatistics.from_params(start.params, start.shift)
            self._set_fitted(OnlineState(start.params, statistics), False, 0, -np.inf, [], FitHistory())
            return
        self._warn_unconverged(em.converged)
        n = em.statistics.n_records
        state = OnlineState(em.params, em.statistics.per_record(), math.ceil(n / self.batch_size), record_count(n))
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
        self.set_exact_result(result, shift, warm, earlier, earlier_passes)

    def set_exact_result(
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
        self._check_enough_weight(result.statistics.n_records)
        self._warn_unconverged(result.converged)
        n = result.statistics.n_records
        state = OnlineState(
            result.params, result.statistics.per_record(), math.ceil(n / self.batch_size), record_count(n)
        )
        # Batch EM takes no online steps: its trace is the per-iteration history.
        self._set_fitted(state, result.converged, earlier_passes + result.n_iter, result.lower_bound, history, trace)

    def _fit_online(
        self,
        source: ChunkSource,
        start: Start,
        runners: tuple[Any, Any, dict[str, Any]],
        warm: bool,
        final_refit: bool = False,
    ) -> Any:
        trace = self.fit_history_.copy() if warm else FitHistory()
        if warm:
            state = self.with_moves(self._state, make_rng(self.random_state))
        else:
            state = self.online_state(start, make_rng(self.random_state))
        online = self._run_online(
            source,
            state,
            runners,
            trace,
            max_passes=self.max_passes,
            tol=self.tol,
            rng=self.shuffle_generator(source, start.shuffle_rng),
        )
        if final_refit:
            online.state, moves = refit_at_end(online.state, self.reg_covar)
            trace.add_moves(moves)
        self.set_online_result(online.state, online.converged, online.pass_log_likelihoods, trace)
        return online

    def _run_online(
        self,
        source: ChunkSource,
        state: OnlineState,
        runners: tuple[Any, Any, dict[str, Any]],
        trace: FitHistory,
        *,
        max_passes: int = 1,
        tol: float = 0.0,
        rng: np.random.Generator | None = None,
    ) -> Any:
        """Online EM from ``state`` with this estimator's schedule and batching (one process or
        Dask waves, as ``runners`` say), recording every step in ``trace``."""
        _, run_online, online_options = runners
        return run_online(
            source,
            state,
            schedule=self.step_schedule(),
            burn_in=self.burn_in,
            reg_covar=self.reg_covar,
            batch_size=self.batch_size,
            max_passes=max_passes,
            tol=tol,
            rng=rng,
            dtype=np.dtype(self.compute_dtype),
            **online_options,
            **tracing(source, trace, self.in_user_unit),
        )

    def set_online_result(
        self, state: OnlineState, converged: bool, pass_means: list[float], trace: FitHistory
    ) -> None:
        """The fitted state after online passes with these pass means."""
        # As for batch EM; every pass reads the whole source, so one pass is the total over n.
        self._check_enough_weight(state.records_seen / len(pass_means))
        self._set_fitted(state, converged, len(pass_means), pass_means[-1], pass_means, trace)

    def _warn_unconverged(self, converged: bool) -> None:
        # As scikit-learn: no warning with max_iter=0, where the start is all that was asked for.
        if not converged and self.max_iter > 0:
            warnings.warn(
                UNCONVERGED,
                convergence_warning_class(),
                stacklevel=3,
            )

    def partial_fit(
        self,
        X: Any,
        y: Any = None,
        sample_weight: Any = None,
        *,
        client: Any = None,
        partitions_per_step: int | None = None,
    ) -> Self:
        """Continue the online recursion with one chunk, in mini-batches of ``batch_size``.

        The step counter and running statistics persist between calls (and across ``save`` and
        ``load``), so a stream of calls equals one online ``fit`` over the concatenated chunks
        with the same batching and no shuffling. The first call initialises from its own chunk.

        Parameters
        ----------
        X : array-like of shape (n_records, n_features), iterable of such chunks, table or path
            One chunk: anything ``fit`` takes, e.g. an array, a DataFrame or a newly arrived
            Parquet file. A Dask collection is processed on the workers in waves, as in
            ``fit``.

        y : None
            Ignored; present for scikit-learn's API.

        sample_weight : array-like of shape (n_records,), default=None
            Record weights for an array or in-memory table ``X``, as in ``fit``; the online
            step counts weight, not rows.

        client : distributed.Client, default=None
            Process the chunk on this Dask cluster.

        partitions_per_step : int, default=None
            Dask inputs only: partitions per online step, as in ``fit``.

        Returns
        -------
        self : StreamingGaussianMixture
            The updated estimator.

        Examples
        --------
        >>> import numpy as np
        >>> from streamgmm import StreamingGaussianMixture
        >>> rng = np.random.default_rng(0)
        >>> gmm = StreamingGaussianMixture(n_components=2, random_state=0)
        >>> for _ in range(3):
        ...     chunk = np.concatenate([rng.normal(-5, 1, (500, 2)), rng.normal(5, 1, (500, 2))])
        ...     gmm = gmm.partial_fit(chunk)
        >>> gmm.n_iter_, gmm.records_seen_
        (3, 3000)
        >>> np.round(np.sort(gmm.means_[:, 0]))
        array([-5.,  5.])
        """
        self.validate_params()
        fitted = hasattr(self, "_state")
        if fitted:
            self._check_same_model()
            self.continue_weight_scale()
        if fitted:
            source = self.input_source(X, client=client, local=False, sample_weight=sample_weight, fitting=True)
        else:
            source = resolve_input(X, client=client, nan_policy=self.nan_policy, sample_weight=sample_weight)
        self._weighted_input = is_weighted(source)
        runners = em_runners(source, partitions_per_step)
        if not fitted:
            if isinstance(source, ArraySource):
                self._check_enough_records(len(source))
            rng = make_rng(self.random_state)
            start = self._start(source, rng)
            state = self.online_state(start, rng)
            history: list[float] = []
            trace = FitHistory()
        else:
            state = self.with_moves(self._state, make_rng(self.random_state))
            history = list(self._history)
            trace = self.fit_history_.copy()
        online = self._run_online(self.scaled_source(source), state, runners, trace)
        state, lower_bound = online.state, online.pass_log_likelihoods[-1]
        history.append(lower_bound)
        self._set_fitted(state, False, getattr(self, "n_iter_", 0) + 1 if fitted else 1, lower_bound, history, trace)
        if not fitted:
            self.describe_input(source)
        else:
            self.n_skipped_ = int(source.skipped_records)
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
        records_seen = self.in_user_unit(state.records_seen)
        self.keep_weight_scale()
        self._state = state
        self._history = list(history)
        self.lower_bounds_ = list(history)
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
        self.records_seen_ = records_seen
