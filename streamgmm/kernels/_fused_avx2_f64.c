/* AVX2, double: a tile of 4 records per register, 8 accumulators of the 16 registers.
 * Built on x86-64 with GCC only; elsewhere empty, and _fused.c never calls it. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC target("avx2,fma")
#define REAL double
#define REAL_IS_DOUBLE 1
#define LANES 4
#define FEATURES 1
#define KERNEL_NAME fused_run_avx2_f64
#include "_fused_kernel.h"
#else
typedef int empty_translation_unit;
#endif
