"""The E-step and sufficient statistics of a full-covariance chunk: two matrix products, or one C call.

With the records centred about the statistics' shift (u = x - shift) and the quadratic features
z(u) = [1, u_1 .. u_d, u_i u_j for i <= j] of a block of b records stacked as the columns of
Z (p x b, p = 1 + d + d(d+1)/2):

- the weighted log-densities are one product V Z (K x b): log pi_k + log N(x | mu_k, Sigma_k)
  is a quadratic polynomial in u, whose coefficients (row k of V) come from the precision
  P_k = U_k U_k' and the centred mean (``expanded_log_density``);
- the statistics (counts, sums and second moments about the shift) are one product S = Z R'
  (p x K) with the responsibilities R (K x b), the softmax of the log-densities.

Expanding the square trades exactness for speed: the polynomial's terms can be much larger than
their sum, which then cancels. For a covariance small next to its mean's distance from the shift
the estimated loss exceeds ``EXPANSION_TOLERANCE`` and that component alone is computed in the
direct form, ||U_k' (u - m_k)||^2 (a d x (1 + d) product per component, exact however small the
covariance; ``direct_components``).

Records are processed in blocks (``block_records``) so Z stays in cache between the products, and
with records along the rows' contiguous axis every elementwise step is a long vector
operation. ``dtype=np.float32`` computes Z, the log-densities, R and each block's S in single
precision (half the memory traffic) while the chunk's statistics and log-likelihoods are summed
in float64.

By default the same quantities come from a fused C kernel (``streamgmm/kernels/_fused.c``, built
when streamgmm is installed with a C compiler at hand; it runs on CPUs with AVX2 and FMA or
AVX-512), in either precision: it keeps a tile of records' u in registers, rebuilds z from it
wherever needed and never writes Z to memory, which makes it faster than the BLAS kernel (see
``docs/performance.md``). ``kernel="blas"`` or the environment variable ``STREAMGMM_FUSED=0``
keeps the BLAS kernel. The same C kernel serves the other covariance types over their own
features (:func:`fused_run`'s layouts; :mod:`streamgmm.kernels.expansion`).

Examples
--------
>>> import numpy as np
>>> from streamgmm.mixture.params import MixtureParams
>>> from streamgmm.kernels.quadratic import full_statistics
>>> params = MixtureParams.from_covariances(
...     np.array([0.5, 0.5]), np.array([[0.0, 0.0], [9.0, 9.0]]), np.stack([np.eye(2)] * 2), "full")
>>> X = np.array([[0.0, 0.0], [9.0, 9.0], [9.0, 9.0]])
>>> counts, sums, second, log_norm = full_statistics(X, params, shift=np.zeros(2))
>>> np.round(counts, 6).tolist(), np.round(sums, 6).tolist()
([1.0, 2.0], [[0.0, 0.0], [18.0, 18.0]])
>>> bool(np.allclose(log_norm, params.log_likelihood(X)))
True
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from types import ModuleType
from typing import Any, NamedTuple

import numpy as np
import threadpoolctl
from threadpoolctl import ThreadpoolController

from streamgmm.mixture import covariance as cov
from streamgmm.mixture.params import MixtureParams

try:
    from streamgmm.kernels import _fused
except ImportError:  # built without a C compiler: chunks take the BLAS kernel
    _fused = None
# The fused kernel's builds this CPU runs, widest first (empty without AVX2 and FMA).
FUSED_KERNELS: list[str] = _fused.kernels() if _fused is not None else []

# Z of a block stays in cache from one product to the next at about this size (the measurements
# behind it are in docs/performance.md, "Tuning constants").
BLOCK_BYTES = 2_500_000
# exp() of arguments below about -708 takes a slow path (subnormal results); such a
# responsibility is below 1e-300 of the largest one in its row, i.e. zero to any use.
EXP_FLOOR = -700.0
# The same in float32, whose subnormals start near exp(-87): above -80 neither exp() nor the
# division by a column's total (at most K) leaves a subnormal for the statistics' product, where
# subnormal float32 operands slow BLAS down about tenfold.
EXP_FLOOR_FLOAT32 = -80.0
COMPUTE_DTYPES = ("float64", "float32")


@cache
def _blas() -> ThreadpoolController:
    return ThreadpoolController()  # finds the loaded BLAS libraries, once (milliseconds)


_blas_lock = threading.Lock()
_blas_users = 0
_blas_limiter: Any = None


def _release_blas_control() -> None:
    """Hand back threadpoolctl's control of OpenBLAS, which (from threadpoolctl 3.8) only the
    thread that took it may change, so that whichever thread sets or restores the limit next is
    obeyed."""
    clear = getattr(getattr(threadpoolctl, "OpenBLASController", None), "clear_controlling_thread", None)
    if clear is not None:
        clear(force=True)


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """BLAS limited to one thread while any caller is inside. The limit is process-wide, so
    concurrent callers (threads of a Dask worker) share it: the first in sets it, the last out
    restores the original, rather than each restoring what it found (which could leave it at 1)."""
    global _blas_users, _blas_limiter
    with _blas_lock:
        if _blas_users == 0:
            _release_blas_control()
            _blas_limiter = _blas().limit(limits=1, user_api="blas")
            _release_blas_control()
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                _release_blas_control()
                _blas_limiter.restore_original_limits()
                _release_blas_control()
                _blas_limiter = None


@cache
def upper_triangle(d: int) -> tuple[np.ndarray, np.ndarray]:
    # Once per d, not per chunk: triu_indices costs as much as a block's softmax.
    return np.triu_indices(d)


def n_quadratic_features(n_features: int) -> int:
    return 1 + n_features + n_features * (n_features + 1) // 2


def block_records(n_features: int, dtype: np.dtype | type) -> int:
    """Records per block: Z of about ``BLOCK_BYTES``, rounded to a multiple of 256 records (for
    d = 16: 2048 in float64, 4096 in float32)."""
    fits = BLOCK_BYTES // (n_quadratic_features(n_features) * np.dtype(dtype).itemsize)
    return max(256, round(fits / 256) * 256)


def normalising_constants(params: MixtureParams) -> np.ndarray:
    """log pi_k + log det U_k - d/2 log 2 pi: the weighted log-density at the mean."""
    with np.errstate(divide="ignore"):
        log_weights = np.log(params.weights)
    return (
        log_weights
        + cov.log_det_cholesky(params.precisions_cholesky, "full", params.n_features)
        - (0.5 * params.n_features * cov.LOG_2PI)
    )


EXPANSION_TOLERANCE = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-2}


def expanded_log_density(params: MixtureParams, shift: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(V (K, p), error_scale (K,))``: row k of V is component k's weighted log-density as a
    linear function of the features, ``V_k z(u) = log pi_k + log N(u + shift | mu_k, Sigma_k)``,
    and ``eps * error_scale_k`` estimates the rounding error of that product on the
    component's own records (see :func:`direct_components`)."""
    d = params.n_features
    prec_chol = params.precisions_cholesky
    precision = prec_chol @ prec_chol.transpose(0, 2, 1)
    centred = params.means - shift
    whitened = np.einsum("kd,kde->ke", centred, prec_chol)  # U_k' m_k: m' P m without cancellation
    linear = np.einsum("kde,ke->kd", precision, centred)
    constant = normalising_constants(params) - 0.5 * np.einsum("kd,kd->k", whitened, whitened)
    rows, cols = upper_triangle(d)
    V = np.empty((params.n_components, n_quadratic_features(d)))
    V[:, 0] = constant
    V[:, 1 : d + 1] = linear
    V[:, d + 1 :] = precision[:, rows, cols] * np.where(rows == cols, -0.5, -1.0)
    # The product sums p terms whose sizes, on a record u, add up to
    # |c| + |P m|'|u| + |u|'|P||u| / 2; rounding errors of a dot product grow like sqrt(p) times
    # that. A component's own records are taken as those within two standard deviations of its
    # mean in every coordinate.
    reach = np.abs(centred) + 2.0 * np.sqrt(np.diagonal(params.covariances, axis1=1, axis2=2))
    size = (
        np.abs(constant)
        + np.einsum("kd,kd->k", np.abs(linear), reach)
        # a product, not a three-operand einsum (slower than some chunks' kernel calls)
        + 0.5 * ((reach[:, None, :] @ np.abs(precision))[:, 0, :] * reach).sum(axis=1)
    )
    return V, np.sqrt(V.shape[1]) * size


def direct_components(error_scale: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """The components whose expanded log-density would lose more than ``EXPANSION_TOLERANCE``
    nats to rounding: a covariance small next to its mean's distance from the shift makes the
    polynomial's terms huge and their sum cancel. Those are computed in the direct form."""
    return np.flatnonzero(~(np.finfo(dtype).eps * error_scale <= EXPANSION_TOLERANCE[np.dtype(dtype)]))


def direct_form(
    params: MixtureParams, shift: np.ndarray, direct: np.ndarray, dtype: np.dtype
) -> tuple[np.ndarray, np.ndarray]:
    """``(W (K d, d + 1), constants (K,))`` in ``dtype``: component k's weighted log-density as
    ``constants_k - ||W_k [1; u]||^2 / 2`` (``W_k`` its d rows), for the ``direct``
    components; zeros when there are none, which both kernels then leave unread."""
    k, d = params.n_components, params.n_features
    if not direct.size:
        return np.zeros((k * d, d + 1), dtype=dtype), np.zeros(k, dtype=dtype)
    W = cov.stacked_factors_full(params.means, params.precisions_cholesky, shift).astype(dtype)
    return W, normalising_constants(params).astype(dtype)


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


def softmax_columns(L: np.ndarray) -> np.ndarray:
    """Turn the log-densities ``L`` (K, b) into responsibilities in place; returns each column's
    log-sum-exp (float64), the records' log-likelihoods."""
    peak = L.max(axis=0)
    L -= peak
    np.maximum(L, EXP_FLOOR if L.dtype == np.float64 else EXP_FLOOR_FLOAT32, out=L)
    np.exp(L, out=L)
    total = L.sum(axis=0)
    L /= total
    return np.log(total) + peak


def full_statistics(
    X: np.ndarray,
    params: MixtureParams,
    shift: np.ndarray,
    dtype: np.dtype | type = np.float64,
    kernel: str = "auto",
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(counts (K,), sums (K, d), second (K, d, d), log_norm (n,))`` of a chunk under full
    covariance ``params``, about ``shift``.

    ``kernel``: ``"blas"`` (numpy and BLAS), one of ``FUSED_KERNELS`` (the fused C kernel's
    builds), or ``"auto"``: the widest fused build when :func:`fused_kernel_enabled`, else BLAS."""
    n, d = X.shape
    k = params.n_components
    dtype = np.dtype(dtype)
    kernel = resolve_kernel(kernel)
    V, error_scale = expanded_log_density(params, shift)
    direct = direct_components(error_scale, dtype)
    W, direct_constant = direct_form(params, shift, direct, dtype)
    if kernel == "blas":
        S, log_norm = _blas_statistics(X, shift, V, direct, W, direct_constant, dtype)
    else:
        S, log_norm = fused_run(X, shift, V, direct, W, direct_constant, kernel)[:2]
    counts, sums = S[0], S[1 : d + 1].T
    rows, cols = upper_triangle(d)
    second = np.empty((k, d, d))
    second[:, rows, cols] = S[d + 1 :].T
    second[:, cols, rows] = S[d + 1 :].T
    return counts, np.ascontiguousarray(sums), second, log_norm


def _blas_statistics(
    X: np.ndarray,
    shift: np.ndarray,
    V: np.ndarray,
    direct: np.ndarray,
    W: np.ndarray,
    direct_constant: np.ndarray,
    dtype: np.dtype,
) -> tuple[np.ndarray, np.ndarray]:
    """``(S (p, K), log_norm (n,))`` block by block: Z, V Z, softmax, Z R'."""
    n, d = X.shape
    k = V.shape[0]
    V = V.astype(dtype)
    V[direct] = 0.0
    p = n_quadratic_features(d)
    block = max(1, min(block_records(d, dtype), n))
    Z_buffer = np.empty((p, block), dtype=dtype)
    L_buffer = np.empty((k, block), dtype=dtype)
    Y_buffer = np.empty((d, block), dtype=dtype) if direct.size else None
    S = np.zeros((p, k))
    log_norm = np.empty(n)
    # One BLAS thread: these products are too small to gain from a second one, and lose
    # several times over when it competes with the read-ahead thread or another process.
    with one_blas_thread():
        for start in range(0, n, block):
            b = min(block, n - start)
            Z, L = Z_buffer[:, :b], L_buffer[:, :b]
            fill_features(X[start : start + b], shift, Z)
            np.matmul(V, Z, out=L)
            for c in direct:
                Y = Y_buffer[:, :b]
                np.matmul(W[c * d : (c + 1) * d], Z[: d + 1], out=Y)
                np.einsum("dn,dn->n", Y, Y, out=L[c])
                L[c] *= -0.5
                L[c] += direct_constant[c]
            log_norm[start : start + b] = softmax_columns(L)
            S += Z @ L.T
    return S, log_norm


# The fused kernel's components come in groups of 8 (its registers); V is padded to whole groups.
FUSED_GROUP = 8


def fused_extension() -> ModuleType | None:
    """The compiled fused-kernel extension module, for checks of its C interface and its build.

    Returns
    -------
    module or None
        ``streamgmm.kernels._fused`` (its ``run`` and ``chunk_statistics`` check their buffers
        and raise ``ValueError``), or None when it was not built (no C compiler at install time).
        Whether this CPU runs it is :data:`FUSED_KERNELS`; whether chunks take it,
        :func:`fused_kernel_enabled`.
    """
    return _fused


def fused_kernel_enabled() -> bool:
    """Whether chunks take the fused C kernel (``streamgmm/_fused.c``): it was built
    (a C compiler was at hand when streamgmm was installed), the CPU runs it (AVX2 and FMA or
    AVX-512) and the environment variable ``STREAMGMM_FUSED`` is not ``0``."""
    return bool(FUSED_KERNELS) and os.environ.get("STREAMGMM_FUSED", "1") != "0"


def resolve_kernel(kernel: str) -> str:
    """The kernel ``"auto"`` stands for (the widest fused build when :func:`fused_kernel_enabled`,
    else ``"blas"``), or ``kernel`` itself once checked against this machine's."""
    if kernel == "auto":
        return FUSED_KERNELS[0] if fused_kernel_enabled() else "blas"
    if kernel != "blas" and kernel not in FUSED_KERNELS:
        raise ValueError(f"kernel {kernel!r}: this machine has 'blas' and {FUSED_KERNELS or 'no fused kernel'}")
    return kernel


class FusedResult(NamedTuple):
    """What :func:`fused_run` returns: ``S`` (p, K), ``log_norm`` (n,), ``resp`` (n, K) or None,
    ``second`` (d, d) or None, and ``weighted_log``, the records' total log-likelihood times their
    weights (None without weights)."""

    S: np.ndarray
    log_norm: np.ndarray
    resp: np.ndarray | None
    second: np.ndarray | None
    weighted_log: float | None


def fused_run(
    X: np.ndarray,
    shift: np.ndarray,
    V: np.ndarray,
    direct: np.ndarray,
    W: np.ndarray,
    direct_constant: np.ndarray,
    kernel: str,
    layout: str = "full",
    scoring: bool = False,
    shared: np.ndarray | None = None,
    weights: np.ndarray | None = None,
) -> FusedResult:
    """``(S (p, K), log_norm (n,), resp, second, weighted_log)`` from the fused C kernel over
    the features of ``layout`` (``"full"``, ``"diag"``: 1, u_i, u_i^2, or ``"linear"``: 1, u_i),
    in the precision of ``W``: the same quantities as :func:`_blas_statistics` without Z ever
    written to memory. With ``scoring`` the kernel writes the responsibilities ``resp`` (n, K)
    instead of summing S (then zeros); else ``resp`` is None. With ``shared`` (d, d + 1) the
    log-likelihoods take away ``||shared [1; u]||^2 / 2`` (a tied covariance's term, left out of
    the log-densities), and ``second`` is the sum of u u' (d, d) (when not scoring); else None.
    With ``weights`` (n,) each record's responsibilities (and its u u') are scaled by its weight
    (in the kernel's precision) before they are summed and ``weighted_log`` is the sum of weight
    times log-likelihood, a record of weight zero adding nothing even where its log-likelihood
    is -inf; ``log_norm`` stays unweighted."""
    n, d = X.shape
    k, p = V.shape
    dtype = W.dtype
    V_groups = np.zeros((-(-k // FUSED_GROUP) * FUSED_GROUP, p), dtype=dtype)
    V_groups[:k] = V
    flags = np.zeros(k, dtype=np.uint8)
    flags[direct] = 1
    # Each feature's records contiguous: column-major chunks and their row slices (a source's
    # mini-batches) as they are; anything else copied.
    columns = (
        X if X.dtype == np.float64 and (X.strides[0] == X.itemsize or n <= 1) else np.asfortranarray(X, np.float64)
    )
    S = np.zeros((k, p))
    log_norm = np.empty(n)
    resp = np.empty((n, k), dtype=dtype) if scoring else None
    second = np.zeros((d, d)) if shared is not None and not scoring else None
    weighted_log = None if weights is None else np.zeros(1)
    _fused.run(
        n,
        d,
        k,
        dtype.itemsize,
        layout,
        columns.T,
        np.ascontiguousarray(shift, dtype=np.float64),
        V_groups,
        flags,
        W,
        direct_constant,
        S,
        log_norm,
        resp,
        kernel,
        None if shared is None else np.ascontiguousarray(shared, dtype=dtype),
        second,
        None if weights is None else np.ascontiguousarray(weights, dtype=np.float64),
        weighted_log,
    )
    if second is not None:
        rows, cols = upper_triangle(d)
        second[cols, rows] = second[rows, cols]
    return FusedResult(S.T, log_norm, resp, second, None if weighted_log is None else float(weighted_log[0]))
