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

from collections.abc import Iterable, Sequence
from numbers import Integral
from typing import Any

import numpy as np

from streamgmm.em.online import record_count
from streamgmm.em.shared_reads import fit_on_shared_reads
from streamgmm.em.start import spawn_rng
from streamgmm.estimator import StreamingGaussianMixture
from streamgmm.estimator.base import settings_of
from streamgmm.estimator.constraints import Interval, Options, check_value
from streamgmm.estimator.inference import weighted_log_likelihood
from streamgmm.inputs import resolve_input
from streamgmm.io.sources.chunk_source import ArraySource, is_dask_collection
from streamgmm.kernels.quadratic import one_blas_thread
from streamgmm.kernels.scoring import score_chunk
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
    settings_of(template)
    source = resolve_input(X, nan_policy=template.nan_policy, sample_weight=sample_weight)
    _check_plan(template, source, held_out)
    models = [
        StreamingGaussianMixture(k, covariance_type=t, random_state=random_state, **estimator_params)
        for t in types
        for k in ks
    ]

    def reservoir(rng: np.random.Generator) -> HeldOutReservoir:
        return HeldOutReservoir(held_out, spawn_rng(rng))

    settings = [settings_of(model) for model in models]
    shared = fit_on_shared_reads(source, settings, reservoir if held_out is not None else None)
    reservoir = shared.reservoir
    for model, fitted in zip(models, shared.fitted):
        model.fitted_state_ = fitted
    if reservoir is not None:
        totals, n_scored, scored_on = _score_held_out(models, reservoir, shared.unit.value)
    else:
        # When the sample was the whole data, it is what the candidates are scored on.
        sample = shared.sample
        scored = source if shared.plan != "start" else ArraySource(sample.features, weights=sample.weights)
        totals, n_scored = _scoring_pass(models, scored, template.batch_size)
        scored_on = "full pass"
    candidates = [
        Candidate(m.n_components, m.covariance_type, m.params_.n_parameters(), total, n_scored, m)
        for m, total in zip(models, totals)
    ]
    extra = {"returned_from_reservoir": reservoir.evicted if reservoir is not None else 0}
    return SelectionResult(candidates, criterion, scored_on, n_scored, shared.n_passes, shared.records_per_pass, extra)


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


def _score_held_out(
    models: list[StreamingGaussianMixture], reservoir: HeldOutReservoir, scale: float = 1.0
) -> tuple[list[float], float, str]:
    """Each candidate's total log-likelihood on the held-out records (kept with the weights in
    the training's unit, ``scale``: scored with the weights as given) and their total weight."""
    scored = reservoir.records()
    if scored is None or scored.n_records == 0:
        raise ValueError("the held-out reservoir is empty")
    # One BLAS thread, as the training's E-steps: see StreamingGaussianMixture.score_samples.
    X, weights = scored
    if weights is not None and scale != 1.0:
        weights = weights * scale
    with one_blas_thread():
        sums = [weighted_log_likelihood(score_chunk(X, m.params_)[0], weights) for m in models]
    return [total for total, _ in sums], record_count(sums[0][1]), "held-out reservoir"


def _scoring_pass(
    models: list[StreamingGaussianMixture], source: Any, batch_size: int
) -> tuple[list[float], int | float]:
    """Each candidate's total log-likelihood over one pass, and the records scored."""
    totals = [0.0] * len(models)
    n_scored = 0.0
    with one_blas_thread():
        for X, weights in source.batches(batch_size, None):
            for i, model in enumerate(models):
                total, count = weighted_log_likelihood(score_chunk(X, model.params_)[0], weights)
                totals[i] += total
            n_scored += count
    return totals, record_count(n_scored)
