"""The responsibilities pass: :func:`assign` writes per-record results as Parquet, locally
(:mod:`.local`) or on Dask workers (:mod:`.on_dask`), both with the output layout of
:mod:`.layout`."""

from streamgmm.assignment.local import AssignSummary, assign

__all__ = ["AssignSummary", "assign"]
