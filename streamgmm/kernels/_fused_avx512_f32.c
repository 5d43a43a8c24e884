/* AVX-512, float: a tile of 16 records per register, 24 accumulators of the 32 registers.
 * Built on x86-64 with GCC only; elsewhere empty, and _fused.c never calls it. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC target("avx512f,avx512dq,avx512bw,avx512vl,fma")
#define REAL float
#define REAL_IS_DOUBLE 0
#define LANES 16
#define FEATURES 3
#define KERNEL_NAME fused_run_avx512_f32
#include "_fused_kernel.h"
#else
typedef int empty_translation_unit;
#endif
