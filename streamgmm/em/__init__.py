"""EM drivers over any chunk source: the start on a sample, stepwise (online) EM, exact
out-of-core EM, and the online trace."""
