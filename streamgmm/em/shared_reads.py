"""Many models fitted on one read of the data: the trainer's plan for every candidate of
``select`` at once.

The initialisation sample is drawn once and each model is started from it exactly as a lone
fit (:func:`~streamgmm.em.trainer.fit`) would be; when the sample is the whole data, that is
each model's fit. Otherwise each decoded mini-batch is fed to every model's online update in
turn, then every model's exact EM E-step (each until its own ``tol``), so the data are read and
decoded once per pass however many models there are. Without a held-out reservoir, each
model's fitted state equals a lone fit's with the same settings on the same input.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamgmm.em.batch import EMIterations, shared_pass_statistics
from streamgmm.em.fit_history import FitHistory
from streamgmm.em.fitted import Fitted, described, exact_result, online_result, start_result
from streamgmm.em.online import online_update, record_count, refit_at_end
from streamgmm.em.random_state import make_rng
from streamgmm.em.settings import FitSettings, WeightUnit
from streamgmm.em.start import Start, draw_sample
from streamgmm.em.trainer import (
    LOCAL,
    fit_plan,
    new_state,
    normalised_sample,
    record_step,
    scaled_source,
    shuffle_generator,
    start_on_sample,
)
from streamgmm.io.sources.chunk_source import Batch, ChunkSource, rebatch_batches
from streamgmm.kernels.quadratic import one_blas_thread
from streamgmm.mixture.reseeding import WorstRecords


@dataclass
class SharedFit:
    """What :func:`fit_on_shared_reads` leaves: every model's fitted state, in order, and the
    reads it took (records per pass in the user's unit, and passes), the plan followed, the
    shared initialisation sample (its weights as given), the unit of the record
    weights in training, and the held-out reservoir (or None)."""

    fitted: list[Fitted]
    reservoir: Any
    plan: str
    records_per_pass: int | float
    n_passes: int
    sample: Batch
    unit: WeightUnit


class _Training:
    """One model while the stream goes by: its settings, start, online state and pass totals."""

    def __init__(self, settings: FitSettings, start: Start, unit: WeightUnit):
        self.settings = settings
        self.start = start
        self.unit = unit
        # The same start state (and moves' seed) a lone fit of this model takes.
        self.state = new_state(settings, start, make_rng(settings.random_state))
        self.trace = FitHistory()
        self.pass_means: list[float] = []
        self.converged = False
        self.total_ll = 0.0
        self.total_n = 0
        self.fitted: Fitted | None = None

    def update(self, batch: np.ndarray, weights: np.ndarray | None = None) -> None:
        s = self.settings
        self.state, update = online_update(
            self.state, batch, s.schedule, s.burn_in, s.reg_covar, s.batch_size, s.dtype, weights
        )
        if not update.n_records:
            return  # a batch of weight zero: no step
        self.total_ll += update.mean_log_likelihood * update.n_records
        self.total_n += update.n_records
        record_step(self.trace, self.unit, update)

    def end_pass(self, tol: float) -> None:
        self.pass_means.append(self.total_ll / self.total_n)
        self.total_ll, self.total_n = 0.0, 0
        if len(self.pass_means) > 1 and abs(self.pass_means[-1] - self.pass_means[-2]) < tol:
            self.converged = True


def fit_on_shared_reads(
    source: ChunkSource, models: list[FitSettings], held_out: Callable[[np.random.Generator], Any] | None = None
) -> SharedFit:
    """Every model of ``models`` fitted on shared reads of ``source`` (their settings differ
    only in ``n_components`` and ``covariance_type``). ``held_out`` makes, from a generator, a
    held-out reservoir (with ``withhold``, ``size`` and ``seen``) that keeps records out of
    training: the models are then fitted by one online pass."""
    template = models[0]
    weighted = source.weighted
    rng = make_rng(template.random_state)
    shuffle_generator(template, source, rng)  # a shuffle the source cannot do is refused before any work
    sample, shuffle_rng, whole = draw_sample(source, template.init_size, rng)
    unit = WeightUnit()
    starting = normalised_sample(source, sample, unit, LOCAL)
    training = scaled_source(source, unit, LOCAL)
    # Each model starts from the generator as a lone fit would have it after its own sample draw.
    after_sample = copy.deepcopy(rng)
    runs = []
    for settings in models:
        start = start_on_sample(
            settings,
            starting,
            shuffle_rng,
            whole,
            copy.deepcopy(after_sample),
            names=source.feature_names,
            progress=source.start_progress,
        )
        runs.append(_Training(settings, start, unit))
    reservoir = held_out(rng) if held_out is not None else None
    plan = "online" if reservoir is not None else fit_plan(template, source, runs[0].start)
    records_per_pass, n_passes = 0, 0
    if plan in ("online", "online+batch"):
        # As a lone fit: the default plan on a stream read once ends with a refit on its sample.
        final_refit = plan == "online" and template.algorithm == "auto" and reservoir is None
        records_per_pass, n_passes = _online_passes(runs, training, shuffle_rng, reservoir, final_refit, weighted)
    if plan in ("batch", "online+batch"):
        records_per_pass, exact = _exact_passes(runs, training, plan == "online+batch", weighted)
        n_passes += exact
    if plan == "start":
        for run in runs:
            run.fitted = start_result(run.start, run.settings, unit)
        records_per_pass = record_count(sample.weights.sum()) if weighted else sample.n_records
    fitted = [described(run.fitted, training) for run in runs]
    return SharedFit(fitted, reservoir, plan, records_per_pass, n_passes, sample, unit)


def _online_passes(
    runs: list[_Training],
    source: ChunkSource,
    shuffle_rng: np.random.Generator,
    reservoir: Any,
    final_refit: bool,
    weighted: bool,
) -> tuple[int | float, int]:
    """Every model's online passes over shared reads; returns records per pass and passes."""
    template = runs[0].settings
    rng = shuffle_generator(template, source, shuffle_rng)
    records_per_pass = 0.0
    n_passes = 0
    for n_passes in range(1, template.max_passes + 1):
        active = [run for run in runs if not run.converged]
        if not active:
            n_passes -= 1
            break
        batches: Iterator[Batch] = source.batches(template.batch_size, rng)
        if reservoir is not None:
            batches = rebatch_batches(reservoir.withhold(batches), template.batch_size)
        records_per_pass = 0
        for X, weights in batches:
            records_per_pass += X.shape[0] if weights is None else weights.sum()
            for run in active:
                run.update(X, weights)
        if records_per_pass == 0:
            if reservoir is not None and reservoir.seen:
                raise ValueError(
                    f"held_out={reservoir.size} keeps every one of the {reservoir.seen} records out of training"
                )
            raise ValueError("the source yielded no records")
        for run in active:
            run.end_pass(template.tol)
    for run in runs:
        if final_refit:
            run.state, moves = refit_at_end(run.state, run.settings.reg_covar)
            run.trace.add_moves(moves)
        run.fitted = online_result(
            run.state, run.converged, run.pass_means, run.trace, run.settings, run.unit, weighted
        )
    return runs[0].unit.in_user_unit(records_per_pass), n_passes


def _exact_passes(
    runs: list[_Training], source: ChunkSource, after_online: bool, weighted: bool
) -> tuple[int | float, int]:
    """Every model's exact EM over shared reads, each until its own ``tol``; returns the
    records of a pass and the passes made."""
    iterations = []
    for run in runs:
        params = run.state.params if after_online else run.start.params
        shift = run.state.statistics.shift if after_online else run.start.shift
        s = run.settings
        iterations.append(
            (shift, EMIterations(params, reg_covar=s.reg_covar, tol=s.tol, max_iter=s.max_iter, lower_bound=-np.inf))
        )
    template = runs[0].settings
    passes = 0
    while True:
        active = [(shift, it) for shift, it in iterations if not it.done]
        if not active:
            break
        worst = [WorstRecords(it.params.n_components, it.params.n_features) for _, it in active]
        with one_blas_thread():
            totals = shared_pass_statistics(
                source,
                [it.params for _, it in active],
                [shift for shift, _ in active],
                template.batch_size,
                worst,
                template.dtype,
            )
        passes += 1
        for (_, it), stats, w in zip(active, totals, worst):
            it.step(stats, w.records)
    for run, (shift, it) in zip(runs, iterations):
        earlier = run.pass_means if after_online else None
        trace = run.fitted.fit_history if after_online and run.fitted is not None else None
        run.fitted = exact_result(
            it.result(),
            shift,
            run.settings,
            run.unit,
            weighted=weighted,
            earlier=earlier,
            earlier_passes=len(run.pass_means),
            trace=trace,
        )
    statistics = iterations[0][1].statistics
    return (0 if statistics is None else runs[0].unit.in_user_unit(statistics.n_records)), passes
