"""The fused E-step (streamgmm/_fused.c) is built when a C compiler is at hand; without
one the install goes on and streamgmm.quadratic computes with numpy and BLAS instead."""

from setuptools import Extension, setup

KERNEL = [f"streamgmm/_fused_{isa}_{precision}.c" for isa in ("avx512", "avx2") for precision in ("f32", "f64")]

setup(
    ext_modules=[
        Extension(
            "streamgmm._fused",
            sources=["streamgmm/_fused.c", *KERNEL],
            depends=["streamgmm/_fused.h", "streamgmm/_fused_kernel.h"],
            extra_compile_args=["-O3", "-Wall", "-Wno-psabi"],
            optional=True,
        )
    ]
)
