"""streamgmm: Gaussian mixture models fitted by streaming EM over data larger than memory."""

from streamgmm.assignment.local import AssignSummary, assign
from streamgmm.datasets.mixtures import make_mixture, random_mixture, sample_mixture
from streamgmm.estimator import ConvergenceWarning, StreamingGaussianMixture
from streamgmm.io.arrow_source import TableSource
from streamgmm.io.columns import DataError
from streamgmm.io.model_file import ModelFileError
from streamgmm.io.parquet_source import ParquetSource
from streamgmm.io.validation import NotFittedError
from streamgmm.mixture.params import MixtureParams
from streamgmm.mixture.statistics import SufficientStatistics
from streamgmm.selection import SelectionResult, select

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
    "TableSource",
    "make_mixture",
    "random_mixture",
    "sample_mixture",
    "select",
]
