"""Which EM loops run a source: in this process, or as waves of partitions on Dask workers."""

from __future__ import annotations

from numbers import Integral

from streamgmm.dask.em import default_partitions_per_step, run_dask_batch_em, run_dask_online_em
from streamgmm.dask.source import DaskSource
from streamgmm.em.trainer import LOCAL, Runners
from streamgmm.estimator.constraints import Interval, check_value
from streamgmm.io.sources.chunk_source import ChunkSource


def em_runners(source: ChunkSource, partitions_per_step: int | None) -> Runners:
    """The batch and online EM loops for ``source``: on the workers for a Dask source, where
    an online step is a wave of ``partitions_per_step`` partitions and the workers read the
    record weights as given."""
    if not isinstance(source, DaskSource):
        if partitions_per_step is not None:
            raise ValueError("partitions_per_step applies to Dask inputs only")
        return LOCAL
    wave = default_partitions_per_step(source) if partitions_per_step is None else partitions_per_step
    check_value("partitions_per_step", wave, Interval(Integral, 1))
    options = {"partitions_per_step": int(wave)}
    return Runners(run_dask_batch_em, run_dask_online_em, options, on_step="on_wave", weights_as_given=True)
