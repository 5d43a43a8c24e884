"""Inference on a fitted model: scores, responsibilities, predictions, BIC/AIC, sampling."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from streamgmm.em.random_state import make_rng
from streamgmm.estimator.base import check_fitted
from streamgmm.inputs import resolve_input
from streamgmm.io.sources.chunk_source import ChunkSource, is_dask_collection
from streamgmm.kernels.quadratic import one_blas_thread
from streamgmm.kernels.scoring import score_chunk
from streamgmm.mixture.params import MixtureParams


def model_source(
    model: Any,
    X: Any,
    *,
    client: Any = None,
    engine: str | None = None,
    local: bool = True,
    persist: bool | str = "auto",
    sample_weight: Any = None,
    fitting: bool = False,
) -> ChunkSource:
    """``X`` as a source for the fitted ``model`` (see :func:`~streamgmm.inputs.resolve_input`):
    tabular input read by the names the model was fitted on, anything else checked against
    ``n_features_in_``; with ``local`` (scoring here) a Dask collection is refused. Arrays
    and tables are read under ``nan_policy`` (``fitting``: for a fit, see
    :func:`~streamgmm.inputs.as_source`), weighted by ``sample_weight``."""
    fitted = check_fitted(model)
    n_features = fitted.params.n_features
    source = resolve_input(
        X,
        client=client,
        engine=engine,
        n_features=n_features,
        feature_names=fitted.feature_names,
        local=local,
        persist=persist,
        nan_policy=model.nan_policy,
        sample_weight=sample_weight,
        fitting=fitting,
    )
    if source.n_features is not None and source.n_features != n_features:
        raise ValueError(
            f"X has {source.n_features} features, but {type(model).__name__} is expecting "
            f"{n_features} features as input"
        )
    return source


class InferenceMixin:
    """Scores, responsibilities, predictions, information criteria and sampling of a fitted model."""

    # ------------------------------------------------------------------ inference

    def _batches(self, X: Any) -> Iterator[np.ndarray]:
        """The features of ``X``'s mini-batches (without a weighted source's weight column)."""
        check_fitted(self)
        source = model_source(self, X)
        return (batch.features for batch in source.batches(self.batch_size))

    def _per_batch(self, compute: Callable[[np.ndarray], np.ndarray], X: Any) -> np.ndarray:
        # One BLAS thread, as fitting's E-steps: a mini-batch's products are too small to gain
        # from a second thread, which only competes with other work for the cores.
        with one_blas_thread():
            return np.concatenate([compute(b) for b in self._batches(X)])

    def score_samples(self, X: Any) -> np.ndarray:
        """Compute the log-likelihood of each record under the model.

        Parameters
        ----------
        X : array-like of shape (n_records, n_features), iterable of such chunks, table or path
            Anything ``fit`` takes except a Dask collection; tabular input is read by
            ``feature_names_in_``.

        Returns
        -------
        log_prob : ndarray of shape (n_records,)
            The log density of each record under the mixture; of an incomplete record
            (``nan_policy='marginalize'``), the marginal density of its observed features. NaN
            for a record with nothing observed (or, under ``nan_policy='skip'``, with a
            missing value).

        Examples
        --------
        >>> import numpy as np
        >>> from streamgmm import StreamingGaussianMixture
        >>> X = np.array([[1, 2], [1, 4], [1, 0], [10, 2], [10, 4], [10, 0]])
        >>> gmm = StreamingGaussianMixture(n_components=2, random_state=0).fit(X)
        >>> gmm.score_samples([[1, 2], [1, 0]]).round(3)
        array([3.886, 3.136])
        """
        return self._per_batch(lambda b: score_chunk(b, self.params_)[0], X)

    def score(self, X: Any, y: Any = None, sample_weight: Any = None) -> float:
        """Compute the mean log-likelihood per record.

        Parameters
        ----------
        X : array-like of shape (n_records, n_features), iterable of such chunks, table or path
            Anything ``fit`` takes; tabular input is read by ``feature_names_in_``. A Dask
            collection is scored on its workers (only the partitions' sums travel), as dask-ml's
            wrappers ask.

        y : None
            Ignored; present for scikit-learn's API.

        sample_weight : array-like of shape (n_records,), default=None
            Record weights (for an array or in-memory table ``X``; a weighted source brings
            its own): the mean is weighted by them.

        Returns
        -------
        log_likelihood : float
            The (weighted) mean of :meth:`score_samples` over the records of ``X`` that have a
            score (records with nothing observed have none).

        Examples
        --------
        >>> import numpy as np
        >>> from streamgmm import StreamingGaussianMixture
        >>> X = np.array([[1, 2], [1, 4], [1, 0], [10, 2], [10, 4], [10, 0]])
        >>> gmm = StreamingGaussianMixture(n_components=2, random_state=0).fit(X)
        >>> round(gmm.score(X), 3)
        3.386
        """
        total, count = self._total_log_likelihood(X, sample_weight)
        return float(total / count)

    def _total_log_likelihood(self, X: Any, sample_weight: Any = None) -> tuple[float, float]:
        """The (weighted) sum of the records' log-likelihoods and the records' (weighted) count,
        over the records that have a score; a Dask collection is scored on its workers."""
        check_fitted(self)
        if is_dask_collection(X):
            source = model_source(self, X, local=False, sample_weight=sample_weight)
            totals = source.compute(source.map(source_log_likelihood, self.params_))
            total, count = (sum(values) for values in zip(*totals))
            return float(total), float(count)
        with one_blas_thread():
            source = model_source(self, X, sample_weight=sample_weight)
            total, count = source_log_likelihood(source, self.params_, self.batch_size)
        if count <= 0:
            raise ValueError("X has no record to score (none with an observed feature and a positive weight)")
        return total, count

    def predict_proba(self, X: Any) -> np.ndarray:
        """Compute each component's responsibility for each record.

        Parameters
        ----------
        X : array-like of shape (n_records, n_features), iterable of such chunks, table or path
            Anything ``fit`` takes except a Dask collection; tabular input is read by
            ``feature_names_in_``.

        Returns
        -------
        resp : ndarray of shape (n_records, n_components)
            The posterior probability of each component given each record; rows sum to one.
            Given only the observed features for an incomplete record; NaN for a record with
            nothing observed (or, under ``nan_policy='skip'``, with a missing value).

        Examples
        --------
        >>> import numpy as np
        >>> from streamgmm import StreamingGaussianMixture
        >>> X = np.array([[1, 2], [1, 4], [1, 0], [10, 2], [10, 4], [10, 0]])
        >>> gmm = StreamingGaussianMixture(n_components=2, random_state=0).fit(X)
        >>> gmm.predict_proba([[0, 1], [11, 3]]).round(3)
        array([[0., 1.],
               [1., 0.]])
        """
        return self._per_batch(lambda b: score_chunk(b, self.params_)[1], X)

    def predict(self, X: Any) -> np.ndarray:
        """Predict the most responsible component of each record.

        Parameters
        ----------
        X : array-like of shape (n_records, n_features), iterable of such chunks, table or path
            Anything ``fit`` takes except a Dask collection; tabular input is read by
            ``feature_names_in_``.

        Returns
        -------
        labels : ndarray of shape (n_records,)
            The index of each record's most responsible component (given its observed
            features); -1 for a record with nothing observed (or, under
            ``nan_policy='skip'``, with a missing value).

        Examples
        --------
        >>> import numpy as np
        >>> from streamgmm import StreamingGaussianMixture
        >>> X = np.array([[1, 2], [1, 4], [1, 0], [10, 2], [10, 4], [10, 0]])
        >>> gmm = StreamingGaussianMixture(n_components=2, random_state=0).fit(X)
        >>> gmm.predict([[0, 1], [11, 3]])
        array([1, 0])
        """
        return self._per_batch(self._labels, X)

    def _labels(self, batch: np.ndarray) -> np.ndarray:
        if not np.isnan(batch).any():
            return self.params_.weighted_log_prob(batch).argmax(axis=1)
        resp = score_chunk(batch, self.params_)[1]
        unscored = np.isnan(resp).any(axis=1)
        labels = np.where(unscored[:, None], 0.0, resp).argmax(axis=1)
        labels[unscored] = -1
        return labels

    def fit_predict(self, X: Any, y: Any = None) -> np.ndarray:
        """Fit the model to ``X``, then predict the component of each of its records.

        The same as ``fit(X).predict(X)``: ``X`` is read again to predict, so it must be a
        source that can be read more than once.

        Parameters
        ----------
        X : array-like of shape (n_records, n_features), iterable of such chunks, table or path
            Anything ``fit`` takes except a Dask collection.

        y : None
            Ignored; present for scikit-learn's API.

        Returns
        -------
        labels : ndarray of shape (n_records,)
            The index of each record's most responsible component.

        Examples
        --------
        >>> import numpy as np
        >>> from streamgmm import StreamingGaussianMixture
        >>> X = np.array([[1, 2], [1, 4], [1, 0], [10, 2], [10, 4], [10, 0]])
        >>> StreamingGaussianMixture(n_components=2, random_state=0).fit_predict(X)
        array([1, 1, 1, 0, 0, 0])
        """
        return self.fit(X).predict(X)

    def _information_criterion(
        self, X: Any, sample_weight: Any, penalty_per_parameter: Callable[[float], float]
    ) -> float:
        # One E-step pass gives both the likelihood and the number (weight) of records.
        total, n = self._total_log_likelihood(X, sample_weight)
        return -2 * total + self.params_.n_parameters() * penalty_per_parameter(n)

    def bic(self, X: Any, sample_weight: Any = None) -> float:
        """Bayesian information criterion on ``X``, as scikit-learn's (lower is better).

        ``-2 log L + p log N``, with L the likelihood of the N records of ``X`` and p the
        model's free parameters. With record weights, log L is the weighted sum of the
        records' log-likelihoods and N their total weight (a record of weight w counts as w
        records); records with nothing observed are not counted.

        Parameters
        ----------
        X : array-like of shape (n_records, n_features), iterable of such chunks, table or path
            Anything ``fit`` takes; tabular input is read by ``feature_names_in_``.

        sample_weight : array-like of shape (n_records,), default=None
            Record weights (for an array or in-memory table ``X``).

        Returns
        -------
        bic : float
            The criterion.

        Examples
        --------
        >>> import numpy as np
        >>> from streamgmm import StreamingGaussianMixture
        >>> X = np.array([[1, 2], [1, 4], [1, 0], [10, 2], [10, 4], [10, 0]])
        >>> gmm = StreamingGaussianMixture(n_components=2, random_state=0).fit(X)
        >>> print(round(gmm.bic(X), 3))
        -20.926
        """
        return self._information_criterion(X, sample_weight, math.log)

    def aic(self, X: Any, sample_weight: Any = None) -> float:
        """Akaike information criterion on ``X``, as scikit-learn's (lower is better).

        ``-2 log L + 2 p``, with L the likelihood of the records of ``X`` and p the model's free
        parameters; with record weights, log L is weighted as in :meth:`bic`.

        Parameters
        ----------
        X : array-like of shape (n_records, n_features), iterable of such chunks, table or path
            Anything ``fit`` takes; tabular input is read by ``feature_names_in_``.

        sample_weight : array-like of shape (n_records,), default=None
            Record weights (for an array or in-memory table ``X``).

        Returns
        -------
        aic : float
            The criterion.

        Examples
        --------
        >>> import numpy as np
        >>> from streamgmm import StreamingGaussianMixture
        >>> X = np.array([[1, 2], [1, 4], [1, 0], [10, 2], [10, 4], [10, 0]])
        >>> gmm = StreamingGaussianMixture(n_components=2, random_state=0).fit(X)
        >>> print(round(gmm.aic(X), 3))
        -18.636
        """
        return self._information_criterion(X, sample_weight, lambda n: 2.0)

    def sample(self, n_samples: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Draw random records from the fitted mixture, as scikit-learn's.

        The draws are seeded by ``random_state``, so with an int seed every call returns the
        same records.

        Parameters
        ----------
        n_samples : int, default=1
            The number of records to draw.

        Returns
        -------
        X : ndarray of shape (n_samples, n_features)
            The records, grouped by component.

        y : ndarray of shape (n_samples,)
            The component each record was drawn from.

        Examples
        --------
        >>> import numpy as np
        >>> from streamgmm import StreamingGaussianMixture
        >>> X = np.array([[1, 2], [1, 4], [1, 0], [10, 2], [10, 4], [10, 0]])
        >>> gmm = StreamingGaussianMixture(n_components=2, random_state=0).fit(X)
        >>> X_new, y_new = gmm.sample(4)
        >>> X_new.shape, y_new.shape
        ((4, 2), (4,))
        """
        check_fitted(self)
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


def source_log_likelihood(source: ChunkSource, params: MixtureParams, batch_size: int = 65536) -> tuple[float, float]:
    """A source's (weighted) total log-likelihood and record count, in mini-batches of
    ``batch_size``: the local pass of ``score``/``bic``, and on a worker one partition's."""
    total, count = 0.0, 0.0
    for X, weights in source.batches(batch_size):
        batch_total, batch_count = weighted_log_likelihood(score_chunk(X, params)[0], weights)
        total += batch_total
        count += batch_count
    return total, count


def weighted_log_likelihood(log_norm: np.ndarray, weights: np.ndarray | None) -> tuple[float, float]:
    """The (weighted) sum of the records' log-likelihoods and their (weighted) count, leaving
    out the records without a score (NaN: nothing observed).

    >>> weighted_log_likelihood(np.array([-1.0, np.nan, -3.0]), np.array([2.0, 5.0, 1.0]))
    (-5.0, 3.0)
    """
    scored = ~np.isnan(log_norm)
    if weights is None:
        if scored.all():
            return float(log_norm.sum()), float(log_norm.shape[0])
        return float(log_norm[scored].sum()), float(np.count_nonzero(scored))
    w = weights[scored]
    return float(w @ log_norm[scored]), float(w.sum())
