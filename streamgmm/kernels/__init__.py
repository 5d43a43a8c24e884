"""The E-step and statistics per block of records: the quadratic-feature kernel (numpy and BLAS,
or the fused C extension), and BLAS thread control."""
