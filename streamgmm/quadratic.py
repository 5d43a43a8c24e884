"""The E-step and sufficient statistics of a full-covariance chunk in two matrix products.

With the records centred about the statistics' shift (u = x - shift) and the quadratic features
z(u) = [1, u_1 .. u_d, u_i u_j for i <= j] of a block of b records stacked as the columns of
Z (p x b, p = 1 + d + d(d+1)/2):

- the Mahalanobis terms are products Y_k = W_k [1; u] (d x b), where W_k is component k's
  [-(mu_k - shift)' U_k; U_k'] (U_k the precision's Cholesky factor; W stacks them), each
  followed by its sum of squares while in cache: the direct form, exact however small a
  covariance is (expanding the square into a polynomial in z would cancel catastrophically);
- the statistics (counts, sums and second moments about the shift) are one product S = Z R'
  (p x K) with the responsibilities R (K x b), the softmax of the log-probabilities.

Records are processed in blocks of ``BLOCK`` so Z and Y stay in cache between the products,
and with records along the rows' contiguous axis every elementwise step is a long vector
operation. ``dtype=np.float32`` computes Z, Y, R and each block's S in single precision (half
the memory traffic) while the chunk's statistics and log-likelihoods are summed in float64.

Example:

>>> import numpy as np
>>> from streamgmm.params import MixtureParams
>>> from streamgmm.quadratic import chunk_statistics
>>> params = MixtureParams.from_covariances(
...     np.array([0.5, 0.5]), np.array([[0.0, 0.0], [9.0, 9.0]]), np.stack([np.eye(2)] * 2), "full")
>>> X = np.array([[0.0, 0.0], [9.0, 9.0], [9.0, 9.0]])
>>> counts, sums, second, log_norm = chunk_statistics(X, params, shift=np.zeros(2))
>>> np.round(counts, 6).tolist(), np.round(sums, 6).tolist()
([1.0, 2.0], [[0.0, 0.0], [18.0, 18.0]])
>>> bool(np.allclose(log_norm, params.log_likelihood(X)))
True
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

import numpy as np
from threadpoolctl import ThreadpoolController

from . import covariance as cov
from .params import MixtureParams

# Records per block: Z of 2048 records x 153 features (d = 16) is 2.5 MB in float64, which
# stays in cache from one product to the next. Measured (1M x 16, K=8, one thread): 2048 was
# up to 20% faster than 4096 or 8192 in float64 and as fast as any in float32.
BLOCK = 2048
# exp() of arguments below about -708 takes a slow path (subnormal results); such a
# responsibility is below 1e-300 of the largest one in its row, i.e. zero to any use.
EXP_FLOOR = -700.0
COMPUTE_DTYPES = ("float64", "float32")
# The other types have no (b, K, d) products to fuse (tied: one factor for all components, and
# its second moment is X'X, needing no responsibilities; diag and spherical: elementwise).
SUPPORTED = ("full",)


@cache
def _blas() -> ThreadpoolController:
    return ThreadpoolController()  # finds the loaded BLAS libraries, once (milliseconds)


_blas_lock = threading.Lock()
_blas_users = 0
_blas_limiter: Any = None


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """BLAS limited to one thread while any caller is inside. The limit is process-wide, so
    concurrent callers (threads of a Dask worker) share it: the first in sets it, the last out
    restores the original, rather than each restoring what it found (which could leave it at 1)."""
    global _blas_users, _blas_limiter
    with _blas_lock:
        if _blas_users == 0:
            _blas_limiter = _blas().limit(limits=1, user_api="blas")
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                _blas_limiter.restore_original_limits()
                _blas_limiter = None


def check_compute_dtype(compute_dtype: str) -> np.dtype:
    if compute_dtype not in COMPUTE_DTYPES:
        raise ValueError(f"Invalid value for 'compute_dtype': {compute_dtype!r}; expected 'float64' or 'float32'")
    return np.dtype(compute_dtype)


@cache
def upper_triangle(d: int) -> tuple[np.ndarray, np.ndarray]:
    # Once per d, not per chunk: triu_indices costs as much as a block's softmax.
    return np.triu_indices(d)


def n_quadratic_features(n_features: int) -> int:
    return 1 + n_features + n_features * (n_features + 1) // 2


def stacked_factors(params: MixtureParams, shift: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(W (K d, 1 + d), c (K,))``: W [1; u] stacks U_k' (u - m_k) for every component (m_k the
    centred mean) and c_k = log pi_k + log det U_k - d/2 log 2 pi."""
    d = params.n_features
    prec_chol = params.precisions_cholesky
    with np.errstate(divide="ignore"):
        log_weights = np.log(params.weights)
    constant = log_weights + cov.log_det_cholesky(prec_chol, "full", d) - 0.5 * d * cov.LOG_2PI
    return cov.stacked_factors_full(params.means, prec_chol, shift), constant


def fill_features(X: np.ndarray, shift: np.ndarray, Z: np.ndarray) -> None:
    """Write the features of the records ``X`` (b, d) centred about ``shift`` into the columns
    of ``Z`` (p, b)."""
    d = X.shape[1]
    Z[0] = 1.0
    np.subtract(X.T, shift[:, None], out=Z[1 : d + 1], casting="same_kind")
    row = d + 1
    for i in range(d):
        np.multiply(Z[1 + i], Z[1 + i : d + 1], out=Z[row : row + d - i])
        row += d - i


def chunk_statistics(
    X: np.ndarray, params: MixtureParams, shift: np.ndarray, dtype: np.dtype | type = np.float64
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(counts (K,), sums (K, d), second (K, d, d), log_norm (n,))`` of a chunk under full
    covariance ``params``, about ``shift``."""
    n, d = X.shape
    k = params.n_components
    dtype = np.dtype(dtype)
    W, constant = stacked_factors(params, shift)
    W = W.astype(dtype)
    constant = constant.astype(dtype)[:, None]
    p = n_quadratic_features(d)
    block = max(1, min(BLOCK, n))
    Z_buffer = np.empty((p, block), dtype=dtype)
    Y_buffer = np.empty((d, block), dtype=dtype)
    L_buffer = np.empty((k, block), dtype=dtype)
    S = np.zeros((p, k))
    log_norm = np.empty(n)
    # One BLAS thread: these products are too small to gain from a second one, and lose
    # several times over when it competes with the read-ahead thread or another process.
    with one_blas_thread():
        for start in range(0, n, block):
            b = min(block, n - start)
            Z, Y, L = Z_buffer[:, :b], Y_buffer[:, :b], L_buffer[:, :b]
            fill_features(X[start : start + b], shift, Z)
            # One product per component, each squared and summed while its d x b result is
            # still in cache: this step measured 20-25% faster than one (K d) x b product
            # followed by the squares (d = 16, K = 8, one thread), the whole kernel ~10%.
            for c in range(k):
                np.matmul(W[c * d : (c + 1) * d], Z[: d + 1], out=Y)
                np.einsum("dn,dn->n", Y, Y, out=L[c])
            L *= -0.5
            L += constant
            peak = L.max(axis=0)
            L -= peak
            np.maximum(L, EXP_FLOOR, out=L)
            np.exp(L, out=L)
            total = L.sum(axis=0)
            L /= total
            log_norm[start : start + b] = np.log(total) + peak
            S += Z @ L.T
    counts, sums = S[0], S[1 : d + 1].T
    rows, cols = upper_triangle(d)
    second = np.empty((k, d, d))
    second[:, rows, cols] = S[d + 1 :].T
    second[:, cols, rows] = S[d + 1 :].T
    return counts, np.ascontiguousarray(sums), second, log_norm
