"""The fused float32 E-step (streamgmm/_fused.c) is built when a C compiler is at hand; without
one the install goes on and streamgmm.quadratic computes with numpy and BLAS instead."""

from setuptools import Extension, setup

KERNEL = ["streamgmm/_fused_avx512.c", "streamgmm/_fused_avx2.c"]

setup(ext_modules=[Extension(
    "streamgmm._fused",
    sources=["streamgmm/_fused.c", *KERNEL],
    depends=["streamgmm/_fused.h", "streamgmm/_fused_kernel.h"],
    extra_compile_args=["-O3", "-Wall", "-Wno-psabi"],
    optional=True,
)])
