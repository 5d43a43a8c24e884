"""What each estimator parameter may be: one table, checked by one function.

As scikit-learn's ``_parameter_constraints``: :data:`PARAMETER_CONSTRAINTS` maps every
parameter of :class:`~streamgmm.StreamingGaussianMixture` to its constraint, and
:func:`check_value` refuses a value outside it with one message, ``Invalid value for '<name>':
<value>; expected <constraint>``. The estimator, :func:`~streamgmm.select` and the command line
(its argument types and choices) all read this table. Where a lower layer checks its own
arguments (the names of covariance types, initialisations, NaN policies, moves, precisions), the
table refers to the tuple of names that layer owns.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

from streamgmm.em.moves import MOVES
from streamgmm.io.records.columns import NAN_POLICIES
from streamgmm.kernels.quadratic import COMPUTE_DTYPES
from streamgmm.mixture.covariance import COVARIANCE_TYPES
from streamgmm.mixture.initialization import INIT_METHODS

ALGORITHMS = ("auto", "online", "batch")
SHUFFLE_MODES = (True, False, "records", "row_groups")


@dataclass(frozen=True)
class Interval:
    """Finite numbers of one kind (``Integral`` or ``Real``; never a bool) within bounds.

    Parameters
    ----------
    kind : {numbers.Integral, numbers.Real}
        The kind of number.
    low, high : float or None
        The bounds; None leaves that side open.
    closed : {'both', 'left', 'right', 'neither'}, default='both'
        Which bounds are themselves allowed.

    Examples
    --------
    >>> from numbers import Integral, Real
    >>> str(Interval(Integral, 1)), 0 in Interval(Integral, 1), 3 in Interval(Integral, 1)
    ('an integer >= 1', False, True)
    >>> str(Interval(Real, 0, None, closed="neither")), str(Interval(Real, 0, 1))
    ('a number > 0', 'a number in [0, 1]')
    """

    kind: type
    low: float | None = None
    high: float | None = None
    closed: str = "both"

    def is_kind(self, value: Any) -> bool:
        """Whether ``value`` is a finite number of this kind (numpy's scalars included)."""
        if isinstance(value, bool) or not isinstance(value, self.kind):
            return False
        return self.kind is Integral or math.isfinite(value)

    def __contains__(self, value: Any) -> bool:
        if not self.is_kind(value):
            return False
        low_ok = self.low is None or (value >= self.low if self.closed in ("both", "left") else value > self.low)
        high_ok = self.high is None or (value <= self.high if self.closed in ("both", "right") else value < self.high)
        return low_ok and high_ok

    def __str__(self) -> str:
        noun = "an integer" if self.kind is Integral else "a number"
        if self.low is not None and self.high is not None:
            left = "[" if self.closed in ("both", "left") else "("
            right = "]" if self.closed in ("both", "right") else ")"
            return f"{noun} in {left}{self.low:g}, {self.high:g}{right}"
        if self.low is not None:
            return f"{noun} {'>=' if self.closed in ('both', 'left') else '>'} {self.low:g}"
        if self.high is not None:
            return f"{noun} {'<=' if self.closed in ('both', 'right') else '<'} {self.high:g}"
        return "an integer" if self.kind is Integral else "a finite number"

    def expected(self, value: Any) -> str:
        """What ``value`` should have been: a number that is not even finite is told so first."""
        if self.kind is Real and not self.is_kind(value):
            return "a finite number"
        return str(self)


@dataclass(frozen=True)
class Options:
    """One of a fixed set of values (compared with ``==``, as ``in`` a tuple does).

    Examples
    --------
    >>> str(Options(("auto", "off"))), "off" in Options(("auto", "off"))
    ('one of auto, off', True)
    """

    values: tuple[Any, ...]

    def __contains__(self, value: Any) -> bool:
        return value in self.values

    def __str__(self) -> str:
        return f"one of {', '.join(map(str, self.values))}"

    def expected(self, value: Any) -> str:
        return str(self)


@dataclass(frozen=True)
class Unchecked:
    """A parameter taken as given here, because what it may be depends on the data or on
    another parameter; ``where`` says what checks it, and when."""

    where: str

    def __contains__(self, value: Any) -> bool:
        return True

    def __str__(self) -> str:
        return self.where

    def expected(self, value: Any) -> str:
        return self.where


Constraint = Interval | Options | Unchecked

# Every parameter of StreamingGaussianMixture, in the order they are checked.
PARAMETER_CONSTRAINTS: dict[str, Constraint] = {
    "n_components": Interval(Integral, 1),
    "n_init": Interval(Integral, 1),
    "batch_size": Interval(Integral, 1),
    "max_passes": Interval(Integral, 1),
    "init_size": Interval(Integral, 1),
    "burn_in": Interval(Integral, 0),
    "max_iter": Interval(Integral, 0),
    "covariance_type": Options(COVARIANCE_TYPES),
    "algorithm": Options(ALGORITHMS),
    "init_params": Options(INIT_METHODS),
    "tol": Interval(Real, 0),
    "reg_covar": Interval(Real, 0),
    # The step schedule's domain (step_exponent in (0.5, 1], step_offset >= 0, step_floor in
    # [0, 1]) is em.online.StepSchedule's to check, with its messages, once these are numbers.
    "step_exponent": Interval(Real),
    "step_offset": Interval(Real),
    "step_floor": Interval(Real),
    "shuffle": Options(SHUFFLE_MODES),
    "compute_dtype": Options(COMPUTE_DTYPES),
    "nan_policy": Options(NAN_POLICIES),
    "moves": Options(MOVES),
    "weights_init": Unchecked("None or n_components weights summing to 1, checked when a fit starts"),
    "means_init": Unchecked("None or an (n_components, n_features) array, checked when a fit starts"),
    "precisions_init": Unchecked("None or precisions of the covariance type's shape, checked when a fit starts"),
    "random_state": Unchecked("None, an int or a numpy random generator, checked when it is used"),
    "warm_start": Unchecked("read as true or false"),
}


def check_value(name: str, value: Any, constraint: Constraint | None = None) -> Any:
    """Return ``value`` if it satisfies ``constraint`` (by default the table's for ``name``).

    Parameters
    ----------
    name : str
        The parameter's name, as the message spells it.
    value : object
        Its value.
    constraint : Interval, Options or Unchecked, default=None
        What it may be; None reads ``PARAMETER_CONSTRAINTS[name]``.

    Returns
    -------
    value : object
        ``value`` unchanged.

    Raises
    ------
    ValueError
        ``Invalid value for '<name>': <value>; expected <constraint>``.

    Examples
    --------
    >>> check_value("n_components", 0)
    Traceback (most recent call last):
    ...
    ValueError: Invalid value for 'n_components': 0; expected an integer >= 1
    """
    constraint = PARAMETER_CONSTRAINTS[name] if constraint is None else constraint
    if value not in constraint:
        raise ValueError(f"Invalid value for {name!r}: {value!r}; expected {constraint.expected(value)}")
    return value


def check_params(params: Mapping[str, Any], constraints: Mapping[str, Constraint] = PARAMETER_CONSTRAINTS) -> None:
    """Check every parameter of ``params`` that ``constraints`` names, in the table's order;
    ``ValueError`` (see :func:`check_value`) on the first that is out of range."""
    for name, constraint in constraints.items():
        if name in params:
            check_value(name, params[name], constraint)


def allowed(name: str) -> tuple[Any, ...]:
    """The values a parameter with a fixed set of them may take, e.g. for a command-line
    option's choices.

    >>> allowed("covariance_type")
    ('full', 'tied', 'diag', 'spherical')
    """
    constraint = PARAMETER_CONSTRAINTS[name]
    if not isinstance(constraint, Options):
        raise TypeError(f"{name} takes no fixed set of values: {constraint}")
    return constraint.values
