"""Which EM loops run a source: in this process, or as waves of partitions on Dask workers,
and the online loop's per-step callback that records the fit history."""

from __future__ import annotations

from collections.abc import Callable
from numbers import Integral
from typing import Any

from streamgmm.dask.em import default_partitions_per_step, run_dask_batch_em, run_dask_online_em
from streamgmm.dask.source import DaskSource
from streamgmm.em.batch import run_batch_em
from streamgmm.em.fit_history import FitHistory
from streamgmm.em.online import OnlineState, run_online_em
from streamgmm.estimator.constraints import Interval, check_value
from streamgmm.io.sources.chunk_source import ChunkSource


def em_runners(source: ChunkSource, partitions_per_step: int | None) -> tuple[Any, Any, dict[str, Any]]:
    """The batch and online EM loops for ``source``: on the workers for a Dask source."""
    if not isinstance(source, DaskSource):
        if partitions_per_step is not None:
            raise ValueError("partitions_per_step applies to Dask inputs only")
        return run_batch_em, run_online_em, {}
    wave = default_partitions_per_step(source) if partitions_per_step is None else partitions_per_step
    check_value("partitions_per_step", wave, Interval(Integral, 1))
    return run_dask_batch_em, run_dask_online_em, {"partitions_per_step": int(wave)}


def tracing(
    source: ChunkSource, trace: FitHistory, in_user_unit: Callable[[float], float] | None = None
) -> dict[str, Any]:
    """The online runner's per-step callback that records ``trace`` (a step is a mini-batch
    here, a wave of partitions on Dask), the moves taken among them; ``in_user_unit`` turns a
    step's count of records (in the fit's weight unit) into the user's."""

    def record(state: OnlineState, update: Any) -> None:
        n = update.n_records if in_user_unit is None else in_user_unit(update.n_records)
        trace.record(update.mean_log_likelihood, n, update.step_size, update.reseeded, update.moves)

    return {"on_wave" if isinstance(source, DaskSource) else "on_batch": record}
