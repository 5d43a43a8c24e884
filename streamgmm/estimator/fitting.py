"""Fitting: ``fit`` and ``partial_fit`` hand the input, resolved to a source, to the trainer
(:mod:`streamgmm.em.trainer`) and keep the fitted state it returns."""

from __future__ import annotations

from typing import Any, Self

from streamgmm.dask.source import DaskSource
from streamgmm.em import trainer
from streamgmm.estimator.base import settings_of
from streamgmm.estimator.inference import model_source
from streamgmm.estimator.runners import em_runners
from streamgmm.inputs import resolve_input
from streamgmm.io.sources.chunk_source import ChunkSource
from streamgmm.mixture.initialization import user_start_width


class FittingMixin:
    """``fit`` and ``partial_fit``: the estimator's face of the trainer."""

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
        settings = settings_of(self)
        warm = getattr(self, "fitted_state_", None) if self.warm_start else None
        if warm is not None:
            trainer.check_same_model(warm, settings)
        source = self._fit_source(X, warm is not None, client, engine, persist, sample_weight)
        if persist != "auto" and not isinstance(source, DaskSource):
            raise ValueError("persist applies to Dask inputs only (a client, engine='dask' or a Dask collection)")
        runners = em_runners(source, partitions_per_step)
        self.fitted_state_ = trainer.fit(source, settings, runners=runners, warm=warm)
        return self

    def _fit_source(
        self, X: Any, warm: bool, client: Any, engine: str | None, persist: bool | str, sample_weight: Any
    ) -> ChunkSource:
        if warm:
            return model_source(
                self, X, client=client, engine=engine, local=False, persist=persist, sample_weight=sample_weight,
                fitting=True,
            )  # fmt: skip
        # A stream of chunks does not know its width until read. With every *_init given the
        # start needs no sample, so the width comes from means_init (chunks are checked against
        # it) rather than from a whole read of the stream for a sample that would be thrown away.
        return resolve_input(
            X,
            client=client,
            engine=engine,
            n_features=user_start_width(self.weights_init, self.means_init, self.precisions_init),
            persist=persist,
            nan_policy=self.nan_policy,
            sample_weight=sample_weight,
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
        settings = settings_of(self)
        fitted = getattr(self, "fitted_state_", None)
        if fitted is not None:
            trainer.check_same_model(fitted, settings)
            source = model_source(self, X, client=client, local=False, sample_weight=sample_weight, fitting=True)
        else:
            source = resolve_input(X, client=client, nan_policy=self.nan_policy, sample_weight=sample_weight)
        runners = em_runners(source, partitions_per_step)
        self.fitted_state_ = trainer.partial_fit(source, settings, runners=runners, fitted=fitted)
        return self
