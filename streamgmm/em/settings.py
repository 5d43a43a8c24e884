"""What a fit runs: its settings, and the unit of its record weights.

:class:`FitSettings` is an estimator's parameters as the trainer (:mod:`streamgmm.em.trainer`)
reads them.

Record weights are relative, but online EM's step sizes and some of EM's constants count
records (a mini-batch's share of ``batch_size``; the epsilon added to every component's count,
as scikit-learn's), so weights of 1e-18 or 1e300 would fit differently from the same weights
near one. A fit therefore divides every weight by one scale (:class:`WeightUnit`), fixed when
it starts and kept with the model (so ``partial_fit``, warm starts and resumed models use the
same one): the mean positive weight of the initialisation sample (records of weight zero are
absent). Inside, a record of average weight counts as one record; what the model reports
(``records_seen_``, ``fit_history_.records``) is in the user's unit again. Dask fits take the
weights as given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamgmm.em.online import StepSchedule


@dataclass(frozen=True)
class FitSettings:
    """The parameters of one fit, as :class:`~streamgmm.StreamingGaussianMixture` names them
    (``schedule`` stands for the three ``step_*`` parameters, ``dtype`` for
    ``compute_dtype``); see its docstring for each.

    Examples
    --------
    >>> settings = FitSettings.from_params({"n_components": 3, "step_floor": 0.05})
    >>> settings.n_components, settings.schedule.floor, settings.dtype
    (3, 0.05, dtype('float64'))
    """

    n_components: int = 1
    covariance_type: str = "full"
    algorithm: str = "auto"
    tol: float = 1e-3
    reg_covar: float = 1e-6
    max_iter: int = 100
    n_init: int = 8
    init_params: str = "kmeans"
    weights_init: Any = None
    means_init: Any = None
    precisions_init: Any = None
    random_state: Any = None
    batch_size: int = 8192
    max_passes: int = 1
    schedule: StepSchedule = field(default_factory=StepSchedule)
    burn_in: int = 0
    init_size: int = 20000
    shuffle: bool | str = True
    dtype: np.dtype = field(default_factory=lambda: np.dtype(np.float64))
    moves: str = "auto"

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> FitSettings:
        """The settings of an estimator's parameters (``get_params()``); the parameters that do
        not change what a fit computes (``warm_start``, ``nan_policy``) are not among them."""
        params = dict(params)
        schedule = StepSchedule(
            float(params.pop("step_exponent", 1.0)),
            float(params.pop("step_offset", 2.0)),
            float(params.pop("step_floor", 0.0)),
        )
        dtype = np.dtype(params.pop("compute_dtype", "float64"))
        params.pop("warm_start", None)
        params.pop("nan_policy", None)
        return cls(**params, schedule=schedule, dtype=dtype)


class WeightUnit:
    """The weight of one record in a fit's running statistics, in the user's unit (see the
    module's docstring): ``scale`` is None until the fit's first weighted batch fixes it.

    Examples
    --------
    >>> unit = WeightUnit(0.5)
    >>> unit.in_user_unit(6.0), unit.in_user_unit(5.0)
    (3, 2.5)
    """

    def __init__(self, scale: float | None = 1.0):
        self.scale = scale

    def fix(self, scale: float) -> None:
        """The unit, once the first weighted batch of a fit that drew no sample fixes it."""
        self.scale = scale

    @property
    def value(self) -> float:
        """The unit as a number (1 while not yet fixed)."""
        return 1.0 if self.scale is None else float(self.scale)

    def in_user_unit(self, n_records: float) -> int | float:
        """A count of records in the fit's unit as the user's total weight: an int when it is
        one up to the scale's rounding (integer weights total an integer)."""
        total = float(n_records) * self.value
        if not np.isfinite(total):
            raise ValueError(
                "the record weights' total is not representable in float64 (over 1.8e308): "
                "weights are relative, so divide them all by a common factor"
            )
        if total >= 2.0**53:  # beyond the integers float64 holds exactly (and int64's range)
            return total
        nearest = round(total)
        if nearest == total or (self.value != 1.0 and abs(total - nearest) <= 1e-12 * total):
            return int(nearest)
        return total
