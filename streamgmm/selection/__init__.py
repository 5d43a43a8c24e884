"""Choosing K (and the covariance type) in one streaming job; see :func:`select`."""

from streamgmm.selection.result import CRITERIA, Candidate, SelectionResult, parse_candidates
from streamgmm.selection.search import select

__all__ = ["CRITERIA", "Candidate", "SelectionResult", "parse_candidates", "select"]
