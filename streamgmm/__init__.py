"""streamgmm: Gaussian mixture models fitted by streaming EM over data larger than memory."""

from streamgmm.assignment.local import AssignSummary, assign
from streamgmm.datasets.mixtures import make_mixture, random_mixture, sample_mixture
from streamgmm.estimator import ConvergenceWarning, StreamingGaussianMixture
from streamgmm.estimator.not_fitted import NotFittedError
from streamgmm.io.model.file import ModelFileError
from streamgmm.io.records.columns import DataError
from streamgmm.io.sources.arrow import TableSource
from streamgmm.io.sources.parquet import ParquetSource
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
