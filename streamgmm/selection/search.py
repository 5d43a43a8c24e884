"""Choosing K (and the covariance type) in one streaming job: every candidate shares every read.

:func:`select` fits one model per candidate ``(n_components, covariance_type)`` over the same
stream, by the plan a lone :class:`~streamgmm.estimator.StreamingGaussianMixture` fit would
follow (see its ``algorithm``). The initialisation sample is drawn once and each candidate is
initialised from it exactly as a lone fit would be; when the sample is the whole data, that is
each candidate's fit. Otherwise each decoded mini-batch is fed to every candidate's online
update in turn, then every candidate's exact EM E-step (each until its own ``tol``), so the data
are read and decoded once per pass however many candidates there are. A last pass scores every
batch under every candidate: the total log-likelihood over all N records gives

    BIC = -2 log L + p log N,    AIC = -2 log L + 2 p

with p free parameters (as ``StreamingGaussianMixture.bic``/``aic`` and scikit-learn). With
``held_out=n`` the candidates are fitted by one online pass and there is no scoring pass: a
uniform reservoir of n records is kept out of the training stream as it goes by (a record
evicted from it returns to training then), and the criteria are computed on it, N = n. (The
initialisation sample is drawn before, from all records, so it may share a few with the
reservoir; the stream's updates soon outweigh it.)

Without ``held_out``, each candidate's model equals a ``StreamingGaussianMixture`` fitted alone
with the same parameters and ``random_state`` on the same input. :func:`select` has an example.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Sequence
from numbers import Integral
from typing import Any

import numpy as np

from streamgmm.em.batch import EMIterations, shared_pass_statistics
from streamgmm.em.fit_history import FitHistory
from streamgmm.em.online import online_update, record_count, refit_at_end
from streamgmm.em.start import Start, draw_sample, spawn_rng
from streamgmm.estimator import StreamingGaussianMixture
from streamgmm.estimator.constraints import Interval, Options, check_value
from streamgmm.estimator.inference import weighted_log_likelihood
from streamgmm.estimator.random_state import make_rng
from streamgmm.inputs import resolve_input
from streamgmm.io.sources.chunk_source import ArraySource, is_dask_collection, is_weighted, rebatch, split_weights
from streamgmm.kernels.quadratic import one_blas_thread
from streamgmm.kernels.scoring import score_chunk
from streamgmm.mixture.reseeding import WorstRecords
from streamgmm.selection.held_out import HeldOutReservoir
from streamgmm.selection.result import CRITERIA, Candidate, SelectionResult, parse_candidates

# Estimator parameters a candidate does not take from select's keywords: its shape is the
# candidate's, the *_init arrays fit one shape only, random_state is select's own, and every
# candidate starts afresh. Every other parameter is shared by all candidates.
_PER_CANDIDATE = (
    "n_components", "covariance_type", "weights_init", "means_init", "precisions_init", "random_state", "warm_start"
)  # fmt: skip
SHARED_PARAMETERS = tuple(name for name in StreamingGaussianMixture().get_params() if name not in _PER_CANDIDATE)
# select's own options, checked by the estimator parameters' function (held_out may also be None).
SELECT_CONSTRAINTS = {"criterion": Options(CRITERIA), "held_out": Interval(Integral, 1)}


class _Fitting:
    """One candidate while the stream goes by: the estimator, its start, online state and pass totals."""

    def __init__(self, model: StreamingGaussianMixture, start: Start):
        self.model = model
        self.start = start
        # The same start state (and moves' seed) a lone fit of this model takes.
        self.state = model.online_state(start, make_rng(model.random_state))
        self.trace = FitHistory()
        self.schedule = model.step_schedule()
        self.pass_means: list[float] = []
        self.converged = False
        self.total_ll = 0.0
        self.total_n = 0

    def update(self, batch: np.ndarray, weights: np.ndarray | None = None) -> None:
        m = self.model
        self.state, update = online_update(
            self.state, batch, self.schedule, m.burn_in, m.reg_covar, m.batch_size, np.dtype(m.compute_dtype), weights
        )
        if not update.n_records:
            return  # a batch of weight zero: no step
        self.total_ll += update.mean_log_likelihood * update.n_records
        self.total_n += update.n_records
        n = m.in_user_unit(update.n_records)
        self.trace.record(update.mean_log_likelihood, n, update.step_size, update.reseeded, update.moves)

    def end_pass(self, tol: float) -> None:
        self.pass_means.append(self.total_ll / self.total_n)
        self.total_ll, self.total_n = 0.0, 0
        if len(self.pass_means) > 1 and abs(self.pass_means[-1] - self.pass_means[-2]) < tol:
            self.converged = True


def select(
    X: Any,
    n_components: Iterable[int] | str = range(1, 11),
    covariance_types: Sequence[str] | str = ("full",),
    *,
    criterion: str = "bic",
    held_out: int | None = None,
    random_state: Any = None,
    sample_weight: Any = None,
    **estimator_params: Any,
) -> SelectionResult:
    """Fit and score candidate numbers of components and covariance types in one streaming job.

    Every candidate ``(K, covariance type)`` is fitted on the same reads of the data, by the
    plan a lone :class:`~streamgmm.StreamingGaussianMixture` fit would follow, then scored by
    BIC and AIC on a full pass (or on a held-out reservoir of ``held_out`` records). Without
    ``held_out``, each candidate's model equals a ``StreamingGaussianMixture`` fitted alone with
    the same parameters and ``random_state`` on the same input.

    Parameters
    ----------
    X : array-like of shape (n_records, n_features), iterable of such chunks, table or path
        Anything ``StreamingGaussianMixture.fit`` takes except a Dask collection. Without
        ``held_out`` it must be a source that can be read more than once.

    n_components : iterable of int or str, default=range(1, 11)
        The candidate numbers of components: an iterable of K, or a string such as
        ``"2..12"`` (inclusive), ``"2,4,8"`` or ``"1,3..5"``. Duplicates are dropped and the
        values sorted; each must be at least 1.

    covariance_types : sequence of str or str, default=('full',)
        The candidate covariance types, among 'full', 'tied', 'diag' and 'spherical', as a
        sequence or a comma-separated string. Every K is tried with every type.

    criterion : {'bic', 'aic'}, default='bic'
        The criterion whose lowest value picks ``result.best``.

    held_out : int, default=None
        If given, the candidates are fitted by one online pass and scored on a uniform
        reservoir of ``held_out`` records kept out of the training stream, with no scoring
        pass; this also works on a stream that can be read only once. Needs ``algorithm``
        'auto' or 'online' and ``max_passes=1``.

    random_state : int, numpy.random.Generator, numpy.random.RandomState or None, default=None
        Seed for the initialisation sample, the shuffles, every candidate's initialisation
        (each as a lone fit with this ``random_state`` would have it) and the reservoir.

    sample_weight : array-like of shape (n_records,), default=None
        Record weights for an array or in-memory table ``X`` (a source with a
        ``weight_column`` brings its own): a record of weight w counts as w records in the
        fits and in the criteria, whose N is the total weight.

    **estimator_params : dict
        Estimator parameters shared by all candidates, as for ``StreamingGaussianMixture``:
        every one of its parameters except ``n_components`` and ``covariance_type`` (the
        candidates'), ``random_state`` (above), the ``*_init`` arrays and ``warm_start``.

    Returns
    -------
    result : SelectionResult
        Every candidate with its fitted model and scores; the best is ``result.best`` and its
        fitted, saveable estimator ``result.best_model_``.

    Raises
    ------
    TypeError
        If ``X`` is a Dask collection, or ``estimator_params`` holds a parameter that cannot be
        shared between candidates.

    ValueError
        If a candidate, ``criterion`` or ``held_out`` is invalid; if ``held_out`` is given
        with ``algorithm='batch'`` or ``max_passes > 1``; if ``X`` can be read only once and
        ``held_out`` is not given.

    See Also
    --------
    StreamingGaussianMixture.bic : The BIC of one fitted model.
    StreamingGaussianMixture.aic : The AIC of one fitted model.

    Notes
    -----
    With L the likelihood of the N records scored and p the model's free parameters,
    ``BIC = -2 log L + p log N`` and ``AIC = -2 log L + 2 p``, as scikit-learn's.

    Examples
    --------
    >>> import streamgmm
    >>> X, _, _ = streamgmm.make_mixture(3000, n_components=3, n_features=2, random_state=0)
    >>> result = streamgmm.select(X, n_components="1..5", random_state=0)
    >>> result.best.n_components
    3
    >>> result.best_model_.predict(X[:3]).shape
    (3,)

    Several covariance types, scored by AIC on 500 held-out records:

    >>> result = streamgmm.select(
    ...     X, [2, 3, 4], "full,diag", criterion="aic", held_out=500, random_state=0, init_size=1000, batch_size=500
    ... )
    >>> result.best.n_components, result.best.covariance_type, result.scored_on
    (3, 'full', 'held-out reservoir')
    """
    ks, types = _candidate_shapes(n_components, covariance_types)
    _check_options(criterion, held_out, estimator_params)
    if is_dask_collection(X):
        raise TypeError(
            "select runs in this process; pass a Parquet path or an in-process source, not a Dask collection"
        )
    template = StreamingGaussianMixture(random_state=random_state, **estimator_params)
    template.validate_params()
    source = resolve_input(X, nan_policy=template.nan_policy, sample_weight=sample_weight)
    weighted = is_weighted(source)
    _check_plan(template, source, held_out)
    rng = make_rng(random_state)
    template.shuffle_generator(source, rng)  # a shuffle the source cannot do is refused before any work
    sample, shuffle_rng, whole = draw_sample(source, template.init_size, rng)
    # The candidates train with the weights in a lone fit's unit (its sample's mean weight) and are
    # scored with the weights as given.
    starting = template.normalised_sample(source, sample)
    training = template.scaled_source(source)
    fittings = _candidates(
        ks, types, starting, shuffle_rng, whole, rng, random_state, estimator_params, weighted,
        scale=template.weight_unit(), names=source.feature_names,
        progress=source.start_progress,
    )  # fmt: skip
    # With held_out the candidates are fitted in one online pass: the held-out records are never trained on.
    plan = "online" if held_out is not None else template.fit_plan(source, fittings[0].start)
    reservoir = HeldOutReservoir(held_out, spawn_rng(rng)) if held_out is not None else None
    records_per_pass, n_passes = _train(fittings, training, template, plan, shuffle_rng, reservoir, sample)
    if reservoir is not None:
        totals, n_scored, scored_on = _score_held_out(fittings, reservoir, weighted, template.weight_unit())
    else:
        scored = (
            source if plan != "start" else ArraySource.with_weight_column(sample) if weighted else ArraySource(sample)
        )
        totals, n_scored = _scoring_pass(fittings, scored, template)
        scored_on = "full pass"
    candidates = [
        Candidate(
            f.model.n_components, f.model.covariance_type, f.model.params_.n_parameters(), total, n_scored, f.model
        )
        for f, total in zip(fittings, totals)
    ]
    extra = {"returned_from_reservoir": reservoir.evicted if reservoir is not None else 0}
    return SelectionResult(candidates, criterion, scored_on, n_scored, n_passes, records_per_pass, extra)


def _candidate_shapes(
    n_components: Iterable[int] | str, covariance_types: Sequence[str] | str
) -> tuple[list[int], list[str]]:
    """The candidates' K values and covariance types, checked."""
    ks = parse_candidates(n_components) if isinstance(n_components, str) else sorted({int(k) for k in n_components})
    types = covariance_types.split(",") if isinstance(covariance_types, str) else list(covariance_types)
    types = list(dict.fromkeys(t.strip() for t in types))
    if not ks or min(ks) < 1:
        raise ValueError(f"n_components must be integers >= 1, got {ks}")
    if not types:
        raise ValueError("covariance_types is empty")
    for t in types:
        check_value("covariance_type", t)
    return ks, types


def _check_options(criterion: str, held_out: int | None, estimator_params: dict[str, Any]) -> None:
    check_value("criterion", criterion, SELECT_CONSTRAINTS["criterion"])
    unknown = set(estimator_params) - set(SHARED_PARAMETERS)
    if unknown:
        raise TypeError(
            f"select() got parameters it cannot share between candidates: {sorted(unknown)}; "
            f"it takes {', '.join(SHARED_PARAMETERS)}"
        )
    if held_out is not None:
        check_value("held_out", held_out, SELECT_CONSTRAINTS["held_out"])


def _check_plan(template: StreamingGaussianMixture, source: Any, held_out: int | None) -> None:
    if held_out is not None and template.algorithm == "batch":
        raise ValueError("held_out needs an online fit (algorithm='auto' or 'online'): batch EM trains on every record")
    if held_out is not None and template.max_passes > 1:
        raise ValueError("held_out needs max_passes=1: later passes could not tell held-out records apart")
    if not source.reiterable and held_out is None:
        raise ValueError(
            "this stream can be read only once: scoring on a full pass (or several passes) needs a source that "
            "can be read again (an array, a list, a callable, files); or score on held_out=N records"
        )


def _candidates(
    ks: list[int],
    types: list[str],
    sample: np.ndarray,
    shuffle_rng: np.random.Generator,
    whole: bool,
    rng: np.random.Generator,
    random_state: Any,
    estimator_params: dict[str, Any],
    weighted: bool = False,
    scale: float = 1.0,
    names: list[str] | None = None,
    progress: Any = None,
) -> list[_Fitting]:
    """Every candidate started on the one shared sample. Each starts from the generator as a
    lone fit would have it after its own sample draw, so it is initialised exactly as
    StreamingGaussianMixture(random_state=...) would be on this input, and visits the batches
    in the same order; ``scale`` is the unit of the sample's weights, a lone fit's; ``names``, the
    features' column names; ``progress``, the source's ``start_progress``."""
    after_sample = copy.deepcopy(rng)
    fittings = []
    for t in types:
        for k in ks:
            model = StreamingGaussianMixture(k, covariance_type=t, random_state=random_state, **estimator_params)
            model.begin_weight_scale(scale)
            start = model.start_on_sample(
                sample,
                shuffle_rng,
                whole,
                copy.deepcopy(after_sample),
                weighted=weighted,
                names=names,
                progress=progress,
            )
            model._weighted_input = weighted
            fittings.append(_Fitting(model, start))
    return fittings


def _train(
    fittings: list[_Fitting],
    source: Any,
    template: StreamingGaussianMixture,
    plan: str,
    shuffle_rng: np.random.Generator,
    reservoir: HeldOutReservoir | None,
    sample: np.ndarray,
) -> tuple[int, int]:
    """Every candidate fitted by ``plan`` on shared reads; records per pass and passes made."""
    records_per_pass = 0
    n_passes = 0
    if plan in ("online", "online+batch"):
        # As a lone fit: the default plan on a stream read once ends with a refit on its sample.
        final_refit = plan == "online" and template.algorithm == "auto" and reservoir is None
        records_per_pass, n_passes = _online_passes(fittings, source, template, shuffle_rng, reservoir, final_refit)
    if plan in ("batch", "online+batch"):
        records_per_pass, exact = _exact_passes(fittings, source, template, plan == "online+batch")
        n_passes += exact
    if plan == "start":
        for fitting in fittings:
            fitting.model.fit_from_start(fitting.start)
        records_per_pass = (
            record_count(split_weights(sample, is_weighted(source))[1].sum())
            if is_weighted(source)
            else sample.shape[0]
        )
    for fitting in fittings:
        fitting.model.describe_input(source)
    return records_per_pass, n_passes


def _score_held_out(
    fittings: list[_Fitting], reservoir: HeldOutReservoir, weighted: bool = False, scale: float = 1.0
) -> tuple[list[float], float, str]:
    """Each candidate's total log-likelihood on the held-out records (kept with the weights in
    the training's unit, ``scale``: scored with the weights as given) and their total weight."""
    scored = reservoir.records()
    if scored.shape[0] == 0:
        raise ValueError("the held-out reservoir is empty")
    # One BLAS thread, as the training's E-steps: see StreamingGaussianMixture.score_samples.
    X, weights = split_weights(scored, weighted)
    if weights is not None and scale != 1.0:
        weights = weights * scale
    with one_blas_thread():
        sums = [weighted_log_likelihood(score_chunk(X, f.model.params_)[0], weights) for f in fittings]
    return [total for total, _ in sums], record_count(sums[0][1]), "held-out reservoir"


def _online_passes(
    fittings: list[_Fitting],
    source: Any,
    template: StreamingGaussianMixture,
    shuffle_rng: np.random.Generator,
    reservoir: HeldOutReservoir | None,
    final_refit: bool = False,
) -> tuple[int, int]:
    """Every candidate's online passes over shared reads; returns records per pass and passes."""
    rng = template.shuffle_generator(source, shuffle_rng)
    records_per_pass = 0
    n_passes = 0
    for n_passes in range(1, template.max_passes + 1):
        active = [f for f in fittings if not f.converged]
        if not active:
            n_passes -= 1
            break
        batches: Iterator[np.ndarray] = source.batches(template.batch_size, rng)
        if reservoir is not None:
            batches = rebatch(reservoir.withhold(batches), template.batch_size)
        records_per_pass = 0
        weighted = is_weighted(source)
        for batch in batches:
            X, weights = split_weights(batch, weighted)
            records_per_pass += X.shape[0] if weights is None else weights.sum()
            for fitting in active:
                fitting.update(X, weights)
        if records_per_pass == 0:
            if reservoir is not None and reservoir.seen:
                raise ValueError(
                    f"held_out={reservoir.size} keeps every one of the {reservoir.seen} records out of training"
                )
            raise ValueError("the source yielded no records")
        for fitting in active:
            fitting.end_pass(template.tol)
    for fitting in fittings:
        if final_refit:
            fitting.state, moves = refit_at_end(fitting.state, fitting.model.reg_covar)
            fitting.trace.add_moves(moves)
        fitting.model.set_online_result(fitting.state, fitting.converged, fitting.pass_means, fitting.trace)
    return template.in_user_unit(records_per_pass), n_passes


def _exact_passes(
    fittings: list[_Fitting], source: Any, template: StreamingGaussianMixture, after_online: bool
) -> tuple[int, int]:
    """Every candidate's exact EM over shared reads, each until its own ``tol``; returns the
    records of a pass and the passes made."""
    runs = []
    for fitting in fittings:
        params = fitting.state.params if after_online else fitting.start.params
        shift = fitting.state.statistics.shift if after_online else fitting.start.shift
        runs.append(
            (
                shift,
                EMIterations(
                    params,
                    reg_covar=template.reg_covar,
                    tol=template.tol,
                    max_iter=template.max_iter,
                    lower_bound=-np.inf,
                ),
            )
        )
    dtype = np.dtype(template.compute_dtype)
    passes = 0
    while True:
        active = [(shift, run) for shift, run in runs if not run.done]
        if not active:
            break
        worst = [WorstRecords(run.params.n_components, run.params.n_features) for _, run in active]
        with one_blas_thread():
            totals = shared_pass_statistics(
                source,
                [run.params for _, run in active],
                [shift for shift, _ in active],
                template.batch_size,
                worst,
                dtype,
            )
        passes += 1
        for (_, run), stats, w in zip(active, totals, worst):
            run.step(stats, w.records)
    for fitting, (shift, run) in zip(fittings, runs):
        earlier = fitting.pass_means if after_online else None
        fitting.model.set_exact_result(run.result(), shift, False, earlier, len(fitting.pass_means))
    statistics = runs[0][1].statistics
    return (0 if statistics is None else template.in_user_unit(statistics.n_records)), passes


def _scoring_pass(fittings: list[_Fitting], source: Any, template: StreamingGaussianMixture) -> tuple[list[float], int]:
    """Each candidate's total log-likelihood over one pass, and the records scored."""
    totals = [0.0] * len(fittings)
    n_scored = 0.0
    weighted = is_weighted(source)
    with one_blas_thread():
        for batch in source.batches(template.batch_size, None):
            X, weights = split_weights(batch, weighted)
            for i, fitting in enumerate(fittings):
                total, count = weighted_log_likelihood(score_chunk(X, fitting.model.params_)[0], weights)
                totals[i] += total
            n_scored += count
    return totals, record_count(n_scored)
