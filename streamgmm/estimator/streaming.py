"""``StreamingGaussianMixture``: a Gaussian mixture fitted by streaming, scikit-learn style.

It fits weights, means and covariances of K Gaussians to an array or to any iterable of chunks,
holding only one mini-batch (plus a small initialisation sample) in memory. ``algorithm="auto"``
(default) fits candidates to convergence on the initialisation sample (all the data, when it
fits), then makes one stepwise-EM pass and exact EM passes until ``tol``; ``"online"`` is
stepwise EM alone; ``"batch"`` is exact EM, one pass per iteration, identical to scikit-learn's
``GaussianMixture`` from the same starting point.
"""

from streamgmm.estimator.attributes import FittedAttributes
from streamgmm.estimator.base import EstimatorBase
from streamgmm.estimator.fitting import FittingMixin
from streamgmm.estimator.inference import InferenceMixin
from streamgmm.estimator.persistence import PersistenceMixin


class StreamingGaussianMixture(PersistenceMixin, InferenceMixin, FittingMixin, FittedAttributes, EstimatorBase):
    """Gaussian mixture fitted by streaming EM over data larger than memory.

    Fits the weights, means and covariances of K Gaussians to an array or to any iterable of
    chunks, holding only one mini-batch (plus a small initialisation sample) in memory. The
    parameters, fitted attributes and methods follow scikit-learn's ``GaussianMixture``.

    ``X`` may be an array of shape (n_records, n_features), an iterable of such chunks, an Arrow
    table or reader, a DataFrame, a Parquet path, glob, list of paths or ``pyarrow.dataset``
    dataset, or a :class:`~streamgmm.ParquetSource` for column, filter and ``nan_policy``
    options; a Dask collection is fitted on the workers.

    Parameters
    ----------
    n_components : int, default=1
        The number of mixture components K.

    covariance_type : {'full', 'tied', 'diag', 'spherical'}, default='full'
        The form of the covariances, as scikit-learn's.

    algorithm : {'auto', 'online', 'batch'}, default='auto'
        What ``fit`` runs.

        - ``'auto'``: when the initialisation sample holds all the data, its EM (run to
          ``tol``) is the fit, as scikit-learn's; otherwise ``max_passes`` stepwise-EM passes,
          then exact EM passes until ``tol`` (at most ``max_iter``); on a stream that can be
          read only once, stepwise EM alone.
        - ``'online'``: stepwise EM, ``max_passes`` passes.
        - ``'batch'``: exact EM, one pass per iteration until ``tol`` or ``max_iter``.

        A warm start continues with exact EM (``'auto'`` on a source that can be read again,
        ``'batch'``) or stepwise EM.

    tol : float, default=1e-3
        Convergence threshold on the change of the mean log-likelihood per record between
        iterations (EM on the sample, exact EM) or passes (online EM).

    reg_covar : float, default=1e-6
        Non-negative regularisation added to the covariance diagonals, exactly as
        scikit-learn does; with 0, a singular covariance raises scikit-learn's ``ValueError``.

    max_iter : int, default=100
        Iterations of EM on the sample, and of exact EM over the data. With 0 the model is its
        start.

    n_init : int, default=8
        Initialisation candidates tried on the sample and raced by EM; the best by sample
        log-likelihood is kept. Unlike scikit-learn's ``n_init``, which repeats whole fits,
        candidates only cost work on the sample, so the default tries several.

    init_params : {'kmeans', 'k-means++', 'random', 'random_from_data'}, default='kmeans'
        How candidates start, as scikit-learn's, computed on the sample.

    weights_init : array-like of shape (n_components,), default=None
        User starting weights, refined by EM on the sample (by exact EM on all the data when
        ``algorithm='batch'``).

    means_init : array-like of shape (n_components, n_features), default=None
        User starting means, refined as ``weights_init``.

    precisions_init : array-like, default=None
        User starting precisions (inverse covariances), refined as ``weights_init``; the shape
        depends on ``covariance_type``, as for ``covariances_``.

    random_state : int, numpy.random.Generator, numpy.random.RandomState or None, default=None
        Seed for sampling, seeding and shuffling.

    warm_start : bool, default=False
        If True, ``fit`` starts from the current parameters instead of initialising.

    batch_size : int, default=8192
        Records per mini-batch: the online step, and the unit of reading.

    max_passes : int, default=1
        Passes of online EM over a source that can be read again.

    step_exponent : float, default=1.0
        The step size of mini-batch t is ``max((t + step_offset) ** -step_exponent,
        step_floor)``, scaled down for a short batch. The default 1 averages all batches
        equally (lowest variance, robust to sorted streams), because the start is already an EM
        fit on a uniform sample; see ``docs/design.md``, "The step-size rule".

    step_offset : float, default=2.0
        The offset of the step-size rule above.

    step_floor : float, default=0.0
        The smallest step size of the rule above.

    burn_in : int, default=0
        Mini-batches blended before the first online M-step. The running statistics start as
        those implied by the initial fit on the sample, so none is needed by default.

    init_size : int, default=20000
        Records in the initialisation sample.

    shuffle : bool or {'records', 'row_groups'}, default=True
        The order of online EM's visit, because sorted data biases a single pass. True: the
        finest order the source can shuffle: records of an in-memory array or table,
        ``'row_groups'`` of a Parquet lake (row groups of all files in a random order, records
        within each permuted), nothing for a stream of chunks. ``'records'`` or
        ``'row_groups'`` ask for one (an error where the source cannot); False keeps the
        source's order. ``partial_fit`` never shuffles.

    compute_dtype : {'float64', 'float32'}, default='float64'
        The precision of the E-step of full covariances (other types always use float64).
        float32 is faster and fits as well; the statistics are summed in float64 either way.

    nan_policy : {'raise', 'skip', 'marginalize'}, default='raise'
        What a missing value (NaN, or a null in a table) of an array or table passed to
        ``fit``, ``partial_fit``, ``predict`` and friends means (a
        :class:`~streamgmm.ParquetSource` or other source object keeps its own policy).
        ``'raise'``: an error. ``'skip'``: fitting leaves out the records with a missing value
        (counted in ``n_skipped_``); their scores are NaN and their prediction -1.
        ``'marginalize'``: exact EM for incomplete records (Ghahramani & Jordan, 1994): a
        record's E-step uses the marginal density of its observed features, and the M-step the
        conditional expectations of the missing ones; ``predict_proba``, ``score_samples`` and
        ``predict`` of an incomplete record come from its observed features. Records with
        nothing observed are left out of fitting, and score NaN (``predict``: -1). A feature
        with no observed value in the records a fit starts on (the initialisation sample, the
        first ``partial_fit`` chunk) is a ``DataError`` naming it.

    moves : {'auto', 'off'}, default='auto'
        Births, merges and refits for streams read in stored order (sorted by time, key or
        partition), on every online path: records no component explains are gathered, and a
        component is born where they call for one, room made by merging the two components
        whose merge loses least; a uniform sample of the stream refits the allocation when the
        stream has changed. ``'off'``: the plain stepwise recursion. See ``docs/design.md``,
        "Streams in stored order"; the moves taken are in ``fit_history_.moves``.

    Attributes
    ----------
    weights_ : ndarray of shape (n_components,)
        The weight of each component.

    means_ : ndarray of shape (n_components, n_features)
        The mean of each component.

    covariances_ : ndarray
        The covariance of each component. Its shape depends on ``covariance_type``:
        (n_components,) for 'spherical', (n_features, n_features) for 'tied',
        (n_components, n_features) for 'diag', (n_components, n_features, n_features) for
        'full'.

    precisions_ : ndarray
        The inverses of the covariances, of the same shape as ``covariances_``.

    precisions_cholesky_ : ndarray
        The Cholesky factors of the precisions, of the same shape as ``covariances_``.

    converged_ : bool
        Whether EM reached ``tol`` (always False after ``partial_fit``).

    n_iter_ : int
        Exact EM iterations plus online passes of the fit (with ``partial_fit``: its calls).

    lower_bound_ : float
        Mean log-likelihood per record: of the last exact EM iteration's E-step, or of the last
        online pass's batches, each scored before the update that learns from it.

    lower_bounds_ : list of float
        ``lower_bound_`` of every iteration or pass, in order.

    n_features_in_ : int
        Number of features seen during ``fit``.

    feature_names_in_ : ndarray of shape (``n_features_in_``,)
        Names of the features, when fitted on named columns (a table, DataFrame or Parquet
        lake); later inputs with names are read by these names. Absent otherwise.

    n_steps_ : int
        Online mini-batches so far (for exact EM, the mini-batches of one pass).

    records_seen_ : int or float
        Records the running statistics account for: every record of every online pass and
        ``partial_fit`` call, or the records of one pass after exact EM. With record weights,
        their total weight, in the weights' own unit (a float when the weights are fractional).
        Weights are relative: a fit measures them in units of the mean positive weight of its
        initialisation sample (kept with the model for ``partial_fit``), so any common factor
        gives the same fit; a total weight beyond float64's range is an error.

    n_skipped_ : int
        Records the last pass left out: those with a missing value under
        ``nan_policy='skip'``, those with nothing observed under ``'marginalize'``.

    classes_ : ndarray of shape (n_components,)
        The component indices ``0 .. K-1``: the labels ``predict`` gives and the columns of
        ``predict_proba``, as a classifier's ``classes_`` (dask-ml's wrappers need it).

    fit_history_ : FitHistory
        A bounded trace of the online steps (:class:`~streamgmm.em.fit_history.FitHistory`),
        with the births and refits taken (``fit_history_.moves``), saved with the model and
        continued by ``partial_fit`` and ``warm_start``.

    online_state_ : OnlineState
        The state the next ``partial_fit`` (or a ``warm_start`` fit) resumes from
        (:class:`~streamgmm.em.online.OnlineState`: parameters, running statistics, step and
        record counters, the births' and merges' state), as saved with the model. Read-only.

    fitted_state_ : Fitted
        The one fitted state every attribute above is a view of
        (:class:`~streamgmm.em.fitted.Fitted`), set by ``fit``, ``partial_fit``, ``load`` and
        ``select``. Read-only.

    See Also
    --------
    select : Choose K and the covariance type in one streaming job.
    assign : Write every record's responsibilities as Parquet.

    Examples
    --------
    >>> import numpy as np
    >>> from streamgmm import StreamingGaussianMixture
    >>> rng = np.random.default_rng(0)
    >>> X = np.concatenate([rng.normal(-5, 1, (5000, 2)), rng.normal(5, 1, (5000, 2))])
    >>> gmm = StreamingGaussianMixture(n_components=2, random_state=0).fit(X)
    >>> np.round(np.sort(gmm.means_[:, 0]))
    array([-5.,  5.])
    >>> labels = gmm.predict([[-5.0, -5.0], [5.0, 5.0]])
    >>> bool(labels[0] != labels[1])
    True
    """
