/* The kernel of _fused.c, compiled once per instruction set and precision by the files that
 * include it, each defining REAL (float or double), LANES (records per vector: the width of
 * its registers), FEATURES (FEATURES x GROUP accumulators must fit in its registers: the
 * statistics sum FEATURES features at once, the log-densities take FEATURES tiles at once) and
 * KERNEL_NAME. Written with GCC's vector extensions, which the compiler
 * maps onto the target's registers. */
#if !defined(REAL) || !defined(LANES) || !defined(FEATURES) || !defined(KERNEL_NAME)
#error "define REAL, LANES, FEATURES and KERNEL_NAME before including _fused_kernel.h"
#endif

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "_fused.h"

#ifndef BLOCK
#define BLOCK 1024 /* records: u and R of a block stay in L1/L2 between the three steps */
#endif

typedef REAL real;
typedef real vf __attribute__((vector_size(LANES * sizeof(real))));
typedef double vd __attribute__((vector_size(LANES * sizeof(double))));

#define INLINE static inline __attribute__((always_inline))

/* x - 0 is x for every x (x + 0 is not, for -0): a plain broadcast */
INLINE vf splat(real x) { return x - (vf){0}; }

/* Cephes' exp for x <= 0 (about 1 ulp), and 0 below FLOOR, where the result, or its share
 * after the division by the record's total (at most K), would leave the normal range: a
 * responsibility below 1e-35 (float; quadratic.EXP_FLOOR_FLOAT32, normal for K up to 1000) or
 * 1e-304 (double) of its record's largest. n = round(x / ln 2) by adding and taking away 1.5 * 2^(mantissa bits). */
#if REAL_IS_DOUBLE
typedef int64_t vi __attribute__((vector_size(LANES * sizeof(int64_t))));
#define FLOOR (-700.0)
#define SHIFTER 6755399441055744.0
#define LN2_HIGH 6.93145751953125e-1
#define LN2_LOW 1.42860682030941723212e-6
#define EXPONENT_BIAS 1023
#define MANTISSA_BITS 52
#else
typedef int32_t vi __attribute__((vector_size(LANES * sizeof(int32_t))));
#define FLOOR (-80.0f)
#define SHIFTER 12582912.0f
#define LN2_HIGH 0.693359375f
#define LN2_LOW (-2.12194440e-4f)
#define EXPONENT_BIAS 127
#define MANTISSA_BITS 23
#endif

INLINE vf select_ge(vf a, vf b, vf if_true, vf if_false) {
    vi mask = a >= b;
    return (vf)((mask & (vi)if_true) | (~mask & (vi)if_false));
}

INLINE vf vmax(vf a, vf b) { return select_ge(a, b, a, b); }

INLINE vf vexp(vf x) {
    const vf floor_x = splat(FLOOR);
    vf clamped = vmax(x, floor_x);
    vf n = (clamped * splat(1.44269504088896341) + splat(SHIFTER)) - splat(SHIFTER);
    vf r = clamped - n * splat(LN2_HIGH) - n * splat(LN2_LOW);
#if REAL_IS_DOUBLE
    vf r2 = r * r;
    vf px = r * ((splat(1.26177193074810590878e-4) * r2 + splat(3.02994407707441961300e-2)) * r2 +
                 splat(9.99999999999999999910e-1));
    vf qx = ((splat(3.00198505138664455042e-6) * r2 + splat(2.52448340349684104192e-3)) * r2 +
             splat(2.27265548208155028766e-1)) * r2 + splat(2.00000000000000000009e0);
    vf y = splat(1.0) + splat(2.0) * px / (qx - px);
#else
    vf r2 = r * r;
    vf y = splat(1.9875691500e-4f);
    y = y * r + splat(1.3981999507e-3f);
    y = y * r + splat(8.3334519073e-3f);
    y = y * r + splat(4.1665795894e-2f);
    y = y * r + splat(1.6666665459e-1f);
    y = y * r + splat(5.0000001201e-1f);
    y = y * r2 + r + splat(1.0f);
#endif
    vi bits = (__builtin_convertvector(n, vi) + EXPONENT_BIAS) << MANTISSA_BITS;
    return select_ge(x, floor_x, y * (vf)bits, splat(0.0));
}

/* u of a tile's records for one feature: (real)(x - shift), as numpy rounds in the BLAS kernel */
INLINE vf load_u(const double *column, ptrdiff_t start, ptrdiff_t count, double shift) {
    if (count >= LANES) {
        vd x;
        memcpy(&x, column + start, sizeof(x));
        return __builtin_convertvector(x - shift, vf);
    }
    vf out = {0};
    for (int t = 0; t < count; t++) out[t] = (real)(column[start + t] - shift);
    return out;
}

static void run(const Chunk *c, vf *u, vf *L, vf *Q, vf *weight, vf *scaled, const ptrdiff_t *width) {
    const ptrdiff_t d = c->d, K = c->k, p = c->p;
    const real *V = c->V, *W = c->W, *direct_constant = c->direct_constant;
    const ptrdiff_t groups = (K + GROUP - 1) / GROUP, padded = groups * GROUP;
    const int *left = c->left, *right = c->right;
    for (ptrdiff_t block = 0; block < c->n; block += BLOCK) {
        const ptrdiff_t b = c->n - block < BLOCK ? c->n - block : BLOCK;
        const ptrdiff_t tiles = (b + LANES - 1) / LANES;
        /* 1. u, tile by tile (the tiles past the block's end, up to a whole step of FEATURES
         * tiles, get zeros: their log-densities are computed and never used) ... */
        const ptrdiff_t steps = (tiles + FEATURES - 1) / FEATURES * FEATURES;
        for (ptrdiff_t t = 0; t < steps; t++) {
            vf *ut = u + t * (d + 1);
            for (ptrdiff_t i = 0; i < d; i++)
                ut[i] = t < tiles ? load_u(c->X + i * c->ldx, block + t * LANES, b - t * LANES, c->shift[i]) : splat(0.0);
            ut[d] = splat(1.0);
        }
        /* the records' weights in the kernel's precision, zero past the block's end */
        if (c->weights != NULL)
            for (ptrdiff_t t = 0; t < tiles; t++) weight[t] = load_u(c->weights, block + t * LANES, b - t * LANES, 0.0);
        /* the second moment (tied) of the records, weighted if they are, over whole tiles:
         * lanes past the end hold zeros */
        if (c->shared_second != NULL)
            for (ptrdiff_t i = 0; i < d; i++) {
                /* w u_i once per feature, not once per product: one multiply-add per product */
                if (c->weights != NULL)
                    for (ptrdiff_t t = 0; t < tiles; t++) scaled[t] = u[t * (d + 1) + i] * weight[t];
                for (ptrdiff_t m = i; m < d; m++) {
                    vf acc = {0};
                    if (c->weights != NULL)
                        for (ptrdiff_t t = 0; t < tiles; t++) acc += scaled[t] * u[t * (d + 1) + m];
                    else
                        for (ptrdiff_t t = 0; t < tiles; t++) acc += u[t * (d + 1) + i] * u[t * (d + 1) + m];
                    double sum = 0.0;
                    for (int r = 0; r < LANES; r++) sum += acc[r];
                    c->shared_second[i * d + m] += sum;
                }
            }
        /* ... then the log-densities of FEATURES tiles at a time, sharing each coefficient's
         * load; L is (tiles, padded) */
        for (ptrdiff_t t0 = 0; t0 < steps; t0 += FEATURES) {
            const vf *ut = u + t0 * (d + 1);
            for (ptrdiff_t g = 0; g < groups; g++) {
                /* coefficients read a row per component (p apart): side by side, the
                 * compiler gathers them into vectors and shuffles, several times slower */
                const real *Vg = V + g * GROUP * p;
                vf acc[FEATURES][GROUP] = {{{0}}};
                for (ptrdiff_t j = 0; j < p; j++) {
                    vf z[FEATURES];
                    for (int f = 0; f < FEATURES; f++) z[f] = ut[f * (d + 1) + left[j]] * ut[f * (d + 1) + right[j]];
                    for (int k = 0; k < GROUP; k++) {
                        vf v = splat(Vg[k * p + j]);
                        for (int f = 0; f < FEATURES; f++) acc[f][k] += v * z[f];
                    }
                }
                for (int f = 0; f < FEATURES; f++)
                    for (int k = 0; k < GROUP; k++) L[(t0 + f) * padded + g * GROUP + k] = acc[f][k];
            }
        }
        for (ptrdiff_t t = 0; t < tiles; t++) {
            const vf *ut = u + t * (d + 1);
            vf *Lt = L + t * padded;
            for (ptrdiff_t k = 0; k < K; k++) {
                if (!c->direct[k]) continue;
                const real *Wk = W + k * d * (d + 1);
                vf q = {0};
                for (ptrdiff_t i = 0; i < d; i++) {
                    vf a = splat(Wk[i * (d + 1)]);
                    if (c->diagonal_direct)
                        a += splat(Wk[i * (d + 1) + 1 + i]) * ut[i]; /* the row's other terms are zeros */
                    else
                        for (ptrdiff_t m = 0; m < d; m++) a += splat(Wk[i * (d + 1) + 1 + m]) * ut[m];
                    q += a * a;
                }
                Lt[k] = splat(direct_constant[k]) - splat(0.5) * q;
            }
            if (c->shared != NULL) {
                const real *W0 = c->shared;
                vf q = {0};
                for (ptrdiff_t i = 0; i < d; i++) {
                    vf a = splat(W0[i * (d + 1)]);
                    for (ptrdiff_t m = 0; m < width[i]; m++) a += splat(W0[i * (d + 1) + 1 + m]) * ut[m];
                    q += a * a;
                }
                Q[t] = splat(0.5) * q;
            }
        }
        /* 2. softmax, in place: L becomes the responsibilities (times the weights, if any) */
        double weighted_log = 0.0;
        for (ptrdiff_t t = 0; t < tiles; t++) {
            vf *Lt = L + t * padded;
            vf peak = Lt[0];
            for (ptrdiff_t k = 1; k < K; k++) peak = vmax(peak, Lt[k]);
            vf total = {0};
            for (ptrdiff_t k = 0; k < K; k++) {
                Lt[k] = vexp(Lt[k] - peak);
                total += Lt[k];
            }
            vf inverse = splat(1.0) / total;
            for (ptrdiff_t k = 0; k < K; k++) Lt[k] *= inverse;
            /* the padding components of the last group have no responsibility */
            for (ptrdiff_t k = K; k < padded; k++) Lt[k] = splat(0.0);
            const ptrdiff_t count = b - t * LANES < LANES ? b - t * LANES : LANES;
            for (ptrdiff_t r = 0; r < count; r++)
                c->log_norm[block + t * LANES + r] =
                    log((double)total[r]) + (double)peak[r] - (c->shared != NULL ? (double)Q[t][r] : 0.0);
            /* lanes past the chunk's end hold no record */
            for (ptrdiff_t r = count; r < LANES; r++)
                for (ptrdiff_t k = 0; k < K; k++) Lt[k][r] = 0.0;
            if (c->resp != NULL) {
                real *out = (real *)c->resp + (block + t * LANES) * K;
                for (ptrdiff_t r = 0; r < count; r++)
                    for (ptrdiff_t k = 0; k < K; k++) out[r * K + k] = Lt[k][r];
            }
            if (c->weights != NULL) {
                /* a record of weight zero adds nothing, not 0 * -inf or 0 * NaN */
                for (ptrdiff_t r = 0; r < count; r++) {
                    const double w = c->weights[block + t * LANES + r];
                    if (w > 0) weighted_log += w * c->log_norm[block + t * LANES + r];
                }
                const vf wt = weight[t];
                const vi keep = wt > splat(0.0);
                for (ptrdiff_t k = 0; k < K; k++) Lt[k] = (vf)(keep & (vi)(Lt[k] * wt));
            }
        }
        if (c->weights != NULL) c->weighted_log[0] += weighted_log;
        if (c->resp != NULL) continue; /* scoring: no statistics */
        /* 3. statistics: FEATURES features at a time over the block's tiles (the feature
         * tables are padded to whole steps; the padding's sums are dropped) */
        for (ptrdiff_t g = 0; g < groups; g++) {
            const ptrdiff_t in_group = K - g * GROUP < GROUP ? K - g * GROUP : GROUP;
            double *Sg = c->S + g * GROUP * p;
            for (ptrdiff_t j = 0; j < p; j += FEATURES) {
                vf acc[FEATURES][GROUP] = {{{0}}};
                for (ptrdiff_t t = 0; t < tiles; t++) {
                    const vf *ut = u + t * (d + 1);
                    const vf *R = L + t * padded + g * GROUP;
                    vf z[FEATURES];
                    for (int f = 0; f < FEATURES; f++) z[f] = ut[left[j + f]] * ut[right[j + f]];
                    for (int k = 0; k < GROUP; k++) {
                        vf r = R[k];
                        for (int f = 0; f < FEATURES; f++) acc[f][k] += r * z[f];
                    }
                }
                for (int f = 0; f < FEATURES && j + f < p; f++)
                    for (ptrdiff_t k = 0; k < in_group; k++) {
                        double sum = 0.0;
                        for (int r = 0; r < LANES; r++) sum += acc[f][k][r];
                        Sg[k * p + j + f] += sum;
                    }
            }
        }
    }
}

int KERNEL_NAME(const Chunk *c) {
    /* tiles rounded up to whole steps of FEATURES tiles (step 1 of run) */
    const ptrdiff_t tiles = (BLOCK / LANES + FEATURES - 1) / FEATURES * FEATURES;
    const ptrdiff_t padded = (c->k + GROUP - 1) / GROUP * GROUP;
    vf *u = aligned_alloc(sizeof(vf), sizeof(vf) * tiles * (c->d + 1));
    vf *L = aligned_alloc(sizeof(vf), sizeof(vf) * tiles * padded);
    vf *Q = aligned_alloc(sizeof(vf), sizeof(vf) * tiles);
    vf *weight = aligned_alloc(sizeof(vf), sizeof(vf) * tiles);
    vf *scaled = aligned_alloc(sizeof(vf), sizeof(vf) * tiles);
    /* the shared factor's rows up to their last nonzero: a triangular U' (tied) costs half */
    ptrdiff_t *width = malloc(sizeof(ptrdiff_t) * c->d);
    int status = -1;
    if (u && L && Q && weight && scaled && width) {
        const real *W0 = c->shared;
        for (ptrdiff_t i = 0; i < c->d; i++) {
            width[i] = 0;
            if (W0 != NULL)
                for (ptrdiff_t m = 0; m < c->d; m++)
                    if (W0[i * (c->d + 1) + 1 + m] != 0) width[i] = m + 1;
        }
        run(c, u, L, Q, weight, scaled, width);
        status = 0;
    }
    free(u);
    free(L);
    free(Q);
    free(weight);
    free(scaled);
    free(width);
    return status;
}
