"""Which implementation a call runs: the eager PyTorch reference or the fused Triton kernels (paper §2.2)."""
from __future__ import annotations

import functools
import os

import torch


@functools.cache
def triton_available() -> bool:
    try:
        import triton  # noqa: F401  (optional: only asks whether the fused kernels can run)
    except ImportError:
        return False
    return True


def interpreting() -> bool:
    """Triton's interpreter (TRITON_INTERPRET=1) runs the kernels on CPU tensors: how CPU tests reach them."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def resolve(kernels: str, device: torch.device) -> str:
    """What `kernels` (TransformerConfig.kernels) runs on `device`: "eager" or "triton". "triton" is an error where
    it cannot run; "auto" takes Triton on CUDA when it is installed."""
    if kernels == "eager":
        return "eager"
    runnable = triton_available() and (device.type == "cuda" or interpreting())
    if kernels == "triton" and not runnable:
        raise RuntimeError("kernels='triton' needs CUDA tensors and the triton package; use kernels='eager' or "
                           "'auto' on the CPU")
    return "triton" if runnable and (device.type == "cuda" or kernels == "triton") else "eager"


def use_triton(kernels: str, x: torch.Tensor) -> bool:
    return resolve(kernels, x.device) == "triton"
