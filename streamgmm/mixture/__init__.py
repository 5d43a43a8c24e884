"""Mixture math: pure functions on arrays. Covariance types, parameters, sufficient statistics,
re-seeding of collapsed components, and the starting responsibilities of the candidates."""
