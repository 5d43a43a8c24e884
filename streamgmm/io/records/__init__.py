"""Records: reading feature columns from Arrow data and checking arrays (finite, in range, weights)."""
