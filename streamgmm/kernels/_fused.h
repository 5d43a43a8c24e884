/* The fused E-step of a chunk (see _fused.c), shared by the builds of
 * its kernel for each instruction set (_fused_kernel.h). */
#ifndef STREAMGMM_FUSED_H
#define STREAMGMM_FUSED_H

#include <stddef.h>

#define GROUP 8 /* components whose accumulators share the registers */

typedef struct {
    ptrdiff_t n, d, k, p;
    const double *X;                /* the records' feature i at X + i * ldx, contiguous */
    ptrdiff_t ldx;
    const double *shift;            /* (d) */
    /* V, W and direct_constant hold the kernel's precision: float or double */
    const void *V;                  /* (k padded to whole groups, p); direct components' rows unused */
    const unsigned char *direct;    /* (k): 1 for components computed in the direct form */
    const void *W;                  /* (k, d, d + 1): U_k' (u - m_k) as one product with [1; u] */
    const void *direct_constant;    /* (k) */
    const int *left, *right;        /* feature j is u[left[j]] * u[right[j]], u[d] being 1 */
    double *S;                      /* (k, p), added to */
    double *log_norm;               /* (n) */
    void *resp;                     /* (n, k) in the kernel's precision, or NULL: when given, the
                                     * responsibilities are written there and S is left alone */
    /* a tied covariance's shared term, or NULL: log_norm takes away ||W0 [1; u]||^2 / 2 (W0 of
     * shape (d, d + 1), in the kernel's precision), which the log-densities leave out */
    const void *shared;
    double *shared_second;          /* (d, d), or NULL: sum of u u' over the records, upper triangle added to */
    /* record weights (n), or NULL: each record's responsibilities are scaled by its weight
     * before they are summed (S, shared_second), and weighted_log[0] gets the sum of weight
     * times log-likelihood added; a record of weight zero adds nothing, even at -inf or NaN */
    const double *weights;
    double *weighted_log;
    /* 1 when every W_k is diagonal (the "diag" layout's): row i of W_k reads [1; u] at 0 and
     * 1 + i only, so its product takes one multiply-add instead of d */
    int diagonal_direct;
} Chunk;

/* The features z(u), by the layout's name in _fused.run: "full" (1, u_i, u_i u_m for i <= m),
 * "diag" (1, u_i, u_i^2) and "linear" (1, u_i). */

/* Each returns 0, or -1 when it cannot allocate its buffers. The tables left and right hold
 * p + PADDING features, the padding pointing at u[d]: the statistics take FEATURES (at most
 * PADDING + 1) at a time and drop the sums past p. */
#define PADDING 3
int fused_run_avx512_f32(const Chunk *c);
int fused_run_avx512_f64(const Chunk *c);
int fused_run_avx2_f32(const Chunk *c);
int fused_run_avx2_f64(const Chunk *c);

#endif
