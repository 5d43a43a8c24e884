"""streamgmm: Gaussian mixture models fitted by streaming EM over data larger than memory."""

from .datasets import make_mixture, random_mixture, sample_mixture
from .estimator import ConvergenceWarning, StreamingGaussianMixture
from .model_file import ModelFileError
from .params import MixtureParams
from .statistics import SufficientStatistics
from .validation import NotFittedError

__version__ = "0.1.0"

__all__ = [
    "ConvergenceWarning",
    "MixtureParams",
    "ModelFileError",
    "NotFittedError",
    "StreamingGaussianMixture",
    "SufficientStatistics",
    "make_mixture",
    "random_mixture",
    "sample_mixture",
]
