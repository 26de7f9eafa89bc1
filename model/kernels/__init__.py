"""Triton kernels for the GPU fast path (paper §2.2 "Triton acceleration"); imported only when CUDA runs them."""
