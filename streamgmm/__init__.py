"""streamgmm: Gaussian mixture models fitted by streaming EM over data larger than memory."""

from .assignment import AssignSummary, assign
from .columns import DataError
from .datasets import make_mixture, random_mixture, sample_mixture
from .estimator import ConvergenceWarning, StreamingGaussianMixture
from .model_file import ModelFileError
from .params import MixtureParams
from .parquet_source import ParquetSource
from .selection import SelectionResult, select
from .statistics import SufficientStatistics
from .validation import NotFittedError

__version__ = "0.1.0"

__all__ = [
    "AssignSummary",
    "DataError",
    "ParquetSource",
    "assign",
    "ConvergenceWarning",
    "MixtureParams",
    "ModelFileError",
    "NotFittedError",
    "SelectionResult",
    "StreamingGaussianMixture",
    "SufficientStatistics",
    "make_mixture",
    "random_mixture",
    "sample_mixture",
    "select",
]
