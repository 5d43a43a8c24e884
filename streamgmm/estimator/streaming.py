"""``StreamingGaussianMixture``: a Gaussian mixture fitted by streaming, scikit-learn style.

It fits weights, means and covariances of K Gaussians to an array or to any iterable of chunks,
holding only one mini-batch (plus a small initialisation sample) in memory. ``algorithm="auto"``
(default) fits candidates to convergence on the initialisation sample (all the data, when it
fits), then makes one stepwise-EM pass and exact EM passes until ``tol``; ``"online"`` is
stepwise EM alone; ``"batch"`` is exact EM, one pass per iteration, identical to scikit-learn's
``GaussianMixture`` from the same starting point.
"""

from streamgmm.estimator.base import EstimatorBase
from streamgmm.estimator.fitting import FittingMixin
from streamgmm.estimator.inference import InferenceMixin
from streamgmm.estimator.persistence import PersistenceMixin


class StreamingGaussianMixture(PersistenceMixin, InferenceMixin, FittingMixin, EstimatorBase):
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
