"""Record weights in a fit's own unit: the mean positive weight of its initialisation sample.

Record weights are relative, but online EM's step sizes and some of EM's constants count
records (a mini-batch's share of ``batch_size``; the epsilon added to every component's count,
as scikit-learn's), so weights of 1e-18 or 1e300 would fit differently from the same weights
near one. A fit therefore divides every weight by one scale, fixed when it starts and kept with
the model (so ``partial_fit``, warm starts and resumed models use the same one): the mean
positive weight of the initialisation sample (records of weight zero are absent). Inside, a
record of average weight counts as one record; what the model reports (``records_seen_``,
``fit_history_.records``) is in the user's unit again. Dask fits take the weights as given.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from streamgmm.dask.source import DaskSource
from streamgmm.io.sources.chunk_source import ScaledWeights, is_weighted, scaled_weights, weight_scale


class WeightingMixin:
    """The weight scale of a fit: chosen on its sample, applied to its source, undone in reports."""

    def begin_weight_scale(self, scale: float | None) -> None:
        """The scale the fit now running uses (None: fixed by its first weighted batch). The
        fitted model keeps it once the fit succeeds (a failed fit leaves the model as it was)."""
        self._scale_in_use = scale

    def continue_weight_scale(self) -> None:
        """A fit that continues a fitted model (``partial_fit``, a warm start) keeps its scale."""
        self._scale_in_use = getattr(self, "_weight_scale", 1.0)

    def weight_unit(self) -> float:
        """The weight of one record in the running statistics, in the user's unit."""
        scale = getattr(self, "_scale_in_use", None)
        return 1.0 if scale is None else float(scale)

    def normalised_sample(self, source: Any, sample: np.ndarray) -> np.ndarray:
        """The initialisation sample with its weights in the fit's unit, which it fixes: the
        sample's mean positive weight (weights all zero: ``ValueError``). Dask fits keep the weights as
        given (their passes read the weights on the workers)."""
        if not is_weighted(source) or isinstance(source, DaskSource) or sample.shape[0] == 0:
            self.begin_weight_scale(1.0)
            return sample
        scale = weight_scale(sample[:, -1])
        self.begin_weight_scale(scale)
        return scaled_weights(sample, scale)

    def scaled_source(self, source: Any) -> Any:
        """``source`` with its weights in the fit's unit (itself when there is nothing to scale)."""
        scale = getattr(self, "_scale_in_use", 1.0)
        if is_weighted(source) and isinstance(source, DaskSource) and scale not in (None, 1.0):
            # The workers read the weights as given: mixed with statistics in another unit, they
            # would weigh the new records wrongly.
            raise ValueError(
                f"this model measures record weights in units of {scale:g} (the mean weight of the sample it "
                "started on), and Dask fits take the weights as given: continue it in this process, or start "
                "a new model on Dask"
            )
        if not is_weighted(source) or isinstance(source, DaskSource) or scale == 1.0:
            return source
        return ScaledWeights(source, scale, self.begin_weight_scale)

    def in_user_unit(self, n_records: float) -> int | float:
        """A count of records in the fit's unit as the user's total weight: an int when it is
        one up to the scale's rounding (integer weights total an integer)."""
        total = float(n_records) * self.weight_unit()
        if not np.isfinite(total):
            raise ValueError(
                "the record weights' total is not representable in float64 (over 1.8e308): "
                "weights are relative, so divide them all by a common factor"
            )
        if total >= 2.0**53:  # beyond the integers float64 holds exactly (and int64's range)
            return total
        nearest = round(total)
        if nearest == total or (self.weight_unit() != 1.0 and abs(total - nearest) <= 1e-12 * total):
            return int(nearest)
        return total

    def keep_weight_scale(self) -> None:
        """The fit succeeded: its scale is the model's from now on."""
        self._weight_scale = self.weight_unit()
