"""The fused E-step (streamgmm/kernels/_fused.c) is built when a C compiler is at hand; without
one the install goes on and streamgmm.kernels.quadratic computes with numpy and BLAS instead."""

from setuptools import Extension, setup

KERNEL = [f"streamgmm/kernels/_fused_{isa}_{precision}.c" for isa in ("avx512", "avx2") for precision in ("f32", "f64")]

setup(
    ext_modules=[
        Extension(
            "streamgmm.kernels._fused",
            sources=["streamgmm/kernels/_fused.c", *KERNEL],
            depends=["streamgmm/kernels/_fused.h", "streamgmm/kernels/_fused_kernel.h"],
            extra_compile_args=["-O3", "-Wall", "-Wno-psabi"],
            optional=True,
        )
    ]
)
