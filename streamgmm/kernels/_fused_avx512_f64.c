/* AVX-512, double: a tile of 8 records per register, 24 accumulators of the 32 registers.
 * Built on x86-64 with GCC only; elsewhere empty, and _fused.c never calls it. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC target("avx512f,avx512dq,avx512bw,avx512vl,fma")
#define REAL double
#define REAL_IS_DOUBLE 1
#define LANES 8
#define FEATURES 3
#define KERNEL_NAME fused_run_avx512_f64
#include "_fused_kernel.h"
#else
typedef int empty_translation_unit;
#endif
