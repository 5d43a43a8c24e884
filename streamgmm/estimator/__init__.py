"""The estimator, in one module per concern: parameters and checks (:mod:`.base`), fitting
(:mod:`.fitting`), inference (:mod:`.inference`), persistence (:mod:`.persistence`), assembled
in :mod:`.streaming`."""

from streamgmm.em.convergence import ConvergenceWarning, convergence_warning_class
from streamgmm.estimator.streaming import StreamingGaussianMixture

__all__ = ["ConvergenceWarning", "StreamingGaussianMixture", "convergence_warning_class"]
