"""Synthetic data with known parameters: mixtures in memory (:mod:`.mixtures`) and Parquet lakes
(:mod:`.synthetic_lake`)."""

from streamgmm.datasets.mixtures import make_mixture, match_components, random_mixture, sample_mixture

__all__ = ["make_mixture", "match_components", "random_mixture", "sample_mixture"]
