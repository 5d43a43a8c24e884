/* The kernel of _fused.c, compiled once per instruction set by the files that include it,
 * each defining LANES (records per vector: the width of its registers), FEATURES (statistics
 * summed at once: FEATURES x GROUP accumulators must fit in its registers) and KERNEL_NAME.
 * Written with GCC's vector extensions, which the compiler maps onto the target's registers. */
#if !defined(LANES) || !defined(FEATURES) || !defined(KERNEL_NAME)
#error "define LANES, FEATURES and KERNEL_NAME before including _fused_kernel.h"
#endif

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "_fused.h"

#define BLOCK 1024 /* records: u and R of a block stay in L1/L2 between the three steps */

typedef float vf __attribute__((vector_size(LANES * sizeof(float))));
typedef int vi __attribute__((vector_size(LANES * sizeof(int))));

#define INLINE static inline __attribute__((always_inline))

/* x - 0 is x for every x (x + 0 is not, for -0): a plain broadcast */
INLINE vf splat(float x) { return x - (vf){0}; }

INLINE vf select_ge(vf a, vf b, vf if_true, vf if_false) {
    vi mask = a >= b;
    return (vf)((mask & (vi)if_true) | (~mask & (vi)if_false));
}

INLINE vf vmax(vf a, vf b) { return select_ge(a, b, a, b); }

/* exp(x) for x <= 0 (Cephes' expf polynomial, about 1 ulp); 0 below -87, where the result
 * would leave the normal range (a responsibility below 1e-38 of its record's largest). */
INLINE vf vexp(vf x) {
    const vf floor_x = splat(-87.0f);
    vf clamped = vmax(x, floor_x);
    /* n = round(x / ln 2) by the 1.5 * 2^23 trick: exact for |n| < 2^22 */
    vf shifter = splat(12582912.0f);
    vf n = (clamped * splat(1.44269504088896341f) + shifter) - shifter;
    vf r = clamped - n * splat(0.693359375f) - n * splat(-2.12194440e-4f);
    vf r2 = r * r;
    vf y = splat(1.9875691500e-4f);
    y = y * r + splat(1.3981999507e-3f);
    y = y * r + splat(8.3334519073e-3f);
    y = y * r + splat(4.1665795894e-2f);
    y = y * r + splat(1.6666665459e-1f);
    y = y * r + splat(5.0000001201e-1f);
    y = y * r2 + r + splat(1.0f);
    vi bits = (__builtin_convertvector(n, vi) + 127) << 23;
    return select_ge(x, floor_x, y * (vf)bits, splat(0.0f));
}

typedef double vd __attribute__((vector_size(LANES * sizeof(double))));

/* u of a tile's records for one feature: (float)(x - shift), as numpy's float32 path rounds */
INLINE vf load_u(const double *column, ptrdiff_t start, ptrdiff_t count, double shift) {
    if (count >= LANES) {
        vd x;
        memcpy(&x, column + start, sizeof(x));
        return __builtin_convertvector(x - shift, vf);
    }
    vf out = {0};
    for (int t = 0; t < count; t++) out[t] = (float)(column[start + t] - shift);
    return out;
}

static void run(const Chunk *c, vf *u, vf *L) {
    const ptrdiff_t d = c->d, K = c->k, p = c->p;
    const ptrdiff_t groups = (K + GROUP - 1) / GROUP, padded = groups * GROUP;
    const int *left = c->left, *right = c->right;
    for (ptrdiff_t block = 0; block < c->n; block += BLOCK) {
        const ptrdiff_t b = c->n - block < BLOCK ? c->n - block : BLOCK;
        const ptrdiff_t tiles = (b + LANES - 1) / LANES;
        /* 1. u and the log-densities, tile by tile; L is (tiles, padded) */
        for (ptrdiff_t t = 0; t < tiles; t++) {
            vf *ut = u + t * (d + 1);
            for (ptrdiff_t i = 0; i < d; i++)
                ut[i] = load_u(c->X + i * c->n, block + t * LANES, b - t * LANES, c->shift[i]);
            ut[d] = splat(1.0f);
            vf *Lt = L + t * padded;
            for (ptrdiff_t g = 0; g < groups; g++) {
                /* coefficients read a row per component (p apart): side by side, the
                 * compiler gathers them into vectors and shuffles, several times slower */
                const float *Vg = c->V + g * GROUP * p;
                vf acc[GROUP] = {{0}};
                for (ptrdiff_t j = 0; j < p; j++) {
                    vf z = ut[left[j]] * ut[right[j]];
                    for (int k = 0; k < GROUP; k++) acc[k] += splat(Vg[k * p + j]) * z;
                }
                for (int k = 0; k < GROUP; k++) Lt[g * GROUP + k] = acc[k];
            }
            for (ptrdiff_t k = 0; k < K; k++) {
                if (!c->direct[k]) continue;
                const float *Wk = c->W + k * d * (d + 1);
                vf q = {0};
                for (ptrdiff_t i = 0; i < d; i++) {
                    vf a = splat(Wk[i * (d + 1)]);
                    for (ptrdiff_t m = 0; m < d; m++) a += splat(Wk[i * (d + 1) + 1 + m]) * ut[m];
                    q += a * a;
                }
                Lt[k] = splat(c->direct_constant[k]) - splat(0.5f) * q;
            }
        }
        /* 2. softmax, in place: L becomes the responsibilities */
        for (ptrdiff_t t = 0; t < tiles; t++) {
            vf *Lt = L + t * padded;
            vf peak = Lt[0];
            for (ptrdiff_t k = 1; k < K; k++) peak = vmax(peak, Lt[k]);
            vf total = {0};
            for (ptrdiff_t k = 0; k < K; k++) {
                Lt[k] = vexp(Lt[k] - peak);
                total += Lt[k];
            }
            vf inverse = splat(1.0f) / total;
            for (ptrdiff_t k = 0; k < K; k++) Lt[k] *= inverse;
            /* the padding components of the last group have no responsibility */
            for (ptrdiff_t k = K; k < padded; k++) Lt[k] = splat(0.0f);
            const ptrdiff_t count = b - t * LANES < LANES ? b - t * LANES : LANES;
            for (ptrdiff_t r = 0; r < count; r++)
                c->log_norm[block + t * LANES + r] = log((double)total[r]) + (double)peak[r];
            /* lanes past the chunk's end hold no record */
            for (ptrdiff_t r = count; r < LANES; r++)
                for (ptrdiff_t k = 0; k < K; k++) Lt[k][r] = 0.0f;
        }
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
    const ptrdiff_t tiles = BLOCK / LANES, padded = (c->k + GROUP - 1) / GROUP * GROUP;
    vf *u = aligned_alloc(sizeof(vf), sizeof(vf) * tiles * (c->d + 1));
    vf *L = aligned_alloc(sizeof(vf), sizeof(vf) * tiles * padded);
    int status = -1;
    if (u && L) {
        run(c, u, L);
        status = 0;
    }
    free(u);
    free(L);
    return status;
}
