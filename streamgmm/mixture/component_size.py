"""How much a component costs and how many records one needs: the sizes behind births.

A component of a mixture with d features costs a weight, a mean and (unless covariances are
tied) its own covariance. A birth (:mod:`streamgmm.em.moves`) is proposed once a reservoir of
novel records holds ``BIRTH_RECORDS_PER_PARAMETER`` records per parameter of a component (at
least ``MIN_BIRTH_RECORDS``), and the reservoir holds ``RESERVOIR_BIRTHS`` times that: room for
several newborns at once.

Examples
--------
>>> component_parameters(2, "full"), birth_records(2, "full"), reservoir_capacity(10, "full")
(6, 100, 528)
"""

from __future__ import annotations

from streamgmm.mixture import covariance as cov

BIRTH_RECORDS_PER_PARAMETER = 2
MIN_BIRTH_RECORDS = 100
RESERVOIR_BIRTHS = 4


def component_parameters(n_features: int, covariance_type: str) -> int:
    """The free parameters one more component costs: its weight, mean and own covariance."""
    own = 0 if covariance_type == "tied" else cov.n_covariance_parameters(1, n_features, covariance_type)
    return 1 + n_features + own


def birth_records(n_features: int, covariance_type: str) -> int:
    """The reservoir's effective size from which a birth is proposed."""
    return max(BIRTH_RECORDS_PER_PARAMETER * component_parameters(n_features, covariance_type), MIN_BIRTH_RECORDS)


def reservoir_capacity(n_features: int, covariance_type: str) -> int:
    """The most records the reservoir of novel records holds."""
    return RESERVOIR_BIRTHS * birth_records(n_features, covariance_type)
